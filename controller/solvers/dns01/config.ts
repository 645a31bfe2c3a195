/**
 * The `dns01` configuration section (a zod schema the controller's config embeds) and
 * the factory that turns it into providers and a solver.
 *
 * Secrets are never in the YAML itself: an rfc2136 key comes from `secretFile` (the raw
 * base64 secret, or the `key "..." { ... };` file `tsig-keygen` writes) or from
 * `secretEnv` (the name of an environment variable). Both are read once, at start-up,
 * by `createDns01Providers`, which reports every unreadable or malformed secret at once.
 */
import fs from 'node:fs';
import { componentLogger, type Logger } from '../../../shared/log/index.js';
import { duration, configError, type ConfigProblem, z } from '../../../shared/config/index.js';
import type { Clock } from '../../../shared/clock/index.js';
import type { DnsProvider } from './provider.js';
import { ExecProvider } from './exec.js';
import { Rfc2136Provider } from './rfc2136.js';
import { TSIG_ALGORITHMS, type TsigAlgorithm } from './tsig.js';
import { parseServer } from './transport.js';
import { Dns01Solver, type Dns01Journal } from './solver.js';
import { isAddress } from './propagation.js';
import { cloudProviderSchemas, createCloudProvider } from './providers/index.js';

/** `ip`, `ip:port`, `[v6]:port`: a DNS server by address (no names: they would need DNS to find DNS). */
const serverAddress = z.string().refine((s) => isAddress(parseServer(s).host) && Number.isInteger(parseServer(s).port) && parseServer(s).port > 0 && parseServer(s).port < 65536, {
  message: 'expected an IP address with an optional port, e.g. 192.0.2.53 or 127.0.0.1:5353',
});

const zoneName = z
  .string()
  .transform((s) => s.toLowerCase().replace(/\.$/, ''))
  .pipe(z.string().min(1).max(253).regex(/^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'not a valid zone name'));

const rfc2136Provider = z
  .strictObject({
    type: z.literal('rfc2136'),
    /** The primary server that accepts updates. */
    server: serverAddress,
    /** TSIG key name as the server knows it. */
    keyName: zoneName,
    algorithm: z.enum(Object.keys(TSIG_ALGORITHMS) as [TsigAlgorithm, ...TsigAlgorithm[]]).default('hmac-sha256'),
    /** File with the base64 secret or a `tsig-keygen` key clause. */
    secretFile: z.string().min(1).optional(),
    /** Environment variable holding the base64 secret. */
    secretEnv: z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name').optional(),
    /** Zone to update; default: asked from the server (SOA). */
    zone: zoneName.optional(),
    /** TTL of the TXT records, seconds. */
    ttl: z.int().min(1).max(86400).default(60),
    /** Per request. */
    timeout: duration.prefault('10s'),
  })
  .superRefine((p, ctx) => {
    if ((p.secretFile === undefined) === (p.secretEnv === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['secretFile'], message: 'set exactly one of secretFile and secretEnv' });
    }
  });

const execProvider = z.strictObject({
  type: z.literal('exec'),
  /** Program and leading arguments; `present|cleanup FQDN VALUE` are appended. */
  command: z.array(z.string().min(1)).min(1),
  timeout: duration.prefault('60s'),
});

/** The `dns01` section. */
export const dns01ConfigSchema = z
  .strictObject({
    /** Named providers; certificates and zones refer to them by name. */
    providers: z.record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and "-"'), z.discriminatedUnion('type', [rfc2136Provider, execProvider, ...cloudProviderSchemas])).default({}),
    /** Which provider writes records in which zone (longest match wins; matched on the name after CNAME delegation). */
    zones: z.array(z.strictObject({ zone: zoneName, provider: z.string().min(1) })).default([]),
    /** Follow `_acme-challenge` CNAMEs to a validation zone. */
    followCnames: z.boolean().default(true),
    propagation: z
      .strictObject({
        /** Recursive resolvers for CNAME/SOA/NS discovery; default the system's. */
        resolvers: z.array(serverAddress).optional(),
        /** Check these servers instead of each zone's NS records. */
        nameservers: z.array(serverAddress).optional(),
        /** Port the NS servers are asked on. */
        nameserverPort: z.int().min(1).max(65535).default(53),
        /** How long every authoritative server has to show every value. */
        timeout: duration.prefault('2m'),
        /** Pause between checks. */
        interval: duration.prefault('2s'),
        /** Per query. */
        queryTimeout: duration.prefault('3s'),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
    cfg.zones.forEach((z, i) => {
      if (!(z.provider in cfg.providers)) ctx.addIssue({ code: 'custom', path: ['zones', i, 'provider'], message: `unknown provider "${z.provider}"` });
    });
  });

export type Dns01Config = z.output<typeof dns01ConfigSchema>;
export type Dns01ProviderConfig = Dns01Config['providers'][string];

export interface Dns01FactoryOptions {
  /** The controller's environment (only config reads process.env; it hands it here). */
  env: NodeJS.ProcessEnv;
  clock: Clock;
  log: Logger;
  /** Where `secretFile` paths are reported from, for error messages. Default "dns01". */
  source?: string;
}

/**
 * Decodes a TSIG secret: plain base64, or BIND's `key "name" { algorithm ...; secret "...";
 * };` (the output of `tsig-keygen`). Returns null when there is no usable secret.
 */
export function parseTsigSecret(text: string): Buffer | null {
  const clause = /secret\s+"([^"]+)"/.exec(text);
  const b64 = (clause?.[1] ?? text).trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  const secret = Buffer.from(b64, 'base64');
  return secret.length >= 16 ? secret : null;
}

/**
 * Builds the providers of a validated `dns01` section, reading every secret. Throws one
 * CONFIG_INVALID listing every provider whose secret is missing or malformed (the
 * secret itself never appears). Call `check()` on each provider afterwards to test the
 * credentials against the service.
 */
export function createDns01Providers(cfg: Dns01Config, opts: Dns01FactoryOptions): Map<string, DnsProvider> {
  const problems: ConfigProblem[] = [];
  const providers = new Map<string, DnsProvider>();
  const log = componentLogger(opts.log, 'dns01');
  for (const [name, p] of Object.entries(cfg.providers)) {
    if (p.type === 'exec') {
      providers.set(name, new ExecProvider({ name, command: p.command, timeoutMs: p.timeout, env: opts.env, log }));
      continue;
    }
    if (p.type !== 'rfc2136') {
      // cloudflare, route53, gcloud, acme-dns: providers/config.ts
      const cloud = createCloudProvider(name, p, { env: opts.env, clock: opts.clock, log }, problems);
      if (cloud) providers.set(name, cloud);
      continue;
    }
    let text: string | undefined;
    const where = `dns01.providers.${name}`;
    if (p.secretFile !== undefined) {
      try {
        text = fs.readFileSync(p.secretFile, 'utf8');
      } catch (err) {
        problems.push({ path: `${where}.secretFile`, message: `cannot read ${p.secretFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` });
        continue;
      }
    } else if (p.secretEnv !== undefined) {
      text = opts.env[p.secretEnv];
      if (text === undefined || text === '') {
        problems.push({ path: `${where}.secretEnv`, message: `environment variable ${p.secretEnv} is not set` });
        continue;
      }
    }
    const secret = text === undefined ? null : parseTsigSecret(text);
    if (secret === null) {
      problems.push({ path: `${where}.${p.secretFile !== undefined ? 'secretFile' : 'secretEnv'}`, message: 'not a base64 TSIG secret of at least 16 bytes' });
      continue;
    }
    providers.set(
      name,
      new Rfc2136Provider({
        name,
        server: parseServer(p.server),
        key: { name: p.keyName, algorithm: p.algorithm, secret },
        ...(p.zone === undefined ? {} : { zone: p.zone }),
        ttl: p.ttl,
        timeoutMs: p.timeout,
        clock: opts.clock,
        log,
      }),
    );
  }
  if (problems.length > 0) throw configError(opts.source ?? 'dns01', problems);
  return providers;
}

/** A solver for a validated `dns01` section and its providers. */
export function createDns01Solver(cfg: Dns01Config, providers: ReadonlyMap<string, DnsProvider>, journal: Dns01Journal, opts: { clock: Clock; log: Logger }): Dns01Solver {
  return new Dns01Solver({
    providers,
    zones: cfg.zones,
    journal,
    lookup: {
      ...(cfg.propagation.resolvers ? { resolvers: cfg.propagation.resolvers.map((s) => parseServer(s)) } : {}),
      nameserverPort: cfg.propagation.nameserverPort,
      queryTimeoutMs: cfg.propagation.queryTimeout,
    },
    ...(cfg.propagation.nameservers ? { nameservers: cfg.propagation.nameservers.map((s) => parseServer(s, cfg.propagation.nameserverPort)) } : {}),
    followCnames: cfg.followCnames,
    propagationTimeoutMs: cfg.propagation.timeout,
    propagationIntervalMs: cfg.propagation.interval,
    clock: opts.clock,
    log: componentLogger(opts.log, 'dns01'),
  });
}

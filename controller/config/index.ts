/**
 * The controller's configuration: one strict schema, defaults in the schema, every
 * problem reported at once with file, line and field path (see shared/config).
 * Every field is documented in docs/configuration.md; keep the two in step.
 */
import os from 'node:os';
import path from 'node:path';
import { NOTIFICATION_KINDS } from '../notifications/index.js';
import { boundedDuration, CERT_NAME_RULE, hostPort, loadConfigFile, logLevel, natsFields, parseConfig, parseDuration, resolveNatsPaths, z } from '../../shared/config/index.js';
import { BudgetConfigSchema } from '../budget/index.js';
import type { RenewBefore } from '../scheduler/index.js';
import { KEY_TYPES } from '../../shared/model/index.js';
import { parseSelector } from '../../shared/selector/index.js';
import { dns01ConfigSchema, resolveProviderPaths } from '../solvers/dns01/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import { takeNotifySettings, type NotifySettings } from '../../shared/notify/index.js';
import type { StoreConfig } from '../store/index.js';

const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * A DNS name a certificate may cover: lower-case LDH labels, optional leading `*.`.
 * Upper case is refused rather than folded, so the file says what the certificate will
 * say; IP addresses are refused by name, because ACME IP identifiers (RFC 8738) are not
 * supported and an all-digit "name" would otherwise pass as DNS labels.
 */
const dnsName = z.string().superRefine((name, ctx) => {
  if (IPV4.test(name) || (name.includes(':') && /^[0-9a-fA-F:.[\]]+$/.test(name))) {
    ctx.addIssue({ code: 'custom', message: `"${name}" is an IP address: IP identifiers are not supported (certfleet orders DNS names only)` });
  } else if (name !== name.toLowerCase()) {
    ctx.addIssue({ code: 'custom', message: `"${name}" has upper-case letters: write DNS names in lower case ("${name.toLowerCase()}")` });
  } else if (name.length > 253 || !DNS_NAME.test(name)) {
    ctx.addIssue({ code: 'custom', message: `"${name}" is not a valid DNS name (lower-case letters, digits, "-" and dots; "*." only as the first label)` });
  }
});

const selector = z.string().superRefine((text, ctx) => {
  try {
    parseSelector(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `bad selector: ${(err as Error).message}` });
  }
});

const renewBefore = z.string().transform((text, ctx): RenewBefore => {
  const pct = /^(\d{1,2}(?:\.\d+)?)%$/.exec(text.trim());
  if (pct) {
    const percent = Number(pct[1]);
    if (percent > 0 && percent < 100) return { kind: 'percent', percent };
  }
  const ms = parseDuration(text);
  if (ms !== undefined && ms > 0) return { kind: 'duration', ms };
  ctx.addIssue({ code: 'custom', message: `"${text}" is neither a duration before expiry (e.g. 30d) nor a share of the lifetime (e.g. 33%)` });
  return z.NEVER;
});

/** A controller's name (`ha.name`): the registry key and the lease holder's prefix. */
const CONTROLLER_NAME = /^[a-z0-9-]{1,63}$/;

/**
 * The default `ha.name`: this machine's host name, lower-cased, with every character a
 * name may not hold replaced by `-` (a host name like `Node_1.example` gives `node-1`).
 */
export function defaultControllerName(hostname: string = os.hostname()): string {
  const name = (hostname.split('.')[0] ?? '').toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 63);
  return CONTROLLER_NAME.test(name) ? name : 'controller';
}

/** An issuer's name (`issuers` keys, `certificates[].issuers`); `default` is the `acme` section. */
const ISSUER_NAME = /^[a-z][a-z0-9-]{0,62}$/;

/** The name the `acme` section issues under. */
export const DEFAULT_ISSUER = 'default';

/** What one ACME issuer is: the `acme` section, and each value of `issuers`. */
const acmeIssuerFields = {
  /** The CA's ACME directory URL. */
  directoryUrl: z.url({ protocol: /^https$/, error: 'expected an https:// ACME directory URL' }),
  /** Contact address registered with the account (recommended: expiry mail from the CA). */
  email: z.email().optional(),
  /**
   * External account binding (RFC 8555 §7.3.4), for CAs that require it (ZeroSSL,
   * Google Trust Services, a private CA): the key id and the base64url HMAC key the CA
   * gave out, the key from a file or an environment variable. Used when registering.
   */
  eab: z
    .strictObject({
      keyId: z.string().min(1),
      hmacKeyFile: z.string().min(1).optional(),
      hmacKeyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
    })
    .refine((e) => (e.hmacKeyFile === undefined) !== (e.hmacKeyEnv === undefined), { error: 'set exactly one of hmacKeyFile and hmacKeyEnv' })
    .optional(),
  /** PEM bundle trusted for the directory's HTTPS instead of the system store (test CAs such as Pebble). */
  caFile: z.string().min(1).optional(),
  /** Must be true: you agree to the CA's terms of service. */
  termsOfServiceAgreed: z.literal(true, { error: 'must be true: certfleet registers an ACME account only when you agree to the CA terms of service' }),
};

const certificate = z
  .strictObject({
    /** Stable identifier: store key, KV key, directory name on agents. */
    name: z.string().regex(CERT_NAME_PATTERN, CERT_NAME_RULE),
    /** DNS names (SANs); the first is also the common name. */
    names: z.array(dnsName).min(1).max(100),
    keyType: z.enum(KEY_TYPES).default('ecdsa-p256'),
    /** Label selector of the agents that serve this certificate and answer its HTTP-01 challenges. */
    agents: selector,
    challenge: z.enum(['http-01', 'dns-01']).default('http-01'),
    /**
     * When to renew, instead of 2/3 of the lifetime: a duration before expiry ("30d") or a
     * share of the lifetime left ("33%").
     */
    renewBefore: renewBefore.optional(),
    /**
     * The CA's certificate profile to order under (ACME profiles, e.g. Let's Encrypt's
     * "classic", "tlsserver", "shortlived"); default none: the CA's default profile. The
     * controller refuses to start when the CA's directory does not advertise it.
     */
    profile: z
      .string()
      .regex(/^[\x21-\x7e]{1,64}$/, 'a profile name as the CA\'s directory lists it (printable ASCII, no spaces, at most 64 characters)')
      .optional(),
    /** DNS-01 only: the provider (a key of `dns01.providers`); default: chosen by `dns01.zones`. */
    dnsProvider: z.string().min(1).optional(),
    /**
     * Staged rollout: a new version goes to the agents of the first wave (label
     * selectors), and on to the next only when every agent there reports it installed
     * and verified. Agents in no wave come last. A failure halts the rollout.
     */
    rollout: z.strictObject({ waves: z.array(selector).min(1).max(20) }).optional(),
    /**
     * The issuers to try, in order (names of `issuers`, or `default` for the `acme`
     * section). Default: every issuer, `default` first, then `issuers` as declared.
     */
    issuers: z.array(z.string().min(1)).min(1).max(10).optional(),
  })
  .superRefine((cert, ctx) => {
    const seen = new Set<string>();
    cert.names.forEach((n, i) => {
      if (seen.has(n)) ctx.addIssue({ code: 'custom', path: ['names', i], message: `duplicate name ${n}` });
      seen.add(n);
      if (n.startsWith('*.') && cert.challenge === 'http-01') {
        ctx.addIssue({ code: 'custom', path: ['names', i], message: 'wildcard names need challenge dns-01 (HTTP-01 cannot validate them)' });
      }
    });
    if (cert.dnsProvider !== undefined && cert.challenge !== 'dns-01') {
      ctx.addIssue({ code: 'custom', path: ['dnsProvider'], message: 'dnsProvider applies to challenge dns-01 only' });
    }
  });

export const controllerConfigSchema = z
  .strictObject({
    /** Directory for the controller's own state (its CA, the admin credentials, the spool). */
    stateDir: z.string().min(1),
    log: z.strictObject({ level: logLevel.default('info') }).prefault({}),
    api: z
      .strictObject({
        /** Where the gRPC API listens (TLS always). */
        listen: hostPort.default('127.0.0.1:7443'),
        /** Names and addresses clients dial; they go into the API's server certificate. */
        hosts: z.array(z.string().min(1)).min(1).default(['localhost', '127.0.0.1']),
        /** An agent that has not reported for this long is shown offline. */
        agentOfflineAfter: boundedDuration('5s', '7d').prefault('90s'),
        /**
         * Lifetime of agent client certificates (enrolment and renewal). Agents renew theirs
         * at 2/3 of it over the mTLS link, so an agent offline for longer than the last third
         * must be enrolled again.
         */
        agentIdentityValidity: boundedDuration('1m', '397d').prefault('90d'),
        /**
         * How the other controllers, agents and the CLI reach this controller (written into
         * the lease, the controller registry and the admin credentials). Default: `listen`,
         * with a wildcard host (0.0.0.0, ::) replaced by 127.0.0.1.
         */
        advertise: hostPort.optional(),
        /**
         * The OTHER controllers' API addresses (several controllers, docs/high-availability.md):
         * written into the admin credentials' `servers` list so the CLI fails over. Default none.
         */
        peers: z.array(hostPort).max(10).default([]),
      })
      .prefault({}),
    /**
     * Several controllers, one leader (docs/high-availability.md). Every controller runs the
     * leader lease; a single one leads at once.
     */
    ha: z
      .strictObject({
        /** This controller's name in the lease and the registry; default: the host name. */
        name: z.string().regex(CONTROLLER_NAME, 'lower-case letters, digits and "-", at most 63 characters').default(() => defaultControllerName()),
        /**
         * Lease time: a leader that stops renewing is replaced after this long (renewed every
         * third of it). Shorter fails over sooner but writes NATS more often.
         */
        leaseTtl: boundedDuration('3s', '5m').prefault('15s'),
      })
      .prefault({}),
    nats: z
      .strictObject({
        ...natsFields,
        /**
         * `controller` (default): the controller is the NATS account authority (operator
         * mode): it keeps the operator and account keys in its store, connects with a user
         * it mints for itself, mints each agent's read-only user at enrolment, and keeps
         * the server's authorization include in `serverConfigFile`. `external`: NATS users
         * are managed outside certfleet; the controller connects with credentialsFile or
         * tokenFile (or none) and agents get no credentials at enrolment.
         */
        authority: z.enum(['controller', 'external']).default('controller'),
        /** The nats-server include the controller keeps current; default `<stateDir>/nats/auth.conf`. */
        serverConfigFile: z.string().min(1).optional(),
        /**
         * Copies of every certfleet bucket and stream in the NATS cluster: 1 (one server), 3
         * or 5 (a cluster of at least that many servers; writes need a majority of them).
         */
        replicas: z.union([z.literal(1), z.literal(3), z.literal(5)], { error: 'expected 1, 3 or 5 (copies of every bucket and stream; 3 or 5 need a NATS cluster)' }).default(1),
      })
      .prefault({})
      .superRefine((nats, ctx) => {
        if (nats.authority !== 'controller') {
          if (nats.serverConfigFile !== undefined) ctx.addIssue({ code: 'custom', path: ['serverConfigFile'], message: 'only with authority: controller' });
          return;
        }
        for (const field of ['credentialsFile', 'tokenFile'] as const) {
          if (nats[field] !== undefined) {
            ctx.addIssue({ code: 'custom', path: [field], message: 'not with authority: controller (the controller connects with a user it mints itself); set authority: external to use it' });
          }
        }
      }),
    store: z
      .discriminatedUnion('type', [
        z.strictObject({
          type: z.literal('file'),
          /** Default: `<stateDir>/store`. */
          path: z.string().min(1).optional(),
        }),
        z.strictObject({
          type: z.literal('vault'),
          /** Vault's address; https unless it is a loopback test instance. */
          address: z.url({ protocol: /^https?$/, error: 'expected an http(s):// Vault address' }),
          /** KV v2 mount. */
          mount: z.string().regex(/^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$/, 'a Vault path like "secret" or "kv/prod"').default('secret'),
          /** Path prefix inside the mount; every certfleet key lives below it. */
          prefix: z.string().regex(/^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$/, 'a Vault path like "certfleet"').default('certfleet'),
          /** Vault Enterprise namespace. */
          namespace: z.string().min(1).optional(),
          /** PEM bundle trusted for Vault's TLS instead of the system store. */
          caFile: z.string().min(1).optional(),
          auth: z.discriminatedUnion('method', [
            z
              .strictObject({
                method: z.literal('token'),
                /** The token itself; write it as `${VAULT_TOKEN}` so it stays out of the file. */
                token: z.string().min(1).optional(),
                /** A file holding the token (e.g. written by Vault Agent); re-read when the token cannot be renewed. */
                tokenFile: z.string().min(1).optional(),
              })
              .refine((a) => (a.token === undefined) !== (a.tokenFile === undefined), { error: 'set exactly one of token and tokenFile' }),
            z.strictObject({
              method: z.literal('approle'),
              roleIdFile: z.string().min(1),
              secretIdFile: z.string().min(1),
              /** Where the AppRole auth method is mounted. */
              mount: z.string().min(1).default('approle'),
            }),
          ]),
          /** Versions Vault keeps per certificate (KV v2 max_versions); old ones are destroyed beyond it. */
          maxVersions: z.int().min(100).max(4_294_967_295).default(10_000),
          /** Per-request timeout. */
          requestTimeout: boundedDuration('100ms', '10m').prefault('10s'),
        }),
      ])
      .prefault({ type: 'file' }),
    /**
     * The CA as one issuer named `default` (the original single-CA form). With `issuers`
     * too, `default` comes first in every certificate's default issuer list.
     */
    acme: z
      .strictObject({
        ...acmeIssuerFields,
        /**
         * A second CA to rehearse against (`certfleet renew NAME --dry-run`): its own ACME
         * account, opened on the first dry run; nothing it issues is stored or published.
         */
        staging: z
          .strictObject({
            /** The staging CA's ACME directory URL. */
            directoryUrl: z.url({ protocol: /^https$/, error: 'expected an https:// ACME directory URL' }),
            /** PEM bundle trusted for the staging directory's HTTPS instead of the system store. */
            caFile: z.string().min(1).optional(),
          })
          .optional(),
      })
      .optional(),
    /**
     * Named issuers (CA directory, account, EAB, budgets each), in the order certificates
     * try them by default: the next one issues when the one before cannot in time
     * (docs/renewal.md#issuers-and-fallback).
     */
    issuers: z
      .record(
        z.string().regex(ISSUER_NAME, 'an issuer name: lower-case letters, digits and dashes, starting with a letter'),
        z.strictObject({
          ...acmeIssuerFields,
          /** This issuer's rate-limit budgets; default: the top-level `budgets`. */
          budgets: BudgetConfigSchema.optional(),
        }),
      )
      .default({}),
    http01: z
      .strictObject({
        /** How long to wait for every assigned agent to serve a challenge before giving up. */
        selfCheckTimeout: boundedDuration('1s', '1h').prefault('30s'),
        /** How long the CA may take to validate an authorization. */
        validationTimeout: boundedDuration('5s', '1h').prefault('2m'),
        /**
         * Selected agents that are offline: `grace` waits `offlineGrace` from when each went
         * offline, then proceeds without it (an event and a metric say so); `block` waits for
         * ever; `skip` proceeds at once. Proceeding risks a failed validation when DNS still
         * points at the dead node (docs/configuration.md).
         */
        offlineAgents: z.enum(['grace', 'block', 'skip']).default('grace'),
        /** With `offlineAgents: grace`: how long an offline agent holds an order back. */
        offlineGrace: boundedDuration('1s', '30d').prefault('1h'),
      })
      .prefault({}),
    renewal: z
      .strictObject({
        /** How often the controller checks every certificate. */
        checkInterval: boundedDuration('1s', '1d', 'a shorter interval busy-loops the controller').prefault('1m'),
        /** Orders in flight at once across all certificates. */
        concurrency: z.int().min(1).max(64).default(4),
        /**
         * Jitter spread, as a fraction of the lifetime: each certificate renews up to this
         * much earlier than its renewal point, by a hash of its name and serial.
         */
        spread: z.number().min(0).max(0.5).default(0.05),
        /**
         * Consecutive failures of an issuer that say its CA is down (ACME_TRANSPORT, a 5xx
         * answer) before a certificate moves on to its next issuer (docs/renewal.md).
         */
        fallbackAfter: z.int().min(1).max(20).default(2),
      })
      .prefault({}),
    /**
     * The Prometheus endpoint (docs/metrics.md): plain HTTP `GET /metrics` on this address.
     * Absent: no endpoint.
     */
    metrics: z
      .strictObject({
        /** Where `/metrics` is served; keep it on a private or loopback interface. */
        listen: hostPort,
      })
      .optional(),
    /** Webhook notifications (docs/operations.md#notifications); none by default. */
    notifications: z
      .strictObject({
        /** renewal-failed is sent after this many consecutive failures of one certificate. */
        afterFailures: z.int().min(1).max(100).default(3),
        /** The same alert is sent at most once per window. */
        dedupWindow: boundedDuration('1m', '7d').prefault('4h'),
        /** How often certificates are checked for the last third of their life. */
        lifeCheckInterval: boundedDuration('10s', '1d').prefault('10m'),
        webhooks: z
          .array(
            z.strictObject({
              /** Names the target in logs (the URL may be a secret: write it as `${SLACK_WEBHOOK_URL}`). */
              name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and dashes'),
              url: z.url({ protocol: /^https?$/, error: 'expected an http(s):// URL' }),
              /** `json` (generic), `slack` (incoming webhook), `alertmanager` (POST to .../api/v2/alerts). */
              format: z.enum(['json', 'slack', 'alertmanager']).default('json'),
              /** Extra headers, e.g. `Authorization: Bearer ${TOKEN}`; values never logged. */
              headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/, 'a header name'), z.string()).default({}),
              /** Kinds sent here; all when absent. */
              kinds: z.array(z.enum(NOTIFICATION_KINDS)).min(1).optional(),
              timeout: boundedDuration('1s', '2m').prefault('10s'),
            }),
          )
          .default([]),
      })
      .prefault({})
      .superRefine((n, ctx) => {
        const seen = new Set<string>();
        n.webhooks.forEach((w, i) => {
          if (seen.has(w.name)) ctx.addIssue({ code: 'custom', path: ['webhooks', i, 'name'], message: `duplicate webhook name "${w.name}"` });
          seen.add(w.name);
        });
      }),
    /** Rate-limit budgets mirroring the CA's limits (docs/renewal.md). */
    budgets: BudgetConfigSchema.prefault({}),
    /** DNS-01 providers, zones and propagation checks (docs/dns01.md). */
    dns01: dns01ConfigSchema.prefault({}),
    /** At least one: a controller with nothing to issue is a mistake (often a bad indent), not a setting. */
    certificates: z.array(certificate, { error: (iss) => (iss.input === undefined ? 'required: the certificates to issue (at least one)' : undefined) }).min(1, 'at least one certificate is required (a controller with none has nothing to do)'),
  })
  .superRefine((cfg, ctx) => {
    if (cfg.api.peers.length > 0 && cfg.store.type === 'file') {
      // The file store is one machine's directory, locked by one controller.
      ctx.addIssue({ code: 'custom', path: ['api', 'peers'], message: 'several controllers need a shared store: the file store serves one controller (set store.type: vault)' });
    }
    if (cfg.acme === undefined && Object.keys(cfg.issuers).length === 0) {
      ctx.addIssue({ code: 'custom', path: ['acme'], message: 'required: the CA to issue from (an `acme` section, or `issuers`)' });
    }
    if (cfg.acme !== undefined && DEFAULT_ISSUER in cfg.issuers) {
      ctx.addIssue({ code: 'custom', path: ['issuers', DEFAULT_ISSUER], message: `"${DEFAULT_ISSUER}" is the \`acme\` section's issuer: name this one differently, or move it into \`acme\`` });
    }
    const known = [...(cfg.acme ? [DEFAULT_ISSUER] : []), ...Object.keys(cfg.issuers)];
    // One account and one budget state per directory (both keyed by its URL): two
    // issuers on one directory would share them behind the operator's back.
    const byUrl = new Map<string, string>();
    if (cfg.acme) byUrl.set(cfg.acme.directoryUrl, DEFAULT_ISSUER);
    for (const [name, iss] of Object.entries(cfg.issuers)) {
      const other = byUrl.get(iss.directoryUrl);
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['issuers', name, 'directoryUrl'], message: `the same directory as issuer "${other}" (one account per CA directory)` });
      byUrl.set(iss.directoryUrl, name);
    }
    cfg.certificates.forEach((c, i) => {
      const seen = new Set<string>();
      (c.issuers ?? []).forEach((name, j) => {
        if (!known.includes(name)) ctx.addIssue({ code: 'custom', path: ['certificates', i, 'issuers', j], message: `unknown issuer "${name}" (configured: ${known.join(', ') || 'none'})` });
        else if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['certificates', i, 'issuers', j], message: `issuer "${name}" is listed twice` });
        seen.add(name);
      });
    });
    cfg.certificates.forEach((c, i) => {
      if (c.dnsProvider !== undefined && !(c.dnsProvider in cfg.dns01.providers)) {
        ctx.addIssue({ code: 'custom', path: ['certificates', i, 'dnsProvider'], message: `unknown DNS provider "${c.dnsProvider}" (dns01.providers has: ${Object.keys(cfg.dns01.providers).join(', ') || 'none'})` });
      }
      if (c.challenge === 'dns-01' && c.dnsProvider === undefined && cfg.dns01.zones.length === 0 && Object.keys(cfg.dns01.providers).length !== 1) {
        ctx.addIssue({ code: 'custom', path: ['certificates', i, 'challenge'], message: 'dns-01 needs a provider: set dnsProvider, or dns01.zones' });
      }
    });
    const seen = new Map<string, number>();
    cfg.certificates.forEach((c, i) => {
      const prev = seen.get(c.name);
      if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['certificates', i, 'name'], message: `duplicate certificate name "${c.name}" (also certificates[${prev}])` });
      seen.set(c.name, i);
    });
  });

export type ControllerConfig = z.output<typeof controllerConfigSchema>;
export type CertificateConfig = ControllerConfig['certificates'][number];

/** One issuer as the runtime opens it: an ACME account at one CA, with its own budgets. */
export interface IssuerConfig {
  /** `default` for the `acme` section, else its key in `issuers`. */
  name: string;
  /** Where it is configured, for error messages: `acme` or `issuers.<name>`. */
  field: string;
  directoryUrl: string;
  email?: string | undefined;
  eab?: { keyId: string; hmacKeyFile?: string | undefined; hmacKeyEnv?: string | undefined } | undefined;
  caFile?: string | undefined;
  /** Its own `budgets`, else the top-level section. */
  budgets: ControllerConfig['budgets'];
}

/**
 * The address other controllers, agents and the CLI dial: `api.advertise`, else
 * `api.listen` with a wildcard host replaced by 127.0.0.1.
 */
export function advertisedAddress(cfg: Readonly<Pick<ControllerConfig, 'api'>>): string {
  if (cfg.api.advertise !== undefined) return cfg.api.advertise;
  const idx = cfg.api.listen.lastIndexOf(':');
  const host = cfg.api.listen.slice(0, idx).replace(/^\[|\]$/g, '');
  const port = cfg.api.listen.slice(idx + 1);
  if (host === '0.0.0.0' || host === '::') return `127.0.0.1:${port}`;
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** Every configured issuer in declared order: the `acme` section (`default`) first. */
export function issuersOf(cfg: Readonly<Pick<ControllerConfig, 'acme' | 'issuers' | 'budgets'>>): IssuerConfig[] {
  const out: IssuerConfig[] = [];
  if (cfg.acme) out.push({ ...cfg.acme, name: DEFAULT_ISSUER, field: 'acme', budgets: cfg.budgets });
  for (const [name, iss] of Object.entries(cfg.issuers)) out.push({ ...iss, name, field: `issuers.${name}`, budgets: iss.budgets ?? cfg.budgets });
  return out;
}

/** The issuers `cert` tries, in order: its own list, else every issuer ({@link issuersOf}). */
export function issuerChain(cfg: Readonly<Pick<ControllerConfig, 'acme' | 'issuers' | 'budgets'>>, cert: Pick<CertificateConfig, 'issuers'>): string[] {
  return cert.issuers ? [...cert.issuers] : issuersOf(cfg).map((i) => i.name);
}

/**
 * The store to open for `cfg`: its store section, with the file store's directory
 * (`<stateDir>/store` unless set). One rule for the daemon and the offline commands
 * (signing-key, import-certbot), so they always open the same store.
 */
export function storeConfigOf(cfg: Readonly<Pick<ControllerConfig, 'store' | 'stateDir'>>): StoreConfig {
  return cfg.store.type === 'file' ? { type: 'file', path: cfg.store.path ?? path.join(cfg.stateDir, 'store') } : cfg.store;
}

/** The store section with its file paths made absolute (and the file store's default path). */
function resolveStorePaths(store: ControllerConfig['store'], stateDir: string, abs: (p: string) => string): ControllerConfig['store'] {
  if (store.type === 'file') return { ...store, path: abs(store.path ?? path.join(stateDir, 'store')) };
  const auth =
    store.auth.method === 'approle'
      ? { ...store.auth, roleIdFile: abs(store.auth.roleIdFile), secretIdFile: abs(store.auth.secretIdFile) }
      : { ...store.auth, ...(store.auth.tokenFile === undefined ? {} : { tokenFile: abs(store.auth.tokenFile) }) };
  return { ...store, auth, ...(store.caFile === undefined ? {} : { caFile: abs(store.caFile) }) };
}

/** An issuer's file paths (caFile, eab.hmacKeyFile) made absolute. */
function resolveIssuerPaths<T extends { caFile?: string | undefined; eab?: { keyId: string; hmacKeyFile?: string | undefined; hmacKeyEnv?: string | undefined } | undefined }>(iss: T, abs: (p: string) => string): T {
  return {
    ...iss,
    ...(iss.caFile === undefined ? {} : { caFile: abs(iss.caFile) }),
    ...(iss.eab?.hmacKeyFile === undefined ? {} : { eab: { ...iss.eab, hmacKeyFile: abs(iss.eab.hmacKeyFile) } }),
  };
}

/** Resolves relative paths against the config file's directory and fills path defaults. */
function resolvePaths(cfg: ControllerConfig, file: string): ControllerConfig {
  const base = path.dirname(path.resolve(file));
  const abs = (p: string): string => path.resolve(base, p);
  const stateDir = abs(cfg.stateDir);
  return {
    ...cfg,
    stateDir,
    store: resolveStorePaths(cfg.store, stateDir, abs),
    ...(cfg.acme === undefined
      ? {}
      : {
          acme: {
            ...resolveIssuerPaths(cfg.acme, abs),
            ...(cfg.acme.staging?.caFile === undefined ? {} : { staging: { ...cfg.acme.staging, caFile: abs(cfg.acme.staging.caFile) } }),
          },
        }),
    issuers: Object.fromEntries(Object.entries(cfg.issuers).map(([name, iss]) => [name, resolveIssuerPaths(iss, abs)])),
    nats: {
      ...resolveNatsPaths(cfg.nats, abs),
      ...(cfg.nats.authority === 'controller' ? { serverConfigFile: abs(cfg.nats.serverConfigFile ?? path.join(stateDir, 'nats', 'auth.conf')) } : {}),
    },
    dns01: {
      ...cfg.dns01,
      providers: Object.fromEntries(
        Object.entries(cfg.dns01.providers).map(([name, p]) => [name, resolveProviderPaths(p, abs)]),
      ),
    },
  };
}

/** Loads and validates a controller config file. Throws CONFIG_INVALID / CONFIG_UNREADABLE. */
export function loadControllerConfig(file: string, env: NodeJS.ProcessEnv = process.env): Readonly<ControllerConfig> {
  return Object.freeze(resolvePaths(loadConfigFile(file, controllerConfigSchema, env), file));
}

/** Validates config text (for tests and `certfleet controller --check`). */
export function parseControllerConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}): Readonly<ControllerConfig> {
  return Object.freeze(resolvePaths(parseConfig(text, file, controllerConfigSchema, env), file));
}

/**
 * The environment secrets may be read from (DNS provider `secretEnv`). Only config
 * modules touch process.env; everything else gets it from here.
 */
export function configEnvironment(): NodeJS.ProcessEnv {
  return process.env;
}

let notifySettings: NotifySettings | undefined;

/**
 * systemd's notification settings (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), read
 * once and then removed from process.env so child processes do not inherit them.
 * Repeated calls return the first reading.
 */
export function notifyEnvironment(): NotifySettings {
  notifySettings ??= takeNotifySettings(process.env);
  return notifySettings;
}

/**
 * Configuration of the cloud DNS providers (cloudflare, route53, gcloud, acme-dns): their
 * zod schemas, which dns01/config.ts adds to the `dns01.providers` union, and the factory
 * that reads their credentials and builds them.
 *
 * Credentials are never in the YAML: each comes from a file or from an environment
 * variable named in the YAML (Route 53 from the AWS standard chain). They are read once,
 * at start-up (the AWS files again for each request, so rotation works), every problem is
 * reported at once with its field path, and no secret text appears in a message.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { duration, type ConfigProblem, z } from '../../../../shared/config/index.js';
import { CertfleetError, ErrorCode } from '../../../../shared/errors/index.js';
import type { Clock } from '../../../../shared/clock/index.js';
import type { DnsProvider } from '../provider.js';
import { CLOUDFLARE_API, CloudflareProvider } from './cloudflare.js';
import { ROUTE53_API, Route53Provider } from './route53.js';
import { resolveAwsCredentials } from './aws-credentials.js';
import { GCLOUD_DNS_API, GcloudProvider, parseServiceAccount } from './gcloud.js';
import { AcmeDnsProvider, parseAcmeDnsAccounts } from './acmedns.js';

const envName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name');
const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' });
const ttl = z.int().min(1).max(86400).default(60);

/** Exactly one of two fields (a file or an environment variable). */
function oneOf<T extends Record<string, unknown>>(a: keyof T & string, b: keyof T & string, required = true) {
  return (p: T, ctx: z.RefinementCtx): void => {
    const n = (p[a] === undefined ? 0 : 1) + (p[b] === undefined ? 0 : 1);
    if (n > 1 || (required && n === 0)) ctx.addIssue({ code: 'custom', path: [a], message: `set ${required ? 'exactly' : 'at most'} one of ${a} and ${b}` });
  };
}

export const cloudflareProviderSchema = z
  .strictObject({
    type: z.literal('cloudflare'),
    /** File holding the API token (Zone:Read, DNS:Edit). */
    apiTokenFile: z.string().min(1).optional(),
    /** Environment variable holding the API token. */
    apiTokenEnv: envName.optional(),
    /** The zone's id; default: found by name. */
    zoneId: z.string().min(1).optional(),
    baseUrl: httpUrl.default(CLOUDFLARE_API),
    ttl,
    timeout: duration.prefault('30s'),
  })
  .superRefine(oneOf('apiTokenFile', 'apiTokenEnv'));

export const route53ProviderSchema = z.strictObject({
  type: z.literal('route53'),
  /** AWS profile; when set the environment's keys are skipped. Default: AWS_PROFILE, else `default`. */
  profile: z.string().min(1).optional(),
  /** Default: AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials. */
  credentialsFile: z.string().min(1).optional(),
  /** Default: found with ListHostedZonesByName. */
  hostedZoneId: z.string().min(1).optional(),
  endpoint: httpUrl.default(ROUTE53_API),
  region: z.string().regex(/^[a-z0-9-]+$/, 'an AWS region, e.g. us-east-1').default('us-east-1'),
  ttl,
  timeout: duration.prefault('30s'),
  /** Pause between GetChange polls. */
  pollInterval: duration.prefault('5s'),
  /** How long a change may take to reach INSYNC. */
  changeTimeout: duration.prefault('2m'),
});

export const gcloudProviderSchema = z
  .strictObject({
    type: z.literal('gcloud'),
    /** Service-account key file (JSON). Default: GOOGLE_APPLICATION_CREDENTIALS. */
    serviceAccountFile: z.string().min(1).optional(),
    /** Environment variable holding the key JSON itself. */
    serviceAccountEnv: envName.optional(),
    /** Default: the key's project_id. */
    project: z.string().min(1).optional(),
    /** Default: found by DNS name. */
    managedZone: z.string().min(1).optional(),
    baseUrl: httpUrl.default(GCLOUD_DNS_API),
    ttl,
    timeout: duration.prefault('30s'),
    pollInterval: duration.prefault('2s'),
    changeTimeout: duration.prefault('2m'),
  })
  .superRefine(oneOf('serviceAccountFile', 'serviceAccountEnv', false));

export const acmeDnsProviderSchema = z
  .strictObject({
    type: z.literal('acme-dns'),
    /** The acme-dns server's API, e.g. https://auth.example.org. */
    server: httpUrl,
    /** JSON accounts file (acme-dns-client / lego format). */
    accountsFile: z.string().min(1).optional(),
    /** Environment variable holding the same JSON. */
    accountsEnv: envName.optional(),
    timeout: duration.prefault('30s'),
  })
  .superRefine(oneOf('accountsFile', 'accountsEnv'));

/** The provider schemas dns01/config.ts puts in its discriminated union. */
export const cloudProviderSchemas = [cloudflareProviderSchema, route53ProviderSchema, gcloudProviderSchema, acmeDnsProviderSchema] as const;

export type CloudProviderConfig =
  | z.output<typeof cloudflareProviderSchema>
  | z.output<typeof route53ProviderSchema>
  | z.output<typeof gcloudProviderSchema>
  | z.output<typeof acmeDnsProviderSchema>;

/** The fields holding file paths, for the config loader to resolve against the config file's directory. */
export const PROVIDER_PATH_FIELDS = ['secretFile', 'apiTokenFile', 'credentialsFile', 'serviceAccountFile', 'accountsFile'] as const;

/** `p` with every path field made absolute by `abs`. */
export function resolveProviderPaths<P extends { type: string }>(p: P, abs: (file: string) => string): P {
  const out: Record<string, unknown> = { ...p };
  for (const f of PROVIDER_PATH_FIELDS) if (typeof out[f] === 'string') out[f] = abs(out[f]);
  return out as P;
}

export interface CloudFactoryOptions {
  env: NodeJS.ProcessEnv;
  clock: Clock;
  log: Logger;
}

/**
 * Reads the secret named by a file field or an env field; pushes a problem (with the
 * field's path, never the content) and returns undefined when it cannot.
 */
function readSecret(where: string, file: { field: string; value: string | undefined }, env: { field: string; value: string | undefined }, vars: NodeJS.ProcessEnv, problems: ConfigProblem[]): { text: string; field: string } | undefined {
  if (file.value !== undefined) {
    try {
      return { text: fs.readFileSync(file.value, 'utf8').trim(), field: file.field };
    } catch (err) {
      problems.push({ path: `${where}.${file.field}`, message: `cannot read ${file.value}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` });
      return undefined;
    }
  }
  if (env.value !== undefined) {
    const text = vars[env.value];
    if (text === undefined || text.trim() === '') {
      problems.push({ path: `${where}.${env.field}`, message: `environment variable ${env.value} is not set` });
      return undefined;
    }
    return { text: text.trim(), field: env.field };
  }
  return undefined;
}

/**
 * Builds one cloud provider, reading its credentials; returns undefined and adds to
 * `problems` when a credential is missing or malformed.
 */
export function createCloudProvider(name: string, p: CloudProviderConfig, opts: CloudFactoryOptions, problems: ConfigProblem[]): DnsProvider | undefined {
  const where = `dns01.providers.${name}`;
  const common = { name, clock: opts.clock, log: opts.log, timeoutMs: p.timeout };
  switch (p.type) {
    case 'cloudflare': {
      const token = readSecret(where, { field: 'apiTokenFile', value: p.apiTokenFile }, { field: 'apiTokenEnv', value: p.apiTokenEnv }, opts.env, problems);
      if (!token) return undefined;
      if (!/^[\x21-\x7e]+$/.test(token.text)) {
        problems.push({ path: `${where}.${token.field}`, message: 'not an API token (one line of printable characters)' });
        return undefined;
      }
      return new CloudflareProvider({ ...common, apiToken: token.text, baseUrl: p.baseUrl, ttl: p.ttl, ...(p.zoneId === undefined ? {} : { zoneId: p.zoneId }) });
    }
    case 'route53': {
      const src = { ...(p.profile === undefined ? {} : { profile: p.profile }), ...(p.credentialsFile === undefined ? {} : { credentialsFile: p.credentialsFile }) };
      const first = resolveAwsCredentials(opts.env, src);
      if ('problem' in first) {
        problems.push({ path: `${where}.${p.credentialsFile !== undefined ? 'credentialsFile' : 'profile'}`, message: first.problem });
        return undefined;
      }
      opts.log.info({ provider: name, source: first.source }, 'aws credentials found');
      return new Route53Provider({
        ...common,
        credentials: () => {
          const r = resolveAwsCredentials(opts.env, src);
          if ('problem' in r) throw new CertfleetError(ErrorCode.DnsCredentialsRejected, `route53 provider "${name}": ${r.problem}`, { details: { provider: name } });
          return r.credentials;
        },
        endpoint: p.endpoint,
        region: p.region,
        ttl: p.ttl,
        pollIntervalMs: p.pollInterval,
        changeTimeoutMs: p.changeTimeout,
        ...(p.hostedZoneId === undefined ? {} : { hostedZoneId: p.hostedZoneId }),
      });
    }
    case 'gcloud': {
      const fallback = p.serviceAccountFile === undefined && p.serviceAccountEnv === undefined ? opts.env['GOOGLE_APPLICATION_CREDENTIALS'] : undefined;
      if (p.serviceAccountFile === undefined && p.serviceAccountEnv === undefined && (fallback === undefined || fallback === '')) {
        problems.push({ path: `${where}.serviceAccountFile`, message: 'set serviceAccountFile or serviceAccountEnv (GOOGLE_APPLICATION_CREDENTIALS is not set either)' });
        return undefined;
      }
      const key = readSecret(where, { field: 'serviceAccountFile', value: p.serviceAccountFile ?? fallback }, { field: 'serviceAccountEnv', value: p.serviceAccountEnv }, opts.env, problems);
      if (!key) return undefined;
      const sa = parseServiceAccount(key.text);
      if ('problem' in sa) {
        problems.push({ path: `${where}.${key.field}`, message: `not a service-account key: ${sa.problem}` });
        return undefined;
      }
      const project = p.project ?? sa.project_id;
      if (project === undefined || project === '') {
        problems.push({ path: `${where}.project`, message: 'required: the key file has no project_id' });
        return undefined;
      }
      return new GcloudProvider({
        ...common,
        serviceAccount: sa,
        project,
        baseUrl: p.baseUrl,
        ttl: p.ttl,
        pollIntervalMs: p.pollInterval,
        changeTimeoutMs: p.changeTimeout,
        ...(p.managedZone === undefined ? {} : { managedZone: p.managedZone }),
      });
    }
    case 'acme-dns': {
      const text = readSecret(where, { field: 'accountsFile', value: p.accountsFile }, { field: 'accountsEnv', value: p.accountsEnv }, opts.env, problems);
      if (!text) return undefined;
      const accounts = parseAcmeDnsAccounts(text.text);
      if ('problem' in accounts) {
        problems.push({ path: `${where}.${text.field}`, message: `not an acme-dns accounts file: ${accounts.problem}` });
        return undefined;
      }
      return new AcmeDnsProvider({ ...common, server: p.server, accounts });
    }
  }
}

/**
 * What importing certbot lineages means for certfleet, decided without I/O: for each
 * lineage, the certificate declaration for the controller's configuration, the version
 * to put in the store, a DNS provider to add, or the reason it is refused.
 *
 * Mapping (docs/migrating-from-certbot.md says the same for users):
 *
 * | certbot authenticator               | certfleet                                           |
 * |-------------------------------------|-----------------------------------------------------|
 * | webroot, standalone, nginx, apache  | `challenge: http-01`, answered by the agents         |
 * | dns-rfc2136                         | `challenge: dns-01` with an `rfc2136` provider made   |
 * |                                     | from its credentials (TSIG hmac-sha256/384/512 only)  |
 * | any other dns-* plugin              | refused: certfleet has no such provider; declare it   |
 * |                                     | by hand with an `exec` provider (docs/dns01.md)       |
 * | manual                              | refused: nothing to automate                          |
 *
 * Refused rather than mapped to an `exec` provider with a placeholder command: such a
 * declaration passes `--check` and fails only at the first renewal, months later.
 *
 * The declaration's names are the certificate's SANs and its key type the type of the
 * key it has now, so the scheduler sees no "configuration changed" and renews the
 * imported version at its renewal point like an issued one.
 */
import { validateBundle } from '../../shared/bundle/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import type { KeyType, VersionMeta } from '../../shared/model/index.js';
import { keyTypeOf, parseCertificate } from '../../shared/pki/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import type { VersionInput } from '../store/index.js';
import type { CertbotLineage } from './read.js';
import { renewalKeyType } from './renewal.js';
import { sameNameSet } from '../names/index.js';

/** Authenticators whose challenge certfleet's agents answer over HTTP-01. */
export const HTTP01_AUTHENTICATORS = ['webroot', 'standalone', 'nginx', 'apache'] as const;

/** TSIG algorithms as certbot spells them (upper or lower case) mapped to certfleet's. */
const TSIG_FROM_CERTBOT: Record<string, 'hmac-sha256' | 'hmac-sha384' | 'hmac-sha512'> = {
  'hmac-sha256': 'hmac-sha256',
  'hmac-sha384': 'hmac-sha384',
  'hmac-sha512': 'hmac-sha512',
};

/** A certificate entry of the controller configuration, as the importer writes it. */
export interface Declaration {
  name: string;
  names: string[];
  keyType: KeyType;
  agents: string;
  challenge: 'http-01' | 'dns-01';
  dnsProvider?: string;
}

/** An rfc2136 provider made from a certbot credentials file. */
export interface PlannedProvider {
  name: string;
  server: string;
  keyName: string;
  algorithm: 'hmac-sha256' | 'hmac-sha384' | 'hmac-sha512';
  /** The base64 TSIG secret; written to a 0600 file, never into the YAML. */
  secret: string;
  /** The credentials file it came from, for the comment in the YAML. */
  source: string;
}

export interface PlannedImport {
  lineage: string;
  renewalFile: string;
  authenticator: string;
  server: string;
  declaration: Declaration;
  /** The version material and meta (everything but the number the store assigns). */
  input: VersionInput;
  /** Things the operator should know (key type certbot would switch to, ...). */
  notes: string[];
}

export interface Refusal {
  lineage: string;
  reason: string;
}

export interface Plan {
  imports: PlannedImport[];
  providers: PlannedProvider[];
  refusals: Refusal[];
}

/** A certificate already declared in the controller's configuration. */
export interface ExistingDeclaration {
  name: string;
  names: string[];
}

/** An rfc2136 provider already in the controller's configuration (for reuse and clashes). */
export interface ExistingProvider {
  type: string;
  server?: string;
  keyName?: string;
  algorithm?: string;
}

export interface PlanOptions {
  /** Lineages to import; empty or absent: all. Unknown names are refusals. */
  only?: readonly string[];
  /** lineage -> certificate name, overriding {@link certNameFor}. */
  renames?: Readonly<Record<string, string>>;
  /** Label selector of the agents that serve the imported certificates. */
  agents: string;
  existingCertificates: readonly ExistingDeclaration[];
  existingProviders: Readonly<Record<string, ExistingProvider>>;
  /** Replace a declaration of the same name with other names. */
  force: boolean;
  /** Milliseconds since the epoch. */
  now: number;
}

/**
 * A certificate name for a certbot lineage: lower case, every character outside
 * `[a-z0-9-]` (certbot's dots) turned into `-`, runs of `-` collapsed. Undefined when
 * nothing valid remains or it is longer than 63 characters (then `--rename` is needed).
 */
export function certNameFor(lineage: string): string | undefined {
  const name = lineage
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^-+|-+$/g, '');
  return CERT_NAME_PATTERN.test(name) ? name : undefined;
}

/** Decides every lineage (module comment). Pure. */
export function planImport(lineages: readonly CertbotLineage[], opts: PlanOptions): Plan {
  const plan: Plan = { imports: [], providers: [], refusals: [] };
  const only = new Set(opts.only ?? []);
  for (const wanted of only) {
    if (!lineages.some((l) => l.lineage === wanted)) plan.refusals.push({ lineage: wanted, reason: 'no such lineage (no renewal/<lineage>.conf)' });
  }
  const taken = new Map<string, string>();
  for (const l of lineages) {
    if (only.size > 0 && !only.has(l.lineage)) continue;
    const refuse = (reason: string): void => {
      plan.refusals.push({ lineage: l.lineage, reason });
    };
    if (l.problem !== undefined) {
      refuse(l.problem);
      continue;
    }
    const name = opts.renames?.[l.lineage] ?? certNameFor(l.lineage);
    if (name === undefined || !CERT_NAME_PATTERN.test(name)) {
      refuse(`no valid certificate name (lower-case letters, digits and "-", at most 63): give one with --rename ${l.lineage}=NAME`);
      continue;
    }
    const clash = taken.get(name);
    if (clash !== undefined) {
      refuse(`its certificate name "${name}" is also lineage ${clash}'s: give another with --rename ${l.lineage}=NAME`);
      continue;
    }
    taken.set(name, l.lineage);

    const authenticator = l.conf.params['authenticator'] ?? '';
    const notes: string[] = [];
    let challenge: Declaration['challenge'];
    let dnsProvider: string | undefined;
    if ((HTTP01_AUTHENTICATORS as readonly string[]).includes(authenticator)) {
      challenge = 'http-01';
    } else if (authenticator === 'dns-rfc2136') {
      const provider = rfc2136Provider(l, opts.existingProviders, plan.providers);
      if (typeof provider === 'string') {
        refuse(provider);
        continue;
      }
      if (!plan.providers.some((p) => p.name === provider.name) && !(provider.name in opts.existingProviders)) plan.providers.push(provider);
      challenge = 'dns-01';
      dnsProvider = provider.name;
    } else if (authenticator === 'manual') {
      refuse('authenticator manual: certbot asked a person (or manual hooks) to answer the challenge; certfleet cannot take that over. Declare it by hand (challenge http-01 through agents, or dns-01 with a provider) and let certfleet issue it');
      continue;
    } else if (authenticator.startsWith('dns-')) {
      refuse(`authenticator ${authenticator}: certfleet has no provider for this DNS service (it has rfc2136 and exec). Declare it by hand with an exec provider that calls your DNS API (docs/dns01.md), or leave it out with --lineage`);
      continue;
    } else {
      refuse(authenticator === '' ? 'the renewal configuration names no authenticator' : `authenticator ${authenticator} is not one certfleet knows how to replace`);
      continue;
    }

    let info;
    try {
      info = parseCertificate(l.certPem);
    } catch {
      refuse(`${l.files.cert} is not a certificate certfleet can read`);
      continue;
    }
    const keyType = keyTypeOf(l.keyPem);
    if (keyType === null) {
      refuse('its key type is not one certfleet issues (ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096)');
      continue;
    }
    const next = renewalKeyType(l.conf.params);
    if (next.keyType !== keyType) {
      notes.push(`certbot would renew it with ${next.keyType}; the declaration keeps the current key's ${keyType} so nothing is re-issued now (change keyType to switch at the next issuance)`);
    }
    // certbot keeps --deploy-hook as renew_hook; the agent runs reload hooks instead.
    for (const [param, what] of [['pre_hook', 'pre-hook'], ['post_hook', 'post-hook'], ['renew_hook', 'deploy hook']] as const) {
      const hook = l.conf.params[param];
      if (hook !== undefined && hook !== '') notes.push(`certbot ran the ${what} "${hook}": make it the agent's reload hook (hooks.reload, mode: per-certificate for certbot's once-per-certificate runs) on the nodes that serve it`);
    }
    const names = info.names;
    const badName = names.find((n) => n.startsWith('*.') && challenge === 'http-01');
    if (names.length === 0 || badName !== undefined) {
      refuse(names.length === 0 ? 'the certificate has no DNS names' : `${badName ?? ''} is a wildcard, which http-01 cannot validate`);
      continue;
    }
    const meta: Omit<VersionMeta, 'version'> = {
      name,
      serial: info.serial,
      fingerprint: info.fingerprint,
      names,
      notBefore: info.notBefore.toISOString(),
      notAfter: info.notAfter.toISOString(),
      // When the CA issued it, as far as the certificate says: certfleet did not.
      issuedAt: info.notBefore.toISOString(),
      keyType,
    };
    try {
      // The checks an agent makes before installing: key matches, names, dates, chain order.
      validateBundle({ meta: { ...meta, version: 1 }, certPem: l.certPem, chainPem: l.chainPem, keyPem: l.keyPem }, { now: opts.now });
    } catch (err) {
      refuse(isCertfleetError(err) ? `${err.message.replace(/^[^:]*: /, '')} (${err.code})` : String(err));
      continue;
    }

    const existing = opts.existingCertificates.find((c) => c.name === name);
    if (existing !== undefined && !sameNameSet(existing.names, names) && !opts.force) {
      refuse(`the controller configuration already declares "${name}" with other names (${existing.names.join(', ')}); --force replaces that declaration`);
      continue;
    }
    plan.imports.push({
      lineage: l.lineage,
      renewalFile: l.renewalFile,
      authenticator,
      server: l.conf.params['server'] ?? '',
      declaration: { name, names, keyType, agents: opts.agents, challenge, ...(dnsProvider === undefined ? {} : { dnsProvider }) },
      input: { certPem: l.certPem, chainPem: l.chainPem, keyPem: l.keyPem, meta },
      notes,
    });
  }
  return plan;
}

/** The provider for a dns-rfc2136 lineage, or why there can be none. */
function rfc2136Provider(l: CertbotLineage, existing: Readonly<Record<string, ExistingProvider>>, planned: readonly PlannedProvider[]): PlannedProvider | string {
  const v = l.credentials?.values ?? {};
  const file = l.credentials?.file ?? '';
  const host = v['dns_rfc2136_server'];
  const keyName = v['dns_rfc2136_name'];
  const secret = v['dns_rfc2136_secret'];
  if (host === undefined || keyName === undefined || secret === undefined) {
    return `dns-rfc2136 credentials ${file} lack dns_rfc2136_server, dns_rfc2136_name or dns_rfc2136_secret`;
  }
  const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
  const ipv6 = host.includes(':') && /^[0-9a-fA-F:.]+$/.test(host);
  if (!ipv4 && !ipv6) return `dns_rfc2136_server ${host} in ${file} is a host name: certfleet needs the DNS server's IP address (write it there, or declare the certificate by hand)`;
  const port = v['dns_rfc2136_port'] ?? '53';
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return `dns_rfc2136_port ${port} in ${file} is not a port`;
  // certbot's default is HMAC-MD5; certfleet signs with SHA-2 only.
  const certbotAlgorithm = (v['dns_rfc2136_algorithm'] ?? 'HMAC-MD5').toLowerCase();
  const algorithm = TSIG_FROM_CERTBOT[certbotAlgorithm];
  if (algorithm === undefined) {
    return `TSIG algorithm ${certbotAlgorithm.toUpperCase()}${v['dns_rfc2136_algorithm'] === undefined ? ' (certbot\'s default)' : ''} in ${file}: certfleet signs with hmac-sha256, hmac-sha384 or hmac-sha512 only. Make a new key (tsig-keygen -a hmac-sha256), allow it on the zone, put it in the credentials file, and import again`;
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(secret) || Buffer.from(secret, 'base64').length < 16) return `dns_rfc2136_secret in ${file} is not a base64 TSIG secret of at least 16 bytes`;
  const server = ipv6 ? `[${host}]:${port}` : `${host}:${port}`;
  const zoneKey = keyName.toLowerCase().replace(/\.$/, '');
  const base = `certbot-${certNameFor(zoneKey) ?? 'rfc2136'}`.slice(0, 63).replace(/-+$/, '');
  const same = (p: { type?: string; server?: string; keyName?: string; algorithm?: string }): boolean =>
    (p.type ?? 'rfc2136') === 'rfc2136' && p.server === server && (p.keyName ?? '').toLowerCase().replace(/\.$/, '') === zoneKey && (p.algorithm ?? 'hmac-sha256') === algorithm;
  // A provider for the same server and key (from an earlier run, or another lineage) is reused.
  for (const [name, p] of Object.entries(existing)) if (same(p)) return { name, server, keyName: zoneKey, algorithm, secret, source: file };
  for (const p of planned) if (same({ ...p, type: 'rfc2136' })) return p;
  let name = base;
  for (let i = 2; name in existing || planned.some((p) => p.name === name); i++) name = `${base.slice(0, 60)}-${i}`;
  return { name, server, keyName: zoneKey, algorithm, secret, source: file };
}


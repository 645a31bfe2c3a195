/**
 * The `acme-dns` provider: records through an acme-dns server (joohoi/acme-dns), the
 * small DNS server many teams run only for ACME challenges.
 *
 * Setup, once per name (what acme-dns-client and lego do): register an account on the
 * server (`POST /register` gives username, password, fulldomain, subdomain), keep it in
 * the accounts file under the name it is for, and create
 *
 *     _acme-challenge.<name>.  CNAME  <fulldomain>.
 *
 * certfleet follows that CNAME (CNAME delegation), so the record name the solver hands
 * this provider is the account's `fulldomain`; the account is found by it (or by
 * `_acme-challenge.<name>` when CNAME following is off).
 *
 * present: `POST <server>/update {subdomain, txt}` with X-Api-User / X-Api-Key.
 * cleanup: nothing to call — acme-dns has no delete. It keeps the two most recent values
 * per account and each update pushes the oldest out. So at most two challenges per
 * account may be in flight at once (a name and its wildcard); a third `present` while two
 * of this process's values are still in use fails (retryable) instead of silently pushing
 * out a value the CA is about to check.
 *
 * Contract-tested against test/harness/fake-acmedns.ts, not against a live acme-dns.
 */
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../../../../shared/errors/index.js';
import type { Clock } from '../../../../shared/clock/index.js';
import type { DnsProvider } from '../provider.js';
import { HttpClient, answerError, bare } from './http.js';

/** One registration, as acme-dns-client and lego store it. */
export interface AcmeDnsAccount {
  username: string;
  password: string;
  fulldomain: string;
  subdomain: string;
}

export interface AcmeDnsOptions {
  name: string;
  /** e.g. https://auth.example.org */
  server: string;
  /** Name (the certificate's, e.g. `example.com`) -> account. */
  accounts: ReadonlyMap<string, AcmeDnsAccount>;
  /** Per request. Default 30 000 ms. */
  timeoutMs?: number;
  clock: Clock;
  log: Logger;
}

/**
 * Parses an accounts file: `{ "<name>": {username, password, fulldomain, subdomain, ...} }`
 * (acme-dns-client's clientstorage.json, lego's ACME_DNS_STORAGE_PATH). Returns the
 * accounts or what is wrong (never a password).
 */
export function parseAcmeDnsAccounts(text: string): Map<string, AcmeDnsAccount> | { problem: string } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { problem: 'not JSON' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { problem: 'expected an object from name to account' };
  const out = new Map<string, AcmeDnsAccount>();
  for (const [name, acct] of Object.entries(v as Record<string, unknown>)) {
    const a = acct as Record<string, unknown> | null;
    for (const f of ['username', 'password', 'fulldomain', 'subdomain'] as const) {
      if (typeof a?.[f] !== 'string' || a[f] === '') return { problem: `account "${name}": ${f} is missing` };
    }
    out.set(bare(name.replace(/^\*\./, '')), { username: a!['username'] as string, password: a!['password'] as string, fulldomain: a!['fulldomain'] as string, subdomain: a!['subdomain'] as string });
  }
  if (out.size === 0) return { problem: 'no accounts' };
  return out;
}

/** acme-dns keeps this many TXT values per account. */
export const ACMEDNS_SLOTS = 2;

/** An acme-dns server. */
export class AcmeDnsProvider implements DnsProvider {
  readonly type = 'acme-dns';
  readonly name: string;
  private readonly http: HttpClient;
  private readonly server: string;
  /** Values this process wrote per account and has not cleaned up yet. */
  private readonly inUse = new Map<string, Set<string>>();

  constructor(private readonly opts: AcmeDnsOptions) {
    this.name = opts.name;
    this.server = opts.server.replace(/\/$/, '');
    this.http = new HttpClient({ describe: this.describe(), provider: opts.name, clock: opts.clock, timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  /** Asks the server's /health (acme-dns cannot check credentials without changing a record). */
  async check(): Promise<void> {
    const answer = await this.http.send({ method: 'GET', url: `${this.server}/health` }, 'check the server');
    if (answer.status !== 200) throw answerError(this.describe(), this.name, 'check the server', answer, answer.text.slice(0, 200));
  }

  async present(fqdn: string, value: string): Promise<void> {
    const [key, acct] = this.accountFor(fqdn);
    const values = this.inUse.get(key) ?? new Set<string>();
    if (!values.has(value) && values.size >= ACMEDNS_SLOTS) {
      throw new CertfleetError(
        ErrorCode.DnsProviderFailed,
        `${this.describe()}: ${fqdn} already has ${values.size} values in use and acme-dns keeps only ${ACMEDNS_SLOTS}: a third would push one out before the CA checks it`,
        { retryable: true, details: { provider: this.name, fqdn } },
      );
    }
    const what = `update TXT ${fqdn}`;
    const answer = await this.http.send(
      {
        method: 'POST',
        url: `${this.server}/update`,
        headers: { 'content-type': 'application/json', 'x-api-user': acct.username, 'x-api-key': acct.password },
        body: JSON.stringify({ subdomain: acct.subdomain, txt: value }),
      },
      what,
    );
    if (answer.status !== 200) {
      let detail = answer.text.slice(0, 200);
      try {
        detail = (JSON.parse(answer.text) as { error?: string }).error ?? detail;
      } catch {
        // not JSON: keep the text
      }
      throw answerError(this.describe(), this.name, what, answer, detail, answer.status === 401 || detail === 'forbidden');
    }
    values.add(value);
    this.inUse.set(key, values);
    this.opts.log.info({ provider: this.name, fqdn }, 'dns record added');
  }

  /** Nothing to delete on the server (see above); frees the value's slot. */
  cleanup(fqdn: string, value: string): Promise<void> {
    const key = this.findAccount(fqdn)?.[0];
    if (key !== undefined) this.inUse.get(key)?.delete(value);
    return Promise.resolve();
  }

  private findAccount(fqdn: string): [string, AcmeDnsAccount] | undefined {
    const name = bare(fqdn);
    for (const [key, acct] of this.opts.accounts) {
      if (bare(acct.fulldomain) === name || `_acme-challenge.${key}` === name) return [key, acct];
    }
    return undefined;
  }

  private accountFor(fqdn: string): [string, AcmeDnsAccount] {
    const found = this.findAccount(fqdn);
    if (found) return found;
    const known = [...this.opts.accounts].map(([k, a]) => `_acme-challenge.${k} -> ${a.fulldomain}`);
    throw new CertfleetError(
      ErrorCode.DnsProviderFailed,
      `${this.describe()}: no account for ${bare(fqdn)}: register one and create the CNAME _acme-challenge.<name> -> its fulldomain (configured: ${known.join(', ')})`,
      { details: { provider: this.name, fqdn } },
    );
  }

  private describe(): string {
    return `acme-dns provider "${this.name}" (${this.server})`;
  }
}

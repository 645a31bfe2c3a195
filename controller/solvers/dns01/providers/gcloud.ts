/**
 * The `gcloud` provider: TXT records in Google Cloud DNS through its REST API (v1), with
 * a service account.
 *
 * Authentication (OAuth 2.0 for service accounts, RFC 7523): a JWT signed RS256 with the
 * key from the service-account JSON (`iss` = client_email, `aud` = token_uri, scope
 * ndev.clouddns.readwrite, one hour) is exchanged at the JSON's `token_uri` for an access
 * token, kept until a minute before it expires (on the clock), and sent as
 * `Authorization: Bearer`.
 *
 * Cloud DNS keeps all values of a name in one record set; a change names the set to
 * delete exactly as it is and the set to add. Changes to one name are queued one after
 * the other in this process, and each change is polled (on the clock) until its status is
 * `done`.
 *
 * Zone: `managedZone`, else `managedZones?dnsName=<candidate>.` for the record name and
 * each parent, following nextPageToken; the first public zone wins.
 *
 * Errors are `{error:{code,message,errors:[{reason}]}}`: 401/403 are
 * DNS_CREDENTIALS_REJECTED, as is a token endpoint's `invalid_grant`/`invalid_client`;
 * 429 (rateLimitExceeded) is retried with backoff on the clock.
 *
 * Contract-tested against test/harness/fake-gcloud.ts, not against the live service.
 */
import crypto from 'node:crypto';
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../../../../shared/errors/index.js';
import { deadline, type Clock } from '../../../../shared/clock/index.js';
import type { DnsProvider } from '../provider.js';
import { HttpClient, answerError, bare, parseJson, zoneCandidates, KeyedQueue, type HttpAnswer } from './http.js';
import { ZoneCache } from '../zones.js';

/** The fields of a service-account key file certfleet uses. */
export interface ServiceAccountKey {
  client_email: string;
  private_key: string;
  private_key_id?: string;
  project_id?: string;
  token_uri: string;
}

export interface GcloudOptions {
  name: string;
  serviceAccount: ServiceAccountKey;
  /** Default: the key's project_id. */
  project: string;
  managedZone?: string;
  /** Default https://dns.googleapis.com/dns/v1. */
  baseUrl?: string;
  /** Seconds. Default 60. */
  ttl?: number;
  /** Per request. Default 30 000 ms. */
  timeoutMs?: number;
  /** Pause between change-status polls. Default 2000 ms. */
  pollIntervalMs?: number;
  /** How long a change may stay pending. Default 120 000 ms. */
  changeTimeoutMs?: number;
  clock: Clock;
  log: Logger;
}

export const GCLOUD_DNS_API = 'https://dns.googleapis.com/dns/v1';
export const GCLOUD_DNS_SCOPE = 'https://www.googleapis.com/auth/ndev.clouddns.readwrite';

/**
 * Parses a service-account key file; returns the key or what is wrong with it (never a
 * piece of the key).
 */
export function parseServiceAccount(text: string): ServiceAccountKey | { problem: string } {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { problem: 'not JSON' };
  }
  if (v['type'] !== undefined && v['type'] !== 'service_account') return { problem: `type is ${JSON.stringify(v['type'])}, expected "service_account"` };
  for (const f of ['client_email', 'private_key', 'token_uri'] as const) {
    if (typeof v[f] !== 'string' || v[f] === '') return { problem: `${f} is missing` };
  }
  try {
    crypto.createPrivateKey(v['private_key'] as string);
  } catch {
    return { problem: 'private_key is not a PEM private key' };
  }
  return v as unknown as ServiceAccountKey;
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

interface GError {
  error?: { code?: number; message?: string; status?: string; errors?: Array<{ reason?: string; message?: string }> } | string;
  error_description?: string;
}

interface ManagedZone {
  name: string;
  dnsName: string;
  visibility?: string;
}

interface RRSet {
  name: string;
  type: string;
  ttl: number;
  rrdatas: string[];
}

/** Google Cloud DNS through its REST API. */
export class GcloudProvider implements DnsProvider {
  readonly type = 'gcloud';
  readonly name: string;
  private readonly http: HttpClient;
  private readonly base: string;
  private readonly zones = new ZoneCache<string>();
  private readonly queue = new KeyedQueue();
  private token: { value: string; until: number } | undefined;

  constructor(private readonly opts: GcloudOptions) {
    this.name = opts.name;
    this.base = (opts.baseUrl ?? GCLOUD_DNS_API).replace(/\/$/, '');
    this.http = new HttpClient({ describe: this.describe(), provider: opts.name, clock: opts.clock, timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  /** Gets an access token and lists one zone of the project. */
  async check(): Promise<void> {
    if (this.opts.managedZone !== undefined) await this.call('GET', `/managedZones/${encodeURIComponent(this.opts.managedZone)}`, 'check credentials');
    else await this.call('GET', '/managedZones?maxResults=1', 'check credentials');
  }

  present(fqdn: string, value: string): Promise<void> {
    return this.queue.run(bare(fqdn), async () => {
      const zone = await this.zoneOf(fqdn);
      const current = await this.recordSet(zone, fqdn);
      const values = current?.rrdatas.map(unquote) ?? [];
      if (values.includes(value)) return;
      const addition: RRSet = { name: `${bare(fqdn)}.`, type: 'TXT', ttl: current?.ttl ?? this.opts.ttl ?? 60, rrdatas: [...values, value].map((v) => `"${v}"`) };
      await this.change(zone, { additions: [addition], ...(current ? { deletions: [current] } : {}) }, `add TXT ${fqdn}`);
      this.opts.log.info({ provider: this.name, fqdn, zone }, 'dns record added');
    });
  }

  cleanup(fqdn: string, value: string): Promise<void> {
    return this.queue.run(bare(fqdn), async () => {
      const zone = await this.zoneOf(fqdn);
      const current = await this.recordSet(zone, fqdn);
      if (!current?.rrdatas.map(unquote).includes(value)) return;
      const rest = current.rrdatas.filter((d) => unquote(d) !== value);
      await this.change(zone, { deletions: [current], ...(rest.length > 0 ? { additions: [{ ...current, rrdatas: rest }] } : {}) }, `delete TXT ${fqdn}`);
      this.opts.log.info({ provider: this.name, fqdn, zone }, 'dns record removed');
    });
  }

  private async change(zone: string, change: { additions?: RRSet[]; deletions?: RRSet[] }, what: string): Promise<void> {
    const path = `/managedZones/${encodeURIComponent(zone)}/changes`;
    let status = (await this.call<{ id: string; status: string }>('POST', path, what, { kind: 'dns#change', ...change })).body;
    const limit = this.opts.changeTimeoutMs ?? 120_000;
    const until = deadline(this.opts.clock, limit);
    while (status.status !== 'done') {
      if (until.expired()) {
        throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: change ${status.id} still ${status.status} after ${limit} ms`, {
          retryable: true,
          details: { provider: this.name, changeId: status.id, status: status.status },
        });
      }
      await until.sleep(this.opts.pollIntervalMs ?? 2000);
      status = (await this.call<{ id: string; status: string }>('GET', `${path}/${encodeURIComponent(status.id)}`, `wait for change ${status.id}`)).body;
    }
  }

  private async recordSet(zone: string, fqdn: string): Promise<RRSet | undefined> {
    const { body } = await this.call<{ rrsets?: RRSet[] }>('GET', `/managedZones/${encodeURIComponent(zone)}/rrsets?name=${encodeURIComponent(`${bare(fqdn)}.`)}&type=TXT`, `read TXT ${fqdn}`);
    return (body.rrsets ?? []).find((s) => bare(s.name) === bare(fqdn) && s.type === 'TXT');
  }

  private zoneOf(fqdn: string): Promise<string> {
    if (this.opts.managedZone !== undefined) return Promise.resolve(this.opts.managedZone);
    return this.zones.get(bare(fqdn), (key) => this.findZone(key));
  }

  private async findZone(fqdn: string): Promise<string> {
    for (const candidate of zoneCandidates(fqdn)) {
      let pageToken: string | undefined;
      for (let page = 0; page < 100; page++) {
        const { body } = await this.call<{ managedZones?: ManagedZone[]; nextPageToken?: string }>(
          'GET',
          `/managedZones?dnsName=${encodeURIComponent(`${candidate}.`)}${pageToken === undefined ? '' : `&pageToken=${encodeURIComponent(pageToken)}`}`,
          `find the zone of ${fqdn}`,
        );
        const zone = (body.managedZones ?? []).find((z) => bare(z.dnsName) === candidate && (z.visibility ?? 'public') === 'public');
        if (zone) return zone.name;
        pageToken = body.nextPageToken;
        if (pageToken === undefined || pageToken === '') break;
      }
    }
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: no public managed zone in project ${this.opts.project} contains ${fqdn} (set managedZone, or allow dns.managedZones.list)`, {
      details: { provider: this.name, fqdn, project: this.opts.project },
    });
  }

  /** A request to `<base>/projects/<project><path>` with the access token; non-2xx answers become errors. */
  private async call<T>(method: 'GET' | 'POST', path: string, what: string, body?: unknown): Promise<{ body: T; answer: HttpAnswer }> {
    const token = await this.accessToken();
    const answer = await this.http.send(
      {
        method,
        url: `${this.base}/projects/${encodeURIComponent(this.opts.project)}${path}`,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      },
      what,
    );
    if (answer.status === 401) this.token = undefined; // revoked or expired early: fetch a new one next time
    if (answer.status < 200 || answer.status >= 300) throw this.failure(answer, what);
    return { body: parseJson<T>(this.describe(), this.name, what, answer), answer };
  }

  /** A cached access token, or a new one from token_uri. */
  private async accessToken(): Promise<string> {
    const now = this.opts.clock.now();
    if (this.token && now < this.token.until) return this.token.value;
    const sa = this.opts.serviceAccount;
    const iat = Math.floor(now / 1000);
    const header = { alg: 'RS256', typ: 'JWT', ...(sa.private_key_id ? { kid: sa.private_key_id } : {}) };
    const claims = { iss: sa.client_email, scope: GCLOUD_DNS_SCOPE, aud: sa.token_uri, iat, exp: iat + 3600 };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = crypto.sign('RSA-SHA256', Buffer.from(input), sa.private_key);
    const what = 'get an access token';
    const answer = await this.http.send(
      {
        method: 'POST',
        url: sa.token_uri,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: `${input}.${b64url(signature)}` }).toString(),
      },
      what,
    );
    if (answer.status !== 200) {
      const e = jsonOr(answer.text);
      const code = typeof e.error === 'string' ? e.error : '';
      throw answerError(this.describe(), this.name, what, answer, [code, e.error_description ?? ''].filter((s) => s !== '').join(': '), answer.status === 400 && ['invalid_grant', 'invalid_client', 'unauthorized_client'].includes(code));
    }
    const got = parseJson<{ access_token?: string; expires_in?: number }>(this.describe(), this.name, what, answer);
    if (typeof got.access_token !== 'string' || got.access_token === '') {
      throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: the token endpoint sent no access_token`, { retryable: true, details: { provider: this.name } });
    }
    this.token = { value: got.access_token, until: now + Math.max(0, (got.expires_in ?? 3600) - 60) * 1000 };
    return got.access_token;
  }

  private failure(answer: HttpAnswer, what: string): CertfleetError {
    let detail = answer.text.slice(0, 200);
    const e = jsonOr(answer.text);
    if (typeof e.error === 'object') {
      const reasons = (e.error.errors ?? []).map((x) => x.reason).filter((r): r is string => typeof r === 'string');
      detail = `${e.error.message ?? ''}${reasons.length > 0 ? ` (${reasons.join(', ')})` : ''}`;
    }
    return answerError(this.describe(), this.name, what, answer, detail);
  }

  private describe(): string {
    return `gcloud provider "${this.name}"`;
  }
}

/** An error body as JSON, or nothing when it is not JSON (a proxy's HTML page). */
function jsonOr(text: string): GError {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v) : {};
  } catch {
    return {};
  }
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s;
}

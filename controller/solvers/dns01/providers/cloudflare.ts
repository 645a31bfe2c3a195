/**
 * The `cloudflare` provider: TXT records through Cloudflare's v4 REST API with an API
 * token (Authorization: Bearer). The token needs Zone:Read and DNS:Edit on the zones it
 * writes.
 *
 * - Zone: `zoneId` when configured, else discovered: `GET /zones?name=<candidate>` for the
 *   record name and each parent, longest first, following `result_info.total_pages`;
 *   the first `active` zone wins (a zone that moved away keeps its old entry).
 * - present: `POST /zones/<id>/dns_records` (one record per value, so other values at
 *   the name stay); Cloudflare's "identical record already exists" (81058) is success.
 * - cleanup: `GET /zones/<id>/dns_records?type=TXT&name=<fqdn>` (all pages), then
 *   `DELETE` of the record holding exactly this value; none there is success.
 * - Errors: the body `{success:false, errors:[{code,message}]}` is quoted in the message;
 *   401/403 (and error codes 9109, 10000) are DNS_CREDENTIALS_REJECTED; 429 is retried
 *   after Retry-After on the clock (see http.ts).
 *
 * Contract-tested against test/harness/fake-cloudflare.ts, not against the live service.
 */
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../../../../shared/errors/index.js';
import type { Clock } from '../../../../shared/clock/index.js';
import type { DnsProvider } from '../provider.js';
import { HttpClient, answerError, bare, parseJson, zoneCandidates, type HttpAnswer } from './http.js';
import { ZoneCache } from '../zones.js';

export interface CloudflareOptions {
  name: string;
  /** The API token (read by config from a file or the environment). */
  apiToken: string;
  /** Skip discovery: every record goes to this zone. */
  zoneId?: string;
  /** Default https://api.cloudflare.com/client/v4. */
  baseUrl?: string;
  /** Seconds; 1 means Cloudflare's "automatic". Default 60. */
  ttl?: number;
  /** Per request. Default 30 000 ms. */
  timeoutMs?: number;
  clock: Clock;
  log: Logger;
}

export const CLOUDFLARE_API = 'https://api.cloudflare.com/client/v4';

/** Error codes Cloudflare uses for a token it does not accept. */
const AUTH_CODES = new Set([9103, 9106, 9109, 10000, 10001]);
/** "An identical record already exists." */
const DUPLICATE_RECORD = 81058;
/** "Record does not exist." */
const RECORD_NOT_FOUND = 81044;

interface CfEnvelope<T> {
  success: boolean;
  errors?: Array<{ code: number; message: string }>;
  result: T;
  result_info?: { page: number; per_page: number; total_pages?: number; count: number; total_count?: number };
}

interface CfZone {
  id: string;
  name: string;
  status: string;
}

interface CfRecord {
  id: string;
  type: string;
  name: string;
  content: string;
}

/** Cloudflare DNS through its REST API. */
export class CloudflareProvider implements DnsProvider {
  readonly type = 'cloudflare';
  readonly name: string;
  private readonly http: HttpClient;
  private readonly base: string;
  private readonly zones = new ZoneCache<CfZone>();

  constructor(private readonly opts: CloudflareOptions) {
    this.name = opts.name;
    this.base = (opts.baseUrl ?? CLOUDFLARE_API).replace(/\/$/, '');
    this.http = new HttpClient({ describe: this.describe(), provider: opts.name, clock: opts.clock, timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  /** Reads the configured zone, or lists one zone: proves the token is accepted and may read zones. */
  async check(): Promise<void> {
    if (this.opts.zoneId !== undefined) await this.call<CfZone>('GET', `/zones/${encodeURIComponent(this.opts.zoneId)}`, 'check credentials');
    else await this.call<CfZone[]>('GET', '/zones?per_page=5', 'check credentials');
  }

  async present(fqdn: string, value: string): Promise<void> {
    const zone = await this.zoneOf(fqdn);
    const what = `add TXT ${fqdn}`;
    const answer = await this.raw('POST', `/zones/${zone.id}/dns_records`, what, { type: 'TXT', name: bare(fqdn), content: value, ttl: this.opts.ttl ?? 60 });
    const body = this.envelope<CfRecord>(answer, what);
    if (!body.success && !(body.errors ?? []).some((e) => e.code === DUPLICATE_RECORD)) throw this.failure(answer, body, what);
    this.opts.log.info({ provider: this.name, fqdn, zone: zone.name }, 'dns record added');
  }

  async cleanup(fqdn: string, value: string): Promise<void> {
    const zone = await this.zoneOf(fqdn);
    const records = await this.pages<CfRecord>(`/zones/${zone.id}/dns_records?type=TXT&name=${encodeURIComponent(bare(fqdn))}`, `list TXT ${fqdn}`);
    for (const r of records.filter((r) => unquote(r.content) === value && bare(r.name) === bare(fqdn))) {
      const what = `delete TXT ${fqdn}`;
      const answer = await this.raw('DELETE', `/zones/${zone.id}/dns_records/${encodeURIComponent(r.id)}`, what);
      const body = this.envelope<unknown>(answer, what);
      if (!body.success && answer.status !== 404 && !(body.errors ?? []).some((e) => e.code === RECORD_NOT_FOUND)) throw this.failure(answer, body, what);
    }
    this.opts.log.info({ provider: this.name, fqdn, zone: zone.name }, 'dns record removed');
  }

  private zoneOf(fqdn: string): Promise<CfZone> {
    if (this.opts.zoneId !== undefined) return Promise.resolve({ id: encodeURIComponent(this.opts.zoneId), name: this.opts.zoneId, status: 'active' });
    return this.zones.get(bare(fqdn), (key) => this.findZone(key));
  }

  private async findZone(fqdn: string): Promise<CfZone> {
    for (const candidate of zoneCandidates(fqdn)) {
      const zones = await this.pages<CfZone>(`/zones?name=${encodeURIComponent(candidate)}`, `find the zone of ${fqdn}`);
      const zone = zones.find((z) => bare(z.name) === candidate && z.status === 'active');
      if (zone) return { ...zone, id: encodeURIComponent(zone.id) };
    }
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: no active zone the token can see contains ${fqdn} (set zoneId, or give the token Zone:Read on it)`, {
      details: { provider: this.name, fqdn },
    });
  }

  /** Every item of a paginated list, page after page until `total_pages`. */
  private async pages<T>(path: string, what: string): Promise<T[]> {
    const out: T[] = [];
    for (let page = 1; page <= 1000; page++) {
      const body = await this.call<T[]>('GET', `${path}${path.includes('?') ? '&' : '?'}per_page=50&page=${page}`, what);
      out.push(...body.result);
      const info = body.result_info;
      if (!info || body.result.length === 0 || page >= (info.total_pages ?? Math.ceil((info.total_count ?? 0) / Math.max(1, info.per_page)))) break;
    }
    return out;
  }

  private async call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, what: string, body?: unknown): Promise<CfEnvelope<T>> {
    const answer = await this.raw(method, path, what, body);
    const env = this.envelope<T>(answer, what);
    if (!env.success || answer.status >= 300) throw this.failure(answer, env, what);
    return env;
  }

  private raw(method: 'GET' | 'POST' | 'DELETE', path: string, what: string, body?: unknown): Promise<HttpAnswer> {
    return this.http.send(
      {
        method,
        url: this.base + path,
        headers: { authorization: `Bearer ${this.opts.apiToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      },
      what,
    );
  }

  private envelope<T>(answer: HttpAnswer, what: string): CfEnvelope<T> {
    if (answer.status >= 500 && !answer.text.trimStart().startsWith('{')) throw answerError(this.describe(), this.name, what, answer, answer.text.slice(0, 200));
    return parseJson<CfEnvelope<T>>(this.describe(), this.name, what, answer);
  }

  private failure(answer: HttpAnswer, body: CfEnvelope<unknown>, what: string): CertfleetError {
    const errors = body.errors ?? [];
    const detail = errors.map((e) => `${e.code} ${e.message}`).join('; ');
    return answerError(this.describe(), this.name, what, answer, detail, errors.some((e) => AUTH_CODES.has(e.code)));
  }

  private describe(): string {
    return `cloudflare provider "${this.name}"`;
  }
}

/** Cloudflare may hand TXT content back quoted. */
function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s;
}

/**
 * A fake of Cloudflare's v4 API, the parts the cloudflare provider uses, with the request
 * and response shapes Cloudflare documents (developers.cloudflare.com/api): the envelope
 * `{success, errors:[{code,message}], messages, result, result_info}`, Bearer tokens
 * (a wrong one: 403 with error 10000 "Authentication error"), page/per_page pagination
 * with `result_info.total_pages` (page size capped by `pageSize`, so tests see several
 * pages), duplicate records refused with 81058, unknown records 404 with 81044, and 429
 * with `Retry-After` and error 971 when told to rate-limit.
 *
 * Routes (under /client/v4): GET /zones[?name=], GET /zones/:id, GET/POST
 * /zones/:id/dns_records[?type=&name=], DELETE /zones/:id/dns_records/:rid.
 */
import crypto from 'node:crypto';
import type http from 'node:http';
import { FakeApi, TxtData, bare, type FakeAnswer, type TxtMirror } from './fake-dns-api.js';

export interface FakeCloudflareZone {
  id: string;
  name: string;
  status?: 'active' | 'pending' | 'moved';
}

interface Rec {
  id: string;
  zoneId: string;
  name: string;
  content: string;
  ttl: number;
}

export class FakeCloudflare extends FakeApi {
  readonly txt: TxtData;
  readonly records: Rec[] = [];
  /** Seconds in the Retry-After of a rate-limited answer. */
  retryAfterSeconds = 7;

  constructor(
    private readonly opts: { token: string; zones: FakeCloudflareZone[]; pageSize?: number; mirror?: TxtMirror },
  ) {
    super();
    this.txt = new TxtData(opts.mirror);
  }

  get baseUrl(): string {
    return `${this.origin}/client/v4`;
  }

  /** TXT values at `name` as the API lists them. */
  values(name: string): string[] {
    return this.records.filter((r) => r.name === bare(name)).map((r) => r.content);
  }

  protected rateLimitAnswer(): FakeAnswer {
    return { status: 429, headers: { 'retry-after': String(this.retryAfterSeconds) }, body: JSON.stringify({ success: false, errors: [{ code: 971, message: 'Please wait and consider throttling your request speed' }], messages: [], result: null }) };
  }

  protected async handle(method: string, url: URL, headers: http.IncomingHttpHeaders, body: string): Promise<FakeAnswer> {
    if (headers.authorization !== `Bearer ${this.opts.token}`) return fail(403, 10000, 'Authentication error');
    const path = url.pathname.replace(/^\/client\/v4/, '');
    const q = url.searchParams;
    let m: RegExpExecArray | null;
    if (method === 'GET' && path === '/zones') {
      const zones = this.opts.zones.filter((z) => !q.has('name') || z.name === q.get('name')).map((z) => ({ id: z.id, name: z.name, status: z.status ?? 'active' }));
      return this.page(zones, q);
    }
    if ((m = /^\/zones\/([^/]+)$/.exec(path)) && method === 'GET') {
      const zone = this.opts.zones.find((z) => z.id === m![1]);
      return zone ? ok({ id: zone.id, name: zone.name, status: zone.status ?? 'active' }) : fail(404, 7003, 'Could not route to /zones/x, perhaps your object identifier is invalid?');
    }
    if ((m = /^\/zones\/([^/]+)\/dns_records(?:\/([^/]+))?$/.exec(path))) {
      const zone = this.opts.zones.find((z) => z.id === m![1]);
      if (!zone) return fail(404, 7003, 'Could not route to the zone, perhaps your object identifier is invalid?');
      const rid = m[2];
      if (method === 'GET' && rid === undefined) {
        const list = this.records.filter((r) => r.zoneId === zone.id && (!q.has('name') || r.name === q.get('name'))).map((r) => ({ id: r.id, type: 'TXT', name: r.name, content: r.content, ttl: r.ttl }));
        return this.page(q.has('type') && q.get('type') !== 'TXT' ? [] : list, q);
      }
      if (method === 'POST' && rid === undefined) {
        const rec = JSON.parse(body) as { type: string; name: string; content: string; ttl: number };
        if (rec.type !== 'TXT') return fail(400, 9000, 'unsupported in this fake');
        const name = bare(rec.name);
        if (name !== zone.name && !name.endsWith(`.${zone.name}`)) return fail(400, 9005, 'Content for TXT record is invalid: name not in zone');
        if (this.records.some((r) => r.name === name && r.content === rec.content)) return fail(400, DUPLICATE, 'An identical record already exists.');
        const r: Rec = { id: crypto.randomBytes(16).toString('hex'), zoneId: zone.id, name, content: rec.content, ttl: rec.ttl };
        this.records.push(r);
        await this.txt.set(name, this.values(name), rec.ttl);
        return ok({ id: r.id, type: 'TXT', name, content: r.content, ttl: r.ttl });
      }
      if (method === 'DELETE' && rid !== undefined) {
        const at = this.records.findIndex((r) => r.id === rid && r.zoneId === zone.id);
        if (at < 0) return fail(404, 81044, 'Record does not exist.');
        const [r] = this.records.splice(at, 1);
        await this.txt.set(r!.name, this.values(r!.name));
        return ok({ id: rid });
      }
    }
    return fail(404, 7000, 'No route for that URI');
  }

  private page(items: unknown[], q: URLSearchParams): FakeAnswer {
    const perPage = Math.min(Number(q.get('per_page') ?? 20), this.opts.pageSize ?? 50);
    const page = Number(q.get('page') ?? 1);
    const slice = items.slice((page - 1) * perPage, page * perPage);
    return {
      status: 200,
      body: JSON.stringify({
        success: true,
        errors: [],
        messages: [],
        result: slice,
        result_info: { page, per_page: perPage, count: slice.length, total_count: items.length, total_pages: Math.max(1, Math.ceil(items.length / perPage)) },
      }),
    };
  }
}

const DUPLICATE = 81058;

function ok(result: unknown): FakeAnswer {
  return { status: 200, body: JSON.stringify({ success: true, errors: [], messages: [], result }) };
}

function fail(status: number, code: number, message: string): FakeAnswer {
  return { status, body: JSON.stringify({ success: false, errors: [{ code, message }], messages: [], result: null }) };
}

/**
 * A fake of Google Cloud DNS (v1) and of Google's OAuth 2.0 token endpoint, the calls the
 * gcloud provider makes, with the shapes Google documents (cloud.google.com/dns/docs/
 * reference/rest/v1, developers.google.com/identity/protocols/oauth2/service-account):
 *
 * - `POST /token` (grant_type jwt-bearer): the assertion's RS256 signature is checked
 *   with the service account's public key, `aud` must be this token URL and `scope` must
 *   include ndev.clouddns.readwrite; a bad one is 400 `{"error":"invalid_grant"}`;
 * - every API call needs `Authorization: Bearer <issued token>`, else 401 with
 *   `{error:{code:401,status:"UNAUTHENTICATED",errors:[{reason:"authError"}]}}`;
 * - `GET /dns/v1/projects/:p/managedZones[?dnsName=&pageToken=&maxResults=]` with
 *   nextPageToken (pages of at most `pageSize`), managedZones/:zone, rrsets?name=&type=,
 *   `POST .../changes` (deletions must match the current set exactly, else 412
 *   conditionNotMet; additions of an existing set without deleting it 409 alreadyExists),
 *   `GET .../changes/:id` (pending for `pendingPolls` polls, then done);
 * - rate limiting: 429 `rateLimitExceeded`.
 */
import crypto from 'node:crypto';
import type http from 'node:http';
import { FakeApi, TxtData, bare, type FakeAnswer, type TxtMirror } from './fake-dns-api.js';

export interface FakeGcloudZone {
  name: string;
  dnsName: string;
  visibility?: 'public' | 'private';
}

interface RRSet {
  name: string;
  type: string;
  ttl: number;
  rrdatas: string[];
}

function gError(code: number, status: string, reason: string, message: string): FakeAnswer {
  return { status: code, body: JSON.stringify({ error: { code, message, status, errors: [{ message, domain: 'global', reason }] } }) };
}

export class FakeGcloud extends FakeApi {
  readonly txt: TxtData;
  readonly project = 'fake-project';
  readonly clientEmail = 'certfleet@fake-project.iam.gserviceaccount.com';
  private readonly keys = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  private readonly tokens = new Set<string>();
  private readonly changes = new Map<string, number>();
  private readonly zoneOfName = new Map<string, string>();
  pendingPolls = 1;
  tokensIssued = 0;

  constructor(private readonly opts: { zones: FakeGcloudZone[]; pageSize?: number; mirror?: TxtMirror }) {
    super();
    this.txt = new TxtData(opts.mirror);
  }

  get baseUrl(): string {
    return `${this.origin}/dns/v1`;
  }

  get tokenUri(): string {
    return `${this.origin}/token`;
  }

  /** A service-account key file for this fake (another key pair when `wrongKey`). */
  serviceAccountJson(wrongKey = false): string {
    const priv = wrongKey ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey : this.keys.privateKey;
    return JSON.stringify({
      type: 'service_account',
      project_id: this.project,
      private_key_id: 'k1',
      private_key: priv.export({ type: 'pkcs8', format: 'pem' }),
      client_email: this.clientEmail,
      client_id: '1',
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: this.tokenUri,
    });
  }

  protected override countsForLimit(url: URL): boolean {
    return url.pathname !== '/token';
  }

  protected rateLimitAnswer(): FakeAnswer {
    return gError(429, 'RESOURCE_EXHAUSTED', 'rateLimitExceeded', 'Rate Limit Exceeded');
  }

  protected async handle(method: string, url: URL, headers: http.IncomingHttpHeaders, body: string): Promise<FakeAnswer> {
    if (url.pathname === '/token' && method === 'POST') return this.token(body);
    const auth = String(headers.authorization ?? '');
    if (!auth.startsWith('Bearer ') || !this.tokens.has(auth.slice(7))) {
      return gError(401, 'UNAUTHENTICATED', 'authError', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
    }
    const m = /^\/dns\/v1\/projects\/([^/]+)\/managedZones(?:\/([^/]+)(?:\/(rrsets|changes)(?:\/([^/]+))?)?)?$/.exec(url.pathname);
    if (!m) return gError(404, 'NOT_FOUND', 'notFound', 'no such route');
    if (m[1] !== this.project) return gError(403, 'PERMISSION_DENIED', 'forbidden', `The caller does not have permission on project ${m[1]}`);
    const q = url.searchParams;
    if (m[2] === undefined) return this.listZones(q);
    const zone = this.opts.zones.find((z) => z.name === decodeURIComponent(m[2]!));
    if (!zone) return gError(404, 'NOT_FOUND', 'notFound', `The 'parameters.managedZone' resource named '${m[2]}' does not exist.`);
    if (m[3] === undefined) return { status: 200, body: JSON.stringify(this.zoneJson(zone)) };
    if (m[3] === 'rrsets' && method === 'GET') {
      const name = q.get('name');
      const sets = [...this.txt.names.keys()]
        .filter((n) => this.zoneOfName.get(n) === zone.name && (name === null || n === bare(name)))
        .map((n) => ({ kind: 'dns#resourceRecordSet', name: `${n}.`, type: 'TXT', ttl: this.txt.ttls.get(n) ?? 60, rrdatas: this.txt.get(n).map((v) => `"${v}"`) }));
      return { status: 200, body: JSON.stringify({ kind: 'dns#resourceRecordSetsListResponse', rrsets: q.get('type') === null || q.get('type') === 'TXT' ? sets : [] }) };
    }
    if (m[3] === 'changes' && method === 'POST') return this.change(zone, JSON.parse(body) as { additions?: RRSet[]; deletions?: RRSet[] });
    if (m[3] === 'changes' && method === 'GET' && m[4] !== undefined) {
      const left = this.changes.get(m[4]);
      if (left === undefined) return gError(404, 'NOT_FOUND', 'notFound', 'The requested change does not exist.');
      this.changes.set(m[4], Math.max(0, left - 1));
      return { status: 200, body: JSON.stringify({ kind: 'dns#change', id: m[4], status: left > 0 ? 'pending' : 'done' }) };
    }
    return gError(404, 'NOT_FOUND', 'notFound', 'no such route');
  }

  private token(body: string): FakeAnswer {
    const form = new URLSearchParams(body);
    const bad = (why: string): FakeAnswer => ({ status: 400, body: JSON.stringify({ error: 'invalid_grant', error_description: why }) });
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return { status: 400, body: JSON.stringify({ error: 'unsupported_grant_type', error_description: 'Invalid grant_type' }) };
    const [h, c, s] = (form.get('assertion') ?? '').split('.');
    if (h === undefined || c === undefined || s === undefined) return bad('Invalid JWT');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg?: string };
    const claims = JSON.parse(Buffer.from(c, 'base64url').toString()) as { iss?: string; aud?: string; scope?: string; exp?: number; iat?: number };
    if (header.alg !== 'RS256') return bad('Invalid JWT: alg');
    if (!crypto.verify('RSA-SHA256', Buffer.from(`${h}.${c}`), this.keys.publicKey, Buffer.from(s, 'base64url'))) return bad('Invalid JWT Signature.');
    if (claims.iss !== this.clientEmail || claims.aud !== this.tokenUri) return bad('Invalid JWT: iss or aud');
    if (!(claims.scope ?? '').split(' ').includes('https://www.googleapis.com/auth/ndev.clouddns.readwrite')) return bad('Invalid JWT: scope');
    if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number' || claims.exp - claims.iat > 3600) return bad('Invalid JWT: Token must be a short-lived token (60 minutes)');
    const token = `ya29.${crypto.randomBytes(24).toString('base64url')}`;
    this.tokens.add(token);
    this.tokensIssued++;
    return { status: 200, body: JSON.stringify({ access_token: token, expires_in: 3599, token_type: 'Bearer' }) };
  }

  private zoneJson(z: FakeGcloudZone): unknown {
    return { kind: 'dns#managedZone', name: z.name, dnsName: `${bare(z.dnsName)}.`, id: crypto.createHash('sha1').update(z.name).digest('hex').slice(0, 12), visibility: z.visibility ?? 'public' };
  }

  private listZones(q: URLSearchParams): FakeAnswer {
    const dnsName = q.get('dnsName');
    const all = this.opts.zones.filter((z) => dnsName === null || bare(z.dnsName) === bare(dnsName));
    const size = Math.min(Number(q.get('maxResults') ?? 1000), this.opts.pageSize ?? 1000);
    const start = Number(q.get('pageToken') ?? 0);
    const page = all.slice(start, start + size);
    const next = start + size < all.length ? String(start + size) : undefined;
    return { status: 200, body: JSON.stringify({ kind: 'dns#managedZonesListResponse', managedZones: page.map((z) => this.zoneJson(z)), ...(next ? { nextPageToken: next } : {}) }) };
  }

  private async change(zone: FakeGcloudZone, change: { additions?: RRSet[]; deletions?: RRSet[] }): Promise<FakeAnswer> {
    const unq = (d: string): string => d.replace(/^"(.*)"$/, '$1');
    for (const del of change.deletions ?? []) {
      const name = bare(del.name);
      const cur = this.txt.get(name);
      const same = cur.length === del.rrdatas.length && del.rrdatas.every((d) => cur.includes(unq(d))) && (this.txt.ttls.get(name) ?? 60) === del.ttl;
      if (!same) return gError(412, 'FAILED_PRECONDITION', 'conditionNotMet', `Precondition not met for 'entity.change.deletions[${name}.][TXT]'`);
    }
    for (const add of change.additions ?? []) {
      const name = bare(add.name);
      if (name !== bare(zone.dnsName) && !name.endsWith(`.${bare(zone.dnsName)}`)) return gError(400, 'INVALID_ARGUMENT', 'invalid', `The resource 'entity.change.additions[${name}.][TXT]' is not in zone`);
      const deleted = (change.deletions ?? []).some((d) => bare(d.name) === name);
      if (this.txt.get(name).length > 0 && !deleted) return gError(409, 'ALREADY_EXISTS', 'alreadyExists', `The resource 'entity.change.additions[${name}.][TXT]' named '${name}. (TXT)' already exists`);
    }
    for (const del of change.deletions ?? []) {
      await this.txt.set(del.name, []);
      this.zoneOfName.delete(bare(del.name));
    }
    for (const add of change.additions ?? []) {
      this.zoneOfName.set(bare(add.name), zone.name);
      await this.txt.set(add.name, add.rrdatas.map(unq), add.ttl);
    }
    const id = String(this.changes.size + 1);
    this.changes.set(id, this.pendingPolls);
    return { status: 200, body: JSON.stringify({ kind: 'dns#change', id, status: 'pending', ...change }) };
  }
}

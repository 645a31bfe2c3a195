/**
 * A HashiCorp Vault double for tests: the KV secrets engine version 2 HTTP API, token
 * and AppRole auth, and sys/health, on 127.0.0.1 — because Vault itself cannot be
 * installed on the test machines (see docs/storage.md).
 *
 * It implements only behaviour Vault documents (developer.hashicorp.com/vault/api-docs/
 * secret/kv/kv-v2, auth/token, auth/approle, system/health), with the response shapes and
 * error texts Vault uses, so that code passing against the double has a fair chance
 * against the real thing:
 *
 *  - `GET  /v1/<mount>/data/<path>[?version=N]`: the latest (or Nth) version; 404
 *    `{"errors":[]}` when the key or version does not exist; 404 whose body still carries
 *    `data.metadata` (with `deletion_time` / `destroyed`) and `data.data: null` when that
 *    version was deleted or destroyed.
 *  - `POST|PUT /v1/<mount>/data/<path>` `{data, options: {cas}}`: a new version. `cas: 0`
 *    writes only if the key has no version yet (a soft-deleted one counts: Vault compares
 *    with `current_version`); `cas: N` only if the current version is N; otherwise 400
 *    `check-and-set parameter did not match the current version`. Without cas and with
 *    `cas_required` (key metadata or mount config): 400 `check-and-set parameter
 *    required for this call`. Versions beyond `max_versions` (key, else mount config,
 *    else 10) are removed, oldest first.
 *  - `DELETE /v1/<mount>/data/<path>`: soft delete of the latest version; `POST
 *    delete|undelete|destroy/<path>` `{versions}`.
 *  - `GET|POST|DELETE /v1/<mount>/metadata/<path>`, and `LIST` (or `GET ?list=true`) on a
 *    folder: `{"data":{"keys":[...]}}` with sub-folders suffixed `/`, 404 when empty.
 *  - `GET|POST /v1/<mount>/config` (max_versions, cas_required).
 *  - `X-Vault-Token` on every call but health and login; an unknown or expired token is
 *    403 `permission denied`.
 *  - `GET /v1/auth/token/lookup-self`, `POST /v1/auth/token/renew-self` (capped by the
 *    token's max TTL, with Vault's warning), `POST /v1/auth/approle/login`.
 *  - `GET /v1/sys/health`: 200 when unsealed, 503 when sealed.
 *
 * Outage switches for tests: {@link VaultDouble.setMode} `'sealed'` answers 503 `Vault is
 * sealed` (what a sealed or standby-without-leader Vault does), `'unreachable'` resets every
 * connection (what a dead host or network partition looks like to a client).
 * Policies are not modelled: every valid token may do everything, except tokens created
 * with `deny` path prefixes, which get 403 there (to test permission errors).
 */
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';

/** How the double answers. */
export type VaultDoubleMode = 'up' | 'sealed' | 'unreachable';

export interface VaultDoubleOptions {
  /** KV v2 mounts; default `['secret']`. */
  mounts?: string[];
  /** Serve HTTPS with this certificate and key instead of HTTP. */
  tls?: { certPem: string; keyPem: string };
  /** Port on 127.0.0.1; default a free one. */
  port?: number;
}

export interface TokenOptions {
  /** Seconds; 0 = never expires (like a root token). Default 0. */
  ttl?: number;
  /** Seconds from creation the token can never outlive; 0 = no cap. Default 0. */
  maxTtl?: number;
  /** Default true when ttl > 0. */
  renewable?: boolean;
  /** Path prefixes after `/v1/` that this token is denied (403). */
  deny?: string[];
  policies?: string[];
}

interface Token {
  id: string;
  accessor: string;
  policies: string[];
  creationTtl: number;
  createdAt: number;
  /** ms epoch; 0 = never. */
  expiresAt: number;
  /** ms epoch; 0 = no cap. */
  maxExpiresAt: number;
  renewable: boolean;
  deny: string[];
}

interface VersionRecord {
  data: Record<string, unknown> | null;
  createdTime: string;
  deletionTime: string;
  destroyed: boolean;
}

interface KeyRecord {
  currentVersion: number;
  oldestVersion: number;
  maxVersions: number;
  casRequired: boolean;
  createdTime: string;
  updatedTime: string;
  customMetadata: Record<string, string> | null;
  versions: Map<number, VersionRecord>;
}

interface Mount {
  config: { maxVersions: number; casRequired: boolean };
  keys: Map<string, KeyRecord>;
}

interface AppRole {
  roleId: string;
  secretId: string;
  token: TokenOptions;
}

/** Counts of calls, by `METHOD path` with the mount's key part elided, for assertions. */
export type CallCounts = Record<string, number>;

/** A running KV v2 double. Create with {@link startVaultDouble}. */
export class VaultDouble {
  /** `http://127.0.0.1:<port>` (or https). */
  readonly addr: string;
  /** A root token (never expires). */
  readonly rootToken: string;
  private mode: VaultDoubleMode = 'up';
  private writeOutage: string | null = null;
  private readonly mounts = new Map<string, Mount>();
  private readonly tokens = new Map<string, Token>();
  private readonly roles = new Map<string, AppRole>();
  private readonly sockets = new Set<Socket>();
  private readonly counts: CallCounts = {};
  /** Every token value ever seen in a request header, so tests can grep logs for them. */
  readonly seenTokens = new Set<string>();

  /** @internal use startVaultDouble */
  constructor(
    private readonly server: http.Server | https.Server,
    options: VaultDoubleOptions,
    addr: string,
  ) {
    this.addr = addr;
    for (const m of options.mounts ?? ['secret']) {
      this.mounts.set(m, { config: { maxVersions: 0, casRequired: false }, keys: new Map() });
    }
    this.rootToken = this.createToken({ policies: ['root'] });
    server.on('connection', (s: Socket) => {
      if (this.mode === 'unreachable') {
        s.destroy();
        return;
      }
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => {
        this.send(res, 500, { errors: [`double: ${String(err)}`] });
      });
    });
  }

  /**
   * A partial outage: writes (POST/PUT) to paths under `prefix` (after `/v1/`) answer
   * 503, as a Vault whose storage backend refuses writes does; reads still work. null
   * ends it.
   */
  setWriteOutage(prefix: string | null): void {
    this.writeOutage = prefix;
  }

  /** Switches the outage mode; 'unreachable' also cuts open keep-alive connections. */
  setMode(mode: VaultDoubleMode): void {
    this.mode = mode;
    if (mode === 'unreachable') for (const s of this.sockets) s.destroy();
  }

  /** Creates a token with the given lifetime; returns its value. */
  createToken(opts: TokenOptions = {}): string {
    const ttl = opts.ttl ?? 0;
    const now = Date.now();
    const token: Token = {
      id: `hvs.${crypto.randomBytes(18).toString('base64url')}`,
      accessor: crypto.randomBytes(12).toString('hex'),
      policies: opts.policies ?? ['default'],
      creationTtl: ttl,
      createdAt: now,
      expiresAt: ttl > 0 ? now + ttl * 1000 : 0,
      maxExpiresAt: (opts.maxTtl ?? 0) > 0 ? now + (opts.maxTtl ?? 0) * 1000 : 0,
      renewable: opts.renewable ?? ttl > 0,
      deny: opts.deny ?? [],
    };
    this.tokens.set(token.id, token);
    return token.id;
  }

  /** Revokes a token (later calls with it get 403). */
  revokeToken(id: string): void {
    this.tokens.delete(id);
  }

  /** Registers an AppRole whose login issues tokens with `token` options; returns its ids. */
  addAppRole(token: TokenOptions): { roleId: string; secretId: string } {
    const role: AppRole = { roleId: crypto.randomUUID(), secretId: crypto.randomUUID(), token };
    this.roles.set(role.roleId, role);
    return { roleId: role.roleId, secretId: role.secretId };
  }

  /** How often each endpoint was called, e.g. `counts()['POST auth/token/renew-self']`. */
  callCounts(): CallCounts {
    return { ...this.counts };
  }

  /** Test access to a key's stored metadata (as Vault's metadata endpoint would return it). */
  keyMetadata(mount: string, path: string): Record<string, unknown> | null {
    const rec = this.mounts.get(mount)?.keys.get(path);
    return rec === undefined ? null : this.metadataView(rec);
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- request handling ----

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://double');
    const body = await readBody(req);
    let method = (req.method ?? 'GET').toUpperCase();
    if (method === 'GET' && ['true', '1'].includes(url.searchParams.get('list') ?? '')) method = 'LIST';
    if (method === 'PUT') method = 'POST'; // Vault treats PUT and POST alike
    if (!url.pathname.startsWith('/v1/')) return this.send(res, 404, { errors: [] });
    const p = decodeURIComponent(url.pathname.slice('/v1/'.length));
    this.count(method, p);

    if (p === 'sys/health') return this.health(res);
    if (this.mode === 'sealed') return this.send(res, 503, { errors: ['Vault is sealed'] });
    if (this.writeOutage !== null && method === 'POST' && p.startsWith(this.writeOutage)) {
      return this.send(res, 503, { errors: ['storage backend unavailable (test outage)'] });
    }

    if (p === 'auth/approle/login' && method === 'POST') return this.approleLogin(res, body);

    const tokenHeader = req.headers['x-vault-token'];
    const tokenId = Array.isArray(tokenHeader) ? tokenHeader[0] : tokenHeader;
    if (tokenId !== undefined) this.seenTokens.add(tokenId);
    const token = tokenId === undefined ? undefined : this.liveToken(tokenId);
    if (token === undefined) return this.send(res, 403, { errors: ['permission denied'] });
    if (token.deny.some((d) => p.startsWith(d))) return this.send(res, 403, { errors: ['1 error occurred:\n\t* permission denied\n\n'] });

    if (p === 'auth/token/lookup-self' && method === 'GET') return this.send(res, 200, envelope({ data: this.tokenView(token) }));
    if (p === 'auth/token/renew-self' && method === 'POST') return this.renewSelf(res, token, body);

    for (const [name, mount] of this.mounts) {
      if (p === `${name}/config`) return this.config(res, mount, method, body);
      for (const op of ['data', 'metadata', 'delete', 'undelete', 'destroy'] as const) {
        const prefix = `${name}/${op}/`;
        if (p.startsWith(prefix) || (op === 'metadata' && p === `${name}/metadata`)) {
          const keyPath = p.startsWith(prefix) ? p.slice(prefix.length) : '';
          return this.kv(res, mount, op, method, keyPath, url, body);
        }
      }
    }
    return this.send(res, 404, { errors: [`no handler for route "${p}". route entry not found.`] });
  }

  private kv(
    res: http.ServerResponse,
    mount: Mount,
    op: 'data' | 'metadata' | 'delete' | 'undelete' | 'destroy',
    method: string,
    path: string,
    url: URL,
    body: Record<string, unknown>,
  ): void {
    const now = new Date().toISOString();
    if (op === 'metadata' && method === 'LIST') return this.list(res, mount, path);
    if (path === '' || path.endsWith('/')) return this.send(res, 400, { errors: ['missing path'] });
    const rec = mount.keys.get(path);

    if (op === 'data') {
      if (method === 'GET') {
        if (rec === undefined) return this.send(res, 404, { errors: [] });
        const asked = Number(url.searchParams.get('version') ?? '0');
        const n = asked > 0 ? asked : rec.currentVersion;
        const v = rec.versions.get(n);
        if (v === undefined) return this.send(res, 404, { errors: [] });
        const metadata = {
          created_time: v.createdTime,
          custom_metadata: rec.customMetadata,
          deletion_time: v.deletionTime,
          destroyed: v.destroyed,
          version: n,
        };
        const gone = v.destroyed || (v.deletionTime !== '' && Date.parse(v.deletionTime) <= Date.now());
        if (gone) return this.send(res, 404, envelope({ data: { data: null, metadata } }));
        return this.send(res, 200, envelope({ data: { data: v.data, metadata } }));
      }
      if (method === 'POST') {
        const data = body['data'];
        if (typeof data !== 'object' || data === null || Array.isArray(data)) {
          return this.send(res, 400, { errors: ['no data provided'] });
        }
        const target = rec ?? newKey(now);
        const options = (body['options'] ?? {}) as Record<string, unknown>;
        if ('cas' in options) {
          const cas = Number(options['cas']);
          if (!Number.isInteger(cas)) return this.send(res, 400, { errors: ['error parsing check-and-set parameter'] });
          if (cas !== target.currentVersion) {
            return this.send(res, 400, { errors: ['check-and-set parameter did not match the current version'] });
          }
        } else if (mount.config.casRequired || target.casRequired) {
          return this.send(res, 400, { errors: ['check-and-set parameter required for this call'] });
        }
        const n = target.currentVersion + 1;
        // Stored as JSON, as Vault does: what is read back is a copy, never the caller's object.
        target.versions.set(n, {
          data: JSON.parse(JSON.stringify(data)) as Record<string, unknown>,
          createdTime: now,
          deletionTime: '',
          destroyed: false,
        });
        target.currentVersion = n;
        target.updatedTime = now;
        const max = target.maxVersions > 0 ? target.maxVersions : mount.config.maxVersions > 0 ? mount.config.maxVersions : 10;
        const keep = [...target.versions.keys()].sort((a, b) => a - b);
        while (keep.length > max) {
          const oldest = keep.shift();
          if (oldest !== undefined) target.versions.delete(oldest);
        }
        target.oldestVersion = keep[0] ?? 0;
        mount.keys.set(path, target);
        return this.send(
          res,
          200,
          envelope({ data: { created_time: now, custom_metadata: target.customMetadata, deletion_time: '', destroyed: false, version: n } }),
        );
      }
      if (method === 'DELETE') {
        const v = rec?.versions.get(rec.currentVersion);
        if (v !== undefined && v.deletionTime === '') v.deletionTime = now;
        return this.send(res, 204);
      }
      return this.send(res, 405, { errors: [] });
    }

    if (op === 'delete' || op === 'undelete' || op === 'destroy') {
      if (method !== 'POST') return this.send(res, 405, { errors: [] });
      const versions = body['versions'];
      if (!Array.isArray(versions) || versions.length === 0) return this.send(res, 400, { errors: ['no version number provided'] });
      for (const raw of versions) {
        const v = rec?.versions.get(Number(raw));
        if (v === undefined) continue;
        if (op === 'delete' && v.deletionTime === '') v.deletionTime = now;
        if (op === 'undelete' && !v.destroyed) v.deletionTime = '';
        if (op === 'destroy') {
          v.destroyed = true;
          v.data = null;
        }
      }
      return this.send(res, 204);
    }

    // metadata
    if (method === 'GET') {
      if (rec === undefined) return this.send(res, 404, { errors: [] });
      return this.send(res, 200, envelope({ data: this.metadataView(rec) }));
    }
    if (method === 'POST') {
      const target = rec ?? newKey(now);
      if ('max_versions' in body) target.maxVersions = Number(body['max_versions']);
      if ('cas_required' in body) target.casRequired = body['cas_required'] === true;
      if ('custom_metadata' in body) target.customMetadata = body['custom_metadata'] as Record<string, string>;
      target.updatedTime = now;
      mount.keys.set(path, target);
      return this.send(res, 204);
    }
    if (method === 'DELETE') {
      mount.keys.delete(path);
      return this.send(res, 204);
    }
    return this.send(res, 405, { errors: [] });
  }

  private list(res: http.ServerResponse, mount: Mount, folder: string): void {
    const prefix = folder === '' || folder.endsWith('/') ? folder : `${folder}/`;
    const keys = new Set<string>();
    for (const k of mount.keys.keys()) {
      if (!k.startsWith(prefix)) continue;
      const rest = k.slice(prefix.length);
      const slash = rest.indexOf('/');
      keys.add(slash < 0 ? rest : rest.slice(0, slash + 1));
    }
    if (keys.size === 0) return this.send(res, 404, { errors: [] });
    return this.send(res, 200, envelope({ data: { keys: [...keys].sort() } }));
  }

  private config(res: http.ServerResponse, mount: Mount, method: string, body: Record<string, unknown>): void {
    if (method === 'GET') {
      return this.send(
        res,
        200,
        envelope({ data: { max_versions: mount.config.maxVersions, cas_required: mount.config.casRequired, delete_version_after: '0s' } }),
      );
    }
    if (method === 'POST') {
      if ('max_versions' in body) mount.config.maxVersions = Number(body['max_versions']);
      if ('cas_required' in body) mount.config.casRequired = body['cas_required'] === true;
      return this.send(res, 204);
    }
    return this.send(res, 405, { errors: [] });
  }

  private health(res: http.ServerResponse): void {
    const sealed = this.mode === 'sealed';
    this.send(res, sealed ? 503 : 200, {
      initialized: true,
      sealed,
      standby: sealed,
      performance_standby: false,
      server_time_utc: Math.floor(Date.now() / 1000),
      version: '0.0.0-certfleet-double',
      cluster_name: 'certfleet-double',
    });
  }

  private approleLogin(res: http.ServerResponse, body: Record<string, unknown>): void {
    const roleId = body['role_id'];
    const role = typeof roleId === 'string' ? this.roles.get(roleId) : undefined;
    if (role === undefined || role.secretId !== body['secret_id']) {
      return this.send(res, 400, { errors: ['invalid role or secret ID'] });
    }
    const id = this.createToken({ ...role.token, policies: role.token.policies ?? ['default', 'certfleet'] });
    const token = this.tokens.get(id);
    if (token === undefined) return this.send(res, 500, { errors: ['token vanished'] });
    return this.send(res, 200, envelope({ auth: this.authView(token, token.creationTtl) }));
  }

  private renewSelf(res: http.ServerResponse, token: Token, body: Record<string, unknown>): void {
    if (!token.renewable || token.expiresAt === 0) return this.send(res, 400, { errors: ['lease is not renewable'] });
    const now = Date.now();
    const increment = body['increment'] === undefined ? token.creationTtl : parseSeconds(body['increment']);
    let ttl = increment > 0 ? increment : token.creationTtl;
    const warnings: string[] = [];
    if (token.maxExpiresAt > 0 && now + ttl * 1000 > token.maxExpiresAt) {
      const capped = Math.max(0, Math.floor((token.maxExpiresAt - now) / 1000));
      warnings.push(`TTL of "${ttl}s" exceeded the effective max_ttl of "${capped}s"; TTL value is capped accordingly`);
      ttl = capped;
    }
    token.expiresAt = now + ttl * 1000;
    return this.send(res, 200, { ...envelope({ auth: this.authView(token, ttl) }), warnings: warnings.length ? warnings : null });
  }

  private liveToken(id: string): Token | undefined {
    const t = this.tokens.get(id);
    if (t === undefined) return undefined;
    if (t.expiresAt !== 0 && t.expiresAt <= Date.now()) {
      this.tokens.delete(id);
      return undefined;
    }
    return t;
  }

  private tokenView(t: Token): Record<string, unknown> {
    const ttl = t.expiresAt === 0 ? 0 : Math.max(0, Math.floor((t.expiresAt - Date.now()) / 1000));
    return {
      accessor: t.accessor,
      creation_time: Math.floor(t.createdAt / 1000),
      creation_ttl: t.creationTtl,
      display_name: 'token',
      entity_id: '',
      expire_time: t.expiresAt === 0 ? null : new Date(t.expiresAt).toISOString(),
      explicit_max_ttl: 0,
      id: t.id,
      issue_time: new Date(t.createdAt).toISOString(),
      meta: null,
      num_uses: 0,
      orphan: false,
      path: 'auth/token/create',
      policies: t.policies,
      renewable: t.renewable,
      ttl,
      type: 'service',
    };
  }

  private authView(t: Token, leaseDuration: number): Record<string, unknown> {
    return {
      client_token: t.id,
      accessor: t.accessor,
      policies: t.policies,
      token_policies: t.policies,
      metadata: null,
      lease_duration: leaseDuration,
      renewable: t.renewable,
      entity_id: '',
      token_type: 'service',
      orphan: true,
    };
  }

  private metadataView(rec: KeyRecord): Record<string, unknown> {
    const versions: Record<string, unknown> = {};
    for (const [n, v] of rec.versions) {
      versions[String(n)] = { created_time: v.createdTime, deletion_time: v.deletionTime, destroyed: v.destroyed };
    }
    return {
      cas_required: rec.casRequired,
      created_time: rec.createdTime,
      current_version: rec.currentVersion,
      custom_metadata: rec.customMetadata,
      delete_version_after: '0s',
      max_versions: rec.maxVersions,
      oldest_version: rec.oldestVersion,
      updated_time: rec.updatedTime,
      versions,
    };
  }

  private count(method: string, p: string): void {
    const key = `${method} ${p.startsWith('auth/') || p.startsWith('sys/') ? p : p.split('/').slice(0, 2).join('/')}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
  }

  private send(res: http.ServerResponse, status: number, body?: unknown): void {
    if (body === undefined) {
      res.writeHead(status).end();
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  }
}

function newKey(now: string): KeyRecord {
  return {
    currentVersion: 0,
    oldestVersion: 0,
    maxVersions: 0,
    casRequired: false,
    createdTime: now,
    updatedTime: now,
    customMetadata: null,
    versions: new Map(),
  };
}

/** Vault's response envelope around `data` or `auth`. */
function envelope(part: { data?: unknown; auth?: unknown }): Record<string, unknown> {
  return {
    request_id: crypto.randomUUID(),
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data: part.data ?? null,
    wrap_info: null,
    warnings: null,
    auth: part.auth ?? null,
  };
}

function parseSeconds(raw: unknown): number {
  if (typeof raw === 'number') return raw;
  const m = /^(\d+)(s|m|h)?$/.exec(String(raw));
  if (m === null) return 0;
  const n = Number(m[1]);
  return m[2] === 'h' ? n * 3600 : m[2] === 'm' ? n * 60 : n;
}

async function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  if (chunks.length === 0) return {};
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Starts a double on 127.0.0.1 (`options.port`, default a free port). */
export async function startVaultDouble(options: VaultDoubleOptions = {}): Promise<VaultDouble> {
  const server = options.tls ? https.createServer({ cert: options.tls.certPem, key: options.tls.keyPem }) : http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return new VaultDouble(server, options, `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`);
}

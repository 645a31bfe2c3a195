/**
 * VaultStore: the CertStore on HashiCorp Vault's KV secrets engine version 2, through
 * node-vault (this file is the only one that imports it).
 *
 * Layout under `<mount>` (default `secret`) and `<prefix>` (default `certfleet`); the
 * reasons are in docs/storage.md:
 *
 * ```
 * <mount>/data/<prefix>/certs/<name>      one KV v2 key per certificate;
 *                                         KV version N == certfleet version N, data
 *                                         {certPem, chainPem, keyPem, meta: VersionMeta}
 * <mount>/metadata/<prefix>/certs/<name>  max_versions (default 10000), cas_required=true
 * <mount>/data/<prefix>/objects/<key>     {value: <the JSON document>}; a deletion first
 *                                         writes the tombstone {deleted: true} with cas,
 *                                         then removes the key's metadata
 * ```
 *
 * - **Compare-and-set.** putVersion writes with `options.cas = expectedLatest`: Vault
 *   accepts it only if the key's current version is exactly that (0: no version yet), so
 *   a stale *or* future expectedLatest, or a second controller that got there first, is a
 *   400 "check-and-set parameter did not match the current version" → STORE_CONFLICT.
 *   One write is one version: there is no second record to keep in step.
 * - **History is kept.** KV v2 keeps only `max_versions` versions per key (mount default
 *   10, and 0 means "the default", not "unlimited"), so after each write the key's
 *   metadata is set to `maxVersions` and `cas_required: true` (the latter also stops a
 *   human's `vault kv put` without -cas from overwriting the latest version).
 * - **Soft-deleted versions** (an operator's `vault kv delete`) read as absent: getVersion
 *   returns null and listVersions skips them. If the *latest* version is deleted, latest()
 *   fails with STORE_CORRUPT (not retryable) naming the undelete command: the next
 *   version number is fixed by Vault, so certfleet cannot carry on as if it did not exist.
 * - **Errors.** Unreachable, timeouts, 5xx (sealed, standby, internal), 429 and 412 are
 *   STORE_UNAVAILABLE retryable. 403 after a re-login (AppRole) or token-file re-read did
 *   not help is STORE_UNAVAILABLE *not* retryable: a policy or credential problem needs an
 *   operator. TLS verification failures are not retryable either.
 * - **Secrets.** The token, secret_id and key material are never logged nor put into an
 *   error (node-vault's transport errors carry the request headers and body, so they are
 *   replaced by a plain message). node-vault's debug output is switched off, and the
 *   VAULT_* environment variables node-vault would read are ignored: only config says
 *   where Vault is and how to trust it.
 */
import fs from 'node:fs/promises';
import nodeVault from 'node-vault';
import { systemClock, type Clock, type Timer } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import type { Bundle, VersionMeta } from '../../shared/model/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import type { CertStore, VersionInput } from './index.js';
import {
  checkCertName,
  checkObjectKey,
  checkObjectPrefix,
  checkVersionNumber,
  parseVersionMeta,
  prepareVersion,
} from './keys.js';

/** Versions kept per certificate unless configured: decades of 3-day renewals, far below Vault's entry size limits. */
export const DEFAULT_MAX_VERSIONS = 10_000;
const DEFAULT_TIMEOUT_MS = 10_000;
/** A Vault path segment list as certfleet accepts it for mounts and prefixes. */
export const VAULT_PATH_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$/;
const CAS_MISMATCH = 'check-and-set parameter did not match the current version';
const CAS_REQUIRED = 'check-and-set parameter required for this call';
/** Renew when this fraction of the token's TTL has passed. */
const RENEW_AT = 2 / 3;
const RETRY_AUTH_MS = 30_000;
const LIST_CONCURRENCY = 8;
const DELETE_ATTEMPTS = 5;

/** How the store authenticates to Vault. */
export type VaultAuth =
  /** A token given directly (config `${VAR}`) or read from a file (re-read when renewal is impossible or Vault says 403). */
  | { method: 'token'; token?: string; tokenFile?: string }
  /** AppRole login with role_id and secret_id read from files; logs in again when the token cannot be renewed. */
  | { method: 'approle'; roleIdFile: string; secretIdFile: string; mount?: string };

export interface VaultStoreOptions {
  /** Vault's address, e.g. `https://vault.example.net:8200`. */
  address: string;
  /** KV v2 mount; default `secret`. */
  mount?: string;
  /** Path prefix inside the mount; default `certfleet`. */
  prefix?: string;
  /** Vault Enterprise namespace; default none. */
  namespace?: string;
  /** PEM bundle trusted for Vault's TLS instead of the system store. */
  caPem?: string;
  auth: VaultAuth;
  /** max_versions set on every certificate key; default {@link DEFAULT_MAX_VERSIONS}. */
  maxVersions?: number;
  /** Per-request timeout; default 10 s. */
  requestTimeoutMs?: number;
  log: Logger;
  /** Times the token renewals and re-login retries; default the system clock. */
  clock?: Clock;
}

interface Reply {
  status: number;
  body: Record<string, unknown> | null;
}

interface KvVersionMetadata {
  version: number;
  deletionTime: string;
  destroyed: boolean;
}

/** The Vault KV v2 CertStore. See the module comment for layout and semantics. */
export class VaultStore implements CertStore {
  readonly kind = 'vault' as const;
  private readonly client: nodeVault.client;
  private readonly mount: string;
  private readonly prefix: string;
  private readonly maxVersions: number;
  private readonly auth: VaultAuth;
  private readonly log: Logger;
  private readonly address: string;
  private initialised: Promise<void> | undefined;
  private reauth: Promise<boolean> | undefined;
  private renewTimer: Timer | undefined;
  private readonly clock: Clock;
  /** Token TTL (s) as first granted, to tell a renewal capped by max TTL from a normal one. */
  private grantedTtl = 0;
  private closed = false;
  /** Certificate keys whose metadata (max_versions, cas_required) this process has set. */
  private readonly metadataSet = new Set<string>();

  /** Creates the store; it logs in on first use (or in {@link VaultStore.open}). */
  constructor(options: VaultStoreOptions) {
    this.mount = options.mount ?? 'secret';
    this.prefix = options.prefix ?? 'certfleet';
    for (const [what, value] of [
      ['mount', this.mount],
      ['prefix', this.prefix],
    ] as const) {
      if (!VAULT_PATH_PATTERN.test(value)) {
        throw new CertfleetError(ErrorCode.UsageInvalid, `invalid Vault ${what} ${JSON.stringify(value)}`, { details: { [what]: value } });
      }
    }
    this.maxVersions = options.maxVersions ?? DEFAULT_MAX_VERSIONS;
    if (!Number.isSafeInteger(this.maxVersions) || this.maxVersions < 1 || this.maxVersions > 0xffff_ffff) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `invalid maxVersions ${String(options.maxVersions)}`);
    }
    const a = options.auth;
    if (a.method === 'token' && (a.token === undefined) === (a.tokenFile === undefined)) {
      throw new CertfleetError(ErrorCode.UsageInvalid, 'Vault token auth needs exactly one of token and tokenFile');
    }
    this.auth = a;
    this.clock = options.clock ?? systemClock;
    this.address = options.address.replace(/\/+$/, '');
    this.log = componentLogger(options.log, 'store').child({ store: 'vault' });
    this.client = nodeVault({
      endpoint: this.address,
      apiVersion: 'v1',
      // node-vault prints request bodies (private keys) under DEBUG=node-vault: never.
      debug: () => undefined,
      // strictSSL explicitly: node-vault would otherwise honour VAULT_SKIP_VERIFY from the environment.
      rpDefaults: { strictSSL: true, timeout: options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS },
      requestOptions: options.caPem === undefined ? {} : { ca: options.caPem },
    } as nodeVault.VaultOptions);
    // node-vault falls back on VAULT_TOKEN / VAULT_NAMESPACE / VAULT_PREFIX; only our config counts.
    const c = this.client as unknown as { token: string; namespace: string; pathPrefix: string };
    c.token = '';
    c.namespace = options.namespace ?? '';
    c.pathPrefix = '';
  }

  /** Creates a VaultStore and logs in now; STORE_UNAVAILABLE if Vault is unreachable or refuses. */
  static async open(options: VaultStoreOptions): Promise<VaultStore> {
    const store = new VaultStore(options);
    await store.ready();
    return store;
  }

  async putVersion(name: string, input: VersionInput, expectedLatest: number): Promise<VersionMeta> {
    await this.ready();
    const { version, meta } = prepareVersion(name, input, expectedLatest);
    const key = `certs/${name}`;
    const reply = await this.request('store version', 'POST', this.dataPath(key), {
      options: { cas: expectedLatest },
      data: { certPem: input.certPem, chainPem: input.chainPem, keyPem: input.keyPem, meta },
    });
    if (reply.status === 400 && errorsOf(reply).includes(CAS_MISMATCH)) {
      const actual = await this.currentVersion(key).catch(() => undefined);
      throw new CertfleetError(
        ErrorCode.StoreConflict,
        `certificate ${name}: expected latest version ${expectedLatest}, store has ${actual === undefined ? 'another' : String(actual)}`,
        { details: { cert: name, expectedLatest, ...(actual === undefined ? {} : { actualLatest: actual }) } },
      );
    }
    this.expectOk(reply, 'store version', this.dataPath(key));
    const stored = numberAt(reply.body, 'data', 'version');
    if (stored !== version) {
      // cas guarantees this cannot happen with a real KV v2 engine; refuse to pretend.
      throw this.corrupt(this.dataPath(key), name, `Vault stored version ${String(stored)}, expected ${version}`);
    }
    await this.ensureKeyMetadata(key);
    // Debug: the caller's outcome line (certificate issued, spooled version delivered) names the version.
    this.log.debug({ [LogKey.cert]: name, [LogKey.version]: version }, 'version stored');
    return meta;
  }

  async getVersion(name: string, version: number): Promise<Bundle | null> {
    await this.ready();
    checkCertName(name);
    checkVersionNumber(version);
    const path = this.dataPath(`certs/${name}`);
    const reply = await this.request('read version', 'GET', `${path}?version=${version}`);
    if (reply.status === 404) {
      const gone = deletedMetadata(reply);
      if (gone !== null) this.log.warn({ [LogKey.cert]: name, [LogKey.version]: version, deletionTime: gone.deletionTime, destroyed: gone.destroyed }, 'version deleted in vault');
      return null;
    }
    this.expectOk(reply, 'read version', path);
    return this.parseBundle(reply, name, version, `${path}?version=${version}`);
  }

  async latest(name: string): Promise<VersionMeta | null> {
    await this.ready();
    checkCertName(name);
    const key = `certs/${name}`;
    const path = this.dataPath(key);
    const reply = await this.request('read latest version', 'GET', path);
    if (reply.status === 404) {
      const gone = deletedMetadata(reply);
      if (gone === null) return null;
      const how = gone.destroyed ? 'destroyed' : `deleted at ${gone.deletionTime}`;
      throw this.corrupt(
        path,
        name,
        `its latest version ${gone.version} was ${how} in Vault; certfleet cannot continue the history without it. ` +
          (gone.destroyed
            ? 'Issue by hand or remove the key (vault kv metadata delete) to start over.'
            : `Undelete it: vault kv undelete -mount=${this.mount} -versions=${gone.version} ${this.prefix}/${key}`),
      );
    }
    this.expectOk(reply, 'read latest version', path);
    const version = numberAt(reply.body, 'data', 'metadata', 'version');
    if (version === undefined) throw this.corrupt(path, name, 'no version in the response metadata');
    return this.parseBundle(reply, name, version, path).meta;
  }

  async listVersions(name: string): Promise<VersionMeta[]> {
    await this.ready();
    checkCertName(name);
    const key = `certs/${name}`;
    const versions = await this.keyVersions(key);
    const live = versions.filter((v) => !v.destroyed && v.deletionTime === '').map((v) => v.version);
    const skipped = versions.length - live.length;
    if (skipped > 0) this.log.warn({ [LogKey.cert]: name, skipped }, 'deleted versions skipped');
    const metas: VersionMeta[] = [];
    for (let i = 0; i < live.length; i += LIST_CONCURRENCY) {
      const batch = await Promise.all(live.slice(i, i + LIST_CONCURRENCY).map((v) => this.getVersion(name, v)));
      // A version deleted between the metadata read and this read is skipped too.
      for (const b of batch) if (b !== null) metas.push(b.meta);
    }
    return metas;
  }

  async listNames(): Promise<string[]> {
    await this.ready();
    const keys = await this.listFolder('certs/');
    return keys.filter((k) => !k.endsWith('/') && CERT_NAME_PATTERN.test(k)).sort();
  }

  async getObject<T>(key: string): Promise<T | null> {
    await this.ready();
    checkObjectKey(key);
    const path = this.dataPath(`objects/${key}`);
    const reply = await this.request('read object', 'GET', path);
    if (reply.status === 404) return null;
    this.expectOk(reply, 'read object', path);
    const data = objectAt(reply.body, 'data', 'data');
    if (data === undefined) throw this.corrupt(path, undefined, 'no data in the response');
    if (!('value' in data)) return null; // a tombstone left by an interrupted deleteObject
    return data['value'] as T;
  }

  async putObject(key: string, value: unknown): Promise<void> {
    await this.ready();
    checkObjectKey(key);
    const text = JSON.stringify(value);
    if (text === undefined) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `object ${key} has no JSON value`, { details: { key } });
    }
    const path = this.dataPath(`objects/${key}`);
    // Through JSON, as the file store does: Dates become strings, undefined fields vanish.
    const reply = await this.request('write object', 'POST', path, { data: { value: JSON.parse(text) as unknown } });
    this.expectOk(reply, 'write object', path);
  }

  async deleteObject(key: string): Promise<boolean> {
    await this.ready();
    checkObjectKey(key);
    const path = this.dataPath(`objects/${key}`);
    const metaPath = this.metadataPath(`objects/${key}`);
    // KV v2 deletes have no check-and-set; a tombstone written with cas makes exactly one
    // of several concurrent deleters the one that removed the object.
    for (let attempt = 0; attempt < DELETE_ATTEMPTS; attempt++) {
      const reply = await this.request('read object', 'GET', path);
      if (reply.status === 404 && deletedMetadata(reply) === null) return false;
      const data = objectAt(reply.body, 'data', 'data');
      const current = numberAt(reply.body, 'data', 'metadata', 'version');
      if (reply.status === 404 || (data !== undefined && !('value' in data))) {
        // Deleted already (tombstone or soft delete): finish the clean-up someone began.
        await this.removeMetadata(metaPath);
        return false;
      }
      this.expectOk(reply, 'read object', path);
      if (current === undefined) throw this.corrupt(path, undefined, 'no version in the response metadata');
      const write = await this.request('delete object', 'POST', path, { options: { cas: current }, data: { deleted: true } });
      if (write.status === 400 && errorsOf(write).includes(CAS_MISMATCH)) continue; // someone else changed it: look again
      this.expectOk(write, 'delete object', path);
      await this.removeMetadata(metaPath);
      return true;
    }
    throw new CertfleetError(ErrorCode.StoreConflict, `object ${key} kept changing while being deleted`, {
      retryable: true,
      details: { key },
    });
  }

  async listObjects(prefix: string): Promise<string[]> {
    await this.ready();
    checkObjectPrefix(prefix);
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash + 1);
    const keys: string[] = [];
    const walk = async (folder: string): Promise<void> => {
      for (const entry of await this.listFolder(`objects/${folder}`)) {
        const rel = folder + entry;
        if (entry.endsWith('/')) {
          // Only descend where the prefix can still match.
          if (rel.startsWith(prefix) || prefix.startsWith(rel)) await walk(rel);
        } else if (rel.startsWith(prefix)) {
          keys.push(rel);
        }
      }
    };
    await walk(base);
    return keys.sort();
  }

  close(): Promise<void> {
    this.closed = true;
    this.renewTimer?.stop();
    this.renewTimer = undefined;
    return Promise.resolve();
  }

  // ---- authentication ----

  private ready(): Promise<void> {
    if (this.closed) {
      return Promise.reject(new CertfleetError(ErrorCode.StoreUnavailable, 'vault store is closed', { details: { address: this.address } }));
    }
    this.initialised ??= this.login().catch((err: unknown) => {
      this.initialised = undefined; // a later call tries again (Vault may be back)
      throw err;
    });
    return this.initialised;
  }

  /** Obtains a token (approle login, or the configured token), learns its TTL and schedules renewal. */
  private async login(): Promise<void> {
    const a = this.auth;
    if (a.method === 'approle') {
      const [roleId, secretId] = await Promise.all([readSecretFile(a.roleIdFile, 'role_id'), readSecretFile(a.secretIdFile, 'secret_id')]);
      const path = `auth/${a.mount ?? 'approle'}/login`;
      const reply = await this.send('approle login', 'POST', path, { role_id: roleId, secret_id: secretId }, false);
      if (reply.status === 400 || reply.status === 403) {
        throw new CertfleetError(ErrorCode.StoreUnavailable, `Vault refused the AppRole login at ${path}: ${errorsOf(reply).join('; ') || `status ${reply.status}`}`, {
          details: { status: reply.status, path },
        });
      }
      this.expectOk(reply, 'approle login', path);
      const token = stringAt(reply.body, 'auth', 'client_token');
      if (token === undefined) throw this.corrupt(path, undefined, 'login response without auth.client_token');
      this.setToken(token);
      const ttl = numberAt(reply.body, 'auth', 'lease_duration') ?? 0;
      this.grantedTtl = ttl;
      this.schedule(ttl, booleanAt(reply.body, 'auth', 'renewable') ?? false);
      this.log.info({ ttlSeconds: ttl }, 'vault approle login');
      return;
    }
    this.setToken(a.token ?? (await readSecretFile(a.tokenFile ?? '', 'token')));
    const reply = await this.send('token lookup', 'GET', 'auth/token/lookup-self', undefined, false);
    if (reply.status === 403) {
      throw new CertfleetError(ErrorCode.StoreUnavailable, 'Vault refused the configured token (expired, revoked or wrong)', {
        details: { status: 403, address: this.address },
      });
    }
    this.expectOk(reply, 'token lookup', 'auth/token/lookup-self');
    const ttl = numberAt(reply.body, 'data', 'ttl') ?? 0;
    this.grantedTtl = numberAt(reply.body, 'data', 'creation_ttl') ?? ttl;
    this.schedule(ttl, booleanAt(reply.body, 'data', 'renewable') ?? false);
    this.log.info({ ttlSeconds: ttl }, 'vault token accepted');
  }

  private setToken(token: string): void {
    (this.client as unknown as { token: string }).token = token;
  }

  /** Schedules the next renewal at 2/3 of `ttl` seconds; a token without TTL (root, periodic 0) needs none. */
  private schedule(ttlSeconds: number, renewable: boolean): void {
    this.renewTimer?.stop();
    this.renewTimer = undefined;
    if (this.closed || ttlSeconds <= 0) return;
    const delay = Math.max(500, Math.floor(ttlSeconds * 1000 * RENEW_AT));
    this.renewTimer = this.clock
      .after(delay, () => {
        void this.renew(renewable).catch((err: unknown) => {
          this.log.error({ [LogKey.err]: safeErr(err) }, 'vault token renewal failed');
          this.retryAuthLater();
        });
      })
      .unref();
  }

  private retryAuthLater(): void {
    if (this.closed) return;
    this.renewTimer = this.clock
      .after(RETRY_AUTH_MS, () => {
        void this.reauthenticate().catch(() => undefined);
      })
      .unref();
  }

  /**
   * renew-self while Vault allows it; when the token cannot be renewed (not renewable, or
   * its max TTL is near: Vault caps the new TTL), AppRole logs in again and a token file is
   * re-read. A fixed token that cannot be renewed is reported and used until it expires.
   */
  private async renew(renewable: boolean): Promise<void> {
    if (this.closed) return;
    if (renewable) {
      const reply = await this.send('token renewal', 'POST', 'auth/token/renew-self', {}, false);
      if (reply.status < 300) {
        const ttl = numberAt(reply.body, 'auth', 'lease_duration') ?? 0;
        const nearMax = ttl < this.grantedTtl / 2;
        if (!nearMax || (this.auth.method === 'token' && this.auth.token !== undefined)) {
          this.log.debug({ ttlSeconds: ttl }, 'vault token renewed');
          this.schedule(ttl, booleanAt(reply.body, 'auth', 'renewable') ?? true);
          if (nearMax) this.log.warn({ ttlSeconds: ttl }, 'vault token near its max TTL and cannot be replaced');
          return;
        }
        this.log.info({ ttlSeconds: ttl }, 'vault token near its max TTL');
      } else {
        this.log.warn({ status: reply.status, errors: errorsOf(reply) }, 'vault token renewal refused');
      }
    }
    if (!(await this.reauthenticate())) {
      this.log.error('vault token cannot be renewed or replaced; it will expire');
    }
  }

  /** Gets a fresh token if the auth method can (AppRole, token file); shared by concurrent callers. */
  private reauthenticate(): Promise<boolean> {
    if (this.auth.method === 'token' && this.auth.token !== undefined) return Promise.resolve(false);
    this.reauth ??= this.login()
      .then(() => true)
      .finally(() => {
        this.reauth = undefined;
      });
    return this.reauth;
  }

  // ---- requests ----

  /** A request with one re-login on 403 (the token may have expired while we slept). */
  private async request(op: string, method: string, path: string, body?: unknown): Promise<Reply> {
    const reply = await this.send(op, method, path, body, true);
    if (reply.status !== 403) return reply;
    let renewed = false;
    try {
      renewed = await this.reauthenticate();
    } catch (err) {
      this.log.warn({ [LogKey.err]: safeErr(err) }, 'vault re-login failed');
    }
    return renewed ? this.send(op, method, path, body, true) : reply;
  }

  /**
   * One HTTP call through node-vault. Returns status and body for every HTTP answer;
   * throws STORE_UNAVAILABLE (retryable except TLS trust failures) when there is none.
   */
  private async send(op: string, method: string, path: string, body: unknown, checkClosed: boolean): Promise<Reply> {
    if (checkClosed && this.closed) {
      throw new CertfleetError(ErrorCode.StoreUnavailable, 'vault store is closed', { details: { address: this.address } });
    }
    try {
      const res: unknown = await this.client.request({ path: `/${path}`, method, ...(body === undefined ? {} : { json: body }) });
      return { status: 200, body: isRecord(res) ? res : null };
    } catch (err) {
      const response = isRecord(err) && isRecord(err['response']) ? err['response'] : undefined;
      if (response !== undefined && typeof response['statusCode'] === 'number') {
        return { status: response['statusCode'], body: isRecord(response['body']) ? response['body'] : null };
      }
      throw transportError(op, this.address, path, err);
    }
  }

  /** Throws the right CertfleetError unless `reply` is a success. */
  private expectOk(reply: Reply, op: string, path: string): void {
    if (reply.status < 300) return;
    const errors = errorsOf(reply);
    const said = errors.length > 0 ? errors.join('; ').replace(/\s+/g, ' ').trim() : `status ${reply.status}`;
    const details = { op, path, status: reply.status, address: this.address };
    if (reply.status === 400 && errors.includes(CAS_REQUIRED)) {
      throw new CertfleetError(ErrorCode.StoreUnavailable, `Vault requires check-and-set on ${path}; set cas_required=false on the mount (certfleet sets it per certificate key itself)`, { details });
    }
    if (reply.status === 401 || reply.status === 403) {
      throw new CertfleetError(ErrorCode.StoreUnavailable, `Vault denied ${op} on ${path} (${said}): check the token and its policy (docs/storage.md)`, { details });
    }
    const retryable = reply.status >= 500 || reply.status === 429 || reply.status === 412;
    const sealed = errors.some((e) => /sealed/i.test(e));
    throw new CertfleetError(ErrorCode.StoreUnavailable, `Vault ${sealed ? 'is sealed' : 'failed'}: ${op} on ${path}: ${said}`, { retryable, details });
  }

  private dataPath(key: string): string {
    return `${this.mount}/data/${this.prefix}/${key}`;
  }

  private metadataPath(key: string): string {
    return `${this.mount}/metadata/${this.prefix}/${key}`;
  }

  private async currentVersion(key: string): Promise<number> {
    const reply = await this.request('read metadata', 'GET', this.metadataPath(key));
    if (reply.status === 404) return 0;
    this.expectOk(reply, 'read metadata', this.metadataPath(key));
    return numberAt(reply.body, 'data', 'current_version') ?? 0;
  }

  private async keyVersions(key: string): Promise<KvVersionMetadata[]> {
    const path = this.metadataPath(key);
    const reply = await this.request('read metadata', 'GET', path);
    if (reply.status === 404) return [];
    this.expectOk(reply, 'read metadata', path);
    const versions = objectAt(reply.body, 'data', 'versions') ?? {};
    const out: KvVersionMetadata[] = [];
    for (const [k, v] of Object.entries(versions)) {
      const n = Number(k);
      if (!Number.isSafeInteger(n) || n < 1 || !isRecord(v)) throw this.corrupt(path, undefined, `bad version entry ${k}`);
      out.push({ version: n, deletionTime: typeof v['deletion_time'] === 'string' ? v['deletion_time'] : '', destroyed: v['destroyed'] === true });
    }
    return out.sort((a, b) => a.version - b.version);
  }

  /**
   * Sets max_versions and cas_required on a certificate key, once per key per process.
   * Runs after the write (so a key never exists without a version); a failure is logged,
   * not thrown — the version is stored — and the next putVersion tries again.
   */
  private async ensureKeyMetadata(key: string): Promise<void> {
    if (this.metadataSet.has(key)) return;
    const path = this.metadataPath(key);
    try {
      const reply = await this.request('write metadata', 'POST', path, { max_versions: this.maxVersions, cas_required: true });
      this.expectOk(reply, 'write metadata', path);
      this.metadataSet.add(key);
    } catch (err) {
      this.log.warn({ [LogKey.err]: safeErr(err), path }, 'vault key metadata not set; Vault keeps only its default number of versions until it is');
    }
  }

  private async removeMetadata(path: string): Promise<void> {
    try {
      const reply = await this.request('delete metadata', 'DELETE', path);
      this.expectOk(reply, 'delete metadata', path);
    } catch (err) {
      // The tombstone already reads as absent; the next delete finishes the job.
      this.log.warn({ [LogKey.err]: safeErr(err), path }, 'vault object metadata not removed');
    }
  }

  /** Entries (`name` or `folder/`) of one folder under the prefix; empty when it does not exist. */
  private async listFolder(folder: string): Promise<string[]> {
    const path = this.metadataPath(folder);
    // GET ?list=true rather than the LIST verb: same endpoint, and every HTTP stack passes it.
    const reply = await this.request('list', 'GET', `${path}?list=true`);
    if (reply.status === 404) return [];
    this.expectOk(reply, 'list', path);
    const keys = (objectAt(reply.body, 'data') ?? {})['keys'];
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw this.corrupt(path, undefined, 'list without keys');
    return keys;
  }

  private parseBundle(reply: Reply, name: string, version: number, where: string): Bundle {
    const data = objectAt(reply.body, 'data', 'data');
    if (data === undefined) throw this.corrupt(where, name, 'no data');
    const stored = numberAt(reply.body, 'data', 'metadata', 'version');
    if (stored !== undefined && stored !== version) throw this.corrupt(where, name, `Vault returned version ${stored}`);
    let meta: VersionMeta;
    try {
      meta = parseVersionMeta(data['meta'], `vault:${where}`, { name, version });
    } catch (err) {
      this.log.error({ [LogKey.cert]: name, path: where }, 'store corrupt');
      throw err;
    }
    const pems: string[] = [];
    for (const f of ['certPem', 'chainPem', 'keyPem'] as const) {
      const v = data[f];
      if (typeof v !== 'string') throw this.corrupt(where, name, `${f} missing`);
      pems.push(v);
    }
    return { meta, certPem: pems[0] ?? '', chainPem: pems[1] ?? '', keyPem: pems[2] ?? '' };
  }

  private corrupt(path: string, cert: string | undefined, why: string): CertfleetError {
    this.log.error({ [LogKey.cert]: cert, path, why }, 'store corrupt');
    return new CertfleetError(ErrorCode.StoreCorrupt, `corrupt Vault data at ${path}: ${why}`, {
      details: { file: `vault:${path}`, path, ...(cert === undefined ? {} : { cert }) },
    });
  }
}

// ---- helpers ----

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function at(body: unknown, ...path: string[]): unknown {
  let cur: unknown = body;
  for (const p of path) {
    if (!isRecord(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

function numberAt(body: unknown, ...path: string[]): number | undefined {
  const v = at(body, ...path);
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v); // json.Number encodings
  return undefined;
}

function stringAt(body: unknown, ...path: string[]): string | undefined {
  const v = at(body, ...path);
  return typeof v === 'string' ? v : undefined;
}

function booleanAt(body: unknown, ...path: string[]): boolean | undefined {
  const v = at(body, ...path);
  return typeof v === 'boolean' ? v : undefined;
}

function objectAt(body: unknown, ...path: string[]): Record<string, unknown> | undefined {
  const v = at(body, ...path);
  return isRecord(v) ? v : undefined;
}

function errorsOf(reply: Reply): string[] {
  const e = reply.body?.['errors'];
  return Array.isArray(e) ? e.filter((x): x is string => typeof x === 'string') : [];
}

/** The version metadata a 404 carries when the version exists but was deleted or destroyed; null for "no such key/version". */
function deletedMetadata(reply: Reply): KvVersionMetadata | null {
  const m = objectAt(reply.body, 'data', 'metadata');
  const version = numberAt(reply.body, 'data', 'metadata', 'version');
  if (m === undefined || version === undefined) return null;
  return {
    version,
    deletionTime: typeof m['deletion_time'] === 'string' ? m['deletion_time'] : '',
    destroyed: m['destroyed'] === true,
  };
}

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|DEPTH_ZERO|ERR_TLS|ERR_SSL/;

/**
 * A transport failure as STORE_UNAVAILABLE. The original error is not kept as `cause`:
 * node-vault's transport errors carry the request, with the token header and the body.
 */
function transportError(op: string, address: string, path: string, err: unknown): CertfleetError {
  const code = isRecord(err) && typeof err['code'] === 'string' ? err['code'] : undefined;
  const message = err instanceof Error ? err.message : String(err);
  const tls = code !== undefined && TLS_CODES.test(code);
  return new CertfleetError(
    ErrorCode.StoreUnavailable,
    `Vault at ${address} ${tls ? 'failed TLS verification' : 'unreachable'}: ${op} on ${path}: ${code ?? message}`,
    { retryable: !tls, cause: new Error(`${code ?? 'error'}: ${message}`), details: { op, path, address, errno: code } },
  );
}

/** An error reduced to what is safe to log. */
function safeErr(err: unknown): { code?: string; message: string } {
  if (err instanceof CertfleetError) return { code: err.code, message: err.message };
  return { message: err instanceof Error ? err.message : String(err) };
}

async function readSecretFile(file: string, what: string): Promise<string> {
  try {
    const text = (await fs.readFile(file, 'utf8')).trim();
    if (text === '') throw new Error('empty file');
    return text;
  } catch (err) {
    const code = isRecord(err) && typeof err['code'] === 'string' ? err['code'] : (err as Error).message;
    throw new CertfleetError(ErrorCode.StoreUnavailable, `cannot read the Vault ${what} from ${file}: ${code}`, {
      details: { file },
    });
  }
}

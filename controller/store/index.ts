/**
 * Where the controller keeps certificate material and its own internal documents.
 *
 * Two things live in a CertStore:
 *  - **certificate versions**: every issuance of certificate `name` becomes version
 *    1, 2, 3, ... with its certificate, chain, private key and {@link VersionMeta}.
 *    Versions are immutable; rollback moves the desired pointer (NATS), never history.
 *  - **objects**: small JSON documents the controller owns (ACME account, its own CA,
 *    enrolment token hashes, agent registry), under keys such as `acme/account/<id>`,
 *    `pki/ca`, `enroll/<hash>`, `agents/<name>`. Every key is named once, in
 *    {@link ObjectKey} / {@link ObjectPrefix} (objects.ts).
 *
 * Backends: {@link FileStore} (the embedded default) and {@link VaultStore} (Vault KV v2).
 * Both must pass the contract suite in test/contract/cert-store.ts. Layouts and the Vault
 * setup are in docs/storage.md.
 */
import fs from 'node:fs/promises';
import type { Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { Logger } from '../../shared/log/index.js';
import type { Bundle, VersionMeta } from '../../shared/model/index.js';
import { FileStore } from './file.js';
import { VaultStore, type VaultAuth } from './vault.js';

export { FileStore, type FileStoreOptions } from './file.js';
export { ObjectKey, ObjectPrefix } from './objects.js';
export { lockFileStore, LOCK_FILE, type StoreLock } from './lock.js';
export { VaultStore, DEFAULT_MAX_VERSIONS, VAULT_PATH_PATTERN, type VaultAuth, type VaultStoreOptions } from './vault.js';
export {
  OBJECT_KEY_PATTERN,
  checkCertName,
  checkExpectedLatest,
  checkObjectKey,
  checkObjectPrefix,
  checkVersionInput,
  checkVersionNumber,
  parseVersionMeta,
} from './keys.js';

/** What putVersion stores: the material plus every meta field except the number it assigns. */
export interface VersionInput {
  /** Leaf certificate, PEM. */
  certPem: string;
  /** Intermediates, PEM, leaf excluded; may be empty. */
  chainPem: string;
  /** PKCS#8 private key, PEM. Secret. */
  keyPem: string;
  /** `meta.name` must equal the `name` argument. */
  meta: Omit<VersionMeta, 'version'>;
}

/**
 * The storage contract every backend keeps.
 *
 * - **Concurrency.** Every method may be called concurrently. putVersion is a
 *   compare-and-set on the latest version number: of several writers passing the same
 *   `expectedLatest`, exactly one succeeds and the others get STORE_CONFLICT, across
 *   processes too where the backend allows (the file store on one local filesystem, Vault
 *   through its CAS). Objects are last-writer-wins; deleteObject tells its caller whether
 *   it was the one that removed the object.
 * - **Atomicity.** A version is visible completely or not at all, also after a crash;
 *   an object read returns an old or a new value, never a torn one.
 * - **Not found** is `null` (getVersion, latest, getObject) or an empty list, never an error.
 * - **Errors** are CertfleetError: STORE_UNAVAILABLE (retryable: I/O error, backend
 *   down, store closed — the latter not retryable), STORE_CONFLICT (CAS lost: re-read and
 *   decide again), STORE_CORRUPT (stored data unreadable; details name the file or path),
 *   USAGE_INVALID (a name, key or argument that can never be valid — a caller bug).
 * - **Validation.** Certificate names follow CERT_NAME_PATTERN; object keys are
 *   `[a-z0-9_.-]` segments joined by `/`, no segment starting with a dot, no `..`.
 * - **Secrets.** Private keys are stored readable by the controller only and never logged.
 */
export interface CertStore {
  readonly kind: 'file' | 'vault';
  /**
   * Stores a new version of `name` numbered `expectedLatest + 1` and returns its meta.
   * `expectedLatest` is the version the caller last saw (0: none yet); if the latest
   * stored version differs, STORE_CONFLICT and nothing is written.
   */
  putVersion(name: string, input: VersionInput, expectedLatest: number): Promise<VersionMeta>;
  /** One version with its material, or null if that name or version does not exist. */
  getVersion(name: string, version: number): Promise<Bundle | null>;
  /** Meta of the highest version, or null if the name has none. */
  latest(name: string): Promise<VersionMeta | null>;
  /** Meta of every version, ascending; empty if the name has none. */
  listVersions(name: string): Promise<VersionMeta[]>;
  /** Every certificate name with at least one version, sorted. */
  listNames(): Promise<string[]>;
  /**
   * The JSON document at `key`, or null. The type parameter is not checked: callers
   * validate what they read (it may have been written by an older controller).
   */
  getObject<T>(key: string): Promise<T | null>;
  /** Writes `value` (JSON-serialisable, not undefined) at `key`, replacing any old value. */
  putObject(key: string, value: unknown): Promise<void>;
  /** Removes `key`. True when this call removed it, false when it was already absent. */
  deleteObject(key: string): Promise<boolean>;
  /** Every object key starting with `prefix` (e.g. `agents/`), sorted; `''` lists all. */
  listObjects(prefix: string): Promise<string[]>;
  /** Releases resources; later calls fail with STORE_UNAVAILABLE. Idempotent. */
  close(): Promise<void>;
}

/** The Vault variant of the store section, as the controller config produces it. */
export interface VaultStoreConfig {
  type: 'vault';
  /** e.g. `https://vault.example.net:8200`. */
  address: string;
  /** KV v2 mount; default `secret`. */
  mount?: string;
  /** Path prefix inside the mount; default `certfleet`. */
  prefix?: string;
  namespace?: string | undefined;
  /** PEM file trusted for Vault's TLS instead of the system store. */
  caFile?: string | undefined;
  auth: VaultAuth;
  /** Default {@link DEFAULT_MAX_VERSIONS}. */
  maxVersions?: number;
  /** Milliseconds; default 10 s. */
  requestTimeout?: number;
}

/** Store section of the controller config. */
export type StoreConfig = { type: 'file'; path: string } | VaultStoreConfig;

/**
 * Opens the configured store and checks it is usable (file: directory created and
 * writable; Vault: reachable and the token or AppRole login accepted), so a bad setting
 * fails at startup with STORE_UNAVAILABLE rather than at first issuance. An unreadable
 * Vault `caFile` is STORE_UNAVAILABLE naming the file. `clock` times the Vault token
 * renewals (default the system clock).
 */
export async function openStore(config: StoreConfig, log: Logger, clock?: Clock): Promise<CertStore> {
  switch (config.type) {
    case 'file':
      return FileStore.open({ dir: config.path, log });
    case 'vault': {
      let caPem: string | undefined;
      if (config.caFile !== undefined) {
        try {
          caPem = await fs.readFile(config.caFile, 'utf8');
        } catch (err) {
          throw new CertfleetError(ErrorCode.StoreUnavailable, `cannot read the Vault CA file ${config.caFile}`, {
            cause: err,
            details: { file: config.caFile },
          });
        }
      }
      return VaultStore.open({
        address: config.address,
        ...(config.mount === undefined ? {} : { mount: config.mount }),
        ...(config.prefix === undefined ? {} : { prefix: config.prefix }),
        ...(config.namespace === undefined ? {} : { namespace: config.namespace }),
        ...(caPem === undefined ? {} : { caPem }),
        auth: config.auth,
        ...(config.maxVersions === undefined ? {} : { maxVersions: config.maxVersions }),
        ...(config.requestTimeout === undefined ? {} : { requestTimeoutMs: config.requestTimeout }),
        log,
        ...(clock === undefined ? {} : { clock }),
      });
    }
  }
}

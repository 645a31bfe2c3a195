/**
 * FileStore: the embedded CertStore, a directory on local disk.
 *
 * Layout (every directory 0700, every file 0600, including public ones: the whole tree
 * is the controller's and nobody else needs to read it):
 *
 * ```
 * <dir>/certs/<name>/<N>/cert.pem       leaf certificate
 * <dir>/certs/<name>/<N>/chain.pem      intermediates (may be empty)
 * <dir>/certs/<name>/<N>/privkey.pem    PKCS#8 private key
 * <dir>/certs/<name>/<N>/meta.json      VersionMeta
 * <dir>/certs/<name>/.tmp-<N>-<random>/ a version being written (or left by a crash)
 * <dir>/objects/<key>.json              internal documents; `a/b` is objects/a/b.json
 * <dir>/objects/<dir>/.<base>.tmp-<random>  an object being written
 * ```
 *
 * How a version is written, so that a crash never leaves half a version visible:
 * all four files are written and fsynced inside a fresh temp directory (at once: no
 * reader looks in a temp directory), the temp directory is fsynced, then renamed to `<N>`
 * and the parent fsynced.
 * The rename is the compare-and-set: rename(2) onto an existing non-empty directory
 * fails (ENOTEMPTY/EEXIST), so of two writers racing for the same `<N>` exactly one
 * wins, also across processes, and the loser gets STORE_CONFLICT. (A separate
 * `mkdir <N>` claim would leave an empty `<N>` behind after a crash and block that
 * number forever; the rename claims and publishes in one step.)
 * Readers see only numeric directories, so temp directories (in-flight or left over by
 * a crash) are ignored; they are not swept automatically because an in-flight one cannot
 * be told from an abandoned one — remove `.tmp-*` by hand when the controller is down.
 *
 * Objects are written to a temp file, fsynced, renamed over `<key>.json` and the
 * directory fsynced: readers see the old or the new document, never a torn one.
 *
 * Cost (issue #13): the reads the work loop makes for every certificate on every pass
 * (the stats behind the caches below, directory listings, meta.json and object reads) and
 * the creates and writes of a version's small files are synchronous calls: on a local
 * disk they take microseconds, while each fs/promises call is a round trip through
 * libuv's pool that cost more of the controller's thread than the work (a quarter of it
 * in an issuance burst). What waits for the disk — every fsync, renames, unlinks,
 * directory creation — stays asynchronous.
 *
 * `latest(name)` is asked for every certificate on every pass of the work loop (issue
 * #13: 14–20 times per issued certificate in a burst, a directory listing and a meta.json
 * read each, a fifth of the controller's CPU per certificate). Its answer is kept per
 * name with the stat of `certs/<name>/` it was read under (inode, mtime, ctime, link
 * count: every version published or removed renames an entry in that directory, which
 * changes them), and served again while one stat says the directory is unchanged — also
 * when another process wrote it (`certfleet certbot import` on a running controller).
 * A directory changed within the last {@link RACY_MS} (as the file system's timestamps
 * are coarser than the change rate) is read in full every time, the way git treats
 * a "racily clean" index entry.
 *
 * Rollback pins and revocation marks (`getObject`, issue #13: a pin was read, and found
 * absent, for every certificate on every pass) are kept the same
 * way: the text with the stat of the file, or for an absent one the stat of its nearest
 * existing directory, served again while that stat is unchanged and not racy. Objects are
 * written by rename and removed by unlink, both of which change those stats, so another
 * controller's (or the CLI's) pin is seen at the next read.
 */
import fsSync, { type BigIntStats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import type { Bundle, VersionMeta } from '../../shared/model/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import { fsyncDir, writeDurableAll, writeFileAtomic, type NewFile } from '../../shared/files/index.js';
import { systemClock } from '../../shared/clock/index.js';
import type { CertStore, VersionInput } from './index.js';
import {
  checkCertName,
  checkObjectKey,
  checkObjectPrefix,
  checkVersionNumber,
  parseVersionMeta,
  prepareVersion,
} from './keys.js';
import { ObjectPrefix } from './objects.js';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const VERSION_DIR = /^[1-9][0-9]*$/;
const FILES = { cert: 'cert.pem', chain: 'chain.pem', key: 'privkey.pem', meta: 'meta.json' } as const;

/**
 * A certificate directory modified less than this long ago (by the wall clock, which the
 * file system's timestamps come from) is not trusted to show a later change in its stat:
 * timestamps tick in jiffies (1–10 ms on Linux) and a second change within one tick
 * leaves them equal. {@link RACY_MS_COARSE} where the timestamp has no sub-millisecond
 * part (file systems with whole-second or -millisecond timestamps). Costs only full reads
 * during that time after a write.
 */
export const RACY_MS = 100;
/** {@link RACY_MS} for a file system whose timestamps look coarse. */
export const RACY_MS_COARSE = 2_000;

/**
 * Objects read on every pass of the work loop, served from memory while unchanged (module
 * comment): rollback pins and revocation marks (read for every certificate on every pass,
 * nearly always absent). Agent registrations are kept by their one reader, controller/enroll
 * (a second copy here would only add a stat per miss there). None holds key material,
 * which is not kept in memory longer than its reader needs it.
 */
const CACHED_OBJECT_PREFIXES: readonly string[] = [ObjectPrefix.pins, ObjectPrefix.revocations];

/** Whether a directory with modification time `mtimeNs` may have changed again unseen. */
function racy(mtimeNs: bigint): boolean {
  const coarse = mtimeNs % 1_000_000n === 0n;
  // Wall-clock time on purpose: it is compared with the file system's timestamps.
  const ageMs = systemClock.now() - Number(mtimeNs / 1_000_000n);
  return ageMs < (coarse ? RACY_MS_COARSE : RACY_MS);
}

/** The stat of a certificate directory a cached `latest` answer was read under. */
function dirStamp(st: BigIntStats): string {
  return `${st.ino}:${st.mtimeNs}:${st.ctimeNs}:${st.nlink}`;
}

export interface FileStoreOptions {
  /** Root directory; created 0700 if missing, tightened to 0700 if looser. */
  dir: string;
  log: Logger;
}

/** The file-backed CertStore. See the module comment for the layout and write protocol. */
export class FileStore implements CertStore {
  readonly kind = 'file' as const;
  private readonly root: string;
  private readonly certsDir: string;
  private readonly objectsDir: string;
  private readonly log: Logger;
  private initialised: Promise<void> | undefined;
  private closed = false;
  /** `latest` answers by certificate name, with the directory stat they were read under (module comment). */
  private readonly latestCache = new Map<string, { stamp: string; meta: VersionMeta }>();
  /** Objects under {@link CACHED_OBJECT_PREFIXES}: their text (null: absent) and the stat it was read under. */
  private readonly objectCache = new Map<string, { probe: string; stamp: string; text: string | null }>();

  /** Creates the store; the directory is prepared on first use (or by {@link FileStore.open}). */
  constructor(options: FileStoreOptions) {
    this.root = path.resolve(options.dir);
    this.certsDir = path.join(this.root, 'certs');
    this.objectsDir = path.join(this.root, 'objects');
    this.log = componentLogger(options.log, 'store').child({ store: 'file' });
  }

  /** Creates a FileStore and prepares its directory now; STORE_UNAVAILABLE if it cannot. */
  static async open(options: FileStoreOptions): Promise<FileStore> {
    const store = new FileStore(options);
    await store.ready();
    return store;
  }

  async putVersion(name: string, input: VersionInput, expectedLatest: number): Promise<VersionMeta> {
    await this.ready();
    const { version, meta } = prepareVersion(name, input, expectedLatest);
    const certDir = path.join(this.certsDir, name);
    await this.io('create certificate directory', certDir, () => ensureDir(certDir));
    const current = this.latestNumber(name);
    if (current !== expectedLatest) throw conflict(name, expectedLatest, current);

    const tmp = path.join(certDir, `.tmp-${version}-${crypto.randomBytes(6).toString('hex')}`);
    const target = path.join(certDir, String(version));
    try {
      await this.io('write version', tmp, async () => {
        await fs.mkdir(tmp, { mode: DIR_MODE });
        // The four files and the temp directory's entries fsynced together (issue #13:
        // the creates and writes of small files are synchronous, only the fsyncs go to
        // libuv's pool): no reader looks inside a temp directory, and the version appears
        // only by the rename below, after all of it is on disk, so the order of the writes
        // within it does not matter for a crash.
        const file = (base: string, data: string): NewFile => ({ file: path.join(tmp, base), data, mode: FILE_MODE });
        await writeDurableAll(
          [file(FILES.cert, input.certPem), file(FILES.chain, input.chainPem), file(FILES.key, input.keyPem), file(FILES.meta, JSON.stringify(meta, null, 2) + '\n')],
          tmp,
        );
      });
      try {
        await fs.rename(tmp, target);
      } catch (err) {
        if (errno(err) === 'ENOTEMPTY' || errno(err) === 'EEXIST') throw conflict(name, expectedLatest, version);
        throw unavailable('publish version', target, err);
      }
      await this.io('sync certificate directory', certDir, () => fsyncDir(certDir));
      this.latestCache.delete(name);
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true }).catch((rmErr: unknown) => {
        this.log.warn({ [LogKey.err]: rmErr, dir: tmp }, 'temp version directory not removed');
      });
      throw err;
    }
    // Debug: the caller's outcome line (certificate issued, spooled version delivered) names the version.
    this.log.debug({ [LogKey.cert]: name, [LogKey.version]: version }, 'version stored');
    return meta;
  }

  async getVersion(name: string, version: number): Promise<Bundle | null> {
    await this.ready();
    checkCertName(name);
    checkVersionNumber(version);
    const dir = path.join(this.certsDir, name, String(version));
    const meta = await this.readMeta(name, dir, version);
    if (meta === null) return null;
    const [certPem, chainPem, keyPem] = await Promise.all(
      [FILES.cert, FILES.chain, FILES.key].map((f) => this.readRequired(path.join(dir, f), name)),
    );
    return { meta, certPem: certPem ?? '', chainPem: chainPem ?? '', keyPem: keyPem ?? '' };
  }

  async latest(name: string): Promise<VersionMeta | null> {
    await this.ready();
    checkCertName(name);
    const certDir = path.join(this.certsDir, name);
    // Stat first, then read: a change after the stat makes the next stat differ.
    let st: BigIntStats;
    try {
      st = fsSync.statSync(certDir, { bigint: true });
    } catch (err) {
      this.latestCache.delete(name);
      if (errno(err) === 'ENOENT') return null;
      throw unavailable('list versions', certDir, err);
    }
    const stamp = dirStamp(st);
    const cached = this.latestCache.get(name);
    if (cached !== undefined && cached.stamp === stamp) return copyMeta(cached.meta);
    const n = this.latestNumber(name);
    if (n === 0) {
      this.latestCache.delete(name);
      return null;
    }
    const dir = path.join(certDir, String(n));
    const meta = await this.readMeta(name, dir, n);
    if (meta === null) throw this.corrupt(path.join(dir, FILES.meta), name, 'version directory vanished');
    if (!racy(st.mtimeNs)) this.latestCache.set(name, { stamp, meta: copyMeta(meta) });
    else this.latestCache.delete(name);
    return meta;
  }

  async listVersions(name: string): Promise<VersionMeta[]> {
    await this.ready();
    checkCertName(name);
    const numbers = this.versionNumbers(name);
    const metas: VersionMeta[] = [];
    for (const n of numbers) {
      const dir = path.join(this.certsDir, name, String(n));
      const meta = await this.readMeta(name, dir, n);
      if (meta === null) throw this.corrupt(path.join(dir, FILES.meta), name, 'version directory vanished');
      metas.push(meta);
    }
    return metas;
  }

  async listNames(): Promise<string[]> {
    await this.ready();
    const entries = await this.io('list certificates', this.certsDir, () =>
      fs.readdir(this.certsDir, { withFileTypes: true }),
    );
    const names: string[] = [];
    for (const e of entries) {
      if (!e.isDirectory() || !CERT_NAME_PATTERN.test(e.name)) continue;
      // A name whose only entry is a temp directory has no version yet.
      if (this.versionNumbers(e.name).length > 0) names.push(e.name);
    }
    return names.sort();
  }

  async getObject<T>(key: string): Promise<T | null> {
    await this.ready();
    checkObjectKey(key);
    const file = this.objectPath(key);
    const text = CACHED_OBJECT_PREFIXES.some((p) => key.startsWith(p)) ? this.readObjectCached(key, file) : this.readObject(file);
    if (text === null) return null;
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw this.corrupt(file, undefined, 'not valid JSON', err);
    }
  }

  async putObject(key: string, value: unknown): Promise<void> {
    await this.ready();
    checkObjectKey(key);
    const text = JSON.stringify(value);
    if (text === undefined) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `object ${key} has no JSON value`, { details: { key } });
    }
    const file = this.objectPath(key);
    this.objectCache.delete(key);
    await this.io('write object', file, async () => {
      await ensureDir(path.dirname(file));
      await writeFileAtomic(file, text + '\n', FILE_MODE);
    });
  }

  async deleteObject(key: string): Promise<boolean> {
    await this.ready();
    checkObjectKey(key);
    const file = this.objectPath(key);
    try {
      // unlink is atomic: of concurrent deleters exactly one sees success.
      await fs.unlink(file);
    } catch (err) {
      // Nothing was there: a kept "absent" stays true (the issuer releases a pin, nearly
      // always absent, at every issuance).
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return false;
      this.objectCache.delete(key);
      throw unavailable('delete object', file, err);
    }
    this.objectCache.delete(key);
    await this.io('sync object directory', path.dirname(file), () => fsyncDir(path.dirname(file)));
    return true;
  }

  async listObjects(prefix: string): Promise<string[]> {
    await this.ready();
    checkObjectPrefix(prefix);
    // Start the walk at the deepest directory the prefix names completely.
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash);
    const keys: string[] = [];
    const walk = async (relDir: string): Promise<void> => {
      const abs = relDir === '' ? this.objectsDir : path.join(this.objectsDir, ...relDir.split('/'));
      let entries;
      try {
        entries = await fs.readdir(abs, { withFileTypes: true });
      } catch (err) {
        if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return;
        throw unavailable('list objects', abs, err);
      }
      for (const e of entries) {
        if (e.name.startsWith('.')) continue; // temp files
        const rel = relDir === '' ? e.name : `${relDir}/${e.name}`;
        if (e.isDirectory()) await walk(rel);
        else if (e.isFile() && e.name.endsWith('.json')) keys.push(rel.slice(0, -'.json'.length));
      }
    };
    await walk(base);
    return keys.filter((k) => k.startsWith(prefix)).sort();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  // ---- internals ----

  private ready(): Promise<void> {
    if (this.closed) {
      return Promise.reject(
        new CertfleetError(ErrorCode.StoreUnavailable, 'file store is closed', { details: { dir: this.root } }),
      );
    }
    this.initialised ??= this.init().catch((err: unknown) => {
      this.initialised = undefined; // let a later call try again (e.g. the disk was remounted)
      throw err;
    });
    return this.initialised;
  }

  private async init(): Promise<void> {
    await this.io('prepare store directory', this.root, async () => {
      await fs.mkdir(this.root, { recursive: true, mode: DIR_MODE });
      const st = await fs.stat(this.root);
      if ((st.mode & 0o077) !== 0) {
        // The tree holds private keys; a directory others can enter defeats the 0600 files' neighbours.
        this.log.warn({ dir: this.root, mode: (st.mode & 0o777).toString(8) }, 'store directory mode tightened to 0700');
        await fs.chmod(this.root, DIR_MODE);
      }
      await ensureDir(this.certsDir);
      await ensureDir(this.objectsDir);
      // Fails early (EACCES, EROFS) rather than at the first issuance.
      await fs.access(this.root, fs.constants.W_OK);
    });
    this.log.info({ dir: this.root }, 'file store opened');
  }

  /** The text of the object in `file`, or null when there is none. */
  private readObject(file: string): string | null {
    try {
      return fsSync.readFileSync(file, 'utf8');
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return null;
      throw unavailable('read object', file, err);
    }
  }

  /**
   * {@link readObject} answered from memory while one stat shows nothing changed (module
   * comment): the stat of the file when it exists (a rename over it changes its inode, an
   * edit in place its mtime), else of its nearest existing directory (creating the file,
   * or a directory on the way to it, changes that directory).
   */
  private readObjectCached(key: string, file: string): string | null {
    const cached = this.objectCache.get(key);
    if (cached !== undefined) {
      const st = this.statOrNull(cached.probe);
      if (st !== null && dirStamp(st) === cached.stamp) return cached.text;
    }
    // Stat first, then read: a change after the stat makes the next stat differ.
    let probe = file;
    let st = this.statOrNull(probe);
    while (st === null && probe !== this.objectsDir) {
      probe = path.dirname(probe);
      st = this.statOrNull(probe);
    }
    const text = this.readObject(file);
    // The read must agree with the stat (absent under a directory, present as the file).
    if (st !== null && !racy(st.mtimeNs) && (text === null) === (probe !== file)) {
      this.objectCache.set(key, { probe, stamp: dirStamp(st), text });
    } else {
      this.objectCache.delete(key);
    }
    return text;
  }

  private statOrNull(p: string): BigIntStats | null {
    try {
      return fsSync.statSync(p, { bigint: true });
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return null;
      throw unavailable('read object', p, err);
    }
  }

  private objectPath(key: string): string {
    return path.join(this.objectsDir, ...key.split('/')) + '.json';
  }

  private versionNumbers(name: string): number[] {
    const dir = path.join(this.certsDir, name);
    let entries;
    try {
      entries = fsSync.readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      if (errno(err) === 'ENOENT') return [];
      throw unavailable('list versions', dir, err);
    }
    return entries
      .filter((e) => e.isDirectory() && VERSION_DIR.test(e.name))
      .map((e) => Number(e.name))
      .sort((a, b) => a - b);
  }

  private latestNumber(name: string): number {
    const numbers = this.versionNumbers(name);
    return numbers[numbers.length - 1] ?? 0;
  }

  /** Meta of the version in `dir`; null if the directory does not exist. */
  private async readMeta(name: string, dir: string, version: number): Promise<VersionMeta | null> {
    const file = path.join(dir, FILES.meta);
    let text: string;
    try {
      text = fsSync.readFileSync(file, 'utf8');
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw unavailable('read version meta', file, err);
      const dirExists = await fs.stat(dir).then(
        () => true,
        (statErr: unknown) => {
          if (errno(statErr) === 'ENOENT') return false;
          throw unavailable('read version', dir, statErr);
        },
      );
      if (!dirExists) return null;
      throw this.corrupt(file, name, 'meta.json missing');
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw this.corrupt(file, name, 'not valid JSON', err);
    }
    try {
      return parseVersionMeta(raw, file, { name, version });
    } catch (err) {
      this.log.error({ [LogKey.cert]: name, file }, 'store corrupt');
      throw err;
    }
  }

  private async readRequired(file: string, name: string): Promise<string> {
    try {
      return await fs.readFile(file, 'utf8');
    } catch (err) {
      if (errno(err) === 'ENOENT') throw this.corrupt(file, name, 'file missing');
      throw unavailable('read version', file, err);
    }
  }

  private corrupt(file: string, cert: string | undefined, why: string, cause?: unknown): CertfleetError {
    this.log.error({ [LogKey.cert]: cert, file, why }, 'store corrupt');
    return new CertfleetError(ErrorCode.StoreCorrupt, `corrupt store file ${file}: ${why}`, {
      details: { file, ...(cert === undefined ? {} : { cert }) },
      cause,
    });
  }

  private async io<T>(op: string, where: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof CertfleetError) throw err;
      throw unavailable(op, where, err);
    }
  }
}

/** A copy the caller may change without changing the cached answer. */
function copyMeta(meta: VersionMeta): VersionMeta {
  return { ...meta, names: [...meta.names] };
}

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err).code) : undefined;
}

function unavailable(op: string, where: string, cause: unknown): CertfleetError {
  const code = errno(cause);
  return new CertfleetError(ErrorCode.StoreUnavailable, `file store: ${op} failed at ${where}: ${code ?? String(cause)}`, {
    retryable: true,
    cause,
    details: { op, path: where, errno: code },
  });
}

function conflict(name: string, expected: number, actual: number): CertfleetError {
  return new CertfleetError(
    ErrorCode.StoreConflict,
    `certificate ${name}: expected latest version ${expected}, store has ${actual}`,
    { details: { cert: name, expectedLatest: expected, actualLatest: actual } },
  );
}

/**
 * mkdir -p with mode 0700. A new directory's name lives in its parent, so every
 * directory from the outermost one created up to `dir`'s parent is fsynced.
 */
async function ensureDir(dir: string): Promise<void> {
  const first = await fs.mkdir(dir, { recursive: true, mode: DIR_MODE });
  if (first === undefined) return;
  const toSync = [path.dirname(first)];
  for (let cur = first; cur !== dir; ) {
    toSync.push(cur);
    const next = path.relative(cur, dir).split(path.sep)[0];
    if (next === undefined || next === '' || next === '..') break;
    cur = path.join(cur, next);
  }
  for (const d of toSync) await fsyncDir(d);
}

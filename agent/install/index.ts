/**
 * Installs certificate versions on an agent's disk, atomically, and keeps the last few
 * for rollback.
 *
 * Layout under `<stateDir>/certs/<name>/`:
 *
 *   versions/<N>/cert.pem        leaf                              0644
 *   versions/<N>/chain.pem       intermediates                     0644
 *   versions/<N>/fullchain.pem   leaf + intermediates              0644
 *   versions/<N>/privkey.pem     PKCS#8 key                        0600
 *   versions/<N>/combined.pem    fullchain + key (HAProxy)         0600
 *   versions/<N>/meta.json       VersionMeta                       0644
 *   current -> versions/<N>      relative symlink, swapped atomically: the commit point
 *   {cert,chain,fullchain,privkey,combined}.pem -> current/<file>
 *                                links made once, so `certs/<name>/` is itself a lineage
 *                                directory like certbot's live/<name>/ (RENEWED_LINEAGE
 *                                when no live tree is configured: basename = the name)
 *   loaded.json                  the last version whose install completed (hook and
 *                                verify included), written by the agent's apply step
 *                                through {@link Installer.markLoaded} (./loaded.ts)
 *
 * Optional certbot-compatible tree (`liveDir`, e.g. <stateDir>/live or /etc/letsencrypt/live):
 *
 *   <liveDir>/<name>/{cert,chain,fullchain,privkey}.pem -> <stateDir>/certs/<name>/current/<file>
 *
 * Those links point through `current`, so they follow every swap (and rollback) with no
 * write of their own: the `current` rename stays the only commit point, and nginx or
 * HAProxy configurations written for certbot's live/ paths work unchanged. With a live
 * tree, RENEWED_LINEAGE is <liveDir>/<name>.
 *
 * Optional HAProxy certificate directory (`haproxyCrtDir`, for `bind ... ssl crt <dir>`):
 *
 *   <haproxyCrtDir>/<name>.pem -> <stateDir>/certs/<name>/current/combined.pem
 *
 * one combined PEM (fullchain + key) per certificate, through `current` as above. HAProxy
 * loads every file of the directory at start and reload; the `haproxy` reload hook
 * (agent/hooks) pushes a changed one into the running process through its runtime API.
 *
 * Directories are 0700. Install sequence and why it is crash safe:
 *
 *   validate ──> write versions/.tmp-<N>-<rand>/* ──> fsync every file and the tmp dir
 *     (issued together, all done before the next step) ──> rename to versions/<N> ──> fsync versions/
 *     ──> symlink .current-<rand> -> versions/<N> ──> rename over `current` ──> fsync
 *
 * A version directory appears only by rename, complete; `current` changes only by rename,
 * so at every instant it names a complete version (or does not exist yet). The rename of
 * the symlink is the commit point. A crash leaves at most a `.tmp-*` directory or a
 * `.current-*` link, removed by the next install of that certificate.
 *
 * Concurrency: calls for the same certificate are serialised inside one Installer; one
 * Installer (one agent process) owns a state directory.
 *
 * Cost: metadata steps (readlink, lstat, readdir, mkdir, symlink, rename, unlink, and the
 * creates and writes of the small files) are synchronous calls: on a local disk they
 * take microseconds, while each fs/promises call is a thread-pool round trip costing
 * more CPU than the work (issue #13: the install was ~110 such calls and ~7 ms of the
 * agent's CPU per version). Only the fsyncs, which wait for the disk, are awaited.
 */
import { randomBytes } from 'node:crypto';
import fsSync, { type Dirent } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../log/index.js';
import type { Bundle, VersionMeta } from '../../shared/model/index.js';
import { isValidCertName, validateBundle } from '../../shared/bundle/index.js';
import { fsyncDir, writeDurableAll } from '../../shared/files/index.js';
import { clearLoaded, readLoaded, writeLoaded, type LoadedMarker } from './loaded.js';

export type { LoadedMarker } from './loaded.js';

/** File names inside a version directory (and so inside `current`). */
export const LINEAGE_FILES = {
  cert: 'cert.pem',
  chain: 'chain.pem',
  fullchain: 'fullchain.pem',
  privkey: 'privkey.pem',
  combined: 'combined.pem',
  meta: 'meta.json',
} as const;

/** Versions kept per certificate when not configured. */
export const DEFAULT_KEEP_VERSIONS = 5;

const DIR_MODE = 0o700;
const PUBLIC_MODE = 0o644;
const SECRET_MODE = 0o600;
const TMP_DIR_PREFIX = '.tmp-';
const TMP_LINK_PREFIX = '.current-';
const CURRENT = 'current';

export interface InstallerOptions {
  /** Agent state directory; `certs/` is created under it (0700). */
  stateDir: string;
  /**
   * How many versions to keep per certificate (the highest numbers); default 5, at least 1.
   * The current version and the one it replaced are kept whatever this says.
   */
  keepVersions?: number;
  /** Time for expiry checks. */
  clock: Clock;
  log: Logger;
  /** Absolute directory of the certbot-compatible `live/<name>/` links; none when unset. */
  liveDir?: string;
  /** Absolute directory of `<name>.pem` combined-PEM links for HAProxy's `crt <dir>`; none when unset. */
  haproxyCrtDir?: string;
}

export interface InstallOptions {
  /** Names the certificate must cover (this agent's assignment); default the bundle's meta.names. */
  requiredNames?: string[];
}

export interface InstallResult {
  meta: VersionMeta;
  /** `<stateDir>/certs/<name>/versions/<N>`. */
  versionDir: string;
  /** The lineage directory hooks get as RENEWED_LINEAGE: `<liveDir>/<name>`, else `<stateDir>/certs/<name>` (see {@link Installer.lineageDir}). */
  lineageDir: string;
  /** The version `current` pointed at before, or null when there was none. */
  previousVersion: number | null;
  /** False when `current` already pointed at this version, so nothing was swapped. */
  changed: boolean;
  /** True when versions/<N> already existed with the same fingerprint and was not rewritten. */
  reused: boolean;
  /** Versions deleted by retention, ascending. */
  pruned: number[];
}

export interface ActivateResult {
  meta: VersionMeta;
  previousVersion: number | null;
  changed: boolean;
}

/** Installs, lists and activates certificate versions under one state directory. */
export class Installer {
  private readonly certsDir: string;
  private readonly keep: number;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly liveDir: string | undefined;
  private readonly haproxyCrtDir: string | undefined;
  /** Tail of the operation chain per certificate name (in-process serialisation). */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(options: InstallerOptions) {
    const keep = options.keepVersions ?? DEFAULT_KEEP_VERSIONS;
    if (!Number.isSafeInteger(keep) || keep < 1) {
      throw new CertfleetError(ErrorCode.ConfigInvalid, `keepVersions must be a positive integer, got ${keep}`);
    }
    this.certsDir = path.join(options.stateDir, 'certs');
    this.keep = keep;
    this.clock = options.clock;
    this.log = componentLogger(options.log, 'install');
    if (options.liveDir !== undefined && !path.isAbsolute(options.liveDir)) {
      throw new CertfleetError(ErrorCode.ConfigInvalid, `liveDir must be absolute, got ${options.liveDir}`);
    }
    this.liveDir = options.liveDir;
    if (options.haproxyCrtDir !== undefined && !path.isAbsolute(options.haproxyCrtDir)) {
      throw new CertfleetError(ErrorCode.ConfigInvalid, `haproxyCrtDir must be absolute, got ${options.haproxyCrtDir}`);
    }
    this.haproxyCrtDir = options.haproxyCrtDir;
  }

  /** `<haproxyCrtDir>/<name>.pem`, the file HAProxy knows the certificate as; undefined without a crt directory. */
  haproxyCrtFile(name: string): string | undefined {
    return this.haproxyCrtDir === undefined ? undefined : path.join(this.haproxyCrtDir, `${this.checkedName(name)}.pem`);
  }

  /**
   * The certbot-style lineage directory of `name` (RENEWED_LINEAGE): `<liveDir>/<name>`
   * when a live tree is configured, else `<stateDir>/certs/<name>`. Either way it holds
   * cert.pem, chain.pem, fullchain.pem and privkey.pem (links through `current`), and its
   * basename is the certificate's name, as certbot hooks expect.
   */
  lineageDir(name: string): string {
    return this.liveDir === undefined ? this.nameDir(name) : path.join(this.liveDir, this.checkedName(name));
  }

  /**
   * The loaded marker of `name` (./loaded.ts: the last version whose install completed,
   * hook and verification included), or null when there is none or it is unreadable.
   */
  // eslint-disable-next-line @typescript-eslint/require-await -- async contract kept for callers
  async loaded(name: string): Promise<LoadedMarker | null> {
    return readLoaded(this.nameDir(name));
  }

  /** Records `meta` as loaded at `at` (RFC 3339). Throws on a disk error (the caller logs it). */
  // eslint-disable-next-line @typescript-eslint/require-await -- async contract kept for callers
  async markLoaded(name: string, meta: VersionMeta, at: string): Promise<void> {
    writeLoaded(this.nameDir(name), meta, at);
  }

  /**
   * Before `current` switches to `version`: removes a marker naming that version, which
   * would otherwise claim a load that has not happened (a rollback to it, a retry).
   */
  async forgetLoaded(name: string, version: number): Promise<void> {
    const loaded = readLoaded(this.nameDir(name));
    if (loaded !== null && loaded.version === version) await clearLoaded(this.nameDir(name));
  }

  /** Names of the certificates with a directory under certs/ (installed or half-installed); [] before the first install. */
  async installedNames(): Promise<string[]> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(this.certsDir, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    }
    return entries.filter((e) => e.isDirectory() && isValidCertName(e.name)).map((e) => e.name).sort();
  }

  /** `<stateDir>/certs/<name>/current` (it may not exist yet): the symlink swapped on every install. */
  currentDir(name: string): string {
    return path.join(this.nameDir(name), CURRENT);
  }

  /** `<stateDir>/certs/<name>/versions/<version>` (it may not exist). */
  versionDir(name: string, version: number): string {
    return path.join(this.nameDir(name), 'versions', String(version));
  }

  /**
   * Validates `bundle` (validateBundle at clock.now(); nothing touches disk when it fails,
   * and the Bundle* error is thrown as is), writes it as versions/<N> and makes it current.
   * Re-installing the version already present with the same fingerprint only re-points
   * `current`; the same version number with another fingerprint throws INSTALL_FAILED
   * (versions are immutable). Disk errors throw INSTALL_FAILED (retryable); the previous
   * `current` is then untouched. Retention runs after the swap; a failure to delete an old
   * version is logged, not thrown (the install itself succeeded).
   */
  async install(bundle: Bundle, opts: InstallOptions = {}): Promise<InstallResult> {
    const validateOpts: { now: number; requiredNames?: string[] } = { now: this.clock.now() };
    if (opts.requiredNames !== undefined) validateOpts.requiredNames = opts.requiredNames;
    validateBundle(bundle, validateOpts);
    return await this.serialised(bundle.meta.name, () => this.installValidated(bundle));
  }

  /** The meta of the current version, read through the symlink; null when nothing is installed. */
  async current(name: string): Promise<VersionMeta | null> {
    try {
      return await this.readMeta(this.currentDir(name));
    } catch (err) {
      if (isCertfleetError(err, ErrorCode.NotFound)) return null;
      throw err;
    }
  }

  /** Installed version numbers of `name`, ascending; [] when none. */
  // eslint-disable-next-line @typescript-eslint/require-await -- async contract kept for callers
  async versions(name: string): Promise<number[]> {
    let entries: string[];
    try {
      entries = fsSync.readdirSync(path.join(this.nameDir(name), 'versions'));
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw diskError(err, name, 'list versions');
    }
    return entries
      .filter((e) => /^[1-9][0-9]*$/.test(e))
      .map(Number)
      .sort((a, b) => a - b);
  }

  /** True when versions/<version> of `name` is installed (complete: it has meta.json). */
  // eslint-disable-next-line @typescript-eslint/require-await -- async contract kept for callers
  async hasVersion(name: string, version: number): Promise<boolean> {
    try {
      fsSync.accessSync(path.join(this.versionDir(name, version), LINEAGE_FILES.meta));
      return true;
    } catch {
      return false;
    }
  }

  /** Reads an installed version back as a Bundle. Throws NOT_FOUND when it is not installed. */
  async load(name: string, version: number): Promise<Bundle> {
    const dir = this.versionDir(name, version);
    const meta = await this.readMeta(dir);
    const read = async (file: string): Promise<string> => {
      try {
        return await fs.readFile(path.join(dir, file), 'utf8');
      } catch (err) {
        throw diskError(err, name, `read ${file}`);
      }
    };
    return { meta, certPem: await read(LINEAGE_FILES.cert), chainPem: await read(LINEAGE_FILES.chain), keyPem: await read(LINEAGE_FILES.privkey) };
  }

  /**
   * Points `current` at an installed version (rollback). The version is re-validated from
   * disk first (it may have expired since): NOT_FOUND when it is not installed, a Bundle*
   * error when it is no longer valid; `current` is unchanged in both cases.
   */
  activate(name: string, version: number, opts: InstallOptions = {}): Promise<ActivateResult> {
    return this.serialised(name, async () => {
      const bundle = await this.load(name, version);
      const validateOpts: { now: number; requiredNames?: string[]; expectedVersion: number } = { now: this.clock.now(), expectedVersion: version };
      if (opts.requiredNames !== undefined) validateOpts.requiredNames = opts.requiredNames;
      validateBundle(bundle, validateOpts);
      const previousVersion = this.currentVersion(name);
      const changed = previousVersion !== version;
      if (changed) await this.swapCurrent(name, version);
      await this.linkLineage(name);
      this.log.info({ [LogKey.cert]: name, [LogKey.version]: version, [LogKey.previousVersion]: previousVersion, [LogKey.changed]: changed }, 'version activated');
      return { meta: bundle.meta, previousVersion, changed };
    });
  }

  private async installValidated(bundle: Bundle): Promise<InstallResult> {
    const { name, version } = bundle.meta;
    const nameDir = this.nameDir(name);
    const versionsDir = path.join(nameDir, 'versions');
    const versionDir = this.versionDir(name, version);
    try {
      fsSync.mkdirSync(versionsDir, { recursive: true, mode: DIR_MODE });
    } catch (err) {
      throw diskError(err, name, 'create directories');
    }
    const listed = await this.cleanLeftovers(name);

    const previousVersion = this.currentVersion(name);
    let reused = false;
    if (exists(versionDir)) {
      const onDisk = await this.readMeta(versionDir).catch((err: unknown) => {
        // Only rename creates version dirs, so one without meta.json was tampered with.
        throw new CertfleetError(ErrorCode.InstallFailed, `${name} v${version}: installed version is incomplete`, { cause: err });
      });
      if (onDisk.fingerprint !== bundle.meta.fingerprint) {
        throw new CertfleetError(ErrorCode.InstallFailed, `${name} v${version} is already installed with another certificate`, {
          details: { [LogKey.cert]: name, [LogKey.version]: version, installed: onDisk.fingerprint, offered: bundle.meta.fingerprint },
        });
      }
      reused = true;
    } else {
      await this.writeVersion(bundle, versionsDir, versionDir);
    }

    const changed = previousVersion !== version;
    if (changed) await this.swapCurrent(name, version);
    await this.linkLineage(name);
    // The listing from before the write, plus what this install added: no second readdir.
    const all = listed.includes(version) ? listed : [...listed, version].sort((a, b) => a - b);
    const pruned = await this.prune(name, all, [version, previousVersion]);
    this.log.info(
      {
        [LogKey.cert]: name,
        [LogKey.version]: version,
        [LogKey.fingerprint]: bundle.meta.fingerprint,
        [LogKey.previousVersion]: previousVersion,
        [LogKey.changed]: changed,
        [LogKey.reused]: reused,
        [LogKey.pruned]: pruned,
      },
      'version installed',
    );
    return { meta: bundle.meta, versionDir, lineageDir: this.lineageDir(name), previousVersion, changed, reused, pruned };
  }

  /** Writes all files into a temp dir beside the final one, fsyncs, renames into place. */
  private async writeVersion(bundle: Bundle, versionsDir: string, versionDir: string): Promise<void> {
    const { name, version } = bundle.meta;
    const tmp = path.join(versionsDir, `${TMP_DIR_PREFIX}${version}-${randomBytes(6).toString('hex')}`);
    const chain = withNewline(bundle.chainPem);
    const cert = withNewline(bundle.certPem);
    const key = withNewline(bundle.keyPem);
    const fullchain = cert + chain;
    const files: [string, string, number][] = [
      [LINEAGE_FILES.cert, cert, PUBLIC_MODE],
      [LINEAGE_FILES.chain, chain, PUBLIC_MODE],
      [LINEAGE_FILES.fullchain, fullchain, PUBLIC_MODE],
      [LINEAGE_FILES.privkey, key, SECRET_MODE],
      [LINEAGE_FILES.combined, fullchain + key, SECRET_MODE],
      [LINEAGE_FILES.meta, `${JSON.stringify(bundle.meta, null, 2)}\n`, PUBLIC_MODE],
    ];
    try {
      fsSync.mkdirSync(tmp, { mode: DIR_MODE });
      fsSync.chmodSync(tmp, DIR_MODE); // mkdir's mode is filtered by the umask
      // Every file and the tmp dir's entries are on disk before the rename makes them visible.
      await writeDurableAll(
        files.map(([file, data, mode]) => ({ file: path.join(tmp, file), data, mode })),
        tmp,
      );
      fsSync.renameSync(tmp, versionDir);
      await fsyncDir(versionsDir);
    } catch (err) {
      // Best effort: a leftover would be removed by the next install anyway.
      await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw diskError(err, name, `write v${version}`);
    }
  }

  /** The commit point: a new symlink under a temp name renamed over `current`. */
  private async swapCurrent(name: string, version: number): Promise<void> {
    const nameDir = this.nameDir(name);
    const tmpLink = path.join(nameDir, `${TMP_LINK_PREFIX}${randomBytes(6).toString('hex')}`);
    try {
      fsSync.symlinkSync(path.join('versions', String(version)), tmpLink);
      fsSync.renameSync(tmpLink, path.join(nameDir, CURRENT));
      await fsyncDir(nameDir);
    } catch (err) {
      await fs.rm(tmpLink, { force: true }).catch(() => undefined);
      throw diskError(err, name, `switch current to v${version}`);
    }
  }

  /**
   * Makes (or repairs) the lineage links: `certs/<name>/<file> -> current/<file>` and, with
   * a live tree, `<liveDir>/<name>/<file>` -> the same; with a HAProxy crt directory,
   * `<haproxyCrtDir>/<name>.pem` -> current/combined.pem. A link already right is left
   * alone; a wrong or missing one is replaced by rename (never absent for a reader).
   */
  private async linkLineage(name: string): Promise<void> {
    const nameDir = this.nameDir(name);
    try {
      // Links already right (every install after the first) cost one readlink each, and no fsync.
      let made = 0;
      for (const file of LINKED_FILES) made += replaceLink(path.join(nameDir, file), path.join(CURRENT, file));
      if (made > 0) await fsyncDir(nameDir);
      const crtFile = this.haproxyCrtFile(name);
      if (crtFile !== undefined) {
        const crtDir = path.dirname(crtFile);
        fsSync.mkdirSync(crtDir, { recursive: true, mode: DIR_MODE });
        if (replaceLink(crtFile, path.relative(crtDir, path.join(nameDir, CURRENT, LINEAGE_FILES.combined))) > 0) await fsyncDir(crtDir);
      }
      if (this.liveDir === undefined) return;
      const live = path.join(this.liveDir, name);
      fsSync.mkdirSync(live, { recursive: true, mode: DIR_MODE });
      made = 0;
      for (const file of LIVE_FILES) {
        made += replaceLink(path.join(live, file), path.relative(live, path.join(nameDir, CURRENT, file)));
      }
      if (made > 0) await fsyncDir(live);
    } catch (err) {
      throw diskError(err, name, 'link the lineage files');
    }
  }

  /** Deletes versions of `all` (ascending) beyond the newest `keep`, sparing `protect` (current and previous). */
  private async prune(name: string, all: number[], protect: (number | null)[]): Promise<number[]> {
    const keep = new Set<number>([...all.slice(-this.keep), ...protect.filter((v): v is number => v !== null)]);
    const pruned: number[] = [];
    for (const version of all) {
      if (keep.has(version)) continue;
      try {
        await removeVersionDir(this.versionDir(name, version));
        pruned.push(version);
      } catch (err) {
        this.log.warn({ [LogKey.cert]: name, [LogKey.version]: version, [LogKey.err]: err }, 'old version not deleted');
      }
    }
    return pruned;
  }

  /**
   * Removes temp dirs and temp links a crashed install left behind; returns the installed
   * version numbers found in versions/ (ascending), read by the same listing.
   */
  private async cleanLeftovers(name: string): Promise<number[]> {
    const nameDir = this.nameDir(name);
    const versionsDir = path.join(nameDir, 'versions');
    try {
      const inVersions = fsSync.readdirSync(versionsDir);
      const leftovers = [
        ...inVersions.filter((e) => e.startsWith(TMP_DIR_PREFIX)).map((e) => path.join(versionsDir, e)),
        ...fsSync.readdirSync(nameDir).filter((e) => e.startsWith(TMP_LINK_PREFIX)).map((e) => path.join(nameDir, e)),
      ];
      for (const leftover of leftovers) {
        await fs.rm(leftover, { recursive: true, force: true });
        this.log.info({ [LogKey.cert]: name, [LogKey.path]: leftover }, 'crash leftover removed');
      }
      return inVersions
        .filter((e) => /^[1-9][0-9]*$/.test(e))
        .map(Number)
        .sort((a, b) => a - b);
    } catch (err) {
      throw diskError(err, name, 'remove crash leftovers');
    }
  }

  /** The version `current` points at, or null when there is no `current`. */
  private currentVersion(name: string): number | null {
    let target: string;
    try {
      target = fsSync.readlinkSync(this.currentDir(name));
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return null;
      throw diskError(err, name, 'read current');
    }
    const match = /^versions\/([1-9][0-9]*)$/.exec(target);
    if (match?.[1] === undefined) {
      throw new CertfleetError(ErrorCode.InstallFailed, `${name}: current points at ${target}, not at a version`, { details: { [LogKey.cert]: name } });
    }
    return Number(match[1]);
  }

  private async readMeta(dir: string): Promise<VersionMeta> {
    let text: string;
    try {
      text = await fs.readFile(path.join(dir, LINEAGE_FILES.meta), 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new CertfleetError(ErrorCode.NotFound, `no installed version at ${dir}`, { cause: err });
      throw diskError(err, path.basename(dir), 'read meta.json');
    }
    try {
      return JSON.parse(text) as VersionMeta;
    } catch (err) {
      throw new CertfleetError(ErrorCode.InstallFailed, `${dir}/meta.json is not JSON`, { cause: err });
    }
  }

  private nameDir(name: string): string {
    return path.join(this.certsDir, this.checkedName(name));
  }

  private checkedName(name: string): string {
    // Names become path components: refuse anything that could leave certs/ (or live/).
    if (!isValidCertName(name)) throw new CertfleetError(ErrorCode.UsageInvalid, `invalid certificate name ${JSON.stringify(name)}`);
    return name;
  }

  private serialised<T>(name: string, work: () => Promise<T>): Promise<T> {
    const before = this.queues.get(name) ?? Promise.resolve();
    const run = before.then(work, work);
    const tail = run.catch(() => undefined);
    this.queues.set(name, tail);
    void tail.then(() => {
      if (this.queues.get(name) === tail) this.queues.delete(name);
    });
    return run;
  }
}



/** Files linked beside `current` in certs/<name>/. */
const LINKED_FILES = [LINEAGE_FILES.cert, LINEAGE_FILES.chain, LINEAGE_FILES.fullchain, LINEAGE_FILES.privkey, LINEAGE_FILES.combined];
/** Files of certbot's live/<name>/ (certbot has no combined PEM). */
const LIVE_FILES = [LINEAGE_FILES.cert, LINEAGE_FILES.chain, LINEAGE_FILES.fullchain, LINEAGE_FILES.privkey];

/** Points `link` at `target` unless it already does: a temp link renamed over it. Returns 1 when it changed the link, else 0. */
function replaceLink(link: string, target: string): number {
  try {
    if (fsSync.readlinkSync(link) === target) return 0;
  } catch (err) {
    if (!isErrno(err, 'ENOENT') && !isErrno(err, 'EINVAL')) throw err;
  }
  const tmp = path.join(path.dirname(link), `${TMP_LINK_PREFIX}${randomBytes(6).toString('hex')}`);
  try {
    fsSync.symlinkSync(target, tmp);
    fsSync.renameSync(tmp, link);
  } catch (err) {
    fsSync.rmSync(tmp, { force: true });
    throw err;
  }
  return 1;
}

/**
 * Deletes a version directory. The installer writes only regular files into one, so the
 * usual case is one unlink per file and an rmdir; anything else found there (a
 * directory someone added) falls back to a recursive removal.
 */
async function removeVersionDir(dir: string): Promise<void> {
  try {
    for (const entry of fsSync.readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) throw new Error('not only files');
      fsSync.unlinkSync(path.join(dir, entry.name));
    }
    fsSync.rmdirSync(dir);
  } catch {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function exists(p: string): boolean {
  try {
    fsSync.lstatSync(p);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

function withNewline(pem: string): string {
  return pem === '' || pem.endsWith('\n') ? pem : `${pem}\n`;
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

function diskError(err: unknown, name: string, what: string): CertfleetError {
  if (err instanceof CertfleetError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new CertfleetError(ErrorCode.InstallFailed, `${name}: cannot ${what}: ${reason}`, {
    retryable: true,
    cause: err,
    details: { [LogKey.cert]: name },
  });
}

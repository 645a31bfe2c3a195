/**
 * Durable file writes, the one implementation for every part that must not lose or tear
 * a file on a crash (stores, spool, agent installs, identities, credentials).
 *
 * - writeFileAtomic: replace a file atomically (temporary file beside it, fsync, rename,
 *   fsync the directory): readers see the old or the new content, never a torn one.
 * - writeDurableAll: create one or several NEW files with exact modes (not filtered by
 *   the umask; fails if one exists), and optionally fsync the directory they are in,
 *   their fsyncs issued together.
 * - writeFileReplace: replace a file atomically but NOT durably (no fsync): for a file
 *   whose loss or a torn copy after a crash is harmless by design.
 * - fsyncDir: make a rename or a new entry in `dir` durable.
 *
 * Cost (issue #13, agent CPU per installed version): every fs/promises call is a
 * thread-pool round trip (~25 µs of CPU warm, more cold). Opening, writing and closing
 * small files and directory handles only touch the page cache, so writeDurableAll and
 * fsyncDir do those synchronously (microseconds) and send only the fsyncs, which wait
 * for the disk, to the thread pool.
 */
import crypto from 'node:crypto';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

/** fsync(2) of `fd` on libuv's pool (looked up at each call, so a test can count them). */
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsSync.fsync(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * Whether a file opened with `mode` gets exactly `mode`: the umask clears none of its
 * bits (the usual 022 or 077 with 0600). Then the chmod that makes modes exact is skipped
 * (issue #13: one thread-pool round trip fewer per file written). Read at each call, as
 * tests and embedders may change the umask; process.umask() without an argument writes
 * it twice, racy only with worker threads, which certfleet's daemons do not run.
 */
function umaskKeeps(mode: number): boolean {
  return (process.umask() & mode) === 0;
}

/** Replaces `file` with `data` (mode `mode`) atomically and durably. */
export async function writeFileAtomic(file: string, data: string, mode: number): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${crypto.randomBytes(6).toString('hex')}`);
  try {
    // Created and written synchronously, fsynced on the pool (see writeDurableAll).
    await writeDurableAll([{ file: tmp, data, mode }]);
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/** One file for {@link writeDurableAll}. */
export interface NewFile {
  file: string;
  data: string;
  mode: number;
}

/**
 * Creates every file of `files` (none may exist: fails with EEXIST) with its data and
 * exactly its mode, then fsyncs them all concurrently, together with `dir` when given
 * (the directory they were created in, so their entries are durable too). Resolves once
 * every fsync is done; rejects with the first error after every started fsync finished
 * (an fd is never closed under a running fsync). Files created before a failure are left
 * for the caller (who owns the directory) to remove.
 */
export async function writeDurableAll(files: readonly NewFile[], dir?: string): Promise<void> {
  const fds: number[] = [];
  try {
    for (const { file, data, mode } of files) {
      const fd = fsSync.openSync(file, 'wx', mode);
      fds.push(fd);
      if (!umaskKeeps(mode)) fsSync.fchmodSync(fd, mode); // the open mode is filtered by the umask; the contract is exact modes
      fsSync.writeFileSync(fd, data, 'utf8');
    }
    // Opened after the creates: its fsync covers every entry made above.
    if (dir !== undefined) fds.push(fsSync.openSync(dir, 'r'));
    const results = await Promise.allSettled(fds.map((fd) => fsyncFd(fd)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } finally {
    for (const fd of fds) fsSync.closeSync(fd);
  }
}

/**
 * Replaces `file` with `data` (mode `mode`) atomically — readers see the old or the new
 * content — but without any fsync: after a crash the old file, the new one, or (on some
 * file systems) an empty one may be found. Only for files whose loss is harmless by
 * design (agent/install's loaded marker: a missing or unreadable marker makes the agent
 * run the reload hook once more).
 */
export function writeFileReplace(file: string, data: string, mode: number): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${crypto.randomBytes(6).toString('hex')}`);
  try {
    const fd = fsSync.openSync(tmp, 'wx', mode);
    try {
      if (!umaskKeeps(mode)) fsSync.fchmodSync(fd, mode);
      fsSync.writeFileSync(fd, data, 'utf8');
    } finally {
      fsSync.closeSync(fd);
    }
    fsSync.renameSync(tmp, file);
  } catch (err) {
    fsSync.rmSync(tmp, { force: true });
    throw err;
  }
}

/** fsyncs a directory, so entries created or renamed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fd = fsSync.openSync(dir, 'r');
  try {
    await fsyncFd(fd);
  } finally {
    fsSync.closeSync(fd);
  }
}

/**
 * Durable file writes, the one implementation for every part that must not lose or tear
 * a file on a crash (stores, spool, agent installs, identities, credentials).
 *
 * - writeDurable: create a NEW file with an exact mode (not filtered by the umask) and
 *   fsync it; fails if it exists.
 * - writeFileAtomic: replace a file atomically (temporary file beside it, fsync, rename,
 *   fsync the directory): readers see the old or the new content, never a torn one.
 * - fsyncDir: make a rename or a new entry in `dir` durable.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

/** Creates `file` (which must not exist) with `data` and exactly `mode`, and fsyncs it. */
export async function writeDurable(file: string, data: string, mode: number): Promise<void> {
  const fh = await fs.open(file, 'wx', mode);
  try {
    await fh.chmod(mode); // the open mode is filtered by the umask; the contract is exact modes
    await fh.writeFile(data, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces `file` with `data` (mode `mode`) atomically and durably. */
export async function writeFileAtomic(file: string, data: string, mode: number): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${crypto.randomBytes(6).toString('hex')}`);
  try {
    await writeDurable(tmp, data, mode);
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/** fsyncs a directory, so entries created or renamed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

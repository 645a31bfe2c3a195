/**
 * The file store is single-controller: two controllers writing one directory would both
 * order, both publish and both number versions. The daemon takes `<store>/controller.lock`
 * (created exclusively) while it runs and removes it when it stops; a second controller on
 * the same directory refuses to start, naming the holder.
 *
 * A lock left by a controller that died (SIGKILL, power loss) is taken over: the holder is
 * recognised as alive only when a process with its pid runs on this host with the same
 * start time (/proc/<pid>/stat), so a recycled pid does not keep a dead controller's lock.
 * A lock from another host (a store on a shared filesystem) cannot be checked from here and
 * is refused, with the file to remove once that controller is known to be gone.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';

export const LOCK_FILE = 'controller.lock';

interface LockDoc {
  pid: number;
  host: string;
  /** /proc/<pid>/stat start time (clock ticks since boot); '' where /proc is not there. */
  procStart: string;
  startedAt: string;
}

/** A held lock: `release` removes the file if it is still ours. Idempotent. */
export interface StoreLock {
  release(): void;
}

function procStart(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); the command name (field 2) may hold spaces, so count after ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

function alive(doc: LockDoc): boolean {
  if (doc.host !== os.hostname()) return true; // cannot tell: assume it runs
  if (doc.pid === process.pid) return false; // an earlier lock of this very process: ours
  try {
    process.kill(doc.pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return doc.procStart === '' || procStart(doc.pid) === doc.procStart;
}

function readLock(file: string): LockDoc | undefined {
  try {
    const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<LockDoc>;
    if (typeof doc.pid !== 'number' || typeof doc.host !== 'string') return undefined;
    return { pid: doc.pid, host: doc.host, procStart: String(doc.procStart ?? ''), startedAt: String(doc.startedAt ?? '') };
  } catch {
    return undefined;
  }
}

/**
 * Takes the controller lock of the file store at `dir` (which must exist). Throws
 * CONFIG_INVALID naming the holder when another live controller has it.
 */
export function lockFileStore(dir: string, now: Date): StoreLock {
  const file = path.join(dir, LOCK_FILE);
  const mine: LockDoc = { pid: process.pid, host: os.hostname(), procStart: procStart(process.pid), startedAt: now.toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(file, `${JSON.stringify(mine)}\n`, { flag: 'wx', mode: 0o600 });
      let released = false;
      return {
        release: () => {
          if (released) return;
          released = true;
          if (readLock(file)?.pid === mine.pid) fs.rmSync(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new CertfleetError(ErrorCode.StoreUnavailable, `cannot create ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      }
    }
    const holder = readLock(file);
    if (holder !== undefined && alive(holder)) {
      const where = holder.host === os.hostname() ? `pid ${holder.pid}` : `pid ${holder.pid} on host ${holder.host}`;
      throw new CertfleetError(
        ErrorCode.ConfigInvalid,
        `store.path: the file store ${dir} is in use by another controller (${where}, since ${holder.startedAt}); ` +
          'the file store serves one controller: stop that one, or use the Vault store to run several' +
          (holder.host === os.hostname() ? '' : ` (remove ${file} once that controller is gone)`),
        { details: { file, holderPid: holder.pid, holderHost: holder.host } },
      );
    }
    // Left by a controller that is gone (or unreadable): take it over.
    fs.rmSync(file, { force: true });
  }
  throw new CertfleetError(ErrorCode.StoreUnavailable, `cannot take ${file}: another process keeps creating it`);
}

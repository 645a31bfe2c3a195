/** Process measurements for the benchmarks (Linux /proc). */
import fs from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const CLK_TCK = 100;

/** user+system CPU of a process in ms. */
export function cpuMs(pid: number): number {
  const { user, sys } = cpuSplitMs(pid);
  return user + sys;
}

/** User and system CPU of a process in ms (0 for a process that is gone). */
export function cpuSplitMs(pid: number): { user: number; sys: number } {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return { user: 0, sys: 0 };
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: (Number(fields[11]) * 1000) / CLK_TCK, sys: (Number(fields[12]) * 1000) / CLK_TCK };
}

/** Resident set size of a process in MiB. */
export function rssMiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * A process's resident memory split (MiB, from /proc/PID/smaps_rollup): `anon` is its own
 * memory (heaps, buffers: private, written); `file` the pages of mapped files it touched
 * (mostly the node binary's code, 30 MiB for an empty `node`), clean, shared by every node
 * process on the machine and dropped by the kernel under pressure.
 */
export function rssSplitMiB(pid: number): { rss: number; anon: number; file: number } {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  const rss = kb('Rss') / 1024;
  const anon = kb('Anonymous') / 1024;
  return { rss, anon, file: rss - anon };
}

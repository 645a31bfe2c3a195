/**
 * Crash a process at a chosen step, for fault tests: watch what it does (its pino JSON
 * log lines on stdout, or files appearing in a directory) and send SIGKILL from inside
 * the callback that sees the step, so nothing of ours runs in between.
 *
 * How exact this is: the process writes the log line (pino writes synchronously) and
 * goes on; the line reaches us through a pipe and the signal goes back — typically well
 * under a millisecond of the process's own time, but not zero. A step that is followed
 * at once by the next one (a store write right after a download) may be passed before
 * the signal lands, so a test that cares checks afterwards where the process stopped
 * (e.g. whether a pending order or a version is on disk) and says so. For an exact
 * point, make the process kill itself (a reload hook that kills its agent).
 */
import fs from 'node:fs';
import type { Started } from './process.js';

/** One pino log record (the JSON object of one line). */
export type LogRecord = Record<string, unknown>;

/**
 * Calls `fn` with every JSON log line `proc` prints on stdout from now on (lines that are
 * not JSON are skipped). Returns a function that stops listening.
 */
export function onLogLine(proc: Started, fn: (rec: LogRecord) => void): () => void {
  let partial = '';
  const listener = (chunk: Buffer): void => {
    const text = partial + chunk.toString('utf8');
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      let rec: LogRecord;
      try {
        rec = JSON.parse(line) as LogRecord;
      } catch {
        continue;
      }
      fn(rec);
    }
  };
  proc.child.stdout?.on('data', listener);
  return () => {
    proc.child.stdout?.off('data', listener);
  };
}

/** What a kill hit. */
export interface KillPoint<T> {
  /** What matched (the log record, or the file name). */
  matched: T;
  /** Date.now() when the signal was sent. */
  at: number;
}

/**
 * Sends `signal` (default SIGKILL) to `proc` — or to `opts.target` (another process, e.g.
 * the nats-server the controller is talking to) — as soon as `proc` prints a log line
 * `match` accepts, then resolves once the killed process is gone. Rejects after
 * `timeoutMs` (default 60 s) without touching anything, or when `proc` exits before the
 * line.
 */
export function killAtLogLine(
  proc: Started,
  match: (rec: LogRecord) => boolean,
  opts: { timeoutMs?: number; signal?: NodeJS.Signals; what?: string; target?: Started } = {},
): Promise<KillPoint<LogRecord>> {
  const victim = opts.target ?? proc;
  const what = opts.what ?? 'the log line';
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err: Error | null, point?: KillPoint<LogRecord>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stop();
      if (err) reject(err);
      else if (point) void victim.exited.then(() => resolve(point));
    };
    const stop = onLogLine(proc, (rec) => {
      if (done || !match(rec)) return;
      const pid = victim.child.pid;
      if (pid !== undefined) process.kill(pid, opts.signal ?? 'SIGKILL');
      finish(null, { matched: rec, at: Date.now() });
    });
    const timer = setTimeout(() => finish(new Error(`timed out after ${opts.timeoutMs ?? 60_000} ms waiting for ${what}`)), opts.timeoutMs ?? 60_000);
    void proc.exited.then(() => finish(new Error(`the process exited before ${what}`)));
  });
}

/** Resolves with the first log record `match` accepts from now on; rejects after `timeoutMs`. */
export function waitForLogLine(proc: Started, match: (rec: LogRecord) => boolean, timeoutMs = 60_000, what = 'the log line'): Promise<LogRecord> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const stop = onLogLine(proc, (rec) => {
      if (!match(rec)) return;
      clearTimeout(timer);
      stop();
      resolve(rec);
    });
  });
}

/**
 * SIGKILLs process `pid` (read when the entry appears, so a restarted process is meant)
 * as soon as an entry whose name `match` accepts appears in `dir` (inotify through
 * fs.watch; `dir` must exist). Resolves with the name; rejects after `timeoutMs`.
 */
export function killWhenEntryAppears(dir: string, match: (name: string) => boolean, pid: () => number | undefined, timeoutMs = 60_000): Promise<KillPoint<string>> {
  return new Promise((resolve, reject) => {
    const watcher = fs.watch(dir, (_event, name) => {
      if (name === null || !match(name)) return;
      const target = pid();
      if (target !== undefined) process.kill(target, 'SIGKILL');
      clearTimeout(timer);
      watcher.close();
      resolve({ matched: name, at: Date.now() });
    });
    const timer = setTimeout(() => {
      watcher.close();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for an entry in ${dir}`));
    }, timeoutMs);
  });
}

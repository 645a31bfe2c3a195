/**
 * Reload hooks: run an operator's command after an install (or a rollback), with a
 * timeout, in its own process group, and report what happened.
 *
 * Contract of {@link runHook}: it never throws. A command that cannot be started at all
 * (missing binary, bad cwd, empty command) is reported like a shell would report it:
 * `ran: false`, `exitCode: 127`, the reason in `outputTail`. A non-zero exit is reported,
 * not thrown: the caller (install / rollback) decides that it is a failed install.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { HookOutcome, VersionMeta } from '../../shared/model/index.js';

/** What to run. */
export interface HookSpec {
  /** A string runs through `/bin/sh -c`; an array runs the program directly (no shell). */
  command: string | string[];
  /** Wall time allowed before the whole process group is terminated. Must be > 0. */
  timeoutMs: number;
}

export interface RunHookOptions {
  /** Working directory; default the agent's. */
  cwd?: string;
}

/** Bytes of combined stdout+stderr kept for the report (the end of it). */
export const OUTPUT_TAIL_BYTES = 4096;
/** Grace between SIGTERM and SIGKILL when a hook times out. */
export const KILL_GRACE_MS = 2000;
/** How long output is still read after the hook exited, for a child that holds the pipe. */
const DRAIN_MS = 250;
/** Exit code reported when the command could not be started (as sh does for "not found"). */
export const EXIT_NOT_STARTED = 127;

/** The hook runner as an interface, so agent code can be tested with a scripted one. */
export interface HookRunner {
  run(spec: HookSpec, env: Record<string, string>, opts?: RunHookOptions): Promise<HookOutcome>;
}

/** The real runner. */
export const processHookRunner: HookRunner = { run: runHook };

/**
 * Runs one hook and resolves with its outcome; never rejects.
 *
 * The child gets the agent's environment with `env` laid over it (hooks need PATH and
 * friends, as certbot's do). It leads a new process group, so on timeout the whole group
 * (the shell and everything it started) gets SIGTERM, then SIGKILL after
 * {@link KILL_GRACE_MS} if any member is still alive; the outcome then has
 * `timedOut: true` and resolves only after the group is gone or SIGKILL was sent.
 * `exitCode` is -1 when the process ended by a signal (named in `signal`, else '').
 * A hook that exits normally but leaves a background child holding its output open is
 * not waited for beyond a short drain; that child is not killed (it may be a daemon the
 * hook meant to start).
 */
export function runHook(spec: HookSpec, env: Record<string, string>, opts: RunHookOptions = {}): Promise<HookOutcome> {
  const started = performance.now();
  const notStarted = (reason: string): HookOutcome => ({
    ran: false,
    exitCode: EXIT_NOT_STARTED,
    signal: '',
    timedOut: false,
    durationMs: Math.round(performance.now() - started),
    outputTail: reason,
  });

  let file: string;
  let args: string[];
  if (typeof spec.command === 'string') {
    if (spec.command.trim() === '') return Promise.resolve(notStarted('hook command is empty'));
    [file, args] = ['/bin/sh', ['-c', spec.command]];
  } else {
    const [first, ...rest] = spec.command;
    if (first === undefined || first === '') return Promise.resolve(notStarted('hook command is empty'));
    [file, args] = [first, rest];
  }
  if (!Number.isFinite(spec.timeoutMs) || spec.timeoutMs <= 0) {
    return Promise.resolve(notStarted(`hook timeoutMs must be a positive number, got ${spec.timeoutMs}`));
  }

  return new Promise<HookOutcome>((resolve) => {
    const tail = new OutputTail(OUTPUT_TAIL_BYTES);
    let child;
    try {
      child = spawn(file, args, {
        cwd: opts.cwd,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // setsid(): the child leads its own process group, so we can kill the group
      });
    } catch (err) {
      // spawn throws synchronously only for invalid arguments (e.g. a NUL byte).
      resolve(notStarted(`cannot start hook: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    const pid = child.pid;
    child.stdout.on('data', (chunk: Buffer) => tail.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => tail.push(chunk));

    let timedOut = false;
    let killed: Promise<void> = Promise.resolve();
    const timeout = setTimeout(() => {
      timedOut = true;
      signalGroup(pid, 'SIGTERM');
      killed = escalate(pid);
    }, spec.timeoutMs);

    let settled = false;
    const finish = (outcome: Omit<HookOutcome, 'durationMs' | 'outputTail'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      resolve({ ...outcome, durationMs: Math.round(performance.now() - started), outputTail: tail.text() });
    };

    child.once('error', (err) => {
      // ENOENT / EACCES for the program or the cwd: nothing ran.
      clearTimeout(timeout);
      if (settled) return;
      settled = true;
      resolve(notStarted(`cannot start hook: ${err.message}`));
    });

    child.once('exit', (code, signal) => {
      clearTimeout(timeout);
      void (async () => {
        // Let buffered output arrive, but do not wait for a background child that keeps
        // the pipe open (a daemon the hook started).
        let drainTimer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((r) => child.once('close', () => r())),
          new Promise<void>((r) => (drainTimer = setTimeout(r, DRAIN_MS))),
        ]);
        clearTimeout(drainTimer);
        child.stdout.destroy();
        child.stderr.destroy();
        if (timedOut) await killed;
        finish({ ran: true, exitCode: code ?? -1, signal: signal ?? '', timedOut });
      })();
    });
  });
}

/**
 * Which hook runs certificates share: certificates with the same key run one hook
 * together. `once` hooks are shared by command; `per-certificate` hooks (certbot's
 * behaviour) and certificates without a hook are never shared.
 */
export function hookGroupKey(cert: string, spec: { command: string | string[]; mode?: 'once' | 'per-certificate' } | undefined): string {
  if (spec === undefined) return `none:${cert}`;
  const command = JSON.stringify(spec.command);
  return spec.mode === 'per-certificate' ? `each:${cert}:${command}` : `once:${command}`;
}

/**
 * The certbot-compatible environment for a hook (RENEWED_LINEAGE, RENEWED_DOMAINS) plus
 * certfleet's own CERTFLEET_* variables. `lineageDir` is the directory holding the current
 * files (cert.pem, fullchain.pem, privkey.pem, ...) and named after the certificate: the
 * installer's lineageDir (live/<name> or certs/<name>), so `basename $RENEWED_LINEAGE`
 * is the name, as in certbot hooks.
 */
export function hookEnvironment(meta: VersionMeta, lineageDir: string): Record<string, string> {
  return {
    RENEWED_LINEAGE: lineageDir,
    RENEWED_DOMAINS: meta.names.join(' '),
    CERTFLEET_CERT: meta.name,
    CERTFLEET_VERSION: String(meta.version),
    CERTFLEET_FINGERPRINT: meta.fingerprint,
    CERTFLEET_SERIAL: meta.serial,
    CERTFLEET_NOT_AFTER: meta.notAfter,
  };
}

/** After SIGTERM: wait up to KILL_GRACE_MS for the group to go, then SIGKILL whatever is left. */
async function escalate(pid: number | undefined): Promise<void> {
  const deadline = performance.now() + KILL_GRACE_MS;
  while (performance.now() < deadline) {
    if (!groupAlive(pid)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  signalGroup(pid, 'SIGKILL');
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone, which is what we wanted.
  }
}

function groupAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Keeps the last `limit` bytes pushed into it. */
class OutputTail {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - (this.chunks[0]?.length ?? 0) >= this.limit) {
      this.size -= this.chunks.shift()?.length ?? 0;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    const cut = all.subarray(Math.max(0, all.length - this.limit));
    // A cut through a multi-byte character decodes to U+FFFD at the start; drop it.
    return cut.toString('utf8').replace(/^\uFFFD+/, '');
  }
}

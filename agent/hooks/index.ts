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
import fs from 'node:fs/promises';
import path from 'node:path';
import { deadline, systemClock, type Clock, type Timer } from '../../shared/clock/index.js';
import type { HookOutcome, VersionMeta } from '../../shared/model/index.js';
import { updateCertificate } from './haproxy.js';

export { CLI_UNSAFE, parseShowSslCert, pemPayload, runtimeCommand, scrubPem, updateCertificate, type HaproxyApi, type UpdateResult } from './haproxy.js';

/** What to run. */
export interface HookSpec {
  /** A string runs through `/bin/sh -c`; an array runs the program directly (no shell). */
  command: string | string[];
  /** Time allowed (on the runner's clock: wall time under the system clock) before the whole process group is terminated. Must be > 0. */
  timeoutMs: number;
}

export interface RunHookOptions {
  /** Working directory; default the agent's. */
  cwd?: string;
  /**
   * Time for the timeout, the kill grace, the output drain and `durationMs`; default the
   * system clock. These bound a child process, so the agent passes its own clock (real
   * time in production); a manual clock would hold a real hook past its timeout until
   * advanced, which is why tests of the apply step script the HookRunner instead.
   */
  clock?: Clock;
}

/** Bytes of combined stdout+stderr kept for the report (the end of it). */
export const OUTPUT_TAIL_BYTES = 4096;
/** Grace between SIGTERM and SIGKILL when a hook times out. */
export const KILL_GRACE_MS = 2000;
/** How long output is still read after the hook exited, for a child that holds the pipe. */
const DRAIN_MS = 250;
/** Exit code reported when the command could not be started (as sh does for "not found"). */
export const EXIT_NOT_STARTED = 127;

/**
 * Runs configured reload hooks; the agent's apply step takes one injected, so it can be
 * tested with a scripted one. Contract: as {@link runReloadHook} — never rejects, one
 * call runs the hook once for all of `certs`, and the outcome says how it ended.
 */
export interface HookRunner {
  run(spec: ReloadHookSpec, certs: readonly string[], env: Record<string, string>): Promise<HookOutcome>;
}

/** The real runner: child processes and the HAProxy runtime API, timed on `clock`. */
export function processHookRunner(clock: Clock = systemClock): HookRunner {
  return { run: (spec, certs, env) => runReloadHook(spec, certs, env, { clock }) };
}

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
  const clock = opts.clock ?? systemClock;
  const started = clock.now();
  const notStarted = (reason: string): HookOutcome => ({
    ran: false,
    exitCode: EXIT_NOT_STARTED,
    signal: '',
    timedOut: false,
    durationMs: Math.round(clock.now() - started),
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
    const timeout = clock.after(spec.timeoutMs, () => {
      timedOut = true;
      signalGroup(pid, 'SIGTERM');
      killed = escalate(pid, clock);
    });

    let settled = false;
    const finish = (outcome: Omit<HookOutcome, 'durationMs' | 'outputTail'>): void => {
      if (settled) return;
      settled = true;
      timeout.stop();
      resolve({ ...outcome, durationMs: Math.round(clock.now() - started), outputTail: tail.text() });
    };

    child.once('error', (err) => {
      // ENOENT / EACCES for the program or the cwd: nothing ran.
      timeout.stop();
      if (settled) return;
      settled = true;
      resolve(notStarted(`cannot start hook: ${err.message}`));
    });

    child.once('exit', (code, signal) => {
      timeout.stop();
      void (async () => {
        // Let buffered output arrive, but do not wait for a background child that keeps
        // the pipe open (a daemon the hook started).
        let drainTimer: Timer | undefined;
        await Promise.race([
          new Promise<void>((r) => child.once('close', () => r())),
          new Promise<void>((r) => (drainTimer = clock.after(DRAIN_MS, r))),
        ]);
        drainTimer?.stop();
        child.stdout.destroy();
        child.stderr.destroy();
        if (timedOut) await killed;
        finish({ ran: true, exitCode: code ?? -1, signal: signal ?? '', timedOut });
      })();
    });
  });
}

/**
 * A HAProxy runtime-API update as a hook (agent config `haproxy:` in a reload hook).
 * Each certificate goes to HAProxy under `crtFile`, else `<crtDir>/<name>.pem` (the
 * agent's `haproxy.crtDir`, where the installer links each certificate's combined PEM).
 */
export interface HaproxyHookSpec {
  socket: string;
  /** The socket is the master CLI (`haproxy -W -S`): commands go to the current worker. */
  master: boolean;
  /** The one file HAProxy knows this hook's certificate as (a per-certificate hook only). */
  crtFile?: string | undefined;
  /** The directory HAProxy loads with `crt <dir>`. */
  crtDir?: string | undefined;
}

/** A reload hook as configured: a command, a HAProxy runtime-API update, or both (the command is then the fallback). */
export interface ReloadHookSpec {
  command?: string | string[] | undefined;
  haproxy?: HaproxyHookSpec | undefined;
  /** Milliseconds; the runtime-API update and the command each get this long. */
  timeout: number;
  mode?: 'once' | 'per-certificate';
}

/**
 * Which hook runs certificates share: certificates with the same key run one hook
 * together. `once` hooks are shared by what they do (command and HAProxy target);
 * `per-certificate` hooks (certbot's behaviour), HAProxy hooks naming one `crtFile`, and
 * certificates without a hook are never shared.
 */
export function hookGroupKey(cert: string, spec: Pick<ReloadHookSpec, 'command' | 'haproxy' | 'mode'> | undefined): string {
  if (spec === undefined) return `none:${cert}`;
  const what = JSON.stringify([spec.command ?? null, spec.haproxy ?? null]);
  return spec.mode === 'per-certificate' || spec.haproxy?.crtFile !== undefined ? `each:${cert}:${what}` : `once:${what}`;
}

/**
 * Runs a configured reload hook for `certs` (installed together); never rejects.
 *
 * A plain command runs as {@link runHook}. A `haproxy` hook pushes each certificate's
 * combined PEM (read from the file HAProxy knows it by, a link through `current`)
 * through the runtime API, one certificate after another: no reload, open connections
 * untouched. When the API refuses any of them (or the PEM cannot be read), the hook's
 * `command` runs as the fallback (typically `systemctl reload haproxy`, which loads the
 * files from disk); without a command that refusal is the hook's failure (exit code 1).
 * The outcome's output names what happened, never the PEM.
 */
export async function runReloadHook(spec: ReloadHookSpec, certs: readonly string[], env: Record<string, string>, opts: RunHookOptions = {}): Promise<HookOutcome> {
  const command = spec.command;
  if (spec.haproxy === undefined) {
    if (command === undefined) return { ran: false, exitCode: EXIT_NOT_STARTED, signal: '', timedOut: false, durationMs: 0, outputTail: 'hook has no command' };
    return await runHook({ command, timeoutMs: spec.timeout }, env, opts);
  }
  const clock = opts.clock ?? systemClock;
  const started = clock.now();
  const api = await haproxyUpdate(spec.haproxy, certs, spec.timeout, clock);
  if (api.ok) {
    return { ran: true, exitCode: 0, signal: '', timedOut: false, durationMs: Math.round(clock.now() - started), outputTail: api.text };
  }
  if (command === undefined) {
    return { ran: true, exitCode: 1, signal: '', timedOut: false, durationMs: Math.round(clock.now() - started), outputTail: api.text };
  }
  const fallback = await runHook({ command, timeoutMs: spec.timeout }, env, opts);
  const outputTail = `${api.text}falling back to the reload command\n${fallback.outputTail}`;
  return { ...fallback, durationMs: Math.round(clock.now() - started), outputTail: outputTail.slice(-OUTPUT_TAIL_BYTES) };
}

/** Pushes every certificate of `certs`; ok only when HAProxy committed them all. */
async function haproxyUpdate(spec: HaproxyHookSpec, certs: readonly string[], timeoutMs: number, clock: Clock): Promise<{ ok: boolean; text: string }> {
  const until = deadline(clock, timeoutMs);
  let text = '';
  for (const cert of certs) {
    const file = spec.crtFile ?? (spec.crtDir === undefined ? undefined : path.join(spec.crtDir, `${cert}.pem`));
    const say = (line: string): string => (text += `haproxy runtime API (${spec.socket}): ${line}\n`);
    if (file === undefined) {
      say(`${cert}: no crtFile and no haproxy.crtDir`);
      return { ok: false, text };
    }
    let pem: string;
    try {
      pem = await fs.readFile(file, 'utf8');
    } catch (err) {
      say(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return { ok: false, text };
    }
    const result = await updateCertificate({ socket: spec.socket, master: spec.master }, file, pem, Math.max(1, until.remaining()), clock);
    say(result.ok ? result.detail : `refused: ${result.reason}`);
    if (!result.ok) return { ok: false, text };
  }
  return { ok: true, text };
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
async function escalate(pid: number | undefined, clock: Clock): Promise<void> {
  const grace = deadline(clock, KILL_GRACE_MS);
  while (!grace.expired()) {
    if (!groupAlive(pid)) return;
    await clock.sleep(50);
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

/**
 * The `exec` provider: the escape hatch for any DNS service certfleet has no provider
 * for. It runs the operator's command like lego's exec provider and certbot's manual
 * hooks:
 *
 *     <command...> present _acme-challenge.example.com. "<value>"
 *     <command...> cleanup _acme-challenge.example.com. "<value>"
 *
 * with the same facts in the environment (CERTFLEET_DNS01_ACTION, _FQDN, _VALUE). The
 * command is run directly (no shell), so a value can never be read as shell syntax. Exit
 * 0 means done; anything else, or no exit within the timeout, is DNS_PROVIDER_FAILED
 * (retryable) carrying the tail of the command's output.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { systemClock, type Clock, type Timer } from '../../../shared/clock/index.js';
import { LogKey, type Logger } from '../../../shared/log/index.js';
import { CertfleetError, ErrorCode } from '../../../shared/errors/index.js';
import type { DnsProvider } from './provider.js';

export interface ExecOptions {
  name: string;
  /** Program and leading arguments; the action, FQDN and value are appended. */
  command: readonly string[];
  /** Default 60 000 ms; then SIGTERM to the command's process group, and SIGKILL 5 s later. */
  timeoutMs?: number;
  /** Environment of the command: the controller's, handed over by config (only config reads process.env). */
  env: NodeJS.ProcessEnv;
  /**
   * Times the timeout and the SIGKILL that follows it; default systemClock. They bound a real
   * child process, so config leaves them on the system clock whatever clock the solver runs on.
   */
  clock?: Clock;
  log: Logger;
}

/** How much of the command's output an error carries. */
const OUTPUT_TAIL = 2000;

/** Runs an operator's command to add and remove records. */
export class ExecProvider implements DnsProvider {
  readonly type = 'exec';
  readonly name: string;

  constructor(private readonly opts: ExecOptions) {
    this.name = opts.name;
  }

  /** Checks that the program exists and is executable (it is not run). */
  check(): Promise<void> {
    const program = this.opts.command[0] ?? '';
    const candidates = program.includes('/')
      ? [program]
      : (this.opts.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin').split(path.delimiter).map((d) => path.join(d, program));
    for (const c of candidates) {
      try {
        fs.accessSync(c, fs.constants.X_OK);
        if (fs.statSync(c).isFile()) return Promise.resolve();
      } catch {
        // try the next PATH entry
      }
    }
    return Promise.reject(
      new CertfleetError(ErrorCode.DnsProviderFailed, `exec provider "${this.name}": ${program} is not an executable file`, {
        details: { provider: this.name, command: program },
      }),
    );
  }

  present(fqdn: string, value: string): Promise<void> {
    return this.run('present', fqdn, value);
  }

  cleanup(fqdn: string, value: string): Promise<void> {
    return this.run('cleanup', fqdn, value);
  }

  private async run(action: 'present' | 'cleanup', fqdn: string, value: string): Promise<void> {
    const [program, ...args] = this.opts.command;
    if (program === undefined) throw new CertfleetError(ErrorCode.ConfigInvalid, `exec provider "${this.name}" has no command`);
    const timeoutMs = this.opts.timeoutMs ?? 60_000;
    const env = {
      ...this.opts.env,
      CERTFLEET_DNS01_ACTION: action,
      CERTFLEET_DNS01_FQDN: fqdn,
      CERTFLEET_DNS01_VALUE: value,
    };
    // Its own process group, so a timeout ends the whole hook (a shell script's children
    // too), not just the first process while a grandchild keeps the pipes open.
    const child = spawn(program, [...args, action, fqdn, value], { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
    const signalGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    let output = '';
    const append = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL * 2);
    };
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    let timedOut = false;
    const clock = this.opts.clock ?? systemClock;
    let killTimer: Timer | undefined;
    const timer = clock.after(timeoutMs, () => {
      timedOut = true;
      signalGroup('SIGTERM');
      killTimer = clock.after(5000, () => signalGroup('SIGKILL'));
    });
    const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    timer.stop();
    killTimer?.stop();
    const tail = output.trim().slice(-OUTPUT_TAIL);
    const details = { provider: this.name, action, fqdn, exitCode: result.code, signal: result.signal, output: tail };
    if (result.error) {
      throw new CertfleetError(ErrorCode.DnsProviderFailed, `exec provider "${this.name}": cannot run ${program}: ${result.error.message}`, {
        cause: result.error,
        details,
      });
    }
    if (timedOut || result.code !== 0) {
      const why = timedOut ? `timed out after ${timeoutMs} ms` : result.code === null ? `killed by ${result.signal ?? 'a signal'}` : `exited with ${result.code}`;
      throw new CertfleetError(ErrorCode.DnsProviderFailed, `exec provider "${this.name}": ${action} ${fqdn} ${why}${tail === '' ? '' : `: ${tail}`}`, {
        retryable: true,
        details,
      });
    }
    this.opts.log.info({ [LogKey.provider]: this.name, [LogKey.fqdn]: fqdn, [LogKey.action]: action }, action === 'present' ? 'dns record added' : 'dns record removed');
  }
}

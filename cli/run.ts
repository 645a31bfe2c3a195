/**
 * Runs one parsed command line and turns every outcome into an exit code.
 *
 * The daemons are imported lazily and only here: `certfleet agent` never loads controller
 * code (and operator commands load neither), which keeps the agent light and is the
 * reason cli/ is the one folder allowed to know both sides. The operator commands'
 * gRPC stack is lazy too, so help and usage errors answer at once.
 */
import fs from 'node:fs';
import { ExitCode, ErrorCode, CertfleetError, exitCodeFor, toCertfleetError } from '../shared/errors/index.js';
import type { Clock } from '../shared/clock/index.js';
import { parseCommandLine, wantsJson, type Invocation, type TokenSource } from './args.js';
import { renderEnrolled, renderSigningKeys } from './render.js';
import { helpText } from './usage.js';

/** Where the CLI reads and writes; the process's own streams in production, buffers in tests. */
export interface CliIo {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown };
  /** Read by `--token-file -`; a function so stdin is opened only when used. */
  stdin(): AsyncIterable<string | Buffer>;
  /** The CLI's settings from the environment (CERTFLEET_CREDENTIALS, NO_COLOR, TERM, CERTFLEET_DEBUG). */
  env: Readonly<Record<string, string | undefined>>;
  now(): Date;
  /**
   * For commands that run until stopped (`events --follow`): a signal aborted on SIGINT
   * or SIGTERM. A function, so the signal handlers are installed only by those commands
   * and Ctrl-C keeps its default effect everywhere else. Without it they never stop.
   */
  interrupt?(): AbortSignal;
  /** Wait of `events --follow` before it reconnects a broken stream; default 2000 ms (tests shorten it). */
  followIntervalMs?: number;
  /** Period of `--wait`'s looks at the certificate; default 1000 ms (tests shorten it). */
  waitIntervalMs?: number;
  /** Time for waits and polls; default the system clock. */
  clock?: Clock;
}

/**
 * Runs `certfleet` with `argv` (without node and the script) and resolves with the exit
 * code; never rejects. Errors are printed as `certfleet: <message>` and `code: <CODE>`
 * (usage errors: the message and a hint) on stderr; the exit code is `exitCodeFor(err)`.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    return await execute(parseCommandLine(argv), io);
  } catch (err) {
    // Also for a usage error, where no Invocation says --json: a script that asked for
    // JSON gets its error as JSON too.
    return reportError(err, io, { json: wantsJson(argv) });
  }
}

/**
 * Prints `err` the way every command does and returns its exit code. With `json`, one
 * object on stderr instead: `{"error": {"code", "message", "exitCode", "retryable",
 * "hint"?, "details"?}}` (details: the error's non-secret facts, e.g. every config problem).
 */
export function reportError(err: unknown, io: Pick<CliIo, 'stderr' | 'env'>, opts: { json?: boolean } = {}): number {
  const cf = toCertfleetError(err);
  if (opts.json === true) {
    const { hint, ...details } = cf.details;
    const error = {
      code: cf.code,
      message: cf.message,
      exitCode: exitCodeFor(cf),
      retryable: cf.retryable,
      ...(typeof hint === 'string' ? { hint } : {}),
      ...(Object.keys(details).length > 0 ? { details } : {}),
    };
    io.stderr.write(`${JSON.stringify({ error })}\n`);
    if (io.env['CERTFLEET_DEBUG'] === '1') io.stderr.write(debugChain(err));
    return exitCodeFor(cf);
  }
  io.stderr.write(`certfleet: ${cf.message}\n`);
  if (cf.code === ErrorCode.UsageInvalid) {
    const hint = typeof cf.details['hint'] === 'string' ? cf.details['hint'] : 'certfleet --help';
    io.stderr.write(`Try '${hint}'.\n`);
  } else {
    io.stderr.write(`code: ${cf.code}\n`);
  }
  if (io.env['CERTFLEET_DEBUG'] === '1') io.stderr.write(debugChain(err));
  return exitCodeFor(cf);
}

function debugChain(err: unknown): string {
  let out = '';
  for (let e: unknown = err, depth = 0; e !== undefined && depth < 5; depth++) {
    out += `${e instanceof Error ? (e.stack ?? e.message) : JSON.stringify(e)}\n`;
    e = e instanceof Error ? e.cause : undefined;
    if (e !== undefined) out += 'caused by: ';
  }
  return out;
}

/** package.json's version, read at run time so it cannot drift from the package. */
export function packageVersion(): string {
  // Compiled to dist/cli/run.js: the package root is two levels up.
  const raw = fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  const version = (JSON.parse(raw) as { version?: unknown }).version;
  return typeof version === 'string' ? version : 'unknown';
}

async function execute(inv: Invocation, io: CliIo): Promise<number> {
  switch (inv.command) {
    case 'help':
      io.stdout.write(helpText(inv.topic));
      return ExitCode.Ok;
    case 'version':
      io.stdout.write(`certfleet ${packageVersion()}\n`);
      return ExitCode.Ok;
    case 'controller': {
      if ('writeNatsConfig' in inv) {
        const { loadControllerConfig, writeNatsServerConfig } = await import('../controller/index.js');
        const { createRootLogger } = await import('../shared/log/index.js');
        const cfg = loadControllerConfig(inv.configFile);
        const file = await writeNatsServerConfig(cfg, createRootLogger({ name: 'controller', level: 'warn' }));
        io.stdout.write(inv.json ? `${JSON.stringify({ file })}\n` : `${file}\n`);
        return ExitCode.Ok;
      }
      if (inv.check) {
        const { loadControllerConfig } = await import('../controller/config/index.js');
        loadControllerConfig(inv.configFile);
        io.stdout.write(inv.json ? `${JSON.stringify({ ok: true, config: inv.configFile })}\n` : 'ok\n');
        return ExitCode.Ok;
      }
      const { runController } = await import('../controller/index.js');
      await runController({ configFile: inv.configFile });
      return ExitCode.Ok;
    }
    case 'agent': {
      if (inv.check) {
        const { loadAgentConfig } = await import('../agent/config/index.js');
        loadAgentConfig(inv.configFile);
        io.stdout.write(inv.json ? `${JSON.stringify({ ok: true, config: inv.configFile })}\n` : 'ok\n');
        return ExitCode.Ok;
      }
      const { runAgent } = await import('../agent/index.js');
      await runAgent({ configFile: inv.configFile });
      return ExitCode.Ok;
    }
    case 'controller signing-key': {
      const { signingKeyCommand } = await import('../controller/index.js');
      const ring = await signingKeyCommand({ configFile: inv.configFile, step: inv.step });
      io.stdout.write(inv.json ? `${JSON.stringify({ keys: ring }, null, 2)}\n` : renderSigningKeys(ring, inv.step));
      return ExitCode.Ok;
    }
    case 'agent enroll': {
      const token = await readToken(inv.token, io);
      const { enrollAgent } = await import('../agent/index.js');
      const result = await enrollAgent({ configFile: inv.configFile, token });
      // Fields by name: nothing the enrolment wrote (key, certificate) can slip into the output.
      io.stdout.write(inv.json ? `${JSON.stringify({ name: result.name, labels: result.labels, serves: result.serves }, null, 2)}\n` : renderEnrolled(result));
      return ExitCode.Ok;
    }
    case 'status':
    case 'certs':
    case 'agents':
    case 'show':
    case 'history':
    case 'renew':
    case 'check':
    case 'rollback':
    case 'release':
    case 'revoke':
    case 'events':
    case 'budgets':
    case 'token create':
    case 'whoami':
    case 'operators create':
    case 'operators list':
    case 'operators revoke':
    case 'operators set-role':
    case 'agents remove': {
      const { runOperatorCommand } = await import('./operator.js');
      return runOperatorCommand(inv, io);
    }
    case 'console': {
      const { runConsole } = await import('./console/index.js');
      return runConsole(inv, io);
    }
    case 'import-certbot': {
      const { importCertbot } = await import('../controller/certbot/index.js');
      const { configEnvironment } = await import('../controller/config/index.js');
      const { createRootLogger } = await import('../shared/log/index.js');
      // Standard output carries the configuration: the store's warnings go to stderr.
      const log = createRootLogger({ name: 'import-certbot', level: 'warn', destination: io.stderr as NodeJS.WritableStream });
      const outcome = await importCertbot({
        certbotDir: inv.dir,
        configFile: inv.configFile,
        agents: inv.agents,
        only: inv.lineages,
        renames: inv.renames,
        out: inv.out,
        dryRun: inv.dryRun,
        force: inv.force,
        now: io.now().getTime(),
        env: configEnvironment(),
        log,
      });
      if (inv.dryRun) io.stderr.write('dry run: nothing written\n');
      for (const line of outcome.lines) io.stderr.write(`${line}\n`);
      if (inv.out === undefined) io.stdout.write(outcome.yaml);
      return ExitCode.Ok;
    }
  }
}

async function readToken(source: TokenSource, io: CliIo): Promise<string> {
  if (source.kind === 'inline') return source.token;
  let text: string;
  try {
    if (source.path === '-') {
      text = '';
      for await (const chunk of io.stdin()) text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    } else {
      text = fs.readFileSync(source.path, 'utf8');
    }
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
    throw new CertfleetError(ErrorCode.ConfigUnreadable, `cannot read token file ${source.path} (${reason})`, { cause: err });
  }
  const token = text.trim();
  if (token === '') throw new CertfleetError(ErrorCode.UsageInvalid, `token file ${source.path} is empty`, { details: { hint: 'certfleet agent enroll --help' } });
  return token;
}

/**
 * `certfleet console`: a web console served on loopback by the operator's own CLI, with
 * the operator's own credentials (as `kubectl proxy` does), so the controller gains no
 * new way in: its role checks decide every call. docs/console.md explains the choice.
 */
import { ExitCode } from '../../shared/errors/index.js';
import type { Invocation } from '../args.js';
import { operatorClient, switchNote } from '../client.js';
import { credentialsPath, loadCredentials } from '../credentials.js';
import type { CliIo } from '../run.js';
import { startConsole } from './server.js';

export { startConsole, type ConsoleClient, type ConsoleOptions, type ConsoleServer } from './server.js';
export { allowedHosts, checkRequest, cookieName, isMutation, readCookie, sameSecret, type GuardDecision, type GuardRequest } from './guard.js';
export { streamEvents, type FeedClient } from './feed.js';

/**
 * Runs `certfleet console` until `io.interrupt()` fires: asks the controller who these
 * credentials are (so wrong credentials or an unreachable controller fail at once, with
 * the CLI's usual error), starts the server, prints its address with the secret on
 * stdout and notes on stderr, and resolves with exit code 0 once stopped.
 */
export async function runConsole(inv: Extract<Invocation, { command: 'console' }>, io: CliIo): Promise<number> {
  const file = credentialsPath(inv.operator.credentialsFile, io.env);
  const creds = loadCredentials(file, (warning) => io.stderr.write(`certfleet: warning: ${warning}\n`));
  const client = operatorClient(creds, inv.operator.timeoutMs, (sw) => io.stderr.write(`certfleet console: ${switchNote(sw)}\n`));
  try {
    const me = await client.whoAmI();
    const server = await startConsole({
      client,
      host: inv.listen.host,
      port: inv.listen.port,
      ...(io.followIntervalMs === undefined ? {} : { feedIntervalMs: io.followIntervalMs }),
      ...(io.clock === undefined ? {} : { clock: io.clock }),
      log: (line) => io.stderr.write(`certfleet console: ${line}\n`),
    });
    io.stderr.write(`certfleet console: acting as ${me.name} (role ${me.role}) on controller ${client.address}; open this address on this machine (Ctrl-C stops):\n`);
    io.stdout.write(`${server.url}\n`);
    const signal = io.interrupt?.() ?? new AbortController().signal;
    if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    await server.close();
    return ExitCode.Ok;
  } finally {
    client.close();
  }
}

/**
 * The operator commands: read the credentials, call the controller's OperatorService,
 * print the answer. Loaded only when one of them runs, so `--help`, usage errors and the
 * daemons skip the gRPC stack.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, ExitCode, isCertfleetError } from '../shared/errors/index.js';
import type { pb } from '../shared/grpc/index.js';
import type { Invocation } from './args.js';
import { credentialsPath, loadCredentials } from './credentials.js';
import { operatorClient, type OperatorClient } from './client.js';
import {
  newEvents,
  renderAgents,
  renderBudgets,
  renderCertificate,
  renderCertificates,
  renderEvent,
  renderEvents,
  renderHistory,
  renderJson,
  renderRelease,
  renderRenew,
  renderRollback,
  renderStatus,
  renderTokenNote,
} from './render.js';
import type { CliIo } from './run.js';

/** An invocation of one of the operator commands. */
export type OperatorInvocation = Extract<
  Invocation,
  { command: 'status' | 'certs' | 'agents' | 'show' | 'history' | 'renew' | 'rollback' | 'release' | 'events' | 'budgets' | 'token create' }
>;

/** How often `events --follow` asks the controller for new events. */
export const FOLLOW_INTERVAL_MS = 2000;

/**
 * Runs one operator command and resolves with exit code 0; throws a CertfleetError
 * (credentials unreadable or invalid, controller unreachable, or the controller's own
 * error code) for the caller to report. `events --follow` resolves only once
 * `io.interrupt()`'s signal fires.
 */
export async function runOperatorCommand(inv: OperatorInvocation, io: CliIo): Promise<number> {
  const file = credentialsPath(inv.operator.credentialsFile, io.env);
  const creds = loadCredentials(file, (warning) => io.stderr.write(`certfleet: warning: ${warning}\n`));
  const client = operatorClient(creds, inv.operator.timeoutMs);
  try {
    await call(inv, client, io);
    return ExitCode.Ok;
  } finally {
    client.close();
  }
}

async function call(inv: OperatorInvocation, client: OperatorClient, io: CliIo): Promise<void> {
  const color = useColor(io);
  const out = (resp: unknown, human: () => string): void => {
    io.stdout.write(inv.json ? renderJson(resp) : human());
  };
  switch (inv.command) {
    case 'status': {
      const resp = await client.getStatus();
      out(resp, () => renderStatus(resp, { color }));
      return;
    }
    case 'certs': {
      const resp = await client.listCertificates();
      out(resp, () => renderCertificates(resp, io.now(), { color }));
      return;
    }
    case 'agents': {
      const resp = await client.listAgents();
      out(resp, () => renderAgents(resp, io.now(), { color }));
      return;
    }
    case 'show': {
      const resp = await client.showCertificate({ name: inv.name });
      out(resp, () => renderCertificate(resp, io.now(), { color }));
      return;
    }
    case 'history': {
      const resp = await client.getHistory({ name: inv.name });
      out(resp, () => renderHistory(resp, io.now(), { color }));
      return;
    }
    case 'renew': {
      const resp = await client.renewCertificate({ name: inv.name, cancel: inv.cancel });
      out(resp, () => renderRenew(inv.name, resp));
      return;
    }
    case 'rollback': {
      const resp = await client.rollback({ name: inv.name, toVersion: inv.toVersion });
      out(resp, () => renderRollback(inv.name, resp));
      return;
    }
    case 'release': {
      const resp = await client.release({ name: inv.name });
      out(resp, () => renderRelease(inv.name, resp));
      return;
    }
    case 'budgets': {
      const resp = await client.listBudgets();
      out(resp, () => renderBudgets(resp, io.now(), { color }));
      return;
    }
    case 'events': {
      const req: pb.ListEventsRequest = { limit: inv.limit, cert: inv.cert ?? '' };
      if (inv.follow) {
        await followEvents(client, req, io, inv.json, color);
      } else {
        const resp = await client.listEvents(req);
        out(resp, () => renderEvents(resp, { color }));
      }
      return;
    }
    case 'token create': {
      const resp = await client.createEnrollmentToken({ agent: inv.agent, labels: inv.labels, ttlSeconds: inv.ttlSeconds });
      if (inv.json) {
        io.stdout.write(renderJson(resp));
      } else {
        // The token alone on stdout, so `> web-1.token` captures exactly it.
        io.stdout.write(`${resp.token}\n`);
        io.stderr.write(renderTokenNote(resp, inv.agent, io.now()));
      }
      return;
    }
  }
}

/**
 * `events --follow`: ListEvents every `io.followIntervalMs` (default 2 s), printing the
 * events the previous answer did not hold, until the interrupt signal fires.
 *
 * Polling, not streaming: the OperatorService has no server stream, and a poll per two
 * seconds is cheap for the controller. If more than `--limit` events happen between two
 * polls, the oldest of them are not shown. The first call's failure ends the command
 * with its error; later an unreachable controller (it restarts, say) only draws one
 * warning per outage and the polling goes on, and any other error ends the command.
 */
async function followEvents(client: OperatorClient, req: pb.ListEventsRequest, io: CliIo, json: boolean, color: boolean): Promise<void> {
  const signal = io.interrupt?.() ?? new AbortController().signal;
  const interval = io.followIntervalMs ?? FOLLOW_INTERVAL_MS;
  let seen: ReadonlySet<string> = new Set();
  let first = true;
  let outage = false;
  while (!signal.aborted) {
    try {
      const resp = await client.listEvents(req);
      const next = newEvents(seen, resp.events);
      seen = next.seen;
      // JSON Lines: one compact object per event, so `jq` can read a stream that never ends.
      for (const e of next.fresh) io.stdout.write(json ? JSON.stringify(e) + '\n' : renderEvent(e, { color }));
      if (outage) io.stderr.write('certfleet: controller reachable again\n');
      outage = false;
    } catch (err) {
      if (first || !isCertfleetError(err, ErrorCode.ControllerUnavailable)) throw err;
      if (!outage) io.stderr.write(`certfleet: warning: ${err.message}; still trying every ${interval / 1000}s\n`);
      outage = true;
    }
    first = false;
    try {
      await sleep(interval, undefined, { signal });
    } catch (err) {
      // Aborted: Ctrl-C is how --follow is meant to end.
      if (signal.aborted) return;
      throw err;
    }
  }
}

/** Colour only for a terminal, and never when NO_COLOR is set (no-color.org) or TERM=dumb. */
function useColor(io: CliIo): boolean {
  return io.stdout.isTTY === true && (io.env['NO_COLOR'] ?? '') === '' && io.env['TERM'] !== 'dumb';
}

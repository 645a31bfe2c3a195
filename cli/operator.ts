/** Page size `certfleet certs` asks for (the controller's most is 1000). */
export const CERTIFICATES_PAGE = 500;

/**
 * Every certificate summary, page by page (issue #13: one answer for 10,000 was several
 * megabytes, over gRPC's default message limit), as one answer shaped like the unpaged
 * one, so `certs` and `certs --json` print what they printed before paging.
 */
export async function listAllCertificates(client: Pick<OperatorClient, 'listCertificates'>, pageSize = CERTIFICATES_PAGE): Promise<{ certificates: pb.CertificateSummary__Output[] }> {
  const certificates: pb.CertificateSummary__Output[] = [];
  let pageToken = '';
  do {
    const page = await client.listCertificates({ pageSize, pageToken });
    certificates.push(...page.certificates);
    pageToken = page.nextPageToken;
  } while (pageToken !== '');
  return { certificates };
}

/**
 * The operator commands: read the credentials, call the controller's OperatorService,
 * print the answer. Loaded only when one of them runs, so `--help`, usage errors and the
 * daemons skip the gRPC stack.
 */
import fs from 'node:fs';
import { systemClock } from '../shared/clock/index.js';
import { CertfleetError, ErrorCode, ExitCode, isCertfleetError } from '../shared/errors/index.js';
import { createAgentKeyAndCsr } from '../shared/pki-csr/index.js';
import type { pb } from '../shared/grpc/index.js';
import type { Invocation, WaitOptions } from './args.js';
import { waitServed, type WaitTarget } from './wait.js';
import { credentialsPath, loadCredentials, type OperatorCredentials } from './credentials.js';
import { operatorClient, switchNote, type OperatorClient } from './client.js';
import {
  eventKey,
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
  renderRevoke,
  renderRollback,
  renderServed,
  renderStatus,
  renderTokenNote,
  renderOperatorCreated,
  renderOperatorRevoked,
  renderOperatorRole,
  renderAgentRemoved,
  renderOperators,
  renderWhoAmI,
  renderDryRun,
  renderChecks,
  checkTarget,
} from './render.js';
import type { CliIo } from './run.js';
import type { CommandName } from './usage.js';

/** An invocation of one of the operator commands. */
export type OperatorInvocation = Extract<Invocation, { command: OperatorCommand }>;

/** The commands that talk to a controller with operator credentials: all but the daemons and the offline ones. */
type OperatorCommand = Exclude<CommandName, 'controller' | 'agent' | 'agent enroll' | 'controller signing-key' | 'import-certbot' | 'console'>;

/** How long `events --follow` waits before reconnecting after the stream broke. */
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
  // One line per switch: the operator learns which controller answered, and why not the first.
  const client = operatorClient(creds, inv.operator.timeoutMs, (sw) => io.stderr.write(`certfleet: warning: ${switchNote(sw)}\n`));
  try {
    await call(inv, client, io, creds);
    return ExitCode.Ok;
  } finally {
    client.close();
  }
}

async function call(inv: OperatorInvocation, client: OperatorClient, io: CliIo, creds: OperatorCredentials): Promise<void> {
  const color = useColor(io);
  const out = (resp: unknown, human: () => string): void => {
    io.stdout.write(inv.json ? renderJson(resp) : human());
  };
  switch (inv.command) {
    case 'status': {
      const resp = await client.getStatus();
      out(resp, () => renderStatus(resp, { color }, io.now()));
      return;
    }
    case 'certs': {
      const resp = await listAllCertificates(client);
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
    case 'check':
      return checkCommand(inv, client, io, color);
    case 'renew': {
      if ('dryRun' in inv) return dryRunCommand(inv, client, io, color);
      // --wait: the failure count before the request, so a failure during it is seen.
      const before = inv.wait === undefined ? undefined : await client.showCertificate({ name: inv.name });
      const failures = before?.failures ?? 0;
      const resp = await client.renewCertificate({ name: inv.name, cancel: inv.cancel });
      if (inv.wait === undefined) {
        out(resp, () => renderRenew(inv.name, resp));
        return;
      }
      if (!inv.json) io.stderr.write(renderRenew(inv.name, resp));
      // With several issuers a failure is followed: the loop falls back to the next CA.
      if (resp.outcome === 'failed' && (before?.issuers.length ?? 0) <= 1) {
        throw new CertfleetError(knownCode(resp.errorCode), `${inv.name}: renewal failed: ${resp.reason || resp.message}`, { details: { step: 'issue' } });
      }
      if (resp.outcome === 'deferred') {
        throw new CertfleetError(ErrorCode.BudgetDeferred, `${inv.name}: not waiting: the order is deferred until ${resp.deferredUntil} by budget ${resp.budget || '(see certfleet budgets)'}`, { details: { step: 'budget' } });
      }
      const target = { name: inv.name, version: resp.outcome === 'issued' ? resp.version : Math.max(resp.version, resp.previousVersion + 1), atLeast: true, failures };
      await waitAndReport(resp, target, inv.wait, client, io, inv.json);
      return;
    }
    case 'rollback': {
      const resp = await client.rollback({ name: inv.name, toVersion: inv.toVersion });
      if (inv.wait === undefined) {
        out(resp, () => renderRollback(inv.name, resp));
        return;
      }
      if (!inv.json) io.stderr.write(renderRollback(inv.name, resp));
      await waitAndReport(resp, { name: inv.name, version: resp.toVersion, atLeast: false, failures: 0 }, inv.wait, client, io, inv.json);
      return;
    }
    case 'release': {
      const resp = await client.release({ name: inv.name });
      if (inv.wait === undefined) {
        out(resp, () => renderRelease(inv.name, resp));
        return;
      }
      if (!inv.json) io.stderr.write(renderRelease(inv.name, resp));
      await waitAndReport(resp, { name: inv.name, version: resp.version, atLeast: false, failures: 0 }, inv.wait, client, io, inv.json);
      return;
    }
    case 'revoke': {
      const resp = await client.revokeCertificate({ name: inv.name, version: inv.version, reason: inv.reason });
      out(resp, () => renderRevoke(resp));
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
        await followEvents(client, { limit: inv.limit, cert: inv.cert ?? '' }, io, inv.json, color);
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
    case 'whoami': {
      const resp = await client.whoAmI();
      out(resp, () => renderWhoAmI(resp));
      return;
    }
    case 'operators create': {
      const o = await createOperator(inv, client, creds);
      out({ operator: o, credentialsFile: inv.out }, () => renderOperatorCreated(o, inv.out));
      return;
    }
    case 'operators list': {
      const resp = await client.listOperators();
      out(resp, () => renderOperators(resp, io.now(), { color }));
      return;
    }
    case 'operators revoke': {
      const resp = await client.revokeOperator({ name: inv.name });
      const o = resp.operator;
      if (o === null) throw new CertfleetError(ErrorCode.Internal, 'the controller answered without the operator');
      out(resp, () => renderOperatorRevoked(o));
      return;
    }
    case 'operators set-role': {
      const resp = await client.setOperatorRole({ name: inv.name, role: inv.role });
      out(resp, () => renderOperatorRole(resp));
      return;
    }
    case 'agents remove': {
      const resp = await client.removeAgent({ name: inv.name });
      out(resp, () => renderAgentRemoved(resp));
      return;
    }
  }
}

/**
 * `--wait`: follows the certificate until the fleet serves `target` (progress on stderr),
 * then prints the served line, or with --json the command's answer plus
 * `wait: { served: true, version, agentsCurrent, agentsAssigned }`. A failed step throws
 * (its code decides the exit status).
 */
async function waitAndReport(resp: object, target: WaitTarget, wait: WaitOptions, client: OperatorClient, io: CliIo, json: boolean): Promise<void> {
  const { show, version } = await waitServed(target, {
    show: () => client.showCertificate({ name: target.name }),
    progress: (line) => {
      if (!json) io.stderr.write(`${line}\n`);
    },
    timeoutMs: wait.timeoutMs,
    ...(io.waitIntervalMs === undefined ? {} : { intervalMs: io.waitIntervalMs }),
    ...(io.clock === undefined ? {} : { clock: io.clock }),
  });
  const agentsCurrent = show.summary?.agentsCurrent ?? 0;
  const agentsAssigned = show.summary?.agentsAssigned ?? 0;
  io.stdout.write(
    json
      ? renderJson({ ...resp, wait: { served: true, version, agentsCurrent, agentsAssigned } })
      : renderServed(target.name, version, agentsCurrent, agentsAssigned),
  );
}

/** An error code the controller sent as text, when it is one of ours. */
/**
 * `renew NAME --dry-run`: prints the steps (or the response as JSON); a failed rehearsal
 * then fails the command with the failed step's code, on stderr, after the output.
 */
async function dryRunCommand(inv: Extract<OperatorInvocation, { dryRun: true }>, client: OperatorClient, io: CliIo, color: boolean): Promise<void> {
  const resp = await client.dryRun({ name: inv.name });
  io.stdout.write(inv.json ? renderJson(resp) : renderDryRun(resp, { color }));
  if (!resp.ok) {
    const failed = resp.steps.find((s) => !s.ok);
    throw new CertfleetError(knownCode(resp.errorCode), `${inv.name}: dry run failed at ${failed?.step ?? 'a step'}${failed?.identifier ? ` (${failed.identifier})` : ''}: ${resp.error}`, {
      details: { step: failed?.step ?? '' },
    });
  }
}

/** `check [NAME]`: prints every check; any failed one fails the command, naming them. */
async function checkCommand(inv: Extract<OperatorInvocation, { command: 'check' }>, client: OperatorClient, io: CliIo, color: boolean): Promise<void> {
  const resp = await client.checkChallenges({ name: inv.name ?? '' });
  io.stdout.write(inv.json ? renderJson(resp) : renderChecks(resp, { color }));
  const failed = resp.checks.filter((c) => !c.ok);
  if (failed.length > 0) {
    const first = failed[0];
    // The code of the first failure: what a real challenge would have failed with.
    const code = first?.check === 'dns-01' ? knownCodeOr(/^([A-Z_]+):/.exec(first.detail)?.[1] ?? '', ErrorCode.DnsProviderFailed) : ErrorCode.ChallengeNotServed;
    throw new CertfleetError(code, `${failed.length} of ${resp.checks.length} challenge checks failed: ${failed.map(checkTarget).join(', ')}`, {
      details: { failed: failed.map(checkTarget) },
    });
  }
}

function knownCodeOr(text: string, fallback: ErrorCode): ErrorCode {
  return (Object.values(ErrorCode) as string[]).includes(text) ? (text as ErrorCode) : fallback;
}

function knownCode(text: string): ErrorCode {
  return (Object.values(ErrorCode) as string[]).includes(text) ? (text as ErrorCode) : ErrorCode.Internal;
}

/**
 * `operators create`: makes the new operator's key here, has the controller sign a CSR
 * for it, and writes a credentials file like admin-credentials.json (same controller
 * address, mode 0600). The file is created empty before the controller is asked, so a
 * path that cannot be written (or exists already) fails before an operator is
 * registered; it is removed again if the controller refuses.
 */
async function createOperator(
  inv: Extract<OperatorInvocation, { command: 'operators create' }>,
  client: OperatorClient,
  creds: OperatorCredentials,
): Promise<pb.Operator__Output> {
  const { keyPem, csrPem } = await createAgentKeyAndCsr(inv.name);
  let fd: number;
  try {
    fd = fs.openSync(inv.out, 'wx', 0o600);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? String(err);
    const why = reason === 'EEXIST' ? 'it exists already; choose another path or remove it' : reason;
    throw new CertfleetError(ErrorCode.UsageInvalid, `cannot create ${inv.out}: ${why}`, { cause: err, details: { hint: 'certfleet operators create --help' } });
  }
  let written = false;
  try {
    const resp = await client.createOperator({ name: inv.name, role: inv.role, csrPem });
    if (resp.operator === null) throw new CertfleetError(ErrorCode.Internal, 'the controller answered without the operator');
    const file = {
      ...(creds.server === undefined ? {} : { server: creds.server }),
      ...(creds.servers === undefined ? {} : { servers: creds.servers }),
      ...(creds.serverName === undefined ? {} : { serverName: creds.serverName }),
      caPem: resp.caPem,
      certPem: resp.certificatePem,
      keyPem,
    };
    fs.writeFileSync(fd, JSON.stringify(file, null, 2) + '\n');
    fs.fsyncSync(fd);
    written = true;
    return resp.operator;
  } finally {
    fs.closeSync(fd);
    if (!written) fs.rmSync(inv.out, { force: true });
  }
}

/** Keys of printed events kept by `events --follow` to drop repeats after a reconnect. */
const FOLLOW_SEEN_KEYS = 10_000;

/**
 * `events --follow`: the controller's FollowEvents stream (a JetStream consumer on its
 * side), printing the most recent `--limit` events and then each new one as it is
 * published, until the interrupt signal fires.
 *
 * The first connection's failure ends the command with its error. Later, when the
 * stream breaks (the controller restarts or becomes unreachable, or NATS is down when it
 * reconnects), one warning per outage goes to stderr and the command reconnects every
 * `io.followIntervalMs` (default 2 s); the reconnected stream starts with the recent
 * events again, of which those already printed are skipped, so events of a short outage
 * are shown late rather than lost (of a long one, at most `--limit`). Any other error
 * ends the command.
 */
async function followEvents(client: OperatorClient, req: pb.FollowEventsRequest, io: CliIo, json: boolean, color: boolean): Promise<void> {
  const signal = io.interrupt?.() ?? new AbortController().signal;
  const retry = io.followIntervalMs ?? FOLLOW_INTERVAL_MS;
  const seen = new Set<string>();
  let opened = false;
  let outage = false;
  const onEvent = (e: pb.FleetEvent__Output): void => {
    const key = eventKey(e);
    if (seen.has(key)) return;
    seen.add(key);
    if (seen.size > FOLLOW_SEEN_KEYS) seen.delete(seen.values().next().value ?? '');
    // JSON Lines: one compact object per event, so `jq` can read a stream that never ends.
    io.stdout.write(json ? JSON.stringify(e) + '\n' : renderEvent(e, { color }));
  };
  const onOpen = (): void => {
    opened = true;
    if (outage) io.stderr.write('certfleet: controller reachable again\n');
    outage = false;
  };
  while (!signal.aborted) {
    let broke: CertfleetError;
    try {
      await client.followEvents(req, { onOpen, onEvent }, signal);
      if (signal.aborted) return;
      broke = new CertfleetError(ErrorCode.ControllerUnavailable, 'the controller ended the event stream');
    } catch (err) {
      if (signal.aborted) return;
      const retryable = isCertfleetError(err, ErrorCode.ControllerUnavailable) || isCertfleetError(err, ErrorCode.NatsUnavailable);
      if (!opened || !retryable) throw err;
      broke = err;
    }
    if (!outage) io.stderr.write(`certfleet: warning: ${broke.message}; reconnecting every ${retry / 1000}s\n`);
    outage = true;
    try {
      await (io.clock ?? systemClock).sleep(retry, signal);
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

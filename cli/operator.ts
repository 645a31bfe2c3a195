/**
 * The operator commands (status, certs, agents, token create): read the credentials,
 * make one call to the controller's OperatorService, print the answer. Loaded only when
 * one of them runs, so `--help`, usage errors and the daemons skip the gRPC stack.
 */
import { ExitCode } from '../shared/errors/index.js';
import type { Invocation } from './args.js';
import { credentialsPath, loadCredentials } from './credentials.js';
import { operatorClient, type OperatorClient } from './client.js';
import { renderAgents, renderCertificates, renderJson, renderStatus, renderTokenNote } from './render.js';
import type { CliIo } from './run.js';

/** An invocation of one of the operator commands. */
export type OperatorInvocation = Extract<Invocation, { command: 'status' | 'certs' | 'agents' | 'token create' }>;

/**
 * Runs one operator command and resolves with exit code 0; throws a CertfleetError
 * (credentials unreadable or invalid, controller unreachable, or the controller's own
 * error code) for the caller to report.
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
  switch (inv.command) {
    case 'status': {
      const resp = await client.getStatus();
      io.stdout.write(inv.json ? renderJson(resp) : renderStatus(resp, { color }));
      return;
    }
    case 'certs': {
      const resp = await client.listCertificates();
      io.stdout.write(inv.json ? renderJson(resp) : renderCertificates(resp, io.now(), { color }));
      return;
    }
    case 'agents': {
      const resp = await client.listAgents();
      io.stdout.write(inv.json ? renderJson(resp) : renderAgents(resp, io.now(), { color }));
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

/** Colour only for a terminal, and never when NO_COLOR is set (no-color.org) or TERM=dumb. */
function useColor(io: CliIo): boolean {
  return io.stdout.isTTY === true && (io.env['NO_COLOR'] ?? '') === '' && io.env['TERM'] !== 'dumb';
}

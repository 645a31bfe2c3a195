/**
 * The operator's gRPC client: the controllers' OperatorService with mutual TLS, each call
 * promisified with a deadline, failures turned into CertfleetErrors
 * (CONTROLLER_UNAVAILABLE when no controller can be reached or the TLS handshake fails,
 * otherwise the code the controller sent).
 *
 * With several controllers (credentials `servers`) it fails over between them (shared/grpc
 * FailoverClient, HA spec decision 9): every call moves on when a controller cannot be
 * reached or answers NOT_LEADER; after the request was sent, only the reads below are
 * sent again elsewhere when the controller became unavailable, because a mutation
 * (renew, rollback, release, revoke, token create, operators, agents remove, renew
 * --dry-run, check) may have been carried out by the first one. `--timeout` bounds each
 * attempt.
 */
import { clientCredentials, deadline, FailoverClient, failoverChannelOptions, grpc, loadProtos, type CallSafety } from '../shared/grpc/index.js';
import type { OperatorServiceClient, pb } from '../shared/grpc/index.js';
import { credentialServers } from './credentials.js';
import type { OperatorCredentials } from './credentials.js';
import type { ControllerSwitch } from '../shared/grpc/index.js';

/** The calls the CLI makes. `close()` must be called when done (it releases the channel). */
export interface OperatorClient {
  getStatus(): Promise<pb.GetStatusResponse__Output>;
  listCertificates(req?: pb.ListCertificatesRequest): Promise<pb.ListCertificatesResponse__Output>;
  listAgents(): Promise<pb.ListAgentsResponse__Output>;
  createEnrollmentToken(req: pb.CreateEnrollmentTokenRequest): Promise<pb.CreateEnrollmentTokenResponse__Output>;
  showCertificate(req: pb.ShowCertificateRequest): Promise<pb.ShowCertificateResponse__Output>;
  renewCertificate(req: pb.RenewCertificateRequest): Promise<pb.RenewCertificateResponse__Output>;
  getHistory(req: pb.GetHistoryRequest): Promise<pb.GetHistoryResponse__Output>;
  rollback(req: pb.RollbackRequest): Promise<pb.RollbackResponse__Output>;
  release(req: pb.ReleaseRequest): Promise<pb.ReleaseResponse__Output>;
  revokeCertificate(req: pb.RevokeCertificateRequest): Promise<pb.RevokeCertificateResponse__Output>;
  listBudgets(): Promise<pb.ListBudgetsResponse__Output>;
  listEvents(req: pb.ListEventsRequest): Promise<pb.ListEventsResponse__Output>;
  whoAmI(): Promise<pb.WhoAmIResponse__Output>;
  createOperator(req: pb.CreateOperatorRequest): Promise<pb.CreateOperatorResponse__Output>;
  listOperators(): Promise<pb.ListOperatorsResponse__Output>;
  revokeOperator(req: pb.RevokeOperatorRequest): Promise<pb.RevokeOperatorResponse__Output>;
  setOperatorRole(req: pb.SetOperatorRoleRequest): Promise<pb.SetOperatorRoleResponse__Output>;
  removeAgent(req: pb.RemoveAgentRequest): Promise<pb.RemoveAgentResponse__Output>;
  dryRun(req: pb.DryRunRequest): Promise<pb.DryRunResponse__Output>;
  checkChallenges(req: pb.CheckChallengesRequest): Promise<pb.CheckChallengesResponse__Output>;
  /**
   * FollowEvents, a server stream with no deadline: `onOpen` once the controller accepted
   * it, then `onEvent` per event. Resolves when `signal` aborts (the call is cancelled) or
   * the controller ends the stream; rejects with the CertfleetError it failed with
   * (CONTROLLER_UNAVAILABLE: unreachable, or stopping).
   */
  followEvents(req: pb.FollowEventsRequest, on: { onOpen(): void; onEvent(e: pb.FleetEvent__Output): void }, signal: AbortSignal): Promise<void>;
  /** host:port of the controller in use now. */
  readonly address: string;
  close(): void;
}

/** The stderr note for a switch to another controller. */
export function switchNote(sw: ControllerSwitch): string {
  return sw.reason === 'answered' ? `controller ${sw.to} answered (was ${sw.from})` : `using controller ${sw.to}: ${sw.reason}`;
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;

/**
 * Opens the client for `creds`' controllers (`servers`, else `server`). Nothing is sent
 * until the first call; each attempt fails after `timeoutMs`. When `creds.serverName`
 * is set the controllers' certificates must name it instead of the dialled host.
 * `onSwitch` hears when the client moves to another controller.
 */
export function operatorClient(creds: OperatorCredentials, timeoutMs: number, onSwitch?: (s: ControllerSwitch) => void): OperatorClient {
  const { operator } = loadProtos();
  const options = failoverChannelOptions(creds.serverName);
  const tls = clientCredentials({ caPem: creds.caPem, certPem: creds.certPem, keyPem: creds.keyPem });
  const failover = new FailoverClient<OperatorServiceClient>({
    addresses: credentialServers(creds),
    connect: (address) => new operator.certfleet.v1.OperatorService(address, tls, options),
    connectTimeoutMs: Math.min(5000, timeoutMs),
    label: (_what, address) => `controller ${address}`,
    ...(onSwitch === undefined ? {} : { onSwitch }),
  });

  /** One unary call; `safety` says whether it may be sent to another controller after this one received it. */
  function call<T>(what: string, safety: CallSafety, start: (client: OperatorServiceClient, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<T>) => unknown): Promise<T> {
    return failover.call(what, safety, (client) =>
      new Promise<T>((resolve, reject) => {
        start(client, new grpc.Metadata(), { deadline: deadline(timeoutMs) }, (err, value) => {
          if (err) reject(err);
          else if (value === undefined) reject(new Error('empty response'));
          else resolve(value);
        });
      }),
    );
  }

  return {
    // Reads: safe to send again to another controller.
    getStatus: () => call('status', 'idempotent', (c, md, opts, cb) => c.getStatus({}, md, opts, cb)),
    listCertificates: (req = {}) => call('certs', 'idempotent', (c, md, opts, cb) => c.listCertificates(req, md, opts, cb)),
    listAgents: () => call('agents', 'idempotent', (c, md, opts, cb) => c.listAgents({}, md, opts, cb)),
    showCertificate: (req) => call('show', 'idempotent', (c, md, opts, cb) => c.showCertificate(req, md, opts, cb)),
    getHistory: (req) => call('history', 'idempotent', (c, md, opts, cb) => c.getHistory(req, md, opts, cb)),
    listBudgets: () => call('budgets', 'idempotent', (c, md, opts, cb) => c.listBudgets({}, md, opts, cb)),
    listEvents: (req) => call('events', 'idempotent', (c, md, opts, cb) => c.listEvents(req, md, opts, cb)),
    whoAmI: () => call('whoami', 'idempotent', (c, md, opts, cb) => c.whoAmI({}, md, opts, cb)),
    listOperators: () => call('operators', 'idempotent', (c, md, opts, cb) => c.listOperators({}, md, opts, cb)),
    // Mutations (and the dry run and check, which order at a CA or write challenges): once.
    createEnrollmentToken: (req) => call('token create', 'once', (c, md, opts, cb) => c.createEnrollmentToken(req, md, opts, cb)),
    renewCertificate: (req) => call('renew', 'once', (c, md, opts, cb) => c.renewCertificate(req, md, opts, cb)),
    rollback: (req) => call('rollback', 'once', (c, md, opts, cb) => c.rollback(req, md, opts, cb)),
    release: (req) => call('release', 'once', (c, md, opts, cb) => c.release(req, md, opts, cb)),
    revokeCertificate: (req) => call('revoke', 'once', (c, md, opts, cb) => c.revokeCertificate(req, md, opts, cb)),
    createOperator: (req) => call('operators create', 'once', (c, md, opts, cb) => c.createOperator(req, md, opts, cb)),
    revokeOperator: (req) => call('operators revoke', 'once', (c, md, opts, cb) => c.revokeOperator(req, md, opts, cb)),
    setOperatorRole: (req) => call('operators set-role', 'once', (c, md, opts, cb) => c.setOperatorRole(req, md, opts, cb)),
    removeAgent: (req) => call('agents remove', 'once', (c, md, opts, cb) => c.removeAgent(req, md, opts, cb)),
    dryRun: (req) => call('renew --dry-run', 'once', (c, md, opts, cb) => c.dryRun(req, md, opts, cb)),
    checkChallenges: (req) => call('check', 'once', (c, md, opts, cb) => c.checkChallenges(req, md, opts, cb)),
    // --- FollowEvents (issue #14) ---
    // A read: when the stream drops with the controller unavailable, it opens again on the
    // next controller at once (the caller skips the recent events it printed already);
    // when every controller failed, the caller's loop reconnects later.
    followEvents: (req, on, signal) =>
      failover.call('events --follow', 'idempotent', (client, _address, attempt) =>
        new Promise<void>((resolve, reject) => {
          if (signal.aborted) return resolve();
          const stream = client.followEvents(req, new grpc.Metadata());
          const onAbort = (): void => stream.cancel();
          signal.addEventListener('abort', onAbort, { once: true });
          const settle = (err?: grpc.ServiceError): void => {
            signal.removeEventListener('abort', onAbort);
            if (err === undefined || signal.aborted) resolve();
            else reject(err);
          };
          // The controller sends its headers once the follower runs (before any event).
          stream.on('metadata', () => {
            attempt.opened();
            on.onOpen();
          });
          stream.on('data', (e: pb.FleetEvent__Output) => on.onEvent(e));
          stream.on('error', (err: grpc.ServiceError) => settle(err));
          stream.on('end', () => settle());
        }),
      ),
    get address() {
      return failover.address;
    },
    close: () => failover.close(),
  };
}

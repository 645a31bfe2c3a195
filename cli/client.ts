/**
 * The operator's gRPC client: one channel to the controller's OperatorService with mutual
 * TLS, each call promisified with a deadline, failures turned into CertfleetErrors
 * (CONTROLLER_UNAVAILABLE when the controller cannot be reached or the TLS handshake
 * fails, otherwise the code the controller sent).
 */
import { clientCredentials, deadline, fromServiceError, grpc, loadProtos } from '../shared/grpc/index.js';
import type { OperatorServiceClient, pb } from '../shared/grpc/index.js';
import type { OperatorCredentials } from './credentials.js';

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
  close(): void;
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;

/**
 * Opens a channel to `creds.server`. Nothing is sent until the first call; each call
 * fails after `timeoutMs`. When `creds.serverName` is set the controller's certificate
 * must name it instead of the dialled host.
 */
export function operatorClient(creds: OperatorCredentials, timeoutMs: number): OperatorClient {
  const { operator } = loadProtos();
  const options: grpc.ChannelOptions = {};
  if (creds.serverName !== undefined) {
    options['grpc.ssl_target_name_override'] = creds.serverName;
    options['grpc.default_authority'] = creds.serverName;
  }
  const client: OperatorServiceClient = new operator.certfleet.v1.OperatorService(
    creds.server,
    clientCredentials({ caPem: creds.caPem, certPem: creds.certPem, keyPem: creds.keyPem }),
    options,
  );
  const what = `controller ${creds.server}`;

  function call<T>(start: (md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<T>) => unknown): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      start(new grpc.Metadata(), { deadline: deadline(timeoutMs) }, (err, value) => {
        if (err) reject(fromServiceError(err, what));
        else if (value === undefined) reject(fromServiceError(new Error('empty response'), what));
        else resolve(value);
      });
    });
  }

  return {
    getStatus: () => call((md, opts, cb) => client.getStatus({}, md, opts, cb)),
    listCertificates: (req = {}) => call((md, opts, cb) => client.listCertificates(req, md, opts, cb)),
    listAgents: () => call((md, opts, cb) => client.listAgents({}, md, opts, cb)),
    createEnrollmentToken: (req) => call((md, opts, cb) => client.createEnrollmentToken(req, md, opts, cb)),
    showCertificate: (req) => call((md, opts, cb) => client.showCertificate(req, md, opts, cb)),
    renewCertificate: (req) => call((md, opts, cb) => client.renewCertificate(req, md, opts, cb)),
    getHistory: (req) => call((md, opts, cb) => client.getHistory(req, md, opts, cb)),
    rollback: (req) => call((md, opts, cb) => client.rollback(req, md, opts, cb)),
    release: (req) => call((md, opts, cb) => client.release(req, md, opts, cb)),
    revokeCertificate: (req) => call((md, opts, cb) => client.revokeCertificate(req, md, opts, cb)),
    listBudgets: () => call((md, opts, cb) => client.listBudgets({}, md, opts, cb)),
    listEvents: (req) => call((md, opts, cb) => client.listEvents(req, md, opts, cb)),
    whoAmI: () => call((md, opts, cb) => client.whoAmI({}, md, opts, cb)),
    createOperator: (req) => call((md, opts, cb) => client.createOperator(req, md, opts, cb)),
    listOperators: () => call((md, opts, cb) => client.listOperators({}, md, opts, cb)),
    revokeOperator: (req) => call((md, opts, cb) => client.revokeOperator(req, md, opts, cb)),
    setOperatorRole: (req) => call((md, opts, cb) => client.setOperatorRole(req, md, opts, cb)),
    removeAgent: (req) => call((md, opts, cb) => client.removeAgent(req, md, opts, cb)),
    dryRun: (req) => call((md, opts, cb) => client.dryRun(req, md, opts, cb)),
    checkChallenges: (req) => call((md, opts, cb) => client.checkChallenges(req, md, opts, cb)),
    // --- FollowEvents (issue #14) ---
    followEvents: (req, on, signal) =>
      new Promise<void>((resolve, reject) => {
        if (signal.aborted) return resolve();
        const stream = client.followEvents(req, new grpc.Metadata());
        const onAbort = (): void => stream.cancel();
        signal.addEventListener('abort', onAbort, { once: true });
        const settle = (err?: grpc.ServiceError): void => {
          signal.removeEventListener('abort', onAbort);
          if (err === undefined || signal.aborted) resolve();
          else reject(fromServiceError(err, what));
        };
        // The controller sends its headers once the follower runs (before any event).
        stream.on('metadata', () => on.onOpen());
        stream.on('data', (e: pb.FleetEvent__Output) => on.onEvent(e));
        stream.on('error', (err: grpc.ServiceError) => settle(err));
        stream.on('end', () => settle());
      }),
    close: () => client.close(),
  };
}

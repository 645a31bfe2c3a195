/**
 * The controller's gRPC API: AgentService and OperatorService on one TLS port.
 *
 * Authentication happens here and nowhere else. The TLS layer requests a client
 * certificate but cannot require one, because an agent that enrols has none yet; so
 * every method except AgentService.Enroll passes through {@link ApiAuth.identify}, which
 * verifies the peer certificate against the controller's CA (signature, validity,
 * clientAuth, identity URI) and checks its kind (agent or operator). Agent calls are
 * then authorised by the backend (assignment by label selector); operator calls by
 * {@link ApiAuth.authorizeOperator} (the operator registry and the role table of
 * controller/access) before anything else runs, naming the method. Errors leave as gRPC status codes with the
 * stable certfleet code in trailing metadata (shared/grpc toServiceError).
 *
 * This module translates between protobuf messages and the backend's records; it holds
 * no fleet logic of its own.
 */
import tls from 'node:tls';
import type { Logger } from 'pino';
import { LogKey } from '../../shared/log/index.js';
import { systemClock, type Clock } from '../../shared/clock/index.js';
import { grpc, loadProtos, toServiceError, type AgentServiceHandlers, type OperatorServiceHandlers, type pb } from '../../shared/grpc/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { Bundle, CertStatus, DesiredRecord, RecordRefusals, SigningPublicKey, VersionMeta } from '../../shared/model/index.js';
import { certStatusSchema, recordRefusalsSchema } from '../../shared/records/index.js';

/** Who is calling, as proven by a verified client certificate. */
export interface CallerIdentity {
  role: 'agent' | 'operator';
  name: string;
  serial: string;
}

/** An operator allowed to make the call at hand. */
export interface OperatorAccess {
  name: string;
  role: string;
}

/** How the API verifies callers; implemented over the controller's CA and registries. */
export interface ApiAuth {
  /** Verifies a DER client certificate; throws UNAUTHENTICATED. */
  identify(certDer: Buffer): CallerIdentity;
  /**
   * Whether the operator `id` (already identified) may call `method` now: UNAUTHENTICATED
   * when it is unknown, revoked or its certificate replaced, PERMISSION_DENIED when its
   * role may not call `method`.
   */
  authorizeOperator(id: CallerIdentity, method: string): Promise<OperatorAccess>;
}

/** A status report as the backend receives it. */
export interface AgentReport {
  http01Address: string;
  agentVersion: string;
  certificates: CertStatus[];
  /** Records the agent refused (absent: an agent that does not report them). */
  refusals?: RecordRefusals;
}

/** What an agent is told at each resynchronisation. */
export interface AgentAssignments {
  /** Signed desired records, as written to NATS (the agent applies rollouts itself). */
  desired: DesiredRecord[];
  /** The same with the rollout applied for this agent (the unsigned view agents before issue #9 read). */
  effective: DesiredRecord[];
  /** Every public key records are signed with now. */
  signingKeys: SigningPublicKey[];
  /** Certificates the configuration assigns to the agent, with their names. */
  assigned: Array<{ name: string; names: string[] }>;
}

/** What the agent side of the API needs from the controller. */
export interface AgentBackend {
  /**
   * Redeems a bootstrap token for a client certificate and, when the controller is the
   * NATS authority, the agent's NATS credentials (.creds text), with the public keys the
   * controller signs NATS records with. ENROLL_TOKEN_INVALID on
   * any token problem.
   */
  enroll(token: string, csrPem: string): Promise<{ agent: string; labels: Record<string, string>; certificatePem: string; caPem: string; natsCredentials?: string; signingKeys: SigningPublicKey[] }>;
  /** Desired state of the certificates assigned to `agent`. UNAUTHENTICATED if the agent's certificate was replaced. */
  assignments(agent: CallerIdentity): Promise<AgentAssignments>;
  /** One version's bundle; version 0 = desired. PERMISSION_DENIED if not assigned, NOT_FOUND if absent. */
  fetchBundle(agent: CallerIdentity, name: string, version: number): Promise<Bundle>;
  reportStatus(agent: CallerIdentity, report: AgentReport): Promise<void>;
  /**
   * Signs a CSR for a new key of the calling agent (its identity renewal). The caller's
   * current certificate stays accepted until the new one is first used. UNAUTHENTICATED
   * for a removed or replaced agent, CSR_INVALID for a bad CSR.
   */
  renewIdentity(agent: CallerIdentity, csrPem: string): Promise<{ certificatePem: string; caPem: string; notAfter: string; natsCredentials?: string }>;
}

/** What the operator side of the API needs from the controller. */
export interface OperatorBackend {
  status(): Promise<pb.GetStatusResponse>;
  /**
   * One page of the certificate summaries in configuration order: at most `size` (0:
   * all) after the page `token` ended ('' for the first). USAGE_INVALID for a token that
   * names no configured certificate.
   */
  certificates(page: { size: number; token: string }): Promise<{ certificates: pb.CertificateSummary[]; nextPageToken: string }>;
  agents(): Promise<pb.AgentSummary[]>;
  /** `actor`: the operator making the call, recorded in the event. */
  createEnrollmentToken(agent: string, labels: Record<string, string>, ttlMs: number, actor: string): Promise<{ token: string; expiresAt: string }>;
  show(name: string): Promise<pb.ShowCertificateResponse>;
  /** Records a durable renew request by `operator` (recorded as the event's actor), or withdraws it with `cancel`. */
  renew(name: string, opts: { cancel: boolean; operator: string }): Promise<pb.RenewCertificateResponse>;
  history(name: string): Promise<pb.GetHistoryResponse>;
  rollback(name: string, to: number, operator: string): Promise<{ fromVersion: number; toVersion: number }>;
  release(name: string, operator: string): Promise<number>;
  /**
   * Revokes `version` of `name` at the CA with `reason` (a REVOCATION_REASONS name) on
   * behalf of `operator`, records it and moves the fleet off it. USAGE_INVALID for an
   * unknown reason, NOT_FOUND for an unknown version, the CA's error when it refuses.
   */
  revoke(name: string, version: number, reason: string, operator: string): Promise<pb.RevokeCertificateResponse>;
  budgets(): Promise<pb.ListBudgetsResponse>;
  events(limit: number, cert: string): Promise<pb.FleetEvent[]>;
  /**
   * FollowEvents: calls `onEvent` with the most recent `limit` events about `cert` ('':
   * every certificate; limit 0: none), then with each new one as it is published, until
   * `stop()`. Rejects with NATS_UNAVAILABLE when it cannot start.
   */
  followEvents(limit: number, cert: string, onEvent: (e: pb.FleetEvent) => void): Promise<{ stop(): Promise<void> }>;
  /** Operator management (controller/access); `actor` is the admin making the call. */
  createOperator(name: string, role: string, csrPem: string, actor: string): Promise<pb.CreateOperatorResponse>;
  listOperators(): Promise<pb.Operator[]>;
  revokeOperator(name: string, actor: string): Promise<pb.Operator>;
  setOperatorRole(name: string, role: string, actor: string): Promise<{ operator: pb.Operator; previousRole: string }>;
  /** Removes agent `name` from the fleet on behalf of admin `actor` (idempotent). NOT_FOUND when it never enrolled. */
  removeAgent(name: string, actor: string): Promise<pb.RemoveAgentResponse>;
  /** Rehearses an issuance of `name` against the staging CA for `actor`; CONFIG_INVALID without `acme.staging`. */
  dryRun(name: string, actor: string): Promise<pb.DryRunResponse>;
  /** Checks the challenge path of `name`, or of every certificate when ''. */
  checkChallenges(name: string): Promise<pb.CheckChallengesResponse>;
}

export interface ApiServerOptions {
  listen: { host: string; port: number };
  /** The controller CA (PEM), sent as the acceptable client CA list. */
  caPem: string;
  /** The API's server certificate and key (PEM). */
  certPem: string;
  keyPem: string;
  auth: ApiAuth;
  agents: AgentBackend;
  operators: OperatorBackend;
  log: Logger;
  /** Times the shutdown grace period; default the system clock. */
  clock?: Clock;
}

/** A running API server. */
export interface ApiServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  /** Stops accepting calls; waits up to `graceMs` for calls in flight, then cuts them. */
  stop(graceMs?: number): Promise<void>;
}

/** The largest page of ListCertificates (a larger page_size counts as this). */
export const MAX_CERTIFICATES_PAGE = 1000;

/** Converts store meta to the wire message. */
export function versionToPb(meta: VersionMeta): pb.CertificateVersion {
  return {
    name: meta.name,
    version: meta.version,
    serial: meta.serial,
    fingerprint: meta.fingerprint,
    names: meta.names,
    notBefore: meta.notBefore,
    notAfter: meta.notAfter,
    issuedAt: meta.issuedAt,
    keyType: meta.keyType,
    profile: meta.profile ?? '',
    issuer: meta.issuer ?? '',
  };
}

function refusalsFromPb(r: pb.RecordRefusals__Output | null): RecordRefusals | undefined {
  if (r === null) return undefined;
  const refusals: RecordRefusals = { total: r.total, byReason: { ...r.byReason }, last: r.last.slice(0, 1024), lastAt: r.lastAt.slice(0, 64) };
  // Stored in the agents bucket, whose readers refuse what this schema refuses.
  const checked = recordRefusalsSchema.safeParse(refusals);
  if (!checked.success) throw new CertfleetError(ErrorCode.UsageInvalid, `refusals is invalid: ${checked.error.issues.map((is) => `${is.path.join('.')}: ${is.message}`).join('; ')}`);
  return refusals;
}

function desiredToPb(d: DesiredRecord): pb.DesiredCertificate {
  return {
    version: { name: d.name, version: d.version, fingerprint: d.fingerprint, names: d.names, notAfter: d.notAfter },
    selector: d.selector,
  };
}

/** Converts a reported status message to the model record (strings trimmed to sane sizes). */
function statusFromPb(s: pb.CertificateStatus__Output): CertStatus {
  const state = s.state === 'installed' || s.state === 'failed' ? s.state : 'pending';
  return {
    name: s.name.slice(0, 64),
    version: s.version,
    fingerprint: s.fingerprint.slice(0, 64),
    desiredVersion: s.desiredVersion,
    state,
    hook: s.hook
      ? {
          ran: s.hook.ran,
          exitCode: s.hook.exitCode,
          signal: s.hook.signal.slice(0, 16),
          timedOut: s.hook.timedOut,
          durationMs: s.hook.durationMs,
          outputTail: s.hook.outputTail.slice(-4096),
        }
      : null,
    servedVerified: s.servedVerified,
    error: s.error.slice(0, 2048),
    errorCode: s.errorCode.slice(0, 64),
    updatedAt: s.updatedAt,
    failedVersion: s.failedVersion,
    rollback: s.rollback === 'restored' || s.rollback === 'restore-failed' ? s.rollback : '',
  };
}

/**
 * ListCertificates' answer encoder over `encode` (the generic one of the service
 * definition). Each summary's encoding is kept with the summary object, so a summary the
 * backend answers again unchanged (controller/operator SummaryMemo: the same object) is
 * not encoded again; encoding 10,000 summaries took ~150 ms of the controller's thread
 * per `certfleet certs` (issue #13). Protobuf writes fields in number order and a
 * repeated field's entries may be concatenated, so the answer is byte for byte what
 * `encode` writes for the whole message. Summaries must not be modified once answered.
 */
export function listCertificatesSerializer(encode: (res: pb.ListCertificatesResponse) => Buffer): (res: pb.ListCertificatesResponse) => Buffer {
  const encoded = new WeakMap<pb.CertificateSummary, Buffer>();
  return (res) => {
    const parts: Buffer[] = [];
    for (const s of res.certificates ?? []) {
      let b = encoded.get(s);
      if (b === undefined) {
        b = encode({ certificates: [s] });
        encoded.set(s, b);
      }
      parts.push(b);
    }
    parts.push(encode({ certificates: [], nextPageToken: res.nextPageToken ?? '' }));
    return Buffer.concat(parts);
  };
}

/** Sends a unary call's result or its error, logging unexpected failures once. */
function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call).then(
      (res) => callback(null, res),
      (err: unknown) => {
        const cf = err instanceof CertfleetError ? err : new CertfleetError(ErrorCode.Internal, 'internal error', { cause: err });
        const level = cf.code === ErrorCode.Internal ? 'error' : 'warn';
        log[level]({ method, code: cf.code, err: cf.code === ErrorCode.Internal ? err : cf.message }, 'call failed');
        callback(toServiceError(cf));
      },
    );
  };
}

/**
 * Request metadata key carrying why the TLS layer did not verify a client certificate
 * that WAS presented. Set only by {@link peerTlsInterceptor}, which removes any value a
 * client sent; it chooses an error message, never an identity.
 */
const PEER_TLS_KEY = 'certfleet-peer-tls-error';

/**
 * grpc-js hides the peer certificate of a TLS connection that did not verify, so a
 * self-signed or foreign certificate looked like no certificate at all ("a client
 * certificate is required"). This interceptor looks at the connection once per call and
 * passes OpenSSL's verdict on to {@link caller} for the message. It reads grpc-js's
 * private `stream` (the first interceptor receives the base call); if that changes in a
 * grpc-js release the hint is simply absent and the generic message remains.
 */
function peerTlsInterceptor(): grpc.ServerInterceptor {
  return (_method, call) => {
    const socket = (call as unknown as { stream?: { session?: { socket?: unknown } } }).stream?.session?.socket;
    const intercepting = new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (md, mdNext) => {
            md.remove(PEER_TLS_KEY);
            if (socket instanceof tls.TLSSocket && !socket.authorized && socket.getPeerCertificate()?.raw) {
              // Node types it as Error but sets an OpenSSL code string (e.g. DEPTH_ZERO_SELF_SIGNED_CERT).
              const why: unknown = socket.authorizationError;
              md.set(PEER_TLS_KEY, typeof why === 'string' ? why : why instanceof Error ? why.message : 'UNVERIFIED');
            }
            mdNext(md);
          },
        }),
    });
    if (socket instanceof tls.TLSSocket) {
      const uncached = intercepting.getAuthContext.bind(intercepting);
      intercepting.getAuthContext = () => authContextOf(socket, uncached);
    }
    return intercepting;
  };
}

/**
 * grpc-js's `getAuthContext` calls `getPeerCertificate()` on every call, which turns the
 * DER certificate into a JS object (subject, issuer, fingerprints, extensions) each time:
 * for an agent that polls and reports over one connection, the same work per call
 * (issue #13). The TLS handshake's result cannot change for the life of a connection:
 * Node's HTTP/2 refuses TLS renegotiation, so the verdict (`authorized`) and the peer
 * certificate are those of the one handshake. Only a verified connection's context is
 * kept, keyed weakly on the socket (dropped with the connection); the caller's identity
 * (CA signature, validity at the call's time, role) and the agent's registration
 * (revocation) are still checked on every call from that certificate.
 */
type AuthContext = ReturnType<grpc.ServerInterceptingCall['getAuthContext']>;
const authContexts = new WeakMap<tls.TLSSocket, AuthContext>();
function authContextOf(socket: tls.TLSSocket, uncached: () => AuthContext): AuthContext {
  const known = authContexts.get(socket);
  if (known !== undefined) return known;
  const context = uncached();
  if (socket.authorized && context.sslPeerCertificate?.raw) authContexts.set(socket, context);
  return context;
}

/** What the operator is told about a presented certificate the TLS layer refused (OpenSSL verify code). */
function presentedCertificateProblem(code: string): string {
  switch (code) {
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'CERT_SIGNATURE_FAILURE':
      return `it is not signed by the controller's CA (${code}); use a certificate from enrolment or the operator credentials`;
    case 'CERT_HAS_EXPIRED':
      return `it has expired (${code}); enrol the agent again or issue new operator credentials`;
    case 'CERT_NOT_YET_VALID':
      return `it is not valid yet (${code}); check the clock`;
    default:
      return `TLS verification failed (${code})`;
  }
}

/**
 * The verified identity of an agent calling. Operator calls use {@link operatorCaller},
 * which also checks the registry and the role: `caller` does not accept 'operator', so
 * an operator handler cannot skip that check by mistake.
 */
function caller(call: grpc.ServerUnaryCall<unknown, unknown>, auth: ApiAuth, role: 'agent'): CallerIdentity {
  return verifiedPeer(call, auth, role);
}

/** The verified identity of the caller, which must be of kind `role`. */
function verifiedPeer(call: Pick<grpc.ServerUnaryCall<unknown, unknown>, 'getAuthContext' | 'metadata'>, auth: ApiAuth, role: CallerIdentity['role']): CallerIdentity {
  const peer = call.getAuthContext()?.sslPeerCertificate;
  if (!peer?.raw) {
    const refused = call.metadata.get(PEER_TLS_KEY)[0];
    if (typeof refused === 'string') {
      throw new CertfleetError(ErrorCode.Unauthenticated, `client certificate rejected: ${presentedCertificateProblem(refused)}`, { details: { reason: refused } });
    }
    throw new CertfleetError(ErrorCode.Unauthenticated, 'a client certificate is required (enrol the agent, or use the operator credentials)');
  }
  const id = auth.identify(peer.raw);
  if (id.role !== role) {
    throw new CertfleetError(ErrorCode.PermissionDenied, `an ${id.role} certificate cannot call the ${role} API`);
  }
  return id;
}

/**
 * The operator calling `method`, once its certificate, its registry record and its role
 * allow it. Every OperatorService handler starts here, with its own method name.
 */
async function operatorCaller(call: Pick<grpc.ServerUnaryCall<unknown, unknown>, 'getAuthContext' | 'metadata'>, auth: ApiAuth, method: string): Promise<OperatorAccess> {
  return auth.authorizeOperator(verifiedPeer(call, auth, 'operator'), method);
}

/** Parses a label map sent by an operator. */
function labelsFrom(map: Record<string, string> | undefined): Record<string, string> {
  return { ...(map ?? {}) };
}

/** Builds the TLS credentials: client certificates requested, verified by {@link caller}. */
function serverCredentials(opts: ApiServerOptions): grpc.ServerCredentials {
  // createSsl(…, true) would make the TLS layer reject clients without a certificate,
  // which rules out enrolment on the same port. The certificate-provider variant can
  // request without requiring; verification then happens per call, in caller().
  // grpc-js registers its watcher only after adding these listeners, so an answer given
  // synchronously is lost ("dropped connection due to unloaded credentials"): answer on
  // the next tick.
  const provider: grpc.experimental.CertificateProvider = {
    addCaCertificateListener: (l) => process.nextTick(() => l({ caCertificate: Buffer.from(opts.caPem) })),
    removeCaCertificateListener: () => undefined,
    addIdentityCertificateListener: (l) => process.nextTick(() => l({ certificate: Buffer.from(opts.certPem), privateKey: Buffer.from(opts.keyPem) })),
    removeIdentityCertificateListener: () => undefined,
  };
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

/** Starts the API. Fails with a clear error when the address cannot be bound. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const { agent, operator } = loadProtos();
  const log = opts.log;
  const clock = opts.clock ?? systemClock;
  const server = new grpc.Server({
    interceptors: [peerTlsInterceptor()],
    'grpc.max_receive_message_length': 4 * 1024 * 1024,
    'grpc.keepalive_time_ms': 60_000,
  });

  const agentHandlers: AgentServiceHandlers = {
    Enroll: unary(log, 'Enroll', async (call) => {
      const req = call.request;
      if (req.token === '' || req.csrPem === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'token and csr_pem are required');
      const res = await opts.agents.enroll(req.token, req.csrPem);
      return { agent: res.agent, labels: res.labels, certificatePem: res.certificatePem, caPem: res.caPem, natsCredentials: res.natsCredentials ?? '', signingKeys: res.signingKeys };
    }),
    GetAssignments: unary(log, 'GetAssignments', async (call) => {
      const id = caller(call, opts.auth, 'agent');
      const a = await opts.agents.assignments(id);
      return {
        // For agents of before issue #9; current agents use signedDesired only.
        certificates: a.effective.map(desiredToPb),
        signedDesired: a.desired.map((d) => JSON.stringify(d)),
        signingKeys: a.signingKeys,
        assigned: a.assigned,
      };
    }),
    FetchBundle: unary(log, 'FetchBundle', async (call) => {
      const id = caller(call, opts.auth, 'agent');
      const bundle = await opts.agents.fetchBundle(id, call.request.name, call.request.version);
      // Debug: one per agent per version; the agent's status report carries the outcome (issue #13).
      log.debug({ [LogKey.agent]: id.name, [LogKey.cert]: bundle.meta.name, [LogKey.version]: bundle.meta.version }, 'bundle fetched');
      return { version: versionToPb(bundle.meta), certificatePem: bundle.certPem, chainPem: bundle.chainPem, privateKeyPem: bundle.keyPem };
    }),
    ReportStatus: unary(log, 'ReportStatus', async (call) => {
      const id = caller(call, opts.auth, 'agent');
      const req = call.request;
      if (req.certificates.length > 10_000) throw new CertfleetError(ErrorCode.UsageInvalid, 'too many certificates in one report');
      const certificates = req.certificates.map(statusFromPb);
      // The report is stored in the agents bucket, whose readers refuse what this schema
      // refuses: a bad entry is refused here, with its reason, not stored to be skipped.
      certificates.forEach((s, i) => {
        const checked = certStatusSchema.safeParse(s);
        if (!checked.success) {
          const what = checked.error.issues.map((is) => `${is.path.join('.')}: ${is.message}`).join('; ');
          throw new CertfleetError(ErrorCode.UsageInvalid, `certificates[${i}] is invalid: ${what}`);
        }
      });
      await opts.agents.reportStatus(id, {
        http01Address: req.http01Address.slice(0, 300),
        agentVersion: req.agentVersion.slice(0, 64),
        certificates,
        ...(req.refusals ? { refusals: refusalsFromPb(req.refusals) } : {}),
      });
      return {};
    }),
    RenewIdentity: unary(log, 'RenewIdentity', async (call: grpc.ServerUnaryCall<pb.RenewIdentityRequest__Output, pb.RenewIdentityResponse>) => {
      const id = caller(call, opts.auth, 'agent');
      if (call.request.csrPem === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'csr_pem is required');
      const res = await opts.agents.renewIdentity(id, call.request.csrPem.slice(0, 16_384));
      log.info({ [LogKey.agent]: id.name, notAfter: res.notAfter }, 'agent identity renewed');
      return { certificatePem: res.certificatePem, caPem: res.caPem, notAfter: res.notAfter, natsCredentials: res.natsCredentials ?? '' };
    }),
  };

  const requireName = (name: string): string => {
    if (name === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'a certificate name is required');
    return name;
  };
  const operatorHandlers: OperatorServiceHandlers = {
    FollowEvents: (call) => followEventsHandler(call),
    GetStatus: unary(log, 'GetStatus', async (call) => {
      await operatorCaller(call, opts.auth, 'GetStatus');
      return opts.operators.status();
    }),
    ListCertificates: unary(log, 'ListCertificates', async (call) => {
      await operatorCaller(call, opts.auth, 'ListCertificates');
      return opts.operators.certificates({ size: Math.min(call.request.pageSize, MAX_CERTIFICATES_PAGE), token: call.request.pageToken.slice(0, 256) });
    }),
    ListAgents: unary(log, 'ListAgents', async (call) => {
      await operatorCaller(call, opts.auth, 'ListAgents');
      return { agents: await opts.operators.agents() };
    }),
    CreateEnrollmentToken: unary(log, 'CreateEnrollmentToken', async (call) => {
      const id = await operatorCaller(call, opts.auth, 'CreateEnrollmentToken');
      const ttlMs = (call.request.ttlSeconds === 0 ? 3600 : call.request.ttlSeconds) * 1000;
      const res = await opts.operators.createEnrollmentToken(call.request.agent, labelsFrom(call.request.labels), ttlMs, id.name);
      log.info({ operator: id.name, [LogKey.agent]: call.request.agent }, 'enrolment token created');
      return res;
    }),
    ShowCertificate: unary(log, 'ShowCertificate', async (call: grpc.ServerUnaryCall<pb.ShowCertificateRequest__Output, pb.ShowCertificateResponse>) => {
      await operatorCaller(call, opts.auth, 'ShowCertificate');
      return opts.operators.show(requireName(call.request.name));
    }),
    RenewCertificate: unary(log, 'RenewCertificate', async (call: grpc.ServerUnaryCall<pb.RenewCertificateRequest__Output, pb.RenewCertificateResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'RenewCertificate');
      const cancel = call.request.cancel === true;
      const res = await opts.operators.renew(requireName(call.request.name), { cancel, operator: id.name });
      log.info({ operator: id.name, [LogKey.cert]: call.request.name, outcome: res.outcome }, cancel ? 'renewal request cancelled' : 'renewal requested');
      return res;
    }),
    GetHistory: unary(log, 'GetHistory', async (call: grpc.ServerUnaryCall<pb.GetHistoryRequest__Output, pb.GetHistoryResponse>) => {
      await operatorCaller(call, opts.auth, 'GetHistory');
      return opts.operators.history(requireName(call.request.name));
    }),
    Rollback: unary(log, 'Rollback', async (call: grpc.ServerUnaryCall<pb.RollbackRequest__Output, pb.RollbackResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'Rollback');
      return opts.operators.rollback(requireName(call.request.name), call.request.toVersion, id.name);
    }),
    Release: unary(log, 'Release', async (call: grpc.ServerUnaryCall<pb.ReleaseRequest__Output, pb.ReleaseResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'Release');
      return { version: await opts.operators.release(requireName(call.request.name), id.name) };
    }),
    RevokeCertificate: unary(log, 'RevokeCertificate', async (call: grpc.ServerUnaryCall<pb.RevokeCertificateRequest__Output, pb.RevokeCertificateResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'RevokeCertificate');
      return opts.operators.revoke(requireName(call.request.name), call.request.version, call.request.reason, id.name);
    }),
    ListBudgets: unary(log, 'ListBudgets', async (call: grpc.ServerUnaryCall<pb.ListBudgetsRequest__Output, pb.ListBudgetsResponse>) => {
      await operatorCaller(call, opts.auth, 'ListBudgets');
      return opts.operators.budgets();
    }),
    ListEvents: unary(log, 'ListEvents', async (call: grpc.ServerUnaryCall<pb.ListEventsRequest__Output, pb.ListEventsResponse>) => {
      await operatorCaller(call, opts.auth, 'ListEvents');
      const limit = call.request.limit === 0 ? 50 : Math.min(call.request.limit, 10_000);
      return { events: await opts.operators.events(limit, call.request.cert) };
    }),
    WhoAmI: unary(log, 'WhoAmI', async (call: grpc.ServerUnaryCall<pb.WhoAmIRequest__Output, pb.WhoAmIResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'WhoAmI');
      return { name: id.name, role: id.role };
    }),
    CreateOperator: unary(log, 'CreateOperator', async (call: grpc.ServerUnaryCall<pb.CreateOperatorRequest__Output, pb.CreateOperatorResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'CreateOperator');
      const req = call.request;
      if (req.name === '' || req.role === '' || req.csrPem === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'name, role and csr_pem are required');
      return opts.operators.createOperator(req.name, req.role, req.csrPem.slice(0, 16_384), id.name);
    }),
    ListOperators: unary(log, 'ListOperators', async (call: grpc.ServerUnaryCall<pb.ListOperatorsRequest__Output, pb.ListOperatorsResponse>) => {
      await operatorCaller(call, opts.auth, 'ListOperators');
      return { operators: await opts.operators.listOperators() };
    }),
    RevokeOperator: unary(log, 'RevokeOperator', async (call: grpc.ServerUnaryCall<pb.RevokeOperatorRequest__Output, pb.RevokeOperatorResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'RevokeOperator');
      if (call.request.name === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'an operator name is required');
      return { operator: await opts.operators.revokeOperator(call.request.name, id.name) };
    }),
    SetOperatorRole: unary(log, 'SetOperatorRole', async (call: grpc.ServerUnaryCall<pb.SetOperatorRoleRequest__Output, pb.SetOperatorRoleResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'SetOperatorRole');
      if (call.request.name === '' || call.request.role === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'an operator name and a role are required');
      return opts.operators.setOperatorRole(call.request.name, call.request.role, id.name);
    }),
    RemoveAgent: unary(log, 'RemoveAgent', async (call: grpc.ServerUnaryCall<pb.RemoveAgentRequest__Output, pb.RemoveAgentResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'RemoveAgent');
      if (call.request.name === '') throw new CertfleetError(ErrorCode.UsageInvalid, 'an agent name is required');
      const res = await opts.operators.removeAgent(call.request.name, id.name);
      log.info({ operator: id.name, [LogKey.agent]: call.request.name, alreadyRemoved: res.alreadyRemoved }, 'agent removed');
      return res;
    }),
    DryRun: unary(log, 'DryRun', async (call: grpc.ServerUnaryCall<pb.DryRunRequest__Output, pb.DryRunResponse>) => {
      const id = await operatorCaller(call, opts.auth, 'DryRun');
      const res = await opts.operators.dryRun(requireName(call.request.name), id.name);
      log.info({ operator: id.name, [LogKey.cert]: call.request.name, ok: res.ok }, 'dry run');
      return res;
    }),
    CheckChallenges: unary(log, 'CheckChallenges', async (call: grpc.ServerUnaryCall<pb.CheckChallengesRequest__Output, pb.CheckChallengesResponse>) => {
      await operatorCaller(call, opts.auth, 'CheckChallenges');
      return opts.operators.checkChallenges(call.request.name);
    }),
  };


  server.addService(agent.certfleet.v1.AgentService.service, agentHandlers);
  // --- FollowEvents (issue #14): open streams, ended when the server stops ---
  const streams = new Set<() => void>();
  function followEventsHandler(call: grpc.ServerWritableStream<pb.FollowEventsRequest__Output, pb.FleetEvent>): void {
    let follower: { stop(): Promise<void> } | undefined;
    let done = false;
    const finish = (err?: CertfleetError): void => {
      if (done) return;
      done = true;
      streams.delete(shutdown);
      void follower?.stop();
      if (err) call.emit('error', toServiceError(err));
      else call.end();
    };
    // The server is stopping: the client sees UNAVAILABLE and may reconnect to another controller.
    const shutdown = (): void => finish(new CertfleetError(ErrorCode.ControllerUnavailable, 'the controller is stopping'));
    streams.add(shutdown);
    call.on('cancelled', () => finish());
    void (async () => {
      await operatorCaller(call, opts.auth, 'FollowEvents');
      const limit = call.request.limit === 0 ? 50 : Math.min(call.request.limit, 10_000);
      // Events are rare (a few per certificate per renewal): no backpressure beyond grpc-js' buffer.
      const f = await opts.operators.followEvents(limit, call.request.cert, (e) => {
        if (!done) call.write(e);
      });
      if (done) {
        await f.stop();
        return;
      }
      follower = f;
      // Headers now, so the client knows the stream is open even before the first event.
      call.sendMetadata(new grpc.Metadata());
    })().catch((err: unknown) => {
      const cf = err instanceof CertfleetError ? err : new CertfleetError(ErrorCode.Internal, 'internal error', { cause: err });
      log[cf.code === ErrorCode.Internal ? 'error' : 'warn']({ method: 'FollowEvents', code: cf.code, err: cf.code === ErrorCode.Internal ? err : cf.message }, 'call failed');
      finish(cf);
    });
  }
  const operatorService = operator.certfleet.v1.OperatorService.service;
  const listDef = operatorService.ListCertificates;
  server.addService(
    { ...operatorService, ListCertificates: { ...listDef, responseSerialize: listCertificatesSerializer((res) => listDef.responseSerialize(res)) } },
    operatorHandlers,
  );

  const address = `${opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host}:${opts.listen.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, serverCredentials(opts), (err, bound) => {
      if (err) reject(new CertfleetError(ErrorCode.ConfigInvalid, `cannot listen on ${address}: ${err.message}`, { cause: err }));
      else resolve(bound);
    });
  });
  log.info({ address, port }, 'api listening');

  return {
    port,
    async stop(graceMs = 5000) {
      for (const end of [...streams]) end();
      await new Promise<void>((resolve) => {
        const timer = clock.after(graceMs, () => {
          server.forceShutdown();
          resolve();
        });
        server.tryShutdown(() => {
          timer.stop();
          resolve();
        });
      });
    },
  };
}

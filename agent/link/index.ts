/**
 * The agent's gRPC link to the controllers: mutual TLS with the certificate from
 * enrolment, the controller's CA as the only trust anchor, a deadline on every call,
 * and failures turned into CertfleetErrors (shared/grpc fromServiceError).
 *
 * With several controller addresses the link fails over between them (shared/grpc
 * FailoverClient; HA spec decision 9). Which calls may be sent again after a
 * controller became unavailable mid-call:
 *
 * | call            | safety     | why |
 * |-----------------|------------|-----|
 * | getAssignments  | idempotent | a read |
 * | fetchBundle     | idempotent | a read |
 * | reportStatus    | idempotent | replaces this agent's previous report (a heartbeat) |
 * | enroll          | once       | redeems a one-time token: if the answer was lost, the token may be spent; another controller would only say ENROLL_TOKEN_INVALID |
 * | renewIdentity   | once       | signs a certificate and rotates the NATS user; the identity loop (agent/enroll) retries later with a new key |
 *
 * Every call moves to the next controller when it could not connect (nothing was sent:
 * a token sent nowhere was not redeemed) or when the controller answered NOT_LEADER.
 */
import {
  clientCredentials,
  deadline,
  FailoverClient,
  failoverChannelOptions,
  grpc,
  loadProtos,
  type AgentServiceClient,
  type CallSafety,
  type ControllerSwitch,
  type pb,
} from '../../shared/grpc/index.js';
import type { Bundle, CertStatus, KeyType, RecordRefusals, SigningPublicKey } from '../../shared/model/index.js';

export type { ControllerSwitch } from '../../shared/grpc/index.js';

export interface LinkOptions {
  /** host:port of the controller's gRPC API; or give `addresses`. */
  address?: string;
  /** host:port of each controller, tried in this order (agent config `controller.addresses`). */
  addresses?: readonly string[];
  caPem: string;
  /** Client certificate and key; absent only for enrolment. */
  certPem?: string;
  keyPem?: string;
  /** TLS name to expect when it differs from the host in `address`. */
  serverName?: string;
  callTimeoutMs?: number;
  /** Wait for a connection to one controller before trying the next; default 5 s. */
  connectTimeoutMs?: number;
  /** Told once each time the link moves to another controller (for one log line). */
  onSwitch?: (s: ControllerSwitch) => void;
}

/** The controller addresses of `opts`: `addresses`, else `[address]`. */
function addressesOf(opts: LinkOptions): string[] {
  const list = opts.addresses ?? (opts.address === undefined ? [] : [opts.address]);
  return [...list];
}

/** Builds the generated client for one address with our credentials. */
function makeClient(opts: LinkOptions, address: string): AgentServiceClient {
  const { agent } = loadProtos();
  const channelOptions = failoverChannelOptions(opts.serverName, { 'grpc.keepalive_time_ms': 60_000 });
  const tls = { caPem: opts.caPem, ...(opts.certPem === undefined ? {} : { certPem: opts.certPem }), ...(opts.keyPem === undefined ? {} : { keyPem: opts.keyPem }) };
  return new agent.certfleet.v1.AgentService(address, clientCredentials(tls), channelOptions);
}

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

/** One attempt of a unary call; rejects with the gRPC error as it came (FailoverClient translates it). */
function unary<Req, Res>(fn: Unary<Req, Res>, req: Req, timeoutMs: number): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, new grpc.Metadata(), { deadline: deadline(timeoutMs) }, (err, res) => {
      if (err) reject(err);
      else if (res === undefined) reject(new Error('empty response'));
      else resolve(res);
    });
  });
}

/**
 * What the controller tells an agent at a resynchronisation. `desired` holds the signed
 * records as sent, not yet checked: the sync loop checks them exactly as it checks NATS
 * values (schema, signature, generation). A value that is not JSON stays a string, and
 * the check refuses it as malformed.
 */
export interface LinkAssignments {
  desired: unknown[];
  signingKeys: SigningPublicKey[];
  /** Certificates the controller's configuration assigns to this agent, with their names. */
  assigned: Array<{ name: string; names: string[] }>;
}

function parseJsonOrKeep(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function statusToPb(s: CertStatus): pb.CertificateStatus {
  return { ...s, hook: s.hook ?? undefined };
}

/**
 * The controllers, as seen from an agent. After an identity renewal, {@link useIdentity}
 * swaps the client certificate: every gRPC client is rebuilt (a TLS channel keeps the
 * certificate it was created with), so the next call presents the new one. Callers
 * keep the same ControllerLink object.
 */
export class ControllerLink {
  private readonly failover: FailoverClient<AgentServiceClient>;
  private opts: LinkOptions;
  private readonly timeoutMs: number;

  constructor(opts: LinkOptions) {
    this.opts = { ...opts };
    this.timeoutMs = opts.callTimeoutMs ?? 15_000;
    this.failover = new FailoverClient<AgentServiceClient>({
      addresses: addressesOf(opts),
      connect: (address) => makeClient(this.opts, address),
      connectTimeoutMs: opts.connectTimeoutMs ?? Math.min(5000, this.timeoutMs),
      ...(opts.onSwitch === undefined ? {} : { onSwitch: opts.onSwitch }),
    });
  }

  /** host:port of the controller in use now (the next call starts there). */
  get address(): string {
    return this.failover.address;
  }

  /** Every controller address, in the order they are tried. */
  get addresses(): readonly string[] {
    return this.failover.addresses;
  }

  /**
   * Presents `certPem`/`keyPem` from the next call on: new clients over new channels;
   * the old channels are closed once calls already on them have finished (grpc-js close()).
   */
  useIdentity(identity: { certPem: string; keyPem: string }): void {
    this.opts = { ...this.opts, certPem: identity.certPem, keyPem: identity.keyPem };
    this.failover.rebuild((address) => makeClient(this.opts, address));
  }

  /** `pick` gives the method bound to the client it is given. */
  private call<Req, Res>(what: string, safety: CallSafety, pick: (c: AgentServiceClient) => Unary<Req, Res>, req: Req): Promise<Res> {
    return this.failover.call(what, safety, (client) => unary(pick(client), req, this.timeoutMs));
  }

  /** Asks the controller to sign a CSR for a new key (identity renewal), authenticated by the current certificate. Not repeated once sent. */
  async renewIdentity(csrPem: string): Promise<pb.RenewIdentityResponse__Output> {
    return this.call<pb.RenewIdentityRequest, pb.RenewIdentityResponse__Output>('renew identity', 'once', (c) => c.renewIdentity.bind(c), { csrPem });
  }

  /** Redeems an enrolment token; tried on the next controller only when nothing was sent or NOT_LEADER came back. */
  async enroll(token: string, csrPem: string): Promise<pb.EnrollResponse__Output> {
    return this.call<pb.EnrollRequest, pb.EnrollResponse__Output>('enrol', 'once', (c) => c.enroll.bind(c), { token, csrPem });
  }

  async assignments(): Promise<LinkAssignments> {
    const res = await this.call<pb.GetAssignmentsRequest, pb.GetAssignmentsResponse__Output>('get assignments', 'idempotent', (c) => c.getAssignments.bind(c), {});
    return {
      desired: res.signedDesired.map(parseJsonOrKeep),
      signingKeys: res.signingKeys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
      assigned: res.assigned.map((a) => ({ name: a.name, names: [...a.names] })),
    };
  }

  async fetchBundle(name: string, version: number): Promise<Bundle> {
    const res = await this.call<pb.FetchBundleRequest, pb.FetchBundleResponse__Output>(`fetch ${name} v${version}`, 'idempotent', (c) => c.fetchBundle.bind(c), { name, version });
    const v = res.version;
    return {
      meta: {
        name: v?.name ?? '',
        version: v?.version ?? 0,
        serial: v?.serial ?? '',
        fingerprint: v?.fingerprint ?? '',
        names: v?.names ?? [],
        notBefore: v?.notBefore ?? '',
        notAfter: v?.notAfter ?? '',
        issuedAt: v?.issuedAt ?? '',
        keyType: (v?.keyType ?? 'ecdsa-p256') as KeyType,
      },
      certPem: res.certificatePem,
      chainPem: res.chainPem,
      keyPem: res.privateKeyPem,
    };
  }

  async reportStatus(report: { http01Address: string; agentVersion: string; certificates: CertStatus[]; refusals?: RecordRefusals }): Promise<void> {
    await this.call<pb.ReportStatusRequest, pb.ReportStatusResponse__Output>(
      'report status',
      'idempotent',
      (c) => c.reportStatus.bind(c),
      { http01Address: report.http01Address, agentVersion: report.agentVersion, certificates: report.certificates.map(statusToPb), ...(report.refusals ? { refusals: report.refusals } : {}) },
    );
  }

  close(): void {
    this.failover.close();
  }
}

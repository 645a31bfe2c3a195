/**
 * The agent's gRPC link to the controller: mutual TLS with the certificate from
 * enrolment, the controller's CA as the only trust anchor, a deadline on every call,
 * and failures turned into CertfleetErrors (shared/grpc fromServiceError).
 */
import { clientCredentials, deadline, fromServiceError, grpc, loadProtos, type AgentServiceClient, type pb } from '../../shared/grpc/index.js';
import type { Bundle, CertStatus, KeyType, RecordRefusals, SigningPublicKey } from '../../shared/model/index.js';

export interface LinkOptions {
  address: string;
  caPem: string;
  /** Client certificate and key; absent only for enrolment. */
  certPem?: string;
  keyPem?: string;
  /** TLS name to expect when it differs from the host in `address`. */
  serverName?: string;
  callTimeoutMs?: number;
}

/** Builds the generated client with our credentials. */
function makeClient(opts: LinkOptions): AgentServiceClient {
  const { agent } = loadProtos();
  const channelOptions: grpc.ChannelOptions = { 'grpc.keepalive_time_ms': 60_000 };
  if (opts.serverName !== undefined) {
    channelOptions['grpc.ssl_target_name_override'] = opts.serverName;
    channelOptions['grpc.default_authority'] = opts.serverName;
  }
  const tls = { caPem: opts.caPem, ...(opts.certPem === undefined ? {} : { certPem: opts.certPem }), ...(opts.keyPem === undefined ? {} : { keyPem: opts.keyPem }) };
  return new agent.certfleet.v1.AgentService(opts.address, clientCredentials(tls), channelOptions);
}

function call<Req, Res>(
  fn: (req: Req, md: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown,
  req: Req,
  timeoutMs: number,
  what: string,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, new grpc.Metadata(), { deadline: deadline(timeoutMs) }, (err, res) => {
      if (err || res === undefined) reject(fromServiceError(err, what));
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
 * The controller, as seen from an agent. After an identity renewal, {@link useIdentity}
 * swaps the client certificate: the gRPC client is rebuilt (a TLS channel keeps the
 * certificate it was created with), so the next call presents the new one. Callers
 * keep the same ControllerLink object.
 */
export class ControllerLink {
  private client: AgentServiceClient;
  private opts: LinkOptions;
  private readonly timeoutMs: number;

  constructor(opts: LinkOptions) {
    this.opts = { ...opts };
    this.client = makeClient(this.opts);
    this.timeoutMs = opts.callTimeoutMs ?? 15_000;
  }

  /**
   * Presents `certPem`/`keyPem` from the next call on: a new client over a new channel;
   * the old channel is closed once calls already on it have finished (grpc-js close()).
   */
  useIdentity(identity: { certPem: string; keyPem: string }): void {
    const old = this.client;
    this.opts = { ...this.opts, certPem: identity.certPem, keyPem: identity.keyPem };
    this.client = makeClient(this.opts);
    old.close();
  }

  /** Asks the controller to sign a CSR for a new key (identity renewal), authenticated by the current certificate. */
  async renewIdentity(csrPem: string): Promise<pb.RenewIdentityResponse__Output> {
    return call<pb.RenewIdentityRequest, pb.RenewIdentityResponse__Output>(this.client.renewIdentity.bind(this.client), { csrPem }, this.timeoutMs, 'renew identity');
  }

  async enroll(token: string, csrPem: string): Promise<pb.EnrollResponse__Output> {
    return call<pb.EnrollRequest, pb.EnrollResponse__Output>(this.client.enroll.bind(this.client), { token, csrPem }, this.timeoutMs, 'enrol');
  }

  async assignments(): Promise<LinkAssignments> {
    const res = await call<pb.GetAssignmentsRequest, pb.GetAssignmentsResponse__Output>(this.client.getAssignments.bind(this.client), {}, this.timeoutMs, 'get assignments');
    return {
      desired: res.signedDesired.map(parseJsonOrKeep),
      signingKeys: res.signingKeys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })),
      assigned: res.assigned.map((a) => ({ name: a.name, names: [...a.names] })),
    };
  }

  async fetchBundle(name: string, version: number): Promise<Bundle> {
    const res = await call<pb.FetchBundleRequest, pb.FetchBundleResponse__Output>(this.client.fetchBundle.bind(this.client), { name, version }, this.timeoutMs, `fetch ${name} v${version}`);
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
    await call<pb.ReportStatusRequest, pb.ReportStatusResponse__Output>(
      this.client.reportStatus.bind(this.client),
      { http01Address: report.http01Address, agentVersion: report.agentVersion, certificates: report.certificates.map(statusToPb), ...(report.refusals ? { refusals: report.refusals } : {}) },
      this.timeoutMs,
      'report status',
    );
  }

  close(): void {
    this.client.close();
  }
}

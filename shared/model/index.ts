/**
 * The records certfleet's parts exchange, in their JSON shape (NATS values, store
 * metadata). gRPC messages mirror these in proto/certfleet/v1/; the adapters convert.
 * All times are RFC 3339 strings; fingerprints are lower-case hex SHA-256 of the DER.
 */

/** Key types a certificate may ask for. */
export const KEY_TYPES = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** Public facts of one immutable certificate version. */
export interface VersionMeta {
  name: string;
  version: number;
  serial: string;
  fingerprint: string;
  names: string[];
  notBefore: string;
  notAfter: string;
  issuedAt: string;
  keyType: KeyType;
  /**
   * The ACME certificate profile the order was issued under, as the CA reported it (or as
   * requested when it did not say). Absent when none was asked for, and in versions
   * stored before profiles existed.
   */
  profile?: string;
  /**
   * The issuer (controller config `issuers`, `default` for the `acme` section) whose CA
   * issued this version. Absent in versions stored before issuers were recorded, and in
   * imported ones.
   */
  issuer?: string;
}

/** A version with its material. Only the store, the gRPC API and the agent see this. */
export interface Bundle {
  meta: VersionMeta;
  /** The leaf certificate, PEM. */
  certPem: string;
  /** Intermediates, PEM, leaf excluded; may be empty. */
  chainPem: string;
  /** PKCS#8 private key, PEM. */
  keyPem: string;
}

/** Desired state of one certificate: the value in the `desired` KV bucket. */
export interface DesiredRecord {
  name: string;
  version: number;
  fingerprint: string;
  names: string[];
  notAfter: string;
  /** Label selector of the agents that serve it. */
  selector: string;
  updatedAt: string;
  /** Set while `version` is rolled out in waves (shared/rollout decides per agent). */
  rollout?: RolloutState;
  /** Set while an operator's rollback pins `version`. */
  pinned?: boolean;
  /**
   * Signature fields (shared/signing), set by the controller on every record it writes:
   * `generation` grows with every write of this certificate's records (a rollback or a
   * wave advance is a new one), `keyId` names the Ed25519 key and `signature` signs the
   * rest. Optional in the type so a record can be built before it is signed; an agent
   * refuses a record without them.
   */
  generation?: number;
  keyId?: string;
  signature?: string;
  /**
   * The leader lease epoch of the controller that signed it (issue #12; absent = 0).
   * Agents compare (epoch, generation): an older epoch is a deposed leader's replay.
   */
  epoch?: number;
}

/** Progress of a staged rollout. */
export interface RolloutState {
  /** The version agents of unreleased waves keep. */
  from: { version: number; fingerprint: string; notAfter: string; names: string[] };
  /** Label selectors, in order; agents in none come last. */
  waves: string[];
  /** Groups released so far (1 = the first wave). */
  released: number;
  /** Set when an agent of a released wave failed: the rollout stops there. */
  halted: boolean;
  haltReason: string;
}

/** One pending HTTP-01 challenge: the value in the `challenges` KV bucket. */
export interface ChallengeRecord {
  token: string;
  keyAuthorization: string;
  /** The DNS name being validated. */
  identifier: string;
  cert: string;
  /** Agents matching this selector serve the challenge. */
  selector: string;
  createdAt: string;
  /** After this an agent no longer serves it (set when signed). */
  expiresAt?: string;
  /** Signature fields, as in {@link DesiredRecord} (the same per-certificate counter). */
  generation?: number;
  keyId?: string;
  signature?: string;
  /** The signing leader's epoch, as in {@link DesiredRecord}. */
  epoch?: number;
}

/** A public key the controller signs records with (shared/signing). */
export interface SigningPublicKey {
  /** First 16 hex digits of the SHA-256 of the raw public key. */
  keyId: string;
  /** Raw Ed25519 public key, base64url (the JWK `x`). */
  publicKey: string;
}

/**
 * Records an agent refused since it started (signed desired state): reported with its
 * status so `certfleet agents` can show them.
 */
export interface RecordRefusals {
  total: number;
  /** Count per reason (agent/trust RefusalReason). */
  byReason: Record<string, number>;
  /** The last refusal, one line without record values; '' for none. */
  last: string;
  lastAt: string;
}

/** Result of one hook run. */
export interface HookOutcome {
  ran: boolean;
  exitCode: number;
  signal: string;
  timedOut: boolean;
  durationMs: number;
  outputTail: string;
}

export type InstallState = 'installed' | 'failed' | 'pending';

/** What one agent reports about one certificate. */
export interface CertStatus {
  name: string;
  version: number;
  fingerprint: string;
  desiredVersion: number;
  state: InstallState;
  hook: HookOutcome | null;
  servedVerified: boolean;
  error: string;
  errorCode: string;
  updatedAt: string;
  /** A version that failed on this agent and was rolled back from (0: none). */
  failedVersion: number;
  /** '' | 'restored' (the previous version serves again) | 'restore-failed'. */
  rollback: '' | 'restored' | 'restore-failed';
}

/** A fleet event: one message in the events stream. */
export interface FleetEvent {
  type: string;
  at: string;
  cert?: string;
  agent?: string;
  version?: number;
  message: string;
  details?: Record<string, unknown>;
  /**
   * Who caused it, for events an operator's call caused (renew, rollback, release, token
   * and operator management): the operator's name from its verified client certificate.
   * Absent for what the controller or an agent did on its own.
   */
  actor?: string;
}

/**
 * Roles of operator credentials, weakest first; each can do everything the ones before
 * it can. `viewer` reads, `operator` also renews, rolls back and releases, `admin` also
 * manages enrolment tokens, agents and operators. What each role may call is decided in
 * one place (controller/access).
 */
export const OPERATOR_ROLES = ['viewer', 'operator', 'admin'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

/** Whether `value` names an operator role. */
export function isOperatorRole(value: unknown): value is OperatorRole {
  return typeof value === 'string' && (OPERATOR_ROLES as readonly string[]).includes(value);
}

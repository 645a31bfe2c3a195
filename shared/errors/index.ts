/**
 * Typed errors with stable codes.
 *
 * Every failure certfleet reports carries a `code` from {@link ErrorCode}; the code is
 * what scripts, events and the gRPC boundary rely on, the message is for people.
 * `retryable` tells the one place that retries (the controller's work loop, the agent's
 * sync loop) whether trying again can help; `retryAfterMs` is a hint from the other
 * side (a CA's Retry-After, for example). Leaf code throws; it never loops itself.
 *
 * docs/errors.md lists every code; test/unit/errors.test.ts checks that it does.
 */

/** Stable error codes. Never rename one; add new ones at the end of their group. */
export const ErrorCode = {
  // configuration and input
  ConfigInvalid: 'CONFIG_INVALID',
  ConfigUnreadable: 'CONFIG_UNREADABLE',
  UsageInvalid: 'USAGE_INVALID',
  ImportRefused: 'IMPORT_REFUSED',
  // certificates and bundles
  BundleInvalid: 'BUNDLE_INVALID',
  BundleKeyMismatch: 'BUNDLE_KEY_MISMATCH',
  BundleNamesMissing: 'BUNDLE_NAMES_MISSING',
  BundleExpired: 'BUNDLE_EXPIRED',
  VersionRevoked: 'VERSION_REVOKED',
  // storage
  StoreUnavailable: 'STORE_UNAVAILABLE',
  StoreConflict: 'STORE_CONFLICT',
  StoreCorrupt: 'STORE_CORRUPT',
  NotFound: 'NOT_FOUND',
  // ACME
  AcmeTransport: 'ACME_TRANSPORT',
  AcmeProblem: 'ACME_PROBLEM',
  AcmeRateLimited: 'ACME_RATE_LIMITED',
  AcmeOrderInvalid: 'ACME_ORDER_INVALID',
  ChallengeNotServed: 'CHALLENGE_NOT_SERVED',
  AcmeTimeout: 'ACME_TIMEOUT',
  DnsProviderFailed: 'DNS_PROVIDER_FAILED',
  DnsCredentialsRejected: 'DNS_CREDENTIALS_REJECTED',
  DnsLookupFailed: 'DNS_LOOKUP_FAILED',
  DnsPropagationTimeout: 'DNS_PROPAGATION_TIMEOUT',
  BudgetDeferred: 'BUDGET_DEFERRED',
  // agents, enrolment and authorisation
  EnrollTokenInvalid: 'ENROLL_TOKEN_INVALID',
  Unauthenticated: 'UNAUTHENTICATED',
  PermissionDenied: 'PERMISSION_DENIED',
  HookFailed: 'HOOK_FAILED',
  HookTimeout: 'HOOK_TIMEOUT',
  InstallFailed: 'INSTALL_FAILED',
  CsrInvalid: 'CSR_INVALID',
  NotServed: 'NOT_SERVED',
  RecordRefused: 'RECORD_REFUSED',
  BundleFingerprintMismatch: 'BUNDLE_FINGERPRINT_MISMATCH',
  // transport
  NatsUnavailable: 'NATS_UNAVAILABLE',
  ControllerUnavailable: 'CONTROLLER_UNAVAILABLE',
  NotLeader: 'NOT_LEADER',
  WaitTimeout: 'WAIT_TIMEOUT',
  IntentUnanswered: 'INTENT_UNANSWERED',
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface CertfleetErrorOptions {
  /** Whether trying the same thing again later can succeed. Default false. */
  retryable?: boolean;
  /** Earliest useful retry, in milliseconds from now, when the other side said so. */
  retryAfterMs?: number;
  cause?: unknown;
  /** Structured, non-secret facts for logs and events (field path, file, problem type...). */
  details?: Record<string, unknown>;
}

/** The one error class certfleet throws across module boundaries. */
export class CertfleetError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: CertfleetErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CertfleetError';
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.retryAfterMs = options.retryAfterMs;
    this.details = options.details ?? {};
  }
}

/** True when `err` is a CertfleetError, optionally with the given code. */
export function isCertfleetError(err: unknown, code?: ErrorCode): err is CertfleetError {
  return err instanceof CertfleetError && (code === undefined || err.code === code);
}

/**
 * Wraps anything thrown into a CertfleetError, keeping the original as `cause`.
 * A CertfleetError passes through unchanged.
 */
export function toCertfleetError(err: unknown, code: ErrorCode = ErrorCode.Internal): CertfleetError {
  if (err instanceof CertfleetError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CertfleetError(code, message, { cause: err });
}

/** Process exit codes of the `certfleet` command (documented in docs/cli.md). */
export const ExitCode = {
  Ok: 0,
  Failure: 1,
  Usage: 2,
  Config: 3,
  Unavailable: 4,
  PermissionDenied: 5,
  NotFound: 6,
} as const;

/** Maps an error to the exit code the CLI returns for it. */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof CertfleetError)) return ExitCode.Failure;
  switch (err.code) {
    case ErrorCode.UsageInvalid:
      return ExitCode.Usage;
    case ErrorCode.ConfigInvalid:
    case ErrorCode.ConfigUnreadable:
      return ExitCode.Config;
    case ErrorCode.ControllerUnavailable:
    case ErrorCode.NatsUnavailable:
    case ErrorCode.StoreUnavailable:
    case ErrorCode.NotLeader:
      return ExitCode.Unavailable;
    case ErrorCode.PermissionDenied:
    case ErrorCode.Unauthenticated:
    case ErrorCode.EnrollTokenInvalid:
      return ExitCode.PermissionDenied;
    case ErrorCode.NotFound:
      return ExitCode.NotFound;
    default:
      return ExitCode.Failure;
  }
}

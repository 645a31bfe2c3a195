/**
 * Translation of nats.js errors into CertfleetErrors, so nothing outside this adapter
 * ever sees (or has to know) a library error class.
 */
import { errors } from '@nats-io/transport-node';
import { JetStreamApiCodes, JetStreamApiError, JetStreamError } from '@nats-io/jetstream';
import { CertfleetError, ErrorCode } from '../errors/index.js';

/** True when a JetStream API call failed because the stream (bucket) does not exist. */
export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** True when a compare-and-set write lost: the key's last revision was not the expected one. */
export function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/**
 * Maps anything a nats.js call threw to a CertfleetError.
 *
 * - connection trouble (refused, closed while reconnecting, timeouts, no responders,
 *   JetStream not answering during a server restart) → NATS_UNAVAILABLE, retryable;
 * - a closed handle → NATS_UNAVAILABLE, not retryable (the process is shutting down);
 * - authentication failures → UNAUTHENTICATED; permission violations → PERMISSION_DENIED;
 * - any other JetStream API error → NATS_UNAVAILABLE, not retryable, with the server's
 *   error code in details (a rejected configuration will not fix itself);
 * - anything else → INTERNAL.
 *
 * `what` names the operation ("kv put certfleet_desired/web") for the message.
 */
export function toNatsError(err: unknown, what: string, details: Record<string, unknown> = {}): CertfleetError {
  if (err instanceof CertfleetError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  const message = `${what}: ${reason}`;
  if (err instanceof errors.ClosedConnectionError || err instanceof errors.DrainingConnectionError) {
    return new CertfleetError(ErrorCode.NatsUnavailable, message, { cause: err, details });
  }
  if (err instanceof errors.AuthorizationError || err instanceof errors.UserAuthenticationExpiredError) {
    return new CertfleetError(ErrorCode.Unauthenticated, message, { cause: err, details });
  }
  // A request (KV put, JetStream publish, API call) the server refused for permissions
  // fails as a RequestError whose cause is the violation: not an outage, and no retry
  // will fix it.
  if (err instanceof errors.PermissionViolationError || (err instanceof errors.RequestError && err.cause instanceof errors.PermissionViolationError)) {
    return new CertfleetError(ErrorCode.PermissionDenied, message, { cause: err, details });
  }
  if (err instanceof JetStreamApiError) {
    const apiDetails = { ...details, jsErrCode: err.code, jsStatus: err.status };
    // 503 from the JetStream API means "not ready / no quorum": it comes back.
    const retryable = err.status === 503 || err.status === 408;
    return new CertfleetError(ErrorCode.NatsUnavailable, message, { cause: err, retryable, details: apiDetails });
  }
  if (
    err instanceof errors.ConnectionError ||
    err instanceof errors.TimeoutError ||
    err instanceof errors.RequestError ||
    err instanceof errors.NoRespondersError ||
    err instanceof errors.ProtocolError ||
    err instanceof JetStreamError ||
    // Also what a JetStream request gets when nothing answers: a server that is
    // still starting, or a publish to a subject no stream captures yet.
    (err instanceof Error && err.name === 'JetStreamNotEnabled')
  ) {
    return new CertfleetError(ErrorCode.NatsUnavailable, message, { cause: err, retryable: true, details });
  }
  return new CertfleetError(ErrorCode.Internal, message, { cause: err, details });
}

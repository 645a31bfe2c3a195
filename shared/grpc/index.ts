/**
 * gRPC plumbing shared by the controller, the agent and the CLI: loading the protos,
 * the generated types, credentials, and translating CertfleetError to gRPC status and back.
 *
 * TLS is not optional anywhere: there is no insecure channel or server helper here.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { dateIn, systemClock, type Clock } from '../clock/index.js';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import type { ProtoGrpcType as AgentProto } from './generated/agent.js';
import type { ProtoGrpcType as OperatorProto } from './generated/operator.js';

export type { AgentServiceClient } from './generated/certfleet/v1/AgentService.js';
export type { AgentServiceHandlers } from './generated/certfleet/v1/AgentService.js';
export type { OperatorServiceClient } from './generated/certfleet/v1/OperatorService.js';
export type { OperatorServiceHandlers } from './generated/certfleet/v1/OperatorService.js';
export type * as pb from './pb.js';
export { grpc };

/** proto/ at the package root; this file runs compiled, from dist/shared/grpc/. */
const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

let cached: { agent: AgentProto; operator: OperatorProto } | undefined;

/** Loads and caches both service definitions. */
export function loadProtos(): { agent: AgentProto; operator: OperatorProto } {
  if (cached) return cached;
  // Each service is parsed on first use: an agent never needs the operator service
  // (issue #13, agent memory).
  let agent: AgentProto | undefined;
  let operator: OperatorProto | undefined;
  cached = {
    get agent(): AgentProto {
      agent ??= grpc.loadPackageDefinition(protoLoader.loadSync('certfleet/v1/agent.proto', LOADER_OPTIONS)) as unknown as AgentProto;
      return agent;
    },
    get operator(): OperatorProto {
      operator ??= grpc.loadPackageDefinition(protoLoader.loadSync('certfleet/v1/operator.proto', LOADER_OPTIONS)) as unknown as OperatorProto;
      return operator;
    },
  };
  return cached;
}

/** Client TLS material: the controller's CA, and for mutual TLS a certificate and key. */
export interface ClientTls {
  caPem: string;
  certPem?: string;
  keyPem?: string;
}

/**
 * Channel credentials. The server's certificate must chain to `caPem` (the controller's
 * own CA, never the system store) and name the host being dialled.
 */
export function clientCredentials(tls: ClientTls): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    Buffer.from(tls.caPem),
    tls.keyPem === undefined ? null : Buffer.from(tls.keyPem),
    tls.certPem === undefined ? null : Buffer.from(tls.certPem),
  );
}

/**
 * Deadline `ms` from now on `clock` (default systemClock), for call options. grpc-js
 * compares it with the wall clock, so only the system clock makes sense outside tests.
 */
export function deadline(ms: number, clock: Clock = systemClock): Date {
  return dateIn(clock, ms);
}

const TO_STATUS: Partial<Record<ErrorCode, grpc.status>> = {
  [ErrorCode.UsageInvalid]: grpc.status.INVALID_ARGUMENT,
  [ErrorCode.ConfigInvalid]: grpc.status.INVALID_ARGUMENT,
  [ErrorCode.BundleInvalid]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.VersionRevoked]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.NotFound]: grpc.status.NOT_FOUND,
  [ErrorCode.EnrollTokenInvalid]: grpc.status.PERMISSION_DENIED,
  [ErrorCode.Unauthenticated]: grpc.status.UNAUTHENTICATED,
  [ErrorCode.PermissionDenied]: grpc.status.PERMISSION_DENIED,
  [ErrorCode.StoreUnavailable]: grpc.status.UNAVAILABLE,
  [ErrorCode.NatsUnavailable]: grpc.status.UNAVAILABLE,
  [ErrorCode.NotLeader]: grpc.status.UNAVAILABLE,
  [ErrorCode.StoreConflict]: grpc.status.ABORTED,
};

const CODE_METADATA_KEY = 'certfleet-error-code';
/** "1" when trying again later can succeed (CertfleetError.retryable). */
const RETRYABLE_METADATA_KEY = 'certfleet-retryable';
/** Milliseconds the caller should wait before trying again (CertfleetError.retryAfterMs). */
const RETRY_AFTER_METADATA_KEY = 'certfleet-retry-after-ms';

/**
 * A gRPC service error for `err`. The stable code, `retryable` and `retryAfterMs` travel
 * in trailing metadata, so the peer's retry loop decides as the server's would (a
 * rate-limited or store-down answer says when to come back).
 */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const cf = err instanceof CertfleetError ? err : new CertfleetError(ErrorCode.Internal, 'internal error', { cause: err });
  const metadata = new grpc.Metadata();
  metadata.set(CODE_METADATA_KEY, cf.code);
  metadata.set(RETRYABLE_METADATA_KEY, cf.retryable ? '1' : '0');
  if (cf.retryAfterMs !== undefined && Number.isFinite(cf.retryAfterMs) && cf.retryAfterMs >= 0) {
    metadata.set(RETRY_AFTER_METADATA_KEY, String(Math.round(cf.retryAfterMs)));
  }
  return {
    code: TO_STATUS[cf.code] ?? grpc.status.INTERNAL,
    // Internal errors are not echoed to the peer: their text may name paths or hosts.
    details: cf.code === ErrorCode.Internal ? 'internal error (see controller log)' : cf.message,
    metadata,
  };
}

/** The retry facts a peer sent (absent keys: not retryable, no hint). */
function retryFromMetadata(md: grpc.Metadata | undefined): { retryable: boolean; retryAfterMs?: number } {
  const retryable = md?.get(RETRYABLE_METADATA_KEY)[0] === '1';
  const after = md?.get(RETRY_AFTER_METADATA_KEY)[0];
  const ms = typeof after === 'string' && /^\d{1,15}$/.test(after) ? Number(after) : undefined;
  return ms === undefined ? { retryable } : { retryable, retryAfterMs: ms };
}

/** The CertfleetError a failed call stands for, from its status and metadata. */
export function fromServiceError(err: unknown, what: string): CertfleetError {
  const se = err as Partial<grpc.ServiceError>;
  if (typeof se?.code !== 'number') {
    return new CertfleetError(ErrorCode.Internal, `${what}: ${String(err)}`, { cause: err });
  }
  const fromMeta = se.metadata?.get(CODE_METADATA_KEY)[0];
  const known = Object.values(ErrorCode) as string[];
  if (typeof fromMeta === 'string' && known.includes(fromMeta)) {
    return new CertfleetError(fromMeta as ErrorCode, se.details ?? what, { cause: err, ...retryFromMetadata(se.metadata) });
  }
  switch (se.code) {
    case grpc.status.DEADLINE_EXCEEDED:
      // Not "unreachable": the call may have reached a slow controller. Say which limit hit.
      return new CertfleetError(ErrorCode.ControllerUnavailable, `${what}: no answer before the deadline (${se.details ?? 'deadline exceeded'}); the controller is slow or unreachable, or the timeout is too short`, {
        cause: err,
        retryable: true,
      });
    case grpc.status.UNAVAILABLE:
      return new CertfleetError(ErrorCode.ControllerUnavailable, `${what}: controller unreachable (${se.details ?? ''})`, {
        cause: err,
        retryable: true,
      });
    case grpc.status.PERMISSION_DENIED:
      return new CertfleetError(ErrorCode.PermissionDenied, se.details ?? what, { cause: err });
    case grpc.status.UNAUTHENTICATED:
      return new CertfleetError(ErrorCode.Unauthenticated, se.details ?? what, { cause: err });
    case grpc.status.NOT_FOUND:
      return new CertfleetError(ErrorCode.NotFound, se.details ?? what, { cause: err });
    default:
      return new CertfleetError(ErrorCode.Internal, `${what}: ${se.details ?? String(err)}`, { cause: err });
  }
}

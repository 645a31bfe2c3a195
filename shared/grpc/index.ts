/**
 * gRPC plumbing shared by the controller, the agent and the CLI: loading the protos,
 * the generated types, credentials, and translating CertfleetError to gRPC status and back.
 *
 * TLS is not optional anywhere: there is no insecure channel or server helper here.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as AgentProto } from './generated/agent.js';
import type { ProtoGrpcType as OperatorProto } from './generated/operator.js';

export type { AgentServiceClient } from './generated/certfleet/v1/AgentService.js';
export type { AgentServiceHandlers } from './generated/certfleet/v1/AgentService.js';
export type { OperatorServiceClient } from './generated/certfleet/v1/OperatorService.js';
export type { OperatorServiceHandlers } from './generated/certfleet/v1/OperatorService.js';
export type * as pb from './pb.js';
export { grpc };
export { deadline, fromServiceError, toServiceError } from './status.js';
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  FailoverClient,
  failoverChannelOptions,
  failoverVerdict,
  type Attempt,
  type AttemptPhase,
  type CallSafety,
  type ControllerSwitch,
  type FailoverOptions,
  type FailoverVerdict,
} from './failover.js';

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

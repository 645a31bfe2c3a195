/**
 * Log field names of the agent: the project's {@link SharedLogKey} plus the facts only the
 * agent logs (hook groups, rollbacks, served fingerprints). One name per meaning; agent
 * code writes `{ [LogKey.cert]: name }`, never a literal key. (These extra names belong
 * in shared/log once another component needs them.)
 */
import { LogKey as SharedLogKey } from '../../shared/log/index.js';

export { componentLogger } from '../../shared/log/index.js';
export type { Logger } from '../../shared/log/index.js';

export const LogKey = {
  ...SharedLogKey,
  /** Certificates sharing one reload hook run. */
  certs: 'certs',
  /** The version restored by a rollback. */
  restore: 'restore',
  /** The version a rollback went back from. */
  failedVersion: 'failedVersion',
  /** The version `current` named before a swap. */
  previousVersion: 'previousVersion',
  /** Whether an install or activation swapped `current`. */
  changed: 'changed',
  /** The version the loaded marker names (null: none). */
  loaded: 'loaded',
  /** The end of a hook's output. */
  outputTail: 'outputTail',
  /** Fingerprints: the one found, the one wanted. */
  got: 'got',
  want: 'want',
  /** A signed record's generation. */
  generation: 'generation',
  /** Why: a plan's or a refusal's reason. */
  reason: 'reason',
  /** Signing key ids. */
  keys: 'keys',
  /** An identity certificate's serial and expiry. */
  serial: 'serial',
  notAfter: 'notAfter',
  /** Consecutive failures so far. */
  failures: 'failures',
  /** When a failed step is tried again. */
  retryInMs: 'retryInMs',
  /** The agent's labels, and its HTTP-01 listener. */
  labels: 'labels',
  http01: 'http01',
  /** A certificate version's SHA-256 fingerprint. */
  fingerprint: 'fingerprint',
  /** Installer facts: a version directory reused, versions pruned, a file path. */
  reused: 'reused',
  pruned: 'pruned',
  path: 'path',
  /** A listener's host and port; a request's remote address; whether it was answered. */
  host: 'host',
  port: 'port',
  from: 'from',
  found: 'found',
  /** Where a refused record came from: its NATS bucket and key, or the gRPC call. */
  bucket: 'bucket',
  source: 'source',
} as const;

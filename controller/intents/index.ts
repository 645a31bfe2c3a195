/**
 * Several controllers, one leader: a mutating operator call made on a follower is carried
 * out by the leader through signed intents in the NATS KV bucket `certfleet_intents`, and
 * answers only when it is done (docs/architecture.md, "Several controllers: intents").
 *
 *   ./record.ts    the intent record, its steps (pending → taken → done) and the pure decisions
 *   ./methods.ts   which backend methods are forwarded and their arguments on the wire
 *   ./board.ts     follower side: submit and wait
 *   ./executor.ts  leader side: claim, run, answer, sweep
 *   ./forward.ts   the OperatorBackend the API serves: local reads, forwarded mutations
 *   ./seal.ts      results sealed to the asking controller (an enrolment token is a secret)
 */
import { systemClock, type Clock } from '../../shared/clock/index.js';
import type { Logger } from '../../shared/log/index.js';
import { openKv, type NatsHandle } from '../../shared/nats/index.js';
import type { SigningPublicKey } from '../../shared/model/index.js';
import { trustedKeys } from '../../shared/signing/index.js';
import { Bucket } from '../../shared/wire/index.js';
import type { OperatorBackend } from '../api/index.js';
import { IntentBoard, type IntentSigner } from './board.js';
import { IntentExecutor, type IntentStats, type LeaderHandle } from './executor.js';
import { forwardingBackend } from './forward.js';
import { parseIntentRecord, type IntentRecord } from './record.js';

export { IntentBoard, type IntentBoardOptions, type IntentSigner } from './board.js';
export { IntentExecutor, type IntentExecutorOptions, type IntentStats, type LeaderHandle } from './executor.js';
export { forwardingBackend, type ForwardingDeps } from './forward.js';
export { argsProblem, FORWARDED, INTENT_METHODS, LOCAL_NON_VIEWER_CALLS, roleFor, type IntentMethod } from './methods.js';
export {
  answered,
  claimed,
  decideIntent,
  DEFAULT_INTENT_TIMEOUT_MS,
  DEFAULT_SWEEP_AFTER_MS,
  errorFromWire,
  errorToWire,
  INTENT_MAX_AGE_MS,
  intentAge,
  intentRecordSchema,
  parseIntentRecord,
  pendingIntent,
  STEP,
  sweepable,
  type IntentRecord,
  type IntentState,
  type LeaderAction,
  type LeaderView,
  type WireError,
} from './record.js';
export { newReplyKey, seal, unseal, type ReplyKey } from './seal.js';

export interface StartIntentsOptions {
  /** The controller's NATS connection; the bucket must exist (ensureFleetNats creates it). */
  nats: NatsHandle;
  /** controller/signing RecordSigner: signs every step; its public keys verify them. */
  signer: IntentSigner & { publicKeys(): SigningPublicKey[] };
  /** The real operator backend (the one the API served before). */
  backend: OperatorBackend;
  /** controller/lease LeaderLease. */
  leader: LeaderHandle;
  clock?: Clock;
  log: Logger;
  /** How long a follower waits for the leader's answer; default 60 s. */
  timeoutMs?: number;
  /** Tuning for tests; see IntentExecutorOptions. */
  tickMs?: number;
  maxAgeMs?: number;
  sweepAfterMs?: number;
  sweepEveryMs?: number;
}

export interface Intents {
  /** Serve this to the API instead of the real backend. */
  backend: OperatorBackend;
  /** Counts of this controller as leader. */
  stats(): IntentStats;
  /**
   * Stops the watch and timers; calls waiting here fail INTENT_UNANSWERED; steps the
   * executor has in flight finish first. Call it before stopping the lease.
   */
  stop(): Promise<void>;
}

/**
 * Starts the intents of one controller: the follower side (board) and the leader side
 * (executor) over one watch of the bucket. Rejects with NATS_UNAVAILABLE when the bucket
 * cannot be opened or watched.
 */
export async function startIntents(opts: StartIntentsOptions): Promise<Intents> {
  const clock = opts.clock ?? systemClock;
  const kv = await openKv<IntentRecord>(opts.nats, Bucket.intents, { create: false, parse: parseIntentRecord });
  const keys = trustedKeys(opts.signer.publicKeys());
  const board = new IntentBoard({ kv, signer: opts.signer, keys, self: opts.leader.self, clock, log: opts.log, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
  const executor = new IntentExecutor({
    kv,
    signer: opts.signer,
    keys,
    backend: opts.backend,
    leader: opts.leader,
    clock,
    log: opts.log,
    ...(opts.tickMs !== undefined ? { tickMs: opts.tickMs } : {}),
    ...(opts.maxAgeMs !== undefined ? { maxAgeMs: opts.maxAgeMs } : {}),
    ...(opts.sweepAfterMs !== undefined ? { sweepAfterMs: opts.sweepAfterMs } : {}),
    ...(opts.sweepEveryMs !== undefined ? { sweepEveryMs: opts.sweepEveryMs } : {}),
  });
  const watch = await kv.watch((key, value, revision) => {
    board.onChange(key, value, revision);
    executor.onChange(key, value, revision);
  });
  await watch.initialDone;
  executor.start();
  return {
    backend: forwardingBackend(opts.backend, { leader: opts.leader, board }),
    stats: () => executor.stats(),
    async stop() {
      board.stop();
      await executor.stop();
      await watch.stop();
    },
  };
}

/**
 * The NATS resources certfleet needs, created in one place by the controller at start.
 */
import { Bucket, EventStream } from '../wire/index.js';
import type { NatsHandle } from './connection.js';
import { ensureEventStream } from './events.js';
import { openKv } from './kv.js';

/** History (values kept per key) of each bucket; see shared/wire for why. */
export const BUCKET_HISTORY = {
  [Bucket.desired]: 10,
  [Bucket.challenges]: 1,
  [Bucket.agents]: 1,
  [Bucket.budgets]: 1,
  [Bucket.leader]: 1,
  [Bucket.controllers]: 1,
  // pending, taken, done: `nats kv history` shows one intent's whole life.
  [Bucket.intents]: 3,
} as const;

/**
 * Creates every KV bucket and the events stream if missing, and brings existing ones to
 * the settings above and to `replicas` copies (default 1: one server; 3 in a three-node
 * cluster, so a write survives losing a server). Idempotent and safe to run from several controllers at once.
 * Throws NATS_UNAVAILABLE (retryable when the server is away).
 * Agents never call this: they open buckets with `create: false`.
 */
export async function ensureFleetNats(handle: NatsHandle, opts: { replicas?: number } = {}): Promise<void> {
  const replicas = opts.replicas ?? 1;
  for (const [bucket, history] of Object.entries(BUCKET_HISTORY)) {
    // Only created here, never read: nothing to validate.
    await openKv<unknown>(handle, bucket, { create: true, history, replicas, parse: (v) => v });
  }
  await ensureEventStream(handle, {
    name: EventStream.name,
    subjects: [`${EventStream.subjectPrefix}.>`],
    maxAgeMs: EventStream.maxAgeMs,
    replicas,
  });
}

/**
 * Who leads: a pure decision over the lease record in a JetStream KV bucket.
 *
 *               record absent ──────────────────────────► ACQUIRE (epoch 1, create-only)
 *   ┌─ ours, revision we wrote ─► RENEW (same epoch, CAS on that revision)
 *   │  another holder's (or an old one of ours)
 *   │     unchanged for a whole ttl, as seen by OUR clock ─► TAKE OVER (epoch+1, CAS)
 *   │     released by its holder (graceful stop)  ───────────► TAKE OVER (epoch+1, CAS)
 *   │     left by an earlier process, and we are `exclusive` ► TAKE OVER (epoch+1, CAS)
 *   └─    otherwise ─────────────────────────────────────────► FOLLOW (retry at expiry)
 *
 * Expiry is judged by each controller's own clock, from when it first saw the holder's
 * current revision: nats-server 2.9 has no per-key TTL, and comparing the holder's
 * `expiresAt` with our wall clock would trust clock synchronisation across machines. A
 * holder renews every ttl/3, so an unchanged revision for a whole ttl means it is gone,
 * paused or cut off. The holder, for its part, stops acting as leader `margin` before its
 * own lease could be taken (see `leaderUntil`), so an old and a new leader never both act.
 * Every write is compare-and-set on the revision, so two contenders never both win.
 */

/** The value under the lease key. */
export interface LeaseRecord {
  /** The holder's controller id (unique per controller process incarnation). */
  holder: string;
  /** The fencing token: strictly increases with every change of holder. */
  epoch: number;
  /** The holder's gRPC address, for followers that forward and for `status`. */
  address: string;
  /** When the holder last wrote (its clock; for display only). */
  renewedAt: string;
  /** The holder's lease time in ms; followers use their own configured ttl. */
  ttlMs: number;
  /** Set by a holder that stopped gracefully: take over at once. */
  released?: boolean;
}

/** What this controller has seen of the lease key. */
export interface LeaseObservation {
  /** The record and its KV revision, or null when absent or deleted. */
  current: { record: LeaseRecord; revision: number } | null;
  /** When (our clock) we first saw `current.revision`; ignored when current is null. */
  firstSeenAt: number;
}

export type LeaseAction =
  | { kind: 'acquire'; epoch: number; expectedRevision: 0; why: string }
  | { kind: 'renew'; epoch: number; expectedRevision: number; why: string }
  | { kind: 'take-over'; epoch: number; expectedRevision: number; why: string }
  | { kind: 'follow'; leader: LeaseRecord; retryAt: number; why: string };

export interface LeaseInput {
  self: string;
  now: number;
  ttlMs: number;
  observed: LeaseObservation;
  /** The revision of our own last successful write, if we hold the lease. */
  heldRevision: number | undefined;
  /**
   * This controller knows no other can be running (the file store's lock proves it):
   * a record left by an earlier process is taken over at once instead of after a ttl.
   */
  exclusive?: boolean;
}

/** The next lease step for this controller; see the diagram above. */
export function decideLease(input: LeaseInput): LeaseAction {
  const { current, firstSeenAt } = input.observed;
  if (current === null) return { kind: 'acquire', epoch: 1, expectedRevision: 0, why: 'no leader' };
  const { record, revision } = current;
  if (record.holder === input.self && revision === input.heldRevision && record.released !== true) {
    return { kind: 'renew', epoch: record.epoch, expectedRevision: revision, why: 'holding' };
  }
  if (record.released === true) {
    return { kind: 'take-over', epoch: record.epoch + 1, expectedRevision: revision, why: `${record.holder} released the lease` };
  }
  if (input.exclusive === true) {
    return { kind: 'take-over', epoch: record.epoch + 1, expectedRevision: revision, why: `${record.holder} is an earlier process on this store` };
  }
  const expiresAt = firstSeenAt + input.ttlMs;
  if (input.now >= expiresAt) {
    return {
      kind: 'take-over',
      epoch: record.epoch + 1,
      expectedRevision: revision,
      why: `${record.holder} did not renew for ${input.now - firstSeenAt} ms`,
    };
  }
  return { kind: 'follow', leader: record, retryAt: expiresAt, why: `${record.holder} leads` };
}

/**
 * Until when a holder may act as leader after a write it started at `writeStartedAt`
 * succeeded: a follower cannot take over before writeStartedAt + ttl (it first sees the
 * revision no earlier than it was written), so stopping `marginMs` earlier leaves room for
 * clock-rate drift and for a write already in flight.
 */
export function leaderUntil(writeStartedAt: number, ttlMs: number, marginMs: number): number {
  return writeStartedAt + ttlMs - marginMs;
}

/**
 * What the controller tells the fleet over NATS: desired-version pointers, pending
 * HTTP-01 challenges, and events. Public data only (see shared/wire): a DesiredRecord
 * carries a fingerprint, never a key.
 *
 * The desired map is also kept in memory from a watch of the bucket, so several
 * controllers sharing one NATS see each other's moves, and reads never block on NATS.
 * Memory is the controller's intent and is updated first: a pointer whose write to NATS
 * failed (NATS down) is still what gRPC GetAssignments answers, so agents converge over
 * gRPC while NATS is away (issue #8), and the write is retried by {@link DesiredState.flush}
 * (the work loop calls it every pass) until NATS has it.
 *
 * Every record written is signed (controller/signing, issue #9) with a new generation of
 * its certificate: a rollback, a pin, a wave advance or a halt is a new generation, so an
 * agent can refuse a replayed older record. Challenge records are signed the same way and
 * carry an expiry.
 *
 * Several controllers (issue #12): with a `fence` (the leader lease's), every write first
 * asks it for the epoch (NOT_LEADER in a follower or a deposed leader) and stamps it into
 * the signed record, and desired pointers are written with compare-and-set on the last
 * revision this controller saw of the key: a deposed leader's stale revision fails, and
 * on a conflict the key is re-read and the fence asked again before one more try.
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import type { ChallengeRecord, DesiredRecord, FleetEvent, RolloutState, VersionMeta } from '../../shared/model/index.js';
import { openKv, publishEvent, type JsonKv, type KvWatch, type NatsHandle } from '../../shared/nats/index.js';
import { parseChallengeRecord, parseDesiredRecord } from '../../shared/records/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { generationVerdict, stampOf, trustedKeys, verifyRecord } from '../../shared/signing/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import { Bucket, eventSubject, type EventType } from '../../shared/wire/index.js';
import type { RecordSigner } from '../signing/index.js';
import type { ChallengeBoard } from '../solvers/index.js';
import { LogKey } from '../../shared/log/index.js';

/**
 * The leader lease's fence (controller/lease LeaderLease.fence): the epoch to stamp on a
 * write, or NOT_LEADER thrown when this controller may not write.
 */
export type Fence = () => number;

/** Desired state: the version each certificate's agents must serve. */
export class DesiredState {
  private readonly current = new Map<string, DesiredRecord>();
  /** The last KV revision seen of each key (watch or own write): what a write compares against. */
  private readonly revisions = new Map<string, number>();
  /** Names whose record in memory is not (known to be) in NATS yet. */
  private readonly unpublished = new Set<string>();
  /** The record being written to NATS now, per name. */
  private readonly writing = new Map<string, DesiredRecord>();
  private watch: KvWatch | undefined;

  private constructor(
    private readonly kv: JsonKv<DesiredRecord>,
    private readonly signer: RecordSigner,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly fence: Fence | undefined,
  ) {}

  /**
   * Opens the bucket and loads every pointer that verifies with the ring's keys before
   * returning (an unsigned one, written before records were signed, is left for the work
   * loop to publish anew). Pointers signed with a key that is no longer active (a key
   * rotation) are signed again with a new generation, so a retiring key is soon needed by
   * no record; a failure there is logged and left to {@link flush}. With a `fence` that is
   * left to the leader ({@link republish} at election): a follower writes nothing.
   */
  static async open(nats: NatsHandle, signer: RecordSigner, clock: Clock, log: Logger, fence?: Fence): Promise<DesiredState> {
    const opened: { state?: DesiredState } = {};
    const kv = await openKv<DesiredRecord>(nats, Bucket.desired, {
      create: false,
      parse: parseDesiredRecord,
      // Garbage over one of our pointers: write ours back over it (flush).
      onMalformed: (key) => {
        if (opened.state?.current.has(key)) opened.state.unpublished.add(key);
      },
    });
    const state = new DesiredState(kv, signer, clock, log, fence);
    opened.state = state;
    const keys = trustedKeys(signer.publicKeys());
    state.watch = await kv.watch((key, value, revision) => {
      state.revisions.set(key, Math.max(revision, state.revisions.get(key) ?? 0));
      // A pointer not yet written is newer than anything the bucket can show for it.
      if (state.unpublished.has(key)) return;
      if (value === null) {
        state.current.delete(key);
        return;
      }
      // Only records this controller (or one sharing its store and keys) signed are
      // adopted: a forged or replayed pointer must not become what GetAssignments serves,
      // nor be signed again by us. Ours is written back over it (flush, every pass); with
      // none in memory the work loop publishes the pointer it wants.
      const mine = state.current.get(key);
      const sig = verifyRecord('desired', value, keys);
      if (!sig.ok || (mine !== undefined && generationVerdict(stampOf(value), stampOf(mine)) === 'older')) {
        log.warn({ [LogKey.code]: ErrorCode.RecordRefused, [LogKey.cert]: key, reason: sig.ok ? 'replay' : sig.problem, generation: value.generation }, 'desired record refused');
        if (mine !== undefined) state.unpublished.add(key);
        return;
      }
      state.current.set(key, value);
    });
    await state.watch.initialDone;
    if (fence !== undefined) return state;
    for (const record of state.all()) {
      if (record.keyId === signer.activeKeyId()) continue;
      try {
        await state.put(record);
        log.info({ [LogKey.cert]: record.name, previousKey: record.keyId ?? 'unsigned' }, 'desired version signed again with the active key');
      } catch (err) {
        log.warn({ [LogKey.cert]: record.name, [LogKey.err]: (err as Error).message }, 'desired version not signed again yet');
      }
    }
    return state;
  }

  /** The pointer of `name`, from memory. */
  get(name: string): DesiredRecord | undefined {
    return this.current.get(name);
  }

  all(): DesiredRecord[] {
    return [...this.current.values()];
  }

  /**
   * Points `meta.name` at `meta.version` for the agents matching `selector`, with an
   * optional staged rollout (agents of unreleased waves keep `rollout.from`) or a pin.
   */
  async publish(meta: VersionMeta, selector: string, extra: { rollout?: RolloutState; pinned?: boolean } = {}): Promise<DesiredRecord> {
    const record: DesiredRecord = {
      name: meta.name,
      version: meta.version,
      fingerprint: meta.fingerprint,
      names: meta.names,
      notAfter: meta.notAfter,
      selector,
      updatedAt: isoAt(this.clock.now()),
      ...(extra.rollout ? { rollout: extra.rollout } : {}),
      ...(extra.pinned ? { pinned: true } : {}),
    };
    await this.put(record);
    return this.current.get(record.name) ?? record;
  }

  /**
   * Writes a record (rollout progress), signed with a new generation above the one it
   * replaces. Memory takes it first; when NATS refuses (NATS_UNAVAILABLE) the record
   * stays pending for {@link flush} and the error is thrown. When the store cannot
   * persist the generation, nothing changes and that error is thrown.
   */
  async put(unsigned: DesiredRecord): Promise<void> {
    const previous = Math.max(unsigned.generation ?? 0, this.current.get(unsigned.name)?.generation ?? 0);
    // Fenced before the generation is drawn (a store write) and again before the KV write.
    const epoch = this.fence?.();
    const record = await this.signer.sign('desired', unsigned.name, { ...unsigned, generation: previous, ...(epoch === undefined ? {} : { epoch }) });
    this.current.set(record.name, record);
    this.unpublished.add(record.name);
    await this.write(record);
  }

  /**
   * Signs every pointer in memory again with a new generation and the current epoch, and
   * writes it (a new leader, at election: agents then hold the new epoch as the highest,
   * so anything a deposed leader still writes is a replay to them; a key rotation is
   * covered too). Returns how many were written; the first failure is thrown after trying
   * all (the rest stay pending for {@link flush}).
   */
  async republish(): Promise<number> {
    let written = 0;
    let first: Error | undefined;
    for (const record of this.all()) {
      try {
        await this.put(record);
        written += 1;
      } catch (err) {
        first ??= err as Error;
      }
    }
    if (first !== undefined) throw first;
    return written;
  }

  /**
   * Forgets what this controller still meant to write and takes the bucket's pointers
   * (those that verify) as they are: a deposed leader follows the new one instead of
   * serving its own unwritten pointers over gRPC. Errors propagate (NATS away).
   */
  async adoptBucket(): Promise<void> {
    this.unpublished.clear();
    const keys = trustedKeys(this.signer.publicKeys());
    for (const item of await this.kv.entries()) {
      this.revisions.set(item.key, Math.max(item.revision, this.revisions.get(item.key) ?? 0));
      if (verifyRecord('desired', item.value, keys).ok) this.current.set(item.key, item.value);
    }
  }

  /** Whether `name`'s pointer in memory still waits to be written to NATS. */
  isUnpublished(name: string): boolean {
    return this.unpublished.has(name);
  }

  /**
   * Writes every pending pointer again; returns those written now. Stops at the first
   * failure and throws it (NATS still away: the next pass tries again).
   */
  async flush(): Promise<DesiredRecord[]> {
    const written: DesiredRecord[] = [];
    for (const name of [...this.unpublished]) {
      const record = this.current.get(name);
      if (!record) {
        this.unpublished.delete(name);
        continue;
      }
      // Being written right now by put(): not "late", and not worth a second write.
      if (this.writing.get(name) === record) continue;
      await this.write(record);
      written.push(record);
    }
    return written;
  }

  private async write(record: DesiredRecord): Promise<void> {
    this.writing.set(record.name, record);
    try {
      if (this.fence === undefined) await this.kv.put(record.name, record);
      else await this.writeFenced(record);
    } catch (err) {
      this.log.warn({ [LogKey.cert]: record.name, [LogKey.version]: record.version, [LogKey.err]: (err as Error).message }, 'desired version not published yet; agents get it over gRPC');
      throw err;
    } finally {
      if (this.writing.get(record.name) === record) this.writing.delete(record.name);
    }
    // Only if nothing newer was put meanwhile.
    if (this.current.get(record.name) === record) this.unpublished.delete(record.name);
    this.log.info({ [LogKey.cert]: record.name, [LogKey.version]: record.version, generation: record.generation, rollout: record.rollout?.released, pinned: record.pinned }, 'desired version published');
  }

  /**
   * Compare-and-set on the last revision seen. On a conflict (someone wrote since: a new
   * leader, or a watch that has not caught up yet) the key is re-read and the fence asked
   * again, so a deposed leader fails here with NOT_LEADER; a leader tries once more.
   */
  private async writeFenced(record: DesiredRecord): Promise<void> {
    const fence = this.fence as Fence;
    for (let attempt = 0; ; attempt++) {
      fence();
      const expected = this.revisions.get(record.name) ?? 0;
      try {
        const revision = await this.kv.update(record.name, record, expected);
        this.revisions.set(record.name, Math.max(revision, this.revisions.get(record.name) ?? 0));
        return;
      } catch (err) {
        if (!isCertfleetError(err, ErrorCode.StoreConflict) || attempt > 0) throw err;
        const seen = await this.kv.get(record.name).catch((e: unknown) => {
          // Garbage under the key: ours replaces it, at the revision the error names.
          if (!isCertfleetError(e, ErrorCode.StoreCorrupt)) throw e;
          const revision = e.details['revision'];
          return { revision: typeof revision === 'number' ? revision : 0 };
        });
        this.revisions.set(record.name, seen?.revision ?? 0);
        this.log.info({ [LogKey.cert]: record.name, expected, found: seen?.revision ?? 0 }, 'desired version changed meanwhile; checking the lease again');
      }
    }
  }

  async close(): Promise<void> {
    await this.watch?.stop();
  }
}

/**
 * The NATS `challenges` bucket as the HTTP-01 solver's board. Each challenge is signed
 * with a new generation of its certificate and expires `ttlMs` after it is presented
 * (agents stop serving it then, even if its cleanup never happened).
 */
export class NatsChallengeBoard implements ChallengeBoard {
  private constructor(
    private readonly kv: JsonKv<ChallengeRecord>,
    private readonly signer: RecordSigner,
    private readonly clock: Clock,
    private readonly ttlMs: number,
    private readonly fence: Fence | undefined,
  ) {}

  /** With a `fence`, every write asks it first and challenges carry its epoch (see the module comment). */
  static async open(nats: NatsHandle, signer: RecordSigner, clock: Clock, ttlMs: number, fence?: Fence): Promise<NatsChallengeBoard> {
    const kv = await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false, parse: parseChallengeRecord });
    return new NatsChallengeBoard(kv, signer, clock, ttlMs, fence);
  }

  async present(record: ChallengeRecord): Promise<void> {
    const epoch = this.fence?.();
    const expiring: ChallengeRecord = { ...record, expiresAt: isoAt(this.clock.now() + this.ttlMs), ...(epoch === undefined ? {} : { epoch }) };
    const signed = await this.signer.sign('challenge', record.cert, expiring);
    this.fence?.();
    await this.kv.put(record.token, signed);
  }

  async remove(token: string): Promise<void> {
    // A deposed leader must not take away a challenge the new leader presents again.
    this.fence?.();
    await this.kv.delete(token);
  }

  async list(): Promise<ChallengeRecord[]> {
    // The key is the token the agents serve: trust it over the value's copy.
    return (await this.kv.entries()).map((e) => ({ ...e.value, token: e.key }));
  }
}

/**
 * Publishes fleet events. Events are the audit trail, not the source of truth: a
 * publish that fails (NATS away) is logged with the event and does not fail the
 * operation that caused it.
 */
export class EventPublisher {
  /**
   * `observe` sees every event before it is published, whether or not the publish
   * succeeds (the notifier); it must not throw.
   */
  constructor(
    private readonly nats: NatsHandle,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly observe?: (event: FleetEvent) => void,
  ) {}

  async emit(type: EventType, fields: Omit<FleetEvent, 'type' | 'at'>): Promise<void> {
    const event: FleetEvent = { type, at: isoAt(this.clock.now()), ...fields };
    this.observe?.(event);
    try {
      await publishEvent(this.nats, eventSubject(type, fields.cert), event);
    } catch (err) {
      this.log.warn({ [LogKey.err]: (err as Error).message, event }, 'event not published');
    }
  }
}

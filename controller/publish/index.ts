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
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import type { ChallengeRecord, DesiredRecord, FleetEvent, RolloutState, VersionMeta } from '../../shared/model/index.js';
import { openKv, publishEvent, type JsonKv, type KvWatch, type NatsHandle } from '../../shared/nats/index.js';
import { parseChallengeRecord, parseDesiredRecord } from '../../shared/records/index.js';
import { Bucket, eventSubject, type EventType } from '../../shared/wire/index.js';
import type { ChallengeBoard } from '../solvers/index.js';

/** Desired state: the version each certificate's agents must serve. */
export class DesiredState {
  private readonly current = new Map<string, DesiredRecord>();
  /** Names whose record in memory is not (known to be) in NATS yet. */
  private readonly unpublished = new Set<string>();
  private watch: KvWatch | undefined;

  private constructor(
    private readonly kv: JsonKv<DesiredRecord>,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Opens the bucket and loads every pointer before returning. */
  static async open(nats: NatsHandle, clock: Clock, log: Logger): Promise<DesiredState> {
    const kv = await openKv<DesiredRecord>(nats, Bucket.desired, { create: false, parse: parseDesiredRecord });
    const state = new DesiredState(kv, clock, log);
    state.watch = await kv.watch((key, value) => {
      // A pointer not yet written is newer than anything the bucket can show for it.
      if (state.unpublished.has(key)) return;
      if (value === null) state.current.delete(key);
      else state.current.set(key, value);
    });
    await state.watch.initialDone;
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
    return record;
  }

  /**
   * Writes a record as is (rollout progress). Memory takes it first; when NATS refuses
   * (NATS_UNAVAILABLE) the record stays pending for {@link flush} and the error is thrown.
   */
  async put(record: DesiredRecord): Promise<void> {
    this.current.set(record.name, record);
    this.unpublished.add(record.name);
    await this.write(record);
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
      await this.write(record);
      written.push(record);
    }
    return written;
  }

  private async write(record: DesiredRecord): Promise<void> {
    try {
      await this.kv.put(record.name, record);
    } catch (err) {
      this.log.warn({ cert: record.name, version: record.version, err: (err as Error).message }, 'desired version not published yet; agents get it over gRPC');
      throw err;
    }
    // Only if nothing newer was put meanwhile.
    if (this.current.get(record.name) === record) this.unpublished.delete(record.name);
    this.log.info({ cert: record.name, version: record.version, rollout: record.rollout?.released, pinned: record.pinned }, 'desired version published');
  }

  async close(): Promise<void> {
    await this.watch?.stop();
  }
}

/** The NATS `challenges` bucket as the HTTP-01 solver's board. */
export class NatsChallengeBoard implements ChallengeBoard {
  private constructor(private readonly kv: JsonKv<ChallengeRecord>) {}

  static async open(nats: NatsHandle): Promise<NatsChallengeBoard> {
    return new NatsChallengeBoard(await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false, parse: parseChallengeRecord }));
  }

  async present(record: ChallengeRecord): Promise<void> {
    await this.kv.put(record.token, record);
  }

  async remove(token: string): Promise<void> {
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
  constructor(
    private readonly nats: NatsHandle,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  async emit(type: EventType, fields: Omit<FleetEvent, 'type' | 'at'>): Promise<void> {
    const event: FleetEvent = { type, at: isoAt(this.clock.now()), ...fields };
    try {
      await publishEvent(this.nats, eventSubject(type, fields.cert), event);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, event }, 'event not published');
    }
  }
}

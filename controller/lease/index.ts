/**
 * The leader lease: which of several controllers runs the work loop.
 *
 * One key in a JetStream KV bucket holds a {@link LeaseRecord}; every change is
 * compare-and-set on its revision, so exactly one contender wins each step, and each new
 * holder raises the epoch (the fencing token work-loop writes carry). The decision is pure
 * (./decide.ts); this file runs it on the clock: every ttl/3 it reads the key, decides,
 * and writes. The holder stops acting as leader `margin` before its lease could be taken,
 * even when it cannot reach NATS (a controller cut off from a quorum must not lead), and
 * `fence()` refuses at once in a holder whose time ran out (a paused process wakes up
 * deposed, whatever its timers say).
 */
import { randomBytes } from 'node:crypto';
import type { Clock, Timer } from '../../shared/clock/index.js';
import { isoAt } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import { decideLease, leaderUntil, type LeaseObservation, type LeaseRecord } from './decide.js';

export { decideLease, leaderUntil } from './decide.js';
export type { LeaseAction, LeaseInput, LeaseObservation, LeaseRecord } from './decide.js';
export { Leadership, type LeadershipOptions, type LeadershipStep, type LeaseState } from './leadership.js';
export { ControllerRegistry, controllerHealth, parseControllerRecord, parseLeaseRecord, type ControllerHealth, type ControllerRecord, type RegistryKv, type RegistryOptions } from './registry.js';
export { fencedStore } from './fence.js';

/** The KV key of the lease. */
export const LEASE_KEY = 'leader';

/** The part of a JSON KV bucket the lease needs (shared/nats JsonKv satisfies it). */
export interface LeaseKv {
  get(key: string): Promise<{ value: LeaseRecord; revision: number } | null>;
  /** Compare-and-set: 0 means "only if absent"; STORE_CONFLICT when someone wrote in between. */
  update(key: string, value: LeaseRecord, expectedRevision: number): Promise<number>;
}

export interface LeaderLeaseOptions {
  kv: LeaseKv;
  clock: Clock;
  log: Logger;
  /** This controller's stable name (config); an incarnation suffix is added per process. */
  name: string;
  /** This controller's gRPC address, written into the record for followers and `status`. */
  address: string;
  /** Lease time; renewed every ttl/3. Default 15 s. */
  ttlMs?: number;
  /** How long before the lease could be taken the holder stops acting. Default ttl/5. */
  marginMs?: number;
  /** See LeaseInput.exclusive: take over a record left by an earlier process at once. */
  exclusive?: boolean;
  /** Called when this controller becomes leader, with its epoch. Must not throw. */
  onElected?: (epoch: number) => void;
  /** Called when it stops being leader, with why. Must not throw. */
  onDeposed?: (why: string) => void;
}

/** What `status` shows of the lease. */
export interface LeaseView {
  self: string;
  role: 'leader' | 'follower';
  epoch: number | undefined;
  leader: { holder: string; address: string; epoch: number; renewedAt: string } | undefined;
  /** Our clock: until when we may act (leader) or when we will try to take over (follower). */
  until: number | undefined;
}

export const DEFAULT_LEASE_TTL_MS = 15_000;

/** Runs the lease for one controller process. */
export class LeaderLease {
  /** `name#incarnation`: a restarted process is a new contender, never mistaken for the old one. */
  readonly self: string;
  private readonly ttlMs: number;
  private readonly marginMs: number;
  private readonly log: Logger;
  private seen: { revision: number; firstSeenAt: number } | undefined;
  private held: { revision: number; epoch: number; until: number } | undefined;
  private leader: LeaseRecord | undefined;
  private followUntil: number | undefined;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly opts: LeaderLeaseOptions) {
    this.self = `${opts.name}#${randomBytes(4).toString('hex')}`;
    this.ttlMs = opts.ttlMs ?? DEFAULT_LEASE_TTL_MS;
    this.marginMs = opts.marginMs ?? Math.floor(this.ttlMs / 5);
    if (this.marginMs >= this.ttlMs / 3) throw new RangeError('lease margin must be under a third of its ttl');
    this.log = componentLogger(opts.log, 'lease');
  }

  /** Takes the first step at once, then one every ttl/3. */
  async start(): Promise<void> {
    await this.step();
    this.timer = this.opts.clock.every(Math.floor(this.ttlMs / 3), () => this.step());
  }

  /** Whether this controller may act as leader right now. */
  isLeader(): boolean {
    return this.held !== undefined && this.opts.clock.now() < this.held.until;
  }

  /**
   * The epoch to stamp on a work-loop write, or NOT_LEADER (retryable) when this controller
   * does not hold the lease or its time ran out. Call it right before each write.
   */
  fence(): number {
    const held = this.held;
    if (held === undefined) {
      throw new CertfleetError(ErrorCode.NotLeader, `not the leader${this.leader ? ` (${this.leader.holder} leads)` : ''}`, { retryable: true });
    }
    if (this.opts.clock.now() >= held.until) {
      this.depose('lease not renewed in time');
      throw new CertfleetError(ErrorCode.NotLeader, 'leader lease ran out before it was renewed', { retryable: true });
    }
    return held.epoch;
  }

  view(): LeaseView {
    const leading = this.isLeader();
    return {
      self: this.self,
      role: leading ? 'leader' : 'follower',
      epoch: leading ? this.held?.epoch : undefined,
      leader: this.leader && { holder: this.leader.holder, address: this.leader.address, epoch: this.leader.epoch, renewedAt: this.leader.renewedAt },
      until: leading ? this.held?.until : this.followUntil,
    };
  }

  /**
   * One lease step: read, decide, write. Never throws: a failed read or write is logged
   * and the holder keeps acting only until its time runs out.
   */
  step(): Promise<void> {
    if (this.running !== undefined) return this.running;
    this.running = this.stepOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  private async stepOnce(): Promise<void> {
    if (this.stopped) return;
    const { clock } = this.opts;
    if (this.held !== undefined && clock.now() >= this.held.until) this.depose('lease not renewed in time');
    let current: { value: LeaseRecord; revision: number } | null;
    try {
      current = await this.opts.kv.get(LEASE_KEY);
    } catch (err) {
      this.log.warn({ [LogKey.err]: (err as Error).message }, 'lease not read');
      return;
    }
    const now = clock.now();
    if (current !== null && this.seen?.revision !== current.revision) this.seen = { revision: current.revision, firstSeenAt: now };
    const observed: LeaseObservation = {
      current: current === null ? null : { record: current.value, revision: current.revision },
      firstSeenAt: this.seen?.firstSeenAt ?? now,
    };
    if (current !== null) this.leader = current.value;
    const action = decideLease({ self: this.self, now, ttlMs: this.ttlMs, observed, heldRevision: this.held?.revision, exclusive: this.opts.exclusive });
    if (action.kind === 'follow') {
      if (this.held !== undefined) this.depose(action.why);
      this.followUntil = action.retryAt;
      return;
    }
    const record: LeaseRecord = {
      holder: this.self,
      epoch: action.epoch,
      address: this.opts.address,
      renewedAt: isoAt(now),
      ttlMs: this.ttlMs,
    };
    const startedAt = clock.now();
    let revision: number;
    try {
      revision = await this.opts.kv.update(LEASE_KEY, record, action.expectedRevision);
    } catch (err) {
      if (err instanceof CertfleetError && err.code === ErrorCode.StoreConflict) {
        // Someone wrote between our read and our write: they won this step.
        if (this.held !== undefined) this.depose('another controller wrote the lease');
        return;
      }
      this.log.warn({ [LogKey.err]: (err as Error).message, action: action.kind }, 'lease not written');
      return;
    }
    if (this.stopped) return;
    const wasLeader = this.held !== undefined;
    this.held = { revision, epoch: action.epoch, until: leaderUntil(startedAt, this.ttlMs, this.marginMs) };
    this.seen = { revision, firstSeenAt: startedAt };
    this.leader = record;
    this.followUntil = undefined;
    if (!wasLeader) {
      this.log.info({ epoch: action.epoch, why: action.why }, 'elected leader');
      this.opts.onElected?.(action.epoch);
    }
  }

  private depose(why: string): void {
    if (this.held === undefined) return;
    const epoch = this.held.epoch;
    this.held = undefined;
    this.log.warn({ epoch, why }, 'no longer leader');
    this.opts.onDeposed?.(why);
  }

  /**
   * Stops taking steps. A holder marks the record released (compare-and-set on its own
   * revision) so another controller takes over at once rather than after a ttl.
   */
  async stop(): Promise<void> {
    this.timer?.stop();
    this.stopped = true;
    await this.running;
    const held = this.held;
    if (held === undefined) return;
    this.depose('stopping');
    const record = this.leader;
    if (record === undefined) return;
    try {
      await this.opts.kv.update(LEASE_KEY, { ...record, released: true, renewedAt: isoAt(this.opts.clock.now()) }, held.revision);
      this.log.info({ epoch: held.epoch }, 'lease released');
    } catch (err) {
      this.log.warn({ [LogKey.err]: (err as Error).message }, 'lease not released');
    }
  }
}

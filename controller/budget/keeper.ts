/**
 * The budget with its persistence: state loaded from the NATS `budgets` bucket at start
 * and written back after every change, so a restarted controller remembers what it spent.
 * Writes are serialised and use compare-and-set; on a conflict (another controller wrote
 * meanwhile) the stored state wins for buckets it spent more from — we keep the lower level
 * of each bucket, which never over-spends.
 */
import type { Logger } from 'pino';
import type { Clock } from '../../shared/clock/index.js';
import { isCertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { openKv, type JsonKv, type NatsHandle } from '../../shared/nats/index.js';
import { recordParser } from '../../shared/records/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { z } from 'zod';
import { Budget, type BudgetConfig, type BudgetRequest, type BucketLevel, type CheckResult, type Spend, type BudgetState } from './budget.js';
import { LogKey } from '../../shared/log/index.js';

/** A value of the `budgets` bucket, checked like every record read from NATS. */
const budgetStateSchema = z.strictObject({
  version: z.literal(1),
  buckets: z.record(z.string().min(1).max(512), z.strictObject({ level: z.number().finite(), at: z.number().finite() })),
});
const parseBudgetState = recordParser(budgetStateSchema);

export class BudgetKeeper {
  private revision = 0;
  private saving: Promise<void> = Promise.resolve();
  /** A write is queued and has not started yet (it will take later changes too). */
  private writeQueued = false;
  private fence: (() => unknown) | undefined;

  private constructor(
    readonly budget: Budget,
    readonly preset: string,
    private readonly kv: JsonKv<BudgetState>,
    private readonly key: string,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /**
   * Loads the stored state of `accountId` (or starts full). With `fence` (the leader
   * lease's), every write asks it first: a follower or deposed leader writes nothing.
   */
  static async open(nats: NatsHandle, cfg: BudgetConfig, accountId: string, clock: Clock, log: Logger, fence?: () => unknown): Promise<BudgetKeeper> {
    const keeper = await BudgetKeeper.load(nats, cfg, accountId, clock, log);
    keeper.fence = fence;
    return keeper;
  }

  private static async load(nats: NatsHandle, cfg: BudgetConfig, accountId: string, clock: Clock, log: Logger): Promise<BudgetKeeper> {
    const kv = await openKv<BudgetState>(nats, Bucket.budgets, { create: false, parse: parseBudgetState });
    let stored: { value: BudgetState; revision: number } | null;
    try {
      stored = await kv.get(accountId);
    } catch (err) {
      if (!isCertfleetError(err, ErrorCode.StoreCorrupt)) throw err;
      // Logged and counted by the KV view. Starting full is what an absent record means
      // too; the next change overwrites the bad record (compare-and-set on its revision).
      const revision = err.details['revision'];
      log.error({ account: accountId }, 'stored budget state is malformed; starting from full budgets');
      const keeper = new BudgetKeeper(Budget.fromConfig(cfg), cfg.preset, kv, accountId, clock, log);
      keeper.revision = typeof revision === 'number' ? revision : 0;
      return keeper;
    }
    const keeper = new BudgetKeeper(Budget.fromConfig(cfg, stored?.value), cfg.preset, kv, accountId, clock, log);
    keeper.revision = stored?.revision ?? 0;
    return keeper;
  }

  /**
   * Takes the stored state as it is now (a new leader, at election: the previous leader
   * spent from the same buckets). Keeps the lower level of each bucket of the two, which
   * never over-spends. A malformed record changes nothing; NATS errors propagate.
   */
  async reload(): Promise<void> {
    await this.saving;
    let stored: { value: BudgetState; revision: number } | null;
    try {
      stored = await this.kv.get(this.key);
    } catch (err) {
      if (!isCertfleetError(err, ErrorCode.StoreCorrupt)) throw err;
      const revision = err.details['revision'];
      if (typeof revision === 'number') this.revision = revision;
      return;
    }
    if (stored === null) return;
    const state = this.budget.toJSON(this.clock.now());
    for (const [id, b] of Object.entries(stored.value.buckets)) {
      const mine = state.buckets[id];
      if (!mine || b.level < mine.level) state.buckets[id] = b;
    }
    this.budget.restore(state);
    this.revision = stored.revision;
  }

  check(req: BudgetRequest): CheckResult {
    return this.budget.check(req, this.clock.now());
  }

  commit(spend: Spend): void {
    if (spend.items.length === 0) return;
    this.budget.commit(spend, this.clock.now());
    this.save();
  }

  refund(spend: Spend): void {
    if (spend.items.length === 0) return;
    this.budget.refund(spend, this.clock.now());
    this.save();
  }

  recordAuthorizationFailure(identifier: string): void {
    this.budget.recordAuthorizationFailure(identifier, this.clock.now());
    this.save();
  }

  levels(): BucketLevel[] {
    return this.budget.levels(this.clock.now());
  }

  /** Resolves when every change so far is written (or its write failed and was logged). */
  flushed(): Promise<void> {
    return this.saving;
  }

  private save(): void {
    // One write waiting is enough: it serialises the state when it starts, so it carries
    // every change made before then. A write per change serialised the whole state each
    // time (at 10,000 failing certificates a bucket per identifier: ~150 ms of the thread
    // and a large value per write, several per failed order; issue #13, burst).
    if (this.writeQueued) return;
    this.writeQueued = true;
    this.saving = this.saving.then(() => {
      this.writeQueued = false;
      return this.write();
    });
  }

  private async write(): Promise<void> {
    const state = this.budget.toJSON(this.clock.now());
    try {
      this.fence?.();
      this.revision = this.revision === 0 ? await this.kv.put(this.key, state) : await this.kv.update(this.key, state, this.revision);
    } catch (err) {
      if (isCertfleetError(err, ErrorCode.StoreConflict)) {
        // Another controller spent meanwhile: merge by keeping the lower level per bucket.
        const theirs = await this.kv.get(this.key).catch((e: unknown) => {
          // Someone wrote a malformed record (logged by the KV view): ours replaces it.
          if (!isCertfleetError(e, ErrorCode.StoreCorrupt)) throw e;
          const revision = e.details['revision'];
          return typeof revision === 'number' ? { value: { version: 1 as const, buckets: {} }, revision } : null;
        });
        if (theirs) {
          for (const [id, b] of Object.entries(theirs.value.buckets)) {
            const mine = state.buckets[id];
            if (!mine || b.level < mine.level) state.buckets[id] = b;
          }
          this.budget.restore(state);
          this.revision = await this.kv.update(this.key, state, theirs.revision).catch(() => theirs.revision);
          return;
        }
      }
      // NATS away: the in-memory budget still enforces; the next change writes again.
      this.log.warn({ [LogKey.err]: (err as Error).message }, 'budget state not saved');
    }
  }
}

/**
 * What a controller does when it becomes leader and when it stops being one (issue #12,
 * docs/high-availability.md), and the gate the work loop asks before starting anything.
 *
 *   follower ──elected(epoch)──► electing: the election steps run in order
 *                                  (each failure logged; the rest still run)
 *                                     │ all ran, still leader of that epoch
 *                                     ▼
 *                                 active: the onActive steps (kick the loop), then the work
 *                                 loop, janitors, spool, notifications run
 *   any ──deposed(why)──► follower: the deposition steps run; nothing new starts
 *                                  (work in flight dies at its next fence)
 *
 * `active()` is true only while the lease is held AND the election steps of the epoch held
 * now have finished: a new leader must reload the budgets and re-sign the desired pointers
 * before it spends or orders. Steps run one at a time, in the order events arrived.
 */
import { LogKey, type Logger } from '../../shared/log/index.js';

/** One named step; its failure is logged and the next step runs. */
export interface LeadershipStep {
  name: string;
  run: (epoch: number) => unknown;
}

/** The lease as the leadership sees it (LeaderLease implements it). */
export interface LeaseState {
  isLeader(): boolean;
  view(): { epoch: number | undefined };
}

export interface LeadershipOptions {
  lease: LeaseState;
  log: Logger;
  /** Run in order at each election, with the new epoch. */
  onElected: readonly LeadershipStep[];
  /**
   * Run in order once the election steps are done and work may start (`active()` is true
   * for them): kicking the work loop belongs here, not in `onElected`.
   */
  onActive?: readonly LeadershipStep[];
  /** Run in order at each deposition (epoch: the one lost). */
  onDeposed: readonly LeadershipStep[];
}

export class Leadership {
  /** The epoch whose election steps have all run; undefined while none has. */
  private readyEpoch: number | undefined;
  private heldEpoch: number | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly opts: LeadershipOptions) {}

  /** Whether work may start now: leader, and the election steps of this epoch done. */
  active(): boolean {
    return this.opts.lease.isLeader() && this.readyEpoch !== undefined && this.readyEpoch === this.opts.lease.view().epoch;
  }

  /** The lease's onElected. Never throws. */
  elected(epoch: number): void {
    this.heldEpoch = epoch;
    this.readyEpoch = undefined;
    this.enqueue(async () => {
      for (const step of this.opts.onElected) {
        // Deposed (or elected again) meanwhile: the rest belongs to nobody.
        if (this.heldEpoch !== epoch || !this.opts.lease.isLeader()) {
          this.opts.log.info({ epoch, step: step.name }, 'election steps abandoned');
          return;
        }
        await this.runStep(step, epoch);
      }
      if (this.heldEpoch === epoch && this.opts.lease.isLeader()) {
        this.readyEpoch = epoch;
        this.opts.log.info({ epoch }, 'leading');
        for (const step of this.opts.onActive ?? []) await this.runStep(step, epoch);
      }
    });
  }

  /** The lease's onDeposed. Never throws. */
  deposed(why: string): void {
    const epoch = this.heldEpoch ?? 0;
    this.heldEpoch = undefined;
    this.readyEpoch = undefined;
    this.opts.log.info({ epoch, why }, 'following');
    this.enqueue(async () => {
      for (const step of this.opts.onDeposed) await this.runStep(step, epoch);
    });
  }

  /** Resolves when every step queued so far has run (tests, graceful stop). */
  settled(): Promise<void> {
    return this.queue;
  }

  private enqueue(fn: () => Promise<void>): void {
    this.queue = this.queue.then(fn).catch((err: unknown) => this.opts.log.error({ [LogKey.err]: (err as Error).message }, 'leadership step failed'));
  }

  private async runStep(step: LeadershipStep, epoch: number): Promise<void> {
    try {
      await step.run(epoch);
    } catch (err) {
      this.opts.log.warn({ epoch, step: step.name, [LogKey.err]: (err as Error).message }, 'leadership step failed');
    }
  }
}

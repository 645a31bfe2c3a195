/**
 * The leader side: carry out the intents followers write.
 *
 * Runs on every controller and acts only while `leader.isLeader()`. It keeps the bucket's
 * current records from the process's one watch ({@link IntentExecutor.onChange}); on each
 * change while leading, and on each tick (which also notices becoming leader and so takes
 * every pending intent written meanwhile), it decides each record (./record.ts
 * decideIntent) and takes the step: claim with compare-and-set at the revision it read
 * (stamped with the epoch from `leader.fence()`), run the same OperatorBackend method the
 * API would have run with the operator as actor, then write the answer with
 * compare-and-set on the claim's revision, fenced again right before. A leader deposed
 * mid-call writes nothing; the next leader answers that intent INTENT_UNANSWERED and never
 * runs it again. Refused intents (unsigned, badly signed, too old, replayed) are answered
 * RECORD_REFUSED, logged (`intent refused`, with the reason, never the record) and counted.
 * Every few minutes it deletes keys older than `sweepAfterMs`.
 */
import type { Clock, Timer } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import type { JsonKv } from '../../shared/nats/index.js';
import { verifyRecord, type TrustedKeys } from '../../shared/signing/index.js';
import type { OperatorBackend } from '../api/index.js';
import type { IntentSigner } from './board.js';
import { FORWARDED } from './methods.js';
import { answered, claimed, decideIntent, DEFAULT_SWEEP_AFTER_MS, errorToWire, INTENT_MAX_AGE_MS, sweepable, type IntentRecord, type WireError } from './record.js';
import { seal } from './seal.js';

/** What the intents need of the leader lease (controller/lease LeaderLease satisfies it). */
export interface LeaderHandle {
  isLeader(): boolean;
  /** The epoch to stamp on a write; NOT_LEADER when this controller may not write. */
  fence(): number;
  /** This controller's id (name#incarnation). */
  readonly self: string;
}

export interface IntentExecutorOptions {
  kv: JsonKv<IntentRecord>;
  signer: IntentSigner;
  keys: TrustedKeys;
  backend: OperatorBackend;
  leader: LeaderHandle;
  clock: Clock;
  log: Logger;
  /** How often to look for intents to take (and notice becoming leader); default 1 s. */
  tickMs?: number;
  /** Intents older than this are refused; default 2 min. */
  maxAgeMs?: number;
  /** Keys older than this are swept; default 10 min. */
  sweepAfterMs?: number;
  /** How often to sweep; default 1 min. */
  sweepEveryMs?: number;
}

/** Counts since start, for status and tests. */
export interface IntentStats {
  ran: number;
  refused: number;
  interrupted: number;
  swept: number;
}

/** Carries out intents while this controller leads; see the module comment. */
export class IntentExecutor {
  private readonly known = new Map<string, { value: IntentRecord; revision: number }>();
  /** Keys with a step in progress here (claim, run, answer, refusal). */
  private readonly busy = new Set<string>();
  /** Ids answered here, with when: a pending record with one of them is a replay. */
  private readonly answeredAt = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly log: Logger;
  private readonly counts: IntentStats = { ran: 0, refused: 0, interrupted: 0, swept: 0 };
  private timers: Timer[] = [];
  private leading = false;
  private stopped = false;

  constructor(private readonly opts: IntentExecutorOptions) {
    this.log = componentLogger(opts.log, 'intents');
  }

  start(): void {
    this.timers = [this.opts.clock.every(this.opts.tickMs ?? 1000, () => this.tick()), this.opts.clock.every(this.opts.sweepEveryMs ?? 60_000, () => this.sweep())];
  }

  stats(): IntentStats {
    return { ...this.counts };
  }

  /** Feeds a change of the bucket (from the process's one watch). Never throws. */
  onChange(key: string, value: IntentRecord | null, revision: number): void {
    if (value === null) {
      this.known.delete(key);
      return;
    }
    this.known.set(key, { value, revision });
    if (this.opts.leader.isLeader()) this.consider(key);
  }

  /** Notices becoming (or no longer being) leader and considers every known record while leading. */
  tick(): void {
    if (this.stopped) return;
    const leading = this.opts.leader.isLeader();
    if (leading && !this.leading) this.log.info({ [LogKey.pending]: [...this.known.values()].filter((k) => k.value.state !== 'done').length }, 'taking intents');
    this.leading = leading;
    if (!leading) return;
    for (const key of this.known.keys()) this.consider(key);
  }

  private consider(key: string): void {
    if (this.stopped || this.busy.has(key)) return;
    const current = this.known.get(key);
    if (current === undefined) return;
    let epoch: number;
    try {
      epoch = this.opts.leader.fence();
    } catch {
      return;
    }
    const now = this.opts.clock.now();
    const verdict = verifyRecord('intent', current.value, this.opts.keys);
    const action = decideIntent(current.value, verdict, { now, epoch, running: this.busy, answered: new Set(this.answeredAt.keys()), maxAgeMs: this.opts.maxAgeMs ?? INTENT_MAX_AGE_MS });
    if (action.kind === 'ignore') return;
    this.busy.add(key);
    const log = this.log.child({ [LogKey.intent]: key, [LogKey.method]: current.value.method });
    let step: Promise<void>;
    switch (action.kind) {
      case 'run':
        step = this.run(current, epoch, log);
        break;
      case 'refuse':
        this.counts.refused++;
        log.warn({ [LogKey.reason]: action.why, from: current.value.from }, 'intent refused');
        step = this.answer(current, { code: ErrorCode.RecordRefused, message: `intent refused by the leader: ${action.why}`, retryable: false, details: { intent: key } }, log);
        break;
      case 'interrupted':
        this.counts.interrupted++;
        log.warn({ [LogKey.reason]: action.why }, 'intent interrupted');
        step = this.answer(
          current,
          { code: ErrorCode.IntentUnanswered, message: `the request was ${action.why}; it may have been carried out: check before trying again`, retryable: false, details: { intent: key, ...(current.value.by ? { leader: current.value.by } : {}) } },
          log,
        );
        break;
    }
    const tracked = step
      .catch((err: unknown) => log.warn({ [LogKey.err]: (err as Error).message }, 'intent step failed'))
      .finally(() => {
        this.busy.delete(key);
        this.inFlight.delete(tracked);
      });
    this.inFlight.add(tracked);
  }

  /** Claims, runs and answers one intent. */
  private async run(current: { value: IntentRecord; revision: number }, epoch: number, log: Logger): Promise<void> {
    const { kv, signer, leader, clock } = this.opts;
    const intent = current.value;
    let takenRevision: number;
    const taken = signer.signAsIs('intent', claimed(intent, leader.self, leader.fence(), clock.now()));
    try {
      takenRevision = await kv.update(intent.id, taken, current.revision);
    } catch (err) {
      // Deleted by its caller (gave up) or taken by someone else in between: not ours.
      if (err instanceof CertfleetError && err.code === ErrorCode.StoreConflict) return;
      throw err;
    }
    this.counts.ran++;
    log.info({ [LogKey.epoch]: epoch, from: intent.from, operator: intent.operator }, 'intent taken');
    let outcome: { result: string } | { error: WireError };
    try {
      const value = await invoke(this.opts.backend, intent);
      outcome = { result: seal(JSON.stringify(value ?? null), intent.replyKey, intent.id) };
    } catch (err) {
      outcome = { error: errorToWire(err) };
      if (!(err instanceof CertfleetError)) log.error({ [LogKey.err]: err }, 'intent call failed');
    }
    this.answeredAt.set(intent.id, clock.now());
    let fenced: number;
    try {
      fenced = leader.fence();
    } catch (err) {
      // Deposed while the call ran: the next leader answers INTENT_UNANSWERED.
      log.warn({ [LogKey.err]: (err as Error).message }, 'intent answer not written: no longer leader');
      return;
    }
    const done = signer.signAsIs('intent', answered({ ...taken, epoch: fenced }, outcome, clock.now()));
    await kv.update(intent.id, done, takenRevision);
    log.info({ [LogKey.code]: 'error' in outcome ? outcome.error.code : 'ok' }, 'intent done');
  }

  /** Answers `current` with `error` without running it (refused or interrupted). */
  private async answer(current: { value: IntentRecord; revision: number }, error: WireError, log: Logger): Promise<void> {
    const { kv, signer, clock, leader } = this.opts;
    leader.fence();
    const done = signer.signAsIs('intent', answered(current.value, { error }, clock.now()));
    try {
      await kv.update(current.value.id, done, current.revision);
    } catch (err) {
      if (err instanceof CertfleetError && err.code === ErrorCode.StoreConflict) return;
      throw err;
    }
    log.info({ [LogKey.code]: error.code }, 'intent answered');
  }

  /** Deletes keys older than sweepAfterMs (callers that gave up, refusals), while leading. */
  async sweep(): Promise<void> {
    if (this.stopped || !this.opts.leader.isLeader()) return;
    const now = this.opts.clock.now();
    const after = this.opts.sweepAfterMs ?? DEFAULT_SWEEP_AFTER_MS;
    for (const [id, at] of this.answeredAt) if (now - at > 2 * (this.opts.maxAgeMs ?? INTENT_MAX_AGE_MS)) this.answeredAt.delete(id);
    let entries: Awaited<ReturnType<JsonKv<IntentRecord>['entries']>>;
    try {
      entries = await this.opts.kv.entries();
    } catch (err) {
      this.log.warn({ [LogKey.err]: (err as Error).message }, 'intents not swept');
      return;
    }
    for (const e of entries) {
      if (this.busy.has(e.key) || !sweepable(e.value, now, after)) continue;
      try {
        await this.opts.kv.delete(e.key, e.revision);
        this.counts.swept++;
      } catch {
        // Written since we listed it: next sweep.
      }
    }
  }

  /** Stops the timers; steps in flight finish (their writes stay fenced). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) t.stop();
    await Promise.allSettled([...this.inFlight]);
  }
}

/** Runs the intent's method on the backend, with the arguments checked again by their schema. */
function invoke(b: OperatorBackend, r: IntentRecord): Promise<unknown> {
  switch (r.method) {
    case 'createEnrollmentToken':
      return b.createEnrollmentToken(...FORWARDED.createEnrollmentToken.args.parse(r.args));
    case 'renew':
      return b.renew(...FORWARDED.renew.args.parse(r.args));
    case 'rollback':
      return b.rollback(...FORWARDED.rollback.args.parse(r.args));
    case 'release':
      return b.release(...FORWARDED.release.args.parse(r.args));
    case 'revoke':
      return b.revoke(...FORWARDED.revoke.args.parse(r.args));
    case 'createOperator':
      return b.createOperator(...FORWARDED.createOperator.args.parse(r.args));
    case 'revokeOperator':
      return b.revokeOperator(...FORWARDED.revokeOperator.args.parse(r.args));
    case 'setOperatorRole':
      return b.setOperatorRole(...FORWARDED.setOperatorRole.args.parse(r.args));
    case 'removeAgent':
      return b.removeAgent(...FORWARDED.removeAgent.args.parse(r.args));
    case 'dryRun':
      return b.dryRun(...FORWARDED.dryRun.args.parse(r.args));
    case 'checkChallenges':
      return b.checkChallenges(...FORWARDED.checkChallenges.args.parse(r.args));
  }
}

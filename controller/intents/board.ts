/**
 * The follower side: hand an operator call to the leader and wait for its answer.
 *
 * `submit` writes a signed pending intent (create-only) under a random key, waits for the
 * leader's signed `done` step on the bucket's watch (one watch per process, fed by
 * {@link IntentBoard.onChange}), deletes the key and answers as the leader's backend did:
 * its return value, or the CertfleetError it threw with the same code, message, details
 * and retryable flag. An answer that is not signed by a controller key, or not for the call
 * this process made, is ignored (and logged): only the leader can answer.
 *
 * When no answer arrives within the deadline:
 *   - still pending: the key is deleted (compare-and-set, so a leader cannot take it after
 *     we gave up) and the call fails NOT_LEADER, retryable: nothing was done;
 *   - taken: INTENT_UNANSWERED, not retryable: a leader started it, it may have been done.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, Timer } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import type { JsonKv } from '../../shared/nats/index.js';
import { canonicalJson, verifyRecord, type TrustedKeys } from '../../shared/signing/index.js';
import { roleFor, type IntentMethod } from './methods.js';
import { DEFAULT_INTENT_TIMEOUT_MS, errorFromWire, pendingIntent, type IntentRecord } from './record.js';
import { newReplyKey, unseal, type ReplyKey } from './seal.js';

/** What the intents need of controller/signing RecordSigner. */
export interface IntentSigner {
  signAsIs<T extends object & { generation: number }>(kind: 'intent', record: T): T & { keyId: string; signature: string };
}

interface Waiter {
  sent: IntentRecord;
  reply: ReplyKey;
  /** The last state seen of our key, and its revision. */
  seen: { state: IntentRecord['state']; revision: number; by?: string | undefined };
  settle: (outcome: { value: unknown } | { error: CertfleetError }) => void;
}

export interface IntentBoardOptions {
  kv: JsonKv<IntentRecord>;
  signer: IntentSigner;
  /** The controllers' record keys (every controller signs with the same ring). */
  keys: TrustedKeys;
  /** This controller's id (LeaderLease.self). */
  self: string;
  clock: Clock;
  log: Logger;
  /**
   * How long `submit` waits for a leader to take the call (default 8 s, under the CLI's
   * 10 s call deadline): an intent no leader took is withdrawn, so it can never run after
   * its caller gave up.
   */
  takeTimeoutMs?: number;
  /** How long it then waits for the answer; default 60 s (15 min for a dry run and a challenge check). */
  timeoutMs?: number;
}

/** Calls that take long on the leader itself (a staging issuance, a challenge round). */
const LONG_METHODS: ReadonlySet<IntentMethod> = new Set<IntentMethod>(['dryRun', 'checkChallenges']);
const LONG_ANSWER_MS = 15 * 60_000;
export const DEFAULT_TAKE_TIMEOUT_MS = 8_000;

/** Hands calls to the leader; see the module comment. */
export class IntentBoard {
  private readonly waiters = new Map<string, Waiter>();
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly takeTimeoutMs: number;
  private stopped = false;

  constructor(private readonly opts: IntentBoardOptions) {
    this.log = componentLogger(opts.log, 'intents');
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_INTENT_TIMEOUT_MS;
    this.takeTimeoutMs = Math.min(opts.takeTimeoutMs ?? DEFAULT_TAKE_TIMEOUT_MS, this.timeoutMs);
  }

  /**
   * Has the leader run `method` with `args` for `operator` ('' for calls without an actor)
   * and answers with its result, or throws its error. NOT_LEADER (retryable) when no
   * leader took it in time, INTENT_UNANSWERED when one took it and did not answer,
   * NATS errors when the intent cannot be written.
   */
  async submit(method: IntentMethod, args: unknown[], operator: string): Promise<unknown> {
    if (this.stopped) throw new CertfleetError(ErrorCode.ControllerUnavailable, 'the controller is stopping', { retryable: true });
    const { kv, clock } = this.opts;
    const id = randomBytes(16).toString('hex');
    const log = this.log.child({ [LogKey.intent]: id, [LogKey.method]: method });
    const reply = newReplyKey();
    const sent = this.opts.signer.signAsIs('intent', pendingIntent({ id, method, args, operator, role: roleFor(method), from: this.opts.self, replyKey: reply.publicKey, now: clock.now() }));
    let timer: Timer | undefined;
    const answer = new Promise<{ value: unknown } | { error: CertfleetError }>((resolve) => {
      this.waiters.set(id, { sent, reply, seen: { state: 'pending', revision: 0 }, settle: resolve });
    });
    try {
      const revision = await kv.update(id, sent, 0);
      const w = this.waiters.get(id);
      if (w && w.seen.revision === 0) w.seen.revision = revision;
      log.info({ operator }, 'intent sent to the leader');
      // First a leader must take it (else it is withdrawn); then it has the answer time.
      const notTaken = new Promise<'timeout'>((resolve) => (timer = clock.after(this.takeTimeoutMs, () => resolve('timeout'))));
      let first = await Promise.race([answer, notTaken]);
      if (first === 'timeout' && this.waiters.get(id)?.seen.state === 'taken') {
        const answerMs = (LONG_METHODS.has(method) ? Math.max(LONG_ANSWER_MS, this.timeoutMs) : this.timeoutMs) - this.takeTimeoutMs;
        const notAnswered = new Promise<'timeout'>((resolve) => (timer = clock.after(answerMs, () => resolve('timeout'))));
        first = await Promise.race([answer, notAnswered]);
      }
      const outcome = first === 'timeout' ? await this.onTimeout(id, log) : first;
      if ('error' in outcome) throw outcome.error;
      return outcome.value;
    } finally {
      timer?.stop();
      this.waiters.delete(id);
    }
  }

  /** Feeds a change of the bucket (from the process's one watch). Never throws. */
  onChange(key: string, value: IntentRecord | null, revision: number): void {
    const w = this.waiters.get(key);
    if (w === undefined || value === null) return;
    // The revision always (withdrawing is compare-and-set on the latest); the state only
    // from records a controller signed, so a forged `taken` cannot turn NOT_LEADER into
    // INTENT_UNANSWERED.
    w.seen.revision = revision;
    if (!verifyRecord('intent', value, this.opts.keys).ok) {
      this.log.warn({ [LogKey.intent]: key, [LogKey.reason]: 'not signed by a controller' }, 'intent answer refused');
      return;
    }
    w.seen = { state: value.state, revision, by: value.by };
    if (value.state !== 'done') return;
    const outcome = this.answerOf(w, value);
    if (outcome === undefined) return;
    w.settle(outcome);
    this.waiters.delete(key);
    // The answer is read: the key has done its job. A failure leaves it to the leader's sweep.
    this.opts.kv.delete(key).catch((err: unknown) => this.log.warn({ [LogKey.intent]: key, [LogKey.err]: (err as Error).message }, 'intent not deleted'));
  }

  /** The caller's outcome from a done record, or undefined (logged) when it is not a valid answer to our call. */
  private answerOf(w: Waiter, done: IntentRecord): { value: unknown } | { error: CertfleetError } | undefined {
    const log = this.log.child({ [LogKey.intent]: w.sent.id });
    const verdict = verifyRecord('intent', done, this.opts.keys);
    if (!verdict.ok) {
      log.warn({ [LogKey.reason]: verdict.message }, 'intent answer refused');
      return undefined;
    }
    const same = (r: IntentRecord): string => canonicalJson([r.id, r.method, r.args, r.operator, r.createdAt, r.from, r.replyKey]);
    if (same(done) !== same(w.sent)) {
      log.warn({ [LogKey.reason]: 'answers another call' }, 'intent answer refused');
      return undefined;
    }
    if (done.error !== undefined) return { error: errorFromWire(done.error) };
    try {
      return { value: JSON.parse(unseal(done.result ?? '', w.reply, w.sent.id)) as unknown };
    } catch {
      log.warn({ [LogKey.reason]: 'result not sealed for this call' }, 'intent answer refused');
      return undefined;
    }
  }

  private async onTimeout(id: string, log: Logger): Promise<{ value: unknown } | { error: CertfleetError }> {
    const w = this.waiters.get(id);
    const secs = Math.round((w?.seen.state === 'taken' ? this.timeoutMs : this.takeTimeoutMs) / 1000);
    const unanswered = (by: string | undefined): { error: CertfleetError } => {
      log.warn({ by }, 'intent taken but not answered');
      return {
        error: new CertfleetError(
          ErrorCode.IntentUnanswered,
          `the leader${by ? ` ${by}` : ''} took the request but did not answer within ${secs} s; it may have been carried out: check (certfleet show, certfleet events) before trying again`,
          { details: { intent: id, ...(by ? { leader: by } : {}) } },
        ),
      };
    };
    if (w === undefined) return unanswered(undefined);
    if (w.seen.state === 'taken') return unanswered(w.seen.by);
    // Still pending as far as we saw: withdraw it unless a leader took it meanwhile.
    try {
      await this.opts.kv.delete(id, w.seen.revision);
    } catch (err) {
      if (!(err instanceof CertfleetError && err.code === ErrorCode.StoreConflict)) throw err;
      const now = await this.opts.kv.get(id).catch(() => null);
      if (now?.value.state === 'done') {
        const outcome = this.answerOf(w, now.value);
        if (outcome !== undefined) {
          await this.opts.kv.delete(id).catch(() => undefined);
          return outcome;
        }
      }
      return unanswered(now?.value.by);
    }
    log.warn('no leader took the intent');
    return {
      error: new CertfleetError(ErrorCode.NotLeader, `no leader took the request within ${secs} s (certfleet status names the leader, if any)`, { retryable: true, details: { intent: id } }),
    };
  }

  /**
   * Refuses new calls and fails the ones waiting with INTENT_UNANSWERED (not retryable:
   * the leader may still carry them out, so an automatic retry could do them twice).
   */
  stop(): void {
    this.stopped = true;
    for (const w of this.waiters.values()) {
      w.settle({ error: new CertfleetError(ErrorCode.IntentUnanswered, 'the controller stopped before the leader answered; the request may still be carried out: check before trying again', { details: { intent: w.sent.id } }) });
    }
    this.waiters.clear();
  }
}

/**
 * Following a JetStream stream across outages, and one-shot scans of it.
 *
 * A follower reads a stream through an ordered push consumer (no acks, in order, flow
 * controlled) and keeps doing so while servers come and go. Why our own loop around the
 * library consumer: after a server restart the ephemeral consumer is gone, and nats.js
 * only notices after two missed idle heartbeats (a minute); and when nothing had been
 * delivered yet it would recreate the consumer from stream sequence 1, replaying
 * everything. So on every reconnect we recreate the consumer ourselves from the last
 * sequence we delivered, retrying with backoff until JetStream answers.
 *
 *   start ──> session (consumer N) ──reconnect / consumer closed──> resuming ──ok──> session (N+1)
 *                  │                                                  │  └─fail─> wait 0.25..5 s, retry
 *                  └──────────────────────── stop() ──────────────────┴──> stopped
 */
import {
  DeliverPolicy,
  type ConsumerMessages,
  type JsMsg,
  type OrderedPushConsumerOptions,
  type PushConsumer,
} from '@nats-io/jetstream';
import type { Timer } from '../clock/index.js';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { LogKey, type Logger } from '../log/index.js';
import type { NatsHandleImpl } from './connection.js';
import { isStreamNotFound, toNatsError } from './errors.js';

/** Where a follower starts: the last message of every subject, or a stream sequence. */
export type FollowStart = { kind: 'lastPerSubject' } | { kind: 'seq'; seq: number } | { kind: 'time'; at: Date };

export interface FollowOptions {
  stream: string;
  filterSubject: string;
  start: FollowStart;
  /** Names the follower in logs ("kv watch certfleet_desired"). */
  what: string;
  /**
   * Called for each message, in stream order within a session. After a resume a message
   * may come again in `lastPerSubject` mode; sequences never go backwards in `seq` mode.
   * Must not throw (errors are logged and the message is skipped).
   */
  onMessage(m: JsMsg): void;
  /**
   * The stream's last sequence went below what we had delivered: it was deleted and
   * recreated. The follower starts over from `start` (or, in seq/time mode, from the
   * stream's end).
   */
  onStreamReset?(): void;
}

export interface Follower {
  /** Resolves once the backlog present at start has been delivered (or on stop). */
  readonly caughtUp: Promise<void>;
  /** Stops following; no onMessage call happens after this resolves. Idempotent. */
  stop(): Promise<void>;
}

const RESUME_BACKOFF_MS = [250, 500, 1000, 2000, 5000];

/**
 * Our consumers keep their state in server memory: the client knows where it stands
 * (the cursor), so nothing needs to survive a server restart, and thousands of agent
 * watchers then cost the server no disk writes. nats.js passes unknown consumer
 * settings through, so the option is added here although its type does not list it.
 */
const MEMORY_CONSUMER = { mem_storage: true } as Partial<OrderedPushConsumerOptions>;

/**
 * Starts following. Rejects (mapped to CertfleetError) when the first consumer cannot be
 * created: NATS_UNAVAILABLE, retryable, when the stream does not exist or the server is
 * away. After that, failures are retried inside; the follower never gives up until stop().
 */
export async function follow(h: NatsHandleImpl, opts: FollowOptions): Promise<Follower> {
  const f = new StreamFollower(h, opts);
  await f.start();
  return f;
}

class StreamFollower implements Follower {
  readonly caughtUp: Promise<void>;
  private markCaughtUp!: () => void;
  private isCaughtUp = false;
  /** Highest stream sequence delivered so far (0: none). */
  private cursor = 0;
  private session: { consumer: PushConsumer; messages: ConsumerMessages; generation: number } | undefined;
  private generation = 0;
  private stopped = false;
  private resuming: Promise<void> | undefined;
  private resumeAgain = false;
  private wake: (() => void) | undefined;
  private unlisten: (() => void) | undefined;
  private readonly log: Logger;

  constructor(
    private readonly h: NatsHandleImpl,
    private readonly opts: FollowOptions,
  ) {
    this.log = h.log.child({ [LogKey.follow]: opts.what });
    this.caughtUp = new Promise<void>((resolve) => {
      this.markCaughtUp = () => {
        this.isCaughtUp = true;
        resolve();
      };
    });
  }

  async start(): Promise<void> {
    try {
      await this.openSession();
    } catch (err) {
      throw this.startError(err);
    }
    const unlisten = this.h.onConnectionChange((connected) => {
      if (connected) this.resume('reconnected');
    });
    const untrack = this.h.track(() => this.stop());
    this.unlisten = () => {
      unlisten();
      untrack();
    };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.unlisten?.();
    this.wake?.();
    this.closeSession();
    await this.resuming;
    this.markCaughtUp();
  }

  private startError(err: unknown): CertfleetError {
    if (isStreamNotFound(err)) {
      return new CertfleetError(ErrorCode.NatsUnavailable, `${this.opts.what}: stream ${this.opts.stream} does not exist`, {
        cause: err,
        retryable: true,
        details: { stream: this.opts.stream },
      });
    }
    return toNatsError(err, this.opts.what, { stream: this.opts.stream });
  }

  /** Where the next session starts: right after what we delivered, once we delivered anything. */
  private consumerOptions(): Partial<OrderedPushConsumerOptions> {
    const base = { filter_subjects: this.opts.filterSubject, ...MEMORY_CONSUMER };
    const start = this.opts.start;
    if (this.cursor > 0 && (this.isCaughtUp || start.kind !== 'lastPerSubject')) {
      return { ...base, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.cursor + 1 };
    }
    switch (start.kind) {
      case 'lastPerSubject':
        return { ...base, deliver_policy: DeliverPolicy.LastPerSubject };
      case 'seq':
        return { ...base, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, start.seq) };
      case 'time':
        return { ...base, deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.at.toISOString() };
    }
  }

  private async openSession(): Promise<void> {
    const generation = ++this.generation;
    const consumer = await this.h.js.consumers.getPushConsumer(this.opts.stream, this.consumerOptions());
    if (this.stopped || generation !== this.generation) {
      consumer.delete().catch(() => undefined);
      return;
    }
    const info = await consumer.info(true);
    const messages = await consumer.consume({ callback: (m) => this.deliver(generation, m) });
    if (this.stopped || generation !== this.generation) {
      messages.stop();
      consumer.delete().catch(() => undefined);
      return;
    }
    this.session = { consumer, messages, generation };
    if (info.num_pending === 0 && !this.isCaughtUp) this.markCaughtUp();
    void messages.closed().then((err) => {
      if (this.stopped || this.session?.generation !== generation) return;
      this.log.warn({ [LogKey.err]: err }, 'consumer closed, resuming');
      this.resume('consumer closed');
    });
  }

  private deliver(generation: number, m: JsMsg): void {
    if (this.stopped || generation !== this.generation) return;
    // In seq mode a resumed or library-recreated consumer may overlap what we delivered.
    if (m.seq <= this.cursor && (this.isCaughtUp || this.opts.start.kind !== 'lastPerSubject')) return;
    this.cursor = Math.max(this.cursor, m.seq);
    try {
      this.opts.onMessage(m);
    } catch (err) {
      this.log.error({ [LogKey.err]: err, [LogKey.seq]: m.seq }, 'message handler failed');
    }
    if (m.info.pending === 0 && !this.isCaughtUp) this.markCaughtUp();
  }

  private closeSession(): void {
    const s = this.session;
    this.session = undefined;
    this.generation++;
    if (!s) return;
    s.messages.stop();
    // Best effort: an ephemeral consumer also expires by itself after 5 minutes idle.
    if (this.h.isConnected()) s.consumer.delete().catch(() => undefined);
  }

  private resume(reason: string): void {
    if (this.stopped) return;
    if (this.resuming) {
      // Already resuming: the consumer being created may be on the server we just lost,
      // so go round once more, and do it now rather than at the end of a backoff.
      this.resumeAgain = true;
      this.wake?.();
      return;
    }
    this.resuming = this.resumeLoop(reason).finally(() => {
      this.resuming = undefined;
    });
  }

  private async resumeLoop(reason: string): Promise<void> {
    this.resumeAgain = false;
    this.closeSession();
    for (let attempt = 0; !this.stopped; attempt++) {
      if (this.h.nc.isClosed()) {
        // The connection is gone for good (closed under us): nothing to resume on.
        this.log.warn('connection closed, follower stopped');
        this.stopped = true;
        this.unlisten?.();
        this.markCaughtUp();
        return;
      }
      try {
        await this.checkStreamReset();
        const from = this.cursor + 1;
        await this.openSession();
        if (this.stopped) {
          this.closeSession();
          return;
        }
        if (this.resumeAgain) {
          this.resumeAgain = false;
          this.closeSession();
          continue;
        }
        this.log.info({ [LogKey.reason]: reason, [LogKey.attempts]: attempt + 1, [LogKey.from]: from }, 'follower resumed');
        return;
      } catch (err) {
        const e = this.startError(err);
        const log = attempt === 0 ? this.log.warn.bind(this.log) : this.log.debug.bind(this.log);
        log({ [LogKey.err]: e, [LogKey.code]: e.code, [LogKey.attempt]: attempt }, 'follower resume failed, retrying');
        await this.sleep(RESUME_BACKOFF_MS[Math.min(attempt, RESUME_BACKOFF_MS.length - 1)] ?? 5000);
      }
    }
  }

  private async checkStreamReset(): Promise<void> {
    if (this.cursor === 0) return;
    const si = await this.h.jsm.streams.info(this.opts.stream);
    if (si.state.last_seq >= this.cursor) return;
    this.log.warn({ [LogKey.lastSeq]: si.state.last_seq, [LogKey.cursor]: this.cursor }, 'stream was reset, starting over');
    // A KV watch re-reads every current value; an event follower continues with new events.
    this.cursor = this.opts.start.kind === 'lastPerSubject' ? 0 : si.state.last_seq;
    this.opts.onStreamReset?.();
  }

  /** Waits `ms`, or less when woken by a reconnect or stop(). */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: Timer | undefined = undefined;
      const done = (): void => {
        timer?.stop();
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      timer = this.h.clock.after(ms, done);
      this.wake = done;
    });
  }
}

/**
 * Reads what a stream holds now, once: creates an ordered consumer, hands every message
 * to `onMessage` until the backlog present at creation is delivered, then deletes it.
 * Messages published meanwhile may or may not be included. Fails with NATS_UNAVAILABLE
 * when the stream is missing or the server does not deliver within the request timeout
 * (per message, not in total).
 */
export async function scan(
  h: NatsHandleImpl,
  opts: { stream: string; filterSubject: string; start: FollowStart; what: string; headersOnly?: boolean },
  onMessage: (m: JsMsg) => void,
): Promise<void> {
  const base: Partial<OrderedPushConsumerOptions> = { filter_subjects: opts.filterSubject, ...MEMORY_CONSUMER };
  if (opts.headersOnly === true) base.headers_only = true;
  const start = opts.start;
  const cfg: Partial<OrderedPushConsumerOptions> =
    start.kind === 'lastPerSubject'
      ? { ...base, deliver_policy: DeliverPolicy.LastPerSubject }
      : start.kind === 'seq'
        ? { ...base, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, start.seq) }
        : { ...base, deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.at.toISOString() };
  let consumer: PushConsumer;
  try {
    consumer = await h.js.consumers.getPushConsumer(opts.stream, cfg);
  } catch (err) {
    if (isStreamNotFound(err)) {
      throw new CertfleetError(ErrorCode.NatsUnavailable, `${opts.what}: stream ${opts.stream} does not exist`, {
        cause: err,
        retryable: true,
        details: { stream: opts.stream },
      });
    }
    throw toNatsError(err, opts.what, { stream: opts.stream });
  }
  const info = await consumer.info(true);
  if (info.num_pending === 0) {
    consumer.delete().catch(() => undefined);
    return;
  }
  let messages: ConsumerMessages | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let timer: Timer | undefined;
      const stall = (): void => {
        timer?.stop();
        timer = h.clock.after(h.requestTimeoutMs, () =>
          reject(new CertfleetError(ErrorCode.NatsUnavailable, `${opts.what}: stream stopped delivering`, { retryable: true })),
        );
      };
      stall();
      consumer
        .consume({
          callback: (m) => {
            stall();
            try {
              onMessage(m);
            } catch (err) {
              h.log.error({ [LogKey.err]: err, [LogKey.seq]: m.seq }, 'scan handler failed');
            }
            if (m.info.pending === 0) {
              timer?.stop();
              resolve();
            }
          },
        })
        .then((it) => {
          messages = it;
          void it.closed().then((err) => {
            timer?.stop();
            reject(toNatsError(err ?? new Error('consumer closed'), opts.what));
          });
        }, reject);
    });
  } finally {
    messages?.stop();
    consumer.delete().catch(() => undefined);
  }
}

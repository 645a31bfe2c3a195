/**
 * Webhook delivery: one queue per target, drained by its own loop, so a receiver that is
 * slow or down delays only its own notifications and never the work loop (`notify` only
 * enqueues). Each delivery is retried with exponential backoff on the clock (a 429's or
 * 503's Retry-After is honoured) until it is accepted, refused for good (another 4xx), or
 * `maxAttempts` is spent. A full queue drops its oldest entry, with a warning.
 *
 * Body formats:
 * - `json`: `{source, kind, severity, summary, cert, agent, version, at, details}`
 * - `slack`: an incoming-webhook message `{text}` (Slack, Mattermost, Rocket.Chat)
 * - `alertmanager`: the Alertmanager v2 API body, an array of one alert with labels
 *   `alertname`, `severity`, `cert`, `agent` and annotations `summary`; POST it to
 *   `.../api/v2/alerts`. `endsAt` is `resolveAfter` later, so Alertmanager resolves it
 *   when no repeat arrives.
 *
 * The URL (a Slack webhook URL is a secret) and header values are never logged: log lines
 * name the target.
 */
import type { Clock } from '../../shared/clock/index.js';
import { isoAt } from '../../shared/clock/index.js';
import { LogKey, type Logger } from '../../shared/log/index.js';
import type { Notification, NotificationKind } from './classify.js';

export type WebhookFormat = 'json' | 'slack' | 'alertmanager';

export interface WebhookTarget {
  /** Names the target in logs and metrics (the URL may be secret). */
  name: string;
  url: string;
  format: WebhookFormat;
  /** Extra request headers (e.g. Authorization); values never logged. */
  headers: Record<string, string>;
  /** Kinds sent to this target; all when empty. */
  kinds: NotificationKind[];
  /** Per-request timeout; default 10 s. */
  timeoutMs?: number;
}

export interface DeliveryOptions {
  clock: Clock;
  log: Logger;
  /** Attempts per notification before it is dropped (logged); default 8. */
  maxAttempts?: number;
  /** First retry delay, doubled each attempt up to `maxDelayMs`; default 1 s. */
  baseDelayMs?: number;
  /** Default 5 min. */
  maxDelayMs?: number;
  /** Entries a target's queue holds; default 1,000. */
  queueLimit?: number;
  /** Alertmanager `endsAt` distance; default 1 h. */
  resolveAfterMs?: number;
  /** Called once per delivery outcome (for metrics and tests). Must not throw. */
  onOutcome?: (target: string, outcome: 'delivered' | 'dropped', n: Notification, attempts: number) => void;
}

/** The request body for a target's format. */
export function formatBody(format: WebhookFormat, n: Notification, resolveAfterMs: number): unknown {
  switch (format) {
    case 'slack': {
      const mark = n.severity === 'critical' ? ':rotating_light:' : ':warning:';
      return { text: `${mark} certfleet ${n.kind}: ${n.summary}` };
    }
    case 'alertmanager': {
      const labels: Record<string, string> = {
        alertname: `Certfleet${n.kind.split('-').map((w) => w[0]!.toUpperCase() + w.slice(1)).join('')}`,
        severity: n.severity,
        source: 'certfleet',
      };
      if (n.cert !== undefined) labels['cert'] = n.cert;
      if (n.agent !== undefined) labels['agent'] = n.agent;
      const startsAt = Date.parse(n.at);
      return [{ labels, annotations: { summary: n.summary }, startsAt: n.at, endsAt: isoAt(startsAt + resolveAfterMs) }];
    }
    case 'json':
      return {
        source: 'certfleet',
        kind: n.kind,
        severity: n.severity,
        summary: n.summary,
        ...(n.cert === undefined ? {} : { cert: n.cert }),
        ...(n.agent === undefined ? {} : { agent: n.agent }),
        ...(n.version === undefined ? {} : { version: n.version }),
        at: n.at,
        details: n.details,
      };
  }
}

interface Queued {
  n: Notification;
  attempts: number;
}

/** One target's queue and loop. */
export class WebhookQueue {
  private readonly queue: Queued[] = [];
  private readonly log: Logger;
  private wake: (() => void) | undefined;
  private readonly abort = new AbortController();
  private readonly loop: Promise<void>;

  constructor(
    private readonly target: WebhookTarget,
    private readonly opts: DeliveryOptions,
  ) {
    this.log = opts.log.child({ target: target.name });
    this.loop = this.run();
  }

  /** Whether this target takes notifications of `kind`. */
  wants(kind: NotificationKind): boolean {
    return this.target.kinds.length === 0 || this.target.kinds.includes(kind);
  }

  /** Enqueues; never waits. */
  push(n: Notification): void {
    const limit = this.opts.queueLimit ?? 1000;
    if (this.queue.length >= limit) {
      const dropped = this.queue.shift()!;
      this.log.warn({ kind: dropped.n.kind, [LogKey.cert]: dropped.n.cert }, 'notification queue full; oldest dropped');
      this.opts.onOutcome?.(this.target.name, 'dropped', dropped.n, dropped.attempts);
    }
    this.queue.push({ n, attempts: 0 });
    this.wake?.();
  }

  /** How many notifications wait (for status and tests). */
  get pending(): number {
    return this.queue.length;
  }

  /** Stops the loop; what is still queued is dropped (logged with its count). */
  async stop(): Promise<void> {
    this.abort.abort();
    this.wake?.();
    await this.loop;
    if (this.queue.length > 0) this.log.warn({ count: this.queue.length }, 'notifications not delivered before stop');
  }

  private async run(): Promise<void> {
    const { clock } = this.opts;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const head = this.queue[0];
      if (head === undefined) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      head.attempts++;
      const result = await this.send(head.n);
      if (signal.aborted) return;
      if (result.kind === 'ok' || result.kind === 'refused' || head.attempts >= (this.opts.maxAttempts ?? 8)) {
        this.queue.shift();
        if (result.kind === 'ok') {
          this.log.info({ kind: head.n.kind, [LogKey.cert]: head.n.cert, attempts: head.attempts }, 'notification delivered');
          this.opts.onOutcome?.(this.target.name, 'delivered', head.n, head.attempts);
        } else {
          this.log.warn({ kind: head.n.kind, [LogKey.cert]: head.n.cert, attempts: head.attempts, [LogKey.err]: result.why }, 'notification dropped');
          this.opts.onOutcome?.(this.target.name, 'dropped', head.n, head.attempts);
        }
        continue;
      }
      const backoff = Math.min((this.opts.baseDelayMs ?? 1000) * 2 ** (head.attempts - 1), this.opts.maxDelayMs ?? 300_000);
      const delay = Math.max(backoff, result.retryAfterMs ?? 0);
      this.log.warn({ kind: head.n.kind, attempts: head.attempts, retryInMs: delay, [LogKey.err]: result.why }, 'notification not delivered; will retry');
      await clock.sleep(delay, signal).catch(() => undefined);
    }
  }

  private async send(n: Notification): Promise<{ kind: 'ok' } | { kind: 'retry'; why: string; retryAfterMs?: number } | { kind: 'refused'; why: string }> {
    const { clock } = this.opts;
    const timeout = new AbortController();
    const timer = clock.after(this.target.timeoutMs ?? 10_000, () => timeout.abort());
    const onStop = (): void => timeout.abort();
    this.abort.signal.addEventListener('abort', onStop, { once: true });
    try {
      const res = await fetch(this.target.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'certfleet', ...this.target.headers },
        body: JSON.stringify(formatBody(this.target.format, n, this.opts.resolveAfterMs ?? 3_600_000)),
        signal: timeout.signal,
        redirect: 'error',
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) return { kind: 'ok' };
      const why = `HTTP ${res.status}`;
      if (res.status === 408 || res.status === 429 || res.status >= 500) {
        const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'), clock.now());
        return retryAfterMs === undefined ? { kind: 'retry', why } : { kind: 'retry', why, retryAfterMs };
      }
      return { kind: 'refused', why };
    } catch (err) {
      // Connection refused, timeout, TLS: the receiver may come back.
      const e = err as Error & { cause?: { code?: string } };
      return { kind: 'retry', why: timeout.signal.aborted ? 'timeout' : (e.cause?.code ?? e.message) };
    } finally {
      timer.stop();
      this.abort.signal.removeEventListener('abort', onStop);
    }
  }
}

/** Retry-After as seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, 3_600_000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.min(Math.max(0, at - now), 3_600_000);
}

/**
 * Notifications: tell operators when something will not heal by itself (rules in
 * ./classify.ts), over webhooks (./webhook.ts), de-duplicated, never blocking the caller.
 *
 * Inputs, all synchronous and cheap: `event` (every fleet event the controller emits),
 * `report` (each certificate of each agent report, with what the agent said before) and
 * `life` (the newest version of every certificate, checked periodically by the runtime).
 * A notification whose `dedupKey` was sent within `dedupWindowMs` is dropped; the window
 * is forgotten on restart (a restart may repeat an alert once, never lose one).
 */
import type { FleetEvent } from '../../shared/model/index.js';
import { DEFAULT_AFTER_FAILURES, fromEvent, fromLife, fromReport, type CertificateLife, type Notification, type ReportedCertificate } from './classify.js';
import { WebhookQueue, type DeliveryOptions, type WebhookTarget } from './webhook.js';

export { DEFAULT_AFTER_FAILURES, NOTIFICATION_KINDS, fromEvent, fromLife, fromReport } from './classify.js';
export type { CertificateLife, Notification, NotificationKind, ReportedCertificate } from './classify.js';
export { formatBody, parseRetryAfter, WebhookQueue } from './webhook.js';
export type { DeliveryOptions, WebhookFormat, WebhookTarget } from './webhook.js';

export interface NotifierOptions extends DeliveryOptions {
  targets: WebhookTarget[];
  /** Same alert at most once per this window; default 4 h (Alertmanager's repeat interval). */
  dedupWindowMs?: number;
  /** renewal-failed after this many consecutive failures; default 3. */
  afterFailures?: number;
}

export const DEFAULT_DEDUP_WINDOW_MS = 4 * 3600_000;

export class Notifier {
  private readonly queues: WebhookQueue[];
  private readonly sent = new Map<string, number>();
  private readonly window: number;
  private readonly afterFailures: number;

  constructor(private readonly opts: NotifierOptions) {
    this.queues = opts.targets.map((t) => new WebhookQueue(t, opts));
    this.window = opts.dedupWindowMs ?? DEFAULT_DEDUP_WINDOW_MS;
    this.afterFailures = opts.afterFailures ?? DEFAULT_AFTER_FAILURES;
  }

  /** Whether any target is configured (callers may skip work when not). */
  get enabled(): boolean {
    return this.queues.length > 0;
  }

  event(e: FleetEvent): void {
    const n = fromEvent(e, { afterFailures: this.afterFailures });
    if (n !== undefined) this.send(n);
  }

  report(agent: string, before: ReportedCertificate | undefined, now: ReportedCertificate): void {
    const n = fromReport(agent, before, now, new Date(this.opts.clock.now()).toISOString());
    if (n !== undefined) this.send(n);
  }

  life(certs: CertificateLife[]): void {
    const now = this.opts.clock.now();
    for (const c of certs) {
      const n = fromLife(c, now);
      if (n !== undefined) this.send(n);
    }
  }

  /** De-duplicates and enqueues `n` on every target that wants its kind. */
  send(n: Notification): void {
    if (!this.enabled) return;
    const now = this.opts.clock.now();
    for (const [key, at] of this.sent) if (now - at >= this.window) this.sent.delete(key);
    if (this.sent.has(n.dedupKey)) return;
    this.sent.set(n.dedupKey, now);
    for (const q of this.queues) if (q.wants(n.kind)) q.push(n);
  }

  /** Notifications waiting across all targets. */
  get pending(): number {
    return this.queues.reduce((sum, q) => sum + q.pending, 0);
  }

  async stop(): Promise<void> {
    await Promise.all(this.queues.map((q) => q.stop()));
  }
}

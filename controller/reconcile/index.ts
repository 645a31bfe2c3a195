/**
 * The controller's work loop: the one place that retries. Every `checkInterval` (and
 * when kicked: an agent came online, an issuance finished) it walks the configured
 * certificates, asks the scheduler what each needs, starts issuances within the global
 * concurrency limit (one in flight per certificate), and keeps the desired pointers in
 * NATS equal to the newest stored version.
 *
 * Failures are recorded per certificate with a backoff (scheduler.backoffDelay, or the
 * CA's Retry-After when later); the issuer itself never retries.
 *
 * Per-certificate state:   idle --due--> issuing --ok--> idle (failures = 0)
 *                                          +--error--> idle (failures+1, backoffUntil)
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { ErrorCode, toCertfleetError } from '../../shared/errors/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { EventType } from '../../shared/wire/index.js';
import type { CertificateConfig } from '../config/index.js';
import type { Issuer } from '../issuer/index.js';
import type { DesiredState, EventPublisher } from '../publish/index.js';
import { backoffDelay, decide } from '../scheduler/index.js';
import { CoalescingRunner } from '../../shared/runtime/index.js';
import type { CertStore } from '../store/index.js';

/** What the loop knows about one certificate, for status and `certfleet certs`. */
export interface CertRuntime {
  state: 'pending' | 'issuing' | 'ready' | 'failed';
  failures: number;
  backoffUntil: number;
  lastError: string;
  lastErrorCode: string;
  nextCheck: number;
  reason: string;
  latest: VersionMeta | null;
}

export interface ReconcilerOptions {
  certificates: readonly CertificateConfig[];
  store: CertStore;
  issuer: Issuer;
  desired: DesiredState;
  events: EventPublisher;
  clock: Clock;
  log: Logger;
  intervalMs: number;
  concurrency: number;
}

export class Reconciler {
  private readonly runtime = new Map<string, CertRuntime>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly runner: CoalescingRunner;
  private stopped = false;

  constructor(private readonly opts: ReconcilerOptions) {
    this.runner = new CoalescingRunner(() => this.pass(), opts.log, 'reconcile pass');
    for (const c of opts.certificates) {
      this.runtime.set(c.name, { state: 'pending', failures: 0, backoffUntil: 0, lastError: '', lastErrorCode: '', nextCheck: 0, reason: '', latest: null });
    }
  }

  /** Starts the periodic loop and runs a first pass now. */
  start(): void {
    this.kick();
    this.timer = setInterval(() => this.kick(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Runs a pass soon (coalesced with one already running). */
  kick(): void {
    this.runner.kick();
  }

  /**
   * Forgets the backoff of certificates that failed only because no agent answered
   * HTTP-01 yet: called when an agent comes online.
   */
  agentOnline(): void {
    for (const rt of this.runtime.values()) {
      if (rt.lastErrorCode === ErrorCode.ChallengeNotServed) rt.backoffUntil = 0;
    }
    this.kick();
  }

  /** Loop state of a certificate (undefined for names not in the config). */
  status(name: string): CertRuntime | undefined {
    return this.runtime.get(name);
  }

  private async pass(): Promise<void> {
    for (const cert of this.opts.certificates) {
      if (this.stopped) return;
      try {
        await this.reconcileOne(cert);
      } catch (err) {
        // Store or NATS trouble while reading: try again on the next pass.
        this.opts.log.warn({ cert: cert.name, err: (err as Error).message }, 'reconcile failed');
      }
    }
  }

  private async reconcileOne(cert: CertificateConfig): Promise<void> {
    const rt = this.runtime.get(cert.name);
    if (!rt) return;
    const latest = await this.opts.store.latest(cert.name);
    rt.latest = latest;
    if (latest) {
      const d = this.opts.desired.get(cert.name);
      if (!d || d.version !== latest.version || d.selector !== cert.agents) {
        await this.opts.desired.publish(latest, cert.agents);
        await this.opts.events.emit(EventType.published, { cert: cert.name, version: latest.version, message: `desired version ${latest.version}` });
      }
    }
    if (this.inFlight.has(cert.name)) return;
    const now = this.opts.clock.now();
    const decision = decide({ names: cert.names, keyType: cert.keyType }, latest, now, rt.backoffUntil);
    rt.reason = decision.reason;
    rt.nextCheck = decision.at;
    if (decision.action === 'wait') {
      if (rt.failures === 0) rt.state = latest ? 'ready' : 'pending';
      return;
    }
    if (this.inFlight.size >= this.opts.concurrency) return;
    this.startIssue(cert, rt, latest, decision.reason);
  }

  private startIssue(cert: CertificateConfig, rt: CertRuntime, latest: VersionMeta | null, reason: string): void {
    const log = this.opts.log.child({ cert: cert.name });
    rt.state = 'issuing';
    log.info({ reason }, 'issuance started');
    const job = this.opts.issuer
      .issue({ name: cert.name, names: cert.names, keyType: cert.keyType, selector: cert.agents }, latest?.version ?? 0)
      .then(async (meta) => {
        rt.failures = 0;
        rt.backoffUntil = 0;
        rt.lastError = '';
        rt.lastErrorCode = '';
        rt.latest = meta;
        rt.state = 'ready';
        await this.opts.desired.publish(meta, cert.agents);
        await this.opts.events.emit(EventType.published, { cert: cert.name, version: meta.version, message: `desired version ${meta.version}` });
      })
      .catch(async (err: unknown) => {
        const cf = toCertfleetError(err);
        rt.failures += 1;
        const now = this.opts.clock.now();
        rt.backoffUntil = now + Math.max(backoffDelay(rt.failures), cf.retryAfterMs ?? 0);
        rt.lastError = cf.message;
        rt.lastErrorCode = cf.code;
        rt.state = 'failed';
        log.warn({ code: cf.code, err: cf.message, failures: rt.failures, retryAt: isoAt(rt.backoffUntil) }, 'issuance failed');
        await this.opts.events.emit(EventType.failed, {
          cert: cert.name,
          message: cf.message,
          details: { code: cf.code, retryable: cf.retryable, failures: rt.failures, retryAt: isoAt(rt.backoffUntil), ...cf.details },
        });
      })
      .finally(() => {
        this.inFlight.delete(cert.name);
        this.kick();
      });
    this.inFlight.set(cert.name, job);
  }

  /**
   * Stops the loop and gives issuances in flight up to `graceMs` to end. One still
   * running is abandoned, not lost: its order and key are persisted, and the next start
   * resumes it (controller/issuer).
   */
  async stop(graceMs = 5000): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const running = this.runner.stop();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.allSettled([running, ...this.inFlight.values()]), grace]);
    clearTimeout(timer);
  }
}

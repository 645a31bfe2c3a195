/**
 * The controller's work loop: the one place that retries. Every `checkInterval` (and
 * when kicked: an agent came online, an issuance finished) it walks the configured
 * certificates, asks the scheduler what each needs, starts issuances within the global
 * concurrency limit (one in flight per certificate), and keeps the desired pointers in
 * NATS equal to the newest stored version.
 *
 * Failures are recorded per certificate with a backoff (scheduler.backoffDelay, or the
 * CA's Retry-After when later); the issuer itself never retries. Operator requests and
 * the backoff are durable (intent.ts, store objects `renewals/<name>`): a restart acts
 * on them, also for a certificate that is not due. A saved order (controller/issuer) is
 * resumed at once after a restart, and is not charged to the budgets again.
 *
 * Per-certificate state:   idle --due/requested/saved order--> issuing --ok--> idle (failures = 0)
 *                                                               +--error--> idle (failures+1, retryAt)
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, toCertfleetError } from '../../shared/errors/index.js';
import type { CertStatus, DesiredRecord, RolloutState, VersionMeta } from '../../shared/model/index.js';
import { rolloutComplete, waveOf } from '../../shared/rollout/index.js';
import type { Pins } from '../rollback/index.js';
import { EventType } from '../../shared/wire/index.js';
import type { CertificateConfig } from '../config/index.js';
import type { Issuer, OrderCharge } from '../issuer/index.js';
import type { DesiredState, EventPublisher } from '../publish/index.js';
import { backoffDelay, decide } from '../scheduler/index.js';
import type { BudgetKeeper } from '../budget/index.js';
import type { AriTracker } from '../ari/index.js';
import { CoalescingRunner } from '../../shared/runtime/index.js';
import type { CertStore } from '../store/index.js';
import { afterFailure, afterSuccess, cancelRenewal, clearBackoff, fromStored, intentKey, isEmptyIntent, NO_INTENT, plan, requestRenewal, toStored, type RenewalIntent } from './intent.js';

export { plan, type Plan, type PlanInput, type RenewalIntent } from './intent.js';

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
  /** Version pinned by a rollback (0: none). */
  pinned: number;
  /** An operator asked for a renewal that is still outstanding (durable). */
  force: boolean;
  /** When that request was made (epoch ms; 0: none). */
  requestedAt: number;
  /** Set while a budget holds the next order back. */
  deferredUntil: number;
  deferredReason: string;
  /** The CA's renewal window for the served version (ARI), when it offers one. */
  ariWindow: { start: number; end: number } | null;
}

/** What the loop needs to know about an agent to move a rollout on. */
export interface RolloutAgent {
  name: string;
  labels: Record<string, string>;
  certificates: CertStatus[];
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
  pins: Pins;
  /** Rate-limit budgets; an order that would break one is deferred, never sent. */
  budget: BudgetKeeper;
  /** ARI windows; absent in tests that do not need them. */
  ari?: AriTracker;
  /** Jitter spread (fraction of lifetime). */
  spread: number;
  /** Whether an issued version of `name` waits in the spool (then no new order is placed). */
  spooled: (name: string) => boolean;
  /** Enrolled agents selected by a selector, with their last reports (controller/fleet). */
  selectedAgents: (selector: string) => RolloutAgent[];
}

export class Reconciler {
  /**
   * Counts agents coming online. An issuance that fails with CHALLENGE_NOT_SERVED after
   * an agent came online while it ran gets no backoff: agentOnline() ran before that
   * failure was recorded, so clearing it there missed it (seen in CI: one certificate of a
   * fleet waited out a 10-minute backoff although every agent was online).
   */
  private agentsCameOnline = 0;
  private readonly runtime = new Map<string, CertRuntime>();
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Durable intents read so far (the store holds the truth across restarts). */
  private readonly intents = new Map<string, RenewalIntent>();
  /** Intent writes per certificate, in order. */
  private readonly saving = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  /** An earlier pass than the interval's, for a retryAt or a wait ending before it. */
  private wake: NodeJS.Timeout | undefined;
  private readonly runner: CoalescingRunner;
  private stopped = false;

  constructor(private readonly opts: ReconcilerOptions) {
    this.runner = new CoalescingRunner(() => this.pass(), opts.log, 'reconcile pass');
    for (const c of opts.certificates) {
      this.runtime.set(c.name, {
        state: 'pending',
        failures: 0,
        backoffUntil: 0,
        lastError: '',
        lastErrorCode: '',
        nextCheck: 0,
        reason: '',
        latest: null,
        pinned: 0,
        force: false,
        requestedAt: 0,
        deferredUntil: 0,
        deferredReason: '',
        ariWindow: null,
      });
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
    this.agentsCameOnline += 1;
    for (const [name, rt] of this.runtime) {
      const intent = this.intents.get(name);
      if (intent && rt.lastErrorCode === ErrorCode.ChallengeNotServed && intent.retryAt > 0) {
        this.setIntent(name, clearBackoff(intent));
        void this.saveIntent(name).catch((err: unknown) => this.opts.log.warn({ cert: name, err: (err as Error).message }, 'renewal intent not saved'));
      }
    }
    this.kick();
  }

  /**
   * Renews `name` whatever the schedule says, and forgets its backoff. The request is
   * written to the store before this resolves, and stays until an issuance that started
   * after it succeeds (or {@link cancelRenewal}): failures are retried at their
   * retryAt, restarts do not forget it. NOT_FOUND for a name not in the configuration;
   * the store's error when the request cannot be recorded.
   */
  async renewNow(name: string, by = 'an operator'): Promise<void> {
    if (!this.runtime.has(name)) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} is not in the controller's configuration`);
    const intent = await this.loadIntent(name);
    this.setIntent(name, requestRenewal(intent, this.opts.clock.now(), by));
    await this.saveIntent(name);
    this.kick();
  }

  /**
   * Withdraws an outstanding renewal request (a failure backoff stays). Resolves true
   * when there was one. An issuance already running is not stopped.
   */
  async cancelRenewal(name: string): Promise<boolean> {
    if (!this.runtime.has(name)) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} is not in the controller's configuration`);
    const intent = await this.loadIntent(name);
    if (intent.requestedAt === 0) return false;
    this.setIntent(name, cancelRenewal(intent));
    await this.saveIntent(name);
    return true;
  }

  /** Loop state of a certificate (undefined for names not in the config). */
  status(name: string): CertRuntime | undefined {
    return this.runtime.get(name);
  }

  private async pass(): Promise<void> {
    await this.flushDesired();
    for (const cert of this.opts.certificates) {
      if (this.stopped) return;
      try {
        await this.reconcileOne(cert);
      } catch (err) {
        // Store or NATS trouble while reading: try again on the next pass.
        this.opts.log.warn({ cert: cert.name, err: (err as Error).message }, 'reconcile failed');
      }
    }
    this.scheduleWake();
  }

  /**
   * Passes run every `intervalMs`; a certificate waiting for less than that (a retryAt,
   * a renewal point) gets a pass of its own at that instant.
   */
  private scheduleWake(): void {
    if (this.stopped) return;
    const now = this.opts.clock.now();
    let soonest = Infinity;
    for (const [name, rt] of this.runtime) {
      if (this.inFlight.has(name)) continue;
      if (rt.nextCheck > now && rt.nextCheck < soonest) soonest = rt.nextCheck;
    }
    if (this.wake) clearTimeout(this.wake);
    this.wake = undefined;
    const delay = soonest - now;
    if (!(delay < this.opts.intervalMs)) return;
    this.wake = setTimeout(() => this.kick(), Math.max(delay, 10));
    this.wake.unref();
  }

  /** The durable intent of `name`: from memory, or read from the store once. */
  private async loadIntent(name: string): Promise<RenewalIntent> {
    const known = this.intents.get(name);
    if (known) return known;
    const intent = fromStored(await this.opts.store.getObject<unknown>(intentKey(name)));
    // A request or write that happened while we read wins over what we read.
    const raced = this.intents.get(name);
    if (raced) return raced;
    this.setIntent(name, intent);
    return intent;
  }

  /** Keeps the intent and the runtime fields derived from it together. */
  private setIntent(name: string, intent: RenewalIntent): void {
    this.intents.set(name, intent);
    const rt = this.runtime.get(name);
    if (!rt) return;
    rt.failures = intent.failures;
    rt.backoffUntil = intent.retryAt;
    rt.lastError = intent.lastError;
    rt.lastErrorCode = intent.lastErrorCode;
    rt.force = intent.requestedAt > 0;
    rt.requestedAt = intent.requestedAt;
  }

  /** Writes the current intent of `name` (deleting an empty one), after earlier writes. */
  private saveIntent(name: string): Promise<void> {
    const write = async (): Promise<void> => {
      const intent = this.intents.get(name) ?? NO_INTENT;
      if (isEmptyIntent(intent)) await this.opts.store.deleteObject(intentKey(name));
      else await this.opts.store.putObject(intentKey(name), toStored(intent));
    };
    const next = (this.saving.get(name) ?? Promise.resolve()).catch(() => undefined).then(write);
    this.saving.set(name, next);
    return next;
  }

  private async reconcileOne(cert: CertificateConfig): Promise<void> {
    const rt = this.runtime.get(cert.name);
    if (!rt) return;
    // Asked before reading the store: a spooled version delivered in between is then
    // seen by the read below, never missed by both.
    const spooled = this.opts.spooled(cert.name);
    const latest = await this.opts.store.latest(cert.name);
    rt.latest = latest;
    // A pin (rollback) decides what agents serve, and what the schedule renews before.
    const pin = await this.opts.pins.get(cert.name);
    let target = latest;
    if (pin && latest && pin.version !== latest.version) {
      target = (await this.opts.store.listVersions(cert.name)).find((v) => v.version === pin.version) ?? latest;
    }
    rt.pinned = pin && target && target.version === pin.version ? pin.version : 0;
    if (target) await this.syncDesired(cert, target, rt.pinned !== 0);
    if (this.inFlight.has(cert.name)) return;
    if (spooled) {
      rt.reason = 'an issued version waits in the spool until the store accepts it';
      return;
    }
    const ari = target ? await this.opts.ari?.forVersion(target) : undefined;
    rt.ariWindow = ari?.window ?? null;
    const intent = await this.loadIntent(cert.name);
    const saved = await this.opts.issuer.resumable(cert.name, cert.names, cert.keyType);
    const now = this.opts.clock.now();
    const spec = { names: cert.names, keyType: cert.keyType, ...(cert.renewBefore ? { renewBefore: cert.renewBefore } : {}) };
    const scheduled = decide(spec, target, now, intent.retryAt, { spread: this.opts.spread, ...(ari ? { ari: { window: ari.window, seed: ari.seed } } : {}) });
    const decision = plan({ scheduled, intent, resumableOrder: saved !== null, now });
    rt.reason = decision.reason;
    if (decision.action === 'wait') {
      rt.nextCheck = decision.at;
      if (rt.failures === 0) rt.state = target ? 'ready' : 'pending';
      rt.deferredUntil = 0;
      rt.deferredReason = '';
      return;
    }
    rt.nextCheck = now;
    if (this.inFlight.size >= this.opts.concurrency) return;

    // Budgets: an order that would break one is not sent. A renewal of the same names is
    // exempt from the per-account and per-domain limits; an ARI renewal (replaces) from all.
    const sameNames = latest !== null && sameNameSet(latest.names, cert.names);
    const replaces = decision.ari && sameNames && ari ? ari.certId : undefined;
    const request = { names: cert.names, emergency: decision.emergency, renewal: sameNames, ...(replaces ? { replaces } : {}) };
    let charge: LoopCharge;
    if (decision.resume) {
      // The saved order was charged when it was placed: nothing to check or spend. Only
      // if the CA no longer has it does the new order it needs go through the budgets.
      charge = {
        charge: async () => {
          const verdict = this.opts.budget.check(request);
          if (!verdict.ok) {
            throw new CertfleetError(ErrorCode.BudgetDeferred, `saved order unusable and a new one is deferred: ${verdict.reason}`, {
              retryable: true,
              retryAfterMs: Math.max(0, verdict.until - this.opts.clock.now()),
              details: { limits: verdict.limits },
            });
          }
          this.opts.budget.commit(verdict.spend);
          await this.opts.budget.flushed();
          return verdict.spend;
        },
        refund: (spend) => this.opts.budget.refund(spend),
        settleUnused: () => undefined,
      };
    } else {
      const verdict = this.opts.budget.check(request);
      if (!verdict.ok) {
        const first = rt.deferredUntil === 0;
        rt.deferredUntil = verdict.until;
        rt.deferredReason = verdict.reason;
        rt.nextCheck = verdict.until;
        if (first) {
          this.opts.log.info({ cert: cert.name, until: isoAt(verdict.until), reason: verdict.reason }, 'budget deferred');
          await this.opts.events.emit(EventType.deferred, {
            cert: cert.name,
            message: `order deferred until ${isoAt(verdict.until)}: ${verdict.reason}`,
            details: { until: isoAt(verdict.until), limits: verdict.limits },
          });
        }
        return;
      }
      // Spent now, in the tick of the check, so orders started in one pass cannot
      // overdraw together; handed to the issuer for its order record, written to NATS
      // before the order is sent (a kill right after must not forget the charge).
      this.opts.budget.commit(verdict.spend);
      let taken = false;
      charge = {
        charge: async () => {
          taken = true;
          await this.opts.budget.flushed();
          return verdict.spend;
        },
        refund: (spend) => this.opts.budget.refund(spend),
        // No new order came of it (a conflict before ordering, or a saved order that
        // turned up and was resumed): the certificate buckets get their tokens back.
        settleUnused: () => {
          if (!taken) this.opts.budget.refund(verdict.spend);
        },
      };
    }
    rt.deferredUntil = 0;
    rt.deferredReason = '';
    this.startIssue(cert, rt, latest, decision.reason, charge, replaces);
  }

  /**
   * Writes desired pointers NATS refused earlier (they already serve agents over gRPC
   * from memory, see controller/publish). NATS still away: logged there, next pass.
   */
  private async flushDesired(): Promise<void> {
    let written: DesiredRecord[];
    try {
      written = await this.opts.desired.flush();
    } catch {
      return;
    }
    for (const d of written) {
      await this.opts.events.emit(EventType.published, { cert: d.name, version: d.version, message: `desired version ${d.version} (published late: NATS was unreachable)` });
    }
  }

  /**
   * Keeps the desired pointer of `cert` on `target`: publishes a new version (in waves
   * when the certificate has a rollout), or moves a rollout in progress on.
   */
  private async syncDesired(cert: CertificateConfig, target: VersionMeta, pinned: boolean): Promise<void> {
    const d = this.opts.desired.get(cert.name);
    if (d && d.version === target.version && d.selector === cert.agents && (d.pinned ?? false) === pinned) {
      if (d.rollout && !d.rollout.halted) await this.advanceRollout(cert, d, d.rollout);
      return;
    }
    let rollout: RolloutState | undefined;
    if (cert.rollout && !pinned && d && target.version > d.version) {
      // Agents of unreleased waves keep what they run now: during an unfinished rollout
      // that is the rollout's own starting version.
      const from = d.rollout && !rolloutComplete(d.rollout) ? d.rollout.from : { version: d.version, fingerprint: d.fingerprint, notAfter: d.notAfter, names: d.names };
      rollout = { from, waves: [...cert.rollout.waves], released: 1, halted: false, haltReason: '' };
    }
    await this.opts.desired.publish(target, cert.agents, { ...(rollout ? { rollout } : {}), pinned });
    await this.opts.events.emit(EventType.published, {
      cert: cert.name,
      version: target.version,
      message: rollout ? `desired version ${target.version}, wave 1 of ${rollout.waves.length + 1}` : `desired version ${target.version}`,
    });
  }

  /** Releases the next wave when every agent of the released ones runs the version; halts on a failure. */
  private async advanceRollout(cert: CertificateConfig, d: DesiredRecord, r: RolloutState): Promise<void> {
    const released = this.opts.selectedAgents(cert.agents).filter((a) => waveOf(r.waves, a.labels) < r.released);
    const statusOf = (a: RolloutAgent): CertStatus | undefined => a.certificates.find((s) => s.name === cert.name);
    const failed = released.filter((a) => {
      const s = statusOf(a);
      return s !== undefined && s.state === 'failed' && (s.desiredVersion === d.version || s.failedVersion === d.version);
    });
    if (failed.length > 0) {
      const reason = failed.map((a) => `${a.name}: ${statusOf(a)?.errorCode ?? ''} ${statusOf(a)?.error ?? ''}`.trim()).join('; ');
      await this.opts.desired.put({ ...d, rollout: { ...r, halted: true, haltReason: reason } });
      this.opts.log.warn({ cert: cert.name, version: d.version, wave: r.released, reason }, 'rollout halted');
      await this.opts.events.emit(EventType.rolloutHalted, {
        cert: cert.name,
        version: d.version,
        message: `rollout of version ${d.version} halted in wave ${r.released}: ${reason}`,
        details: { wave: r.released, agents: failed.map((a) => a.name) },
      });
      return;
    }
    const done = released.every((a) => {
      const s = statusOf(a);
      return s !== undefined && s.state === 'installed' && s.version === d.version;
    });
    if (!done) return;
    const next: RolloutState = { ...r, released: r.released + 1 };
    const complete = rolloutComplete(next);
    const record: DesiredRecord = { ...d };
    if (complete) delete record.rollout;
    else record.rollout = next;
    await this.opts.desired.put(record);
    await this.opts.events.emit(EventType.rolloutAdvanced, {
      cert: cert.name,
      version: d.version,
      message: complete ? `rollout of version ${d.version} complete` : `rollout of version ${d.version}: wave ${next.released} of ${r.waves.length + 1} released`,
      details: { released: next.released, groups: r.waves.length + 1 },
    });
  }

  private startIssue(cert: CertificateConfig, rt: CertRuntime, latest: VersionMeta | null, reason: string, charge: LoopCharge, replaces: string | undefined): void {
    const log = this.opts.log.child({ cert: cert.name });
    const startedAt = this.opts.clock.now();
    const onlineAtStart = this.agentsCameOnline;
    rt.state = 'issuing';
    log.info({ reason, replaces }, 'issuance started');
    const job = this.opts.issuer
      .issue(
        {
          name: cert.name,
          names: cert.names,
          keyType: cert.keyType,
          selector: cert.agents,
          challenge: cert.challenge,
          ...(cert.dnsProvider === undefined ? {} : { dnsProvider: cert.dnsProvider }),
          ...(replaces === undefined ? {} : { replaces }),
          ...(cert.profile === undefined ? {} : { profile: cert.profile }),
          charge,
        },
        latest?.version ?? 0,
      )
      .then(async (meta) => {
        this.setIntent(cert.name, afterSuccess(this.intents.get(cert.name) ?? NO_INTENT, startedAt));
        await this.saveIntent(cert.name).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'renewal intent not saved'));
        // A new version replaces a rollback pin (the pinned version is being renewed away).
        if (await this.opts.pins.release(cert.name)) {
          await this.opts.events.emit(EventType.released, { cert: cert.name, version: meta.version, message: `pin released by the issuance of version ${meta.version}` });
        }
        rt.pinned = 0;
        rt.latest = meta;
        rt.state = 'ready';
        try {
          await this.syncDesired(cert, meta, false);
        } catch (err) {
          // The version exists: a pointer NATS refused is not a failed issuance. Agents
          // get it over gRPC meanwhile, and each pass writes it again (flushDesired).
          log.warn({ version: meta.version, err: (err as Error).message }, 'issued version not published yet; retried every pass');
        }
      })
      .catch(async (err: unknown) => {
        const cf = toCertfleetError(err);
        if (cf.details['spooled'] === true) {
          // The CA issued and the spool holds the certificate until the store takes it
          // (controller/spool): the renewal happened, so a request it answered is done and
          // its order stays charged. Treating it as a failure kept the request open and
          // ordered a second certificate once the spool had delivered the first.
          this.setIntent(cert.name, afterSuccess(this.intents.get(cert.name) ?? NO_INTENT, startedAt));
          await this.saveIntent(cert.name).catch((e: unknown) => log.warn({ err: (e as Error).message }, 'renewal intent not saved'));
          rt.state = 'pending';
          return;
        }
        // Budgets: an order that was sent stays charged while it can be resumed (the
        // issuer refunds a dropped one); a spend no order used is given back. A failed
        // validation costs the identifier's authorization-failure budget.
        charge.settleUnused();
        const failedIdentifier = cf.details['identifier'];
        if (cf.code === ErrorCode.AcmeProblem && typeof failedIdentifier === 'string') this.opts.budget.recordAuthorizationFailure(failedIdentifier);
        const now = this.opts.clock.now();
        const lifetime = latest ? Date.parse(latest.notAfter) - Date.parse(latest.notBefore) : undefined;
        const before = this.intents.get(cert.name) ?? NO_INTENT;
        const failed = afterFailure(before, now, { code: cf.code, message: cf.message, retryAfterMs: cf.retryAfterMs }, backoffDelay(before.failures + 1, Math.random, lifetime));
        const intent = cf.code === ErrorCode.ChallengeNotServed && this.agentsCameOnline !== onlineAtStart ? clearBackoff(failed) : failed;
        this.setIntent(cert.name, intent);
        rt.state = 'failed';
        log.warn({ code: cf.code, err: cf.message, failures: intent.failures, retryAt: isoAt(intent.retryAt) }, 'issuance failed');
        await this.saveIntent(cert.name).catch((e: unknown) => log.warn({ err: (e as Error).message }, 'renewal intent not saved'));
        await this.opts.events.emit(EventType.failed, {
          cert: cert.name,
          message: cf.message,
          details: { code: cf.code, retryable: cf.retryable, failures: intent.failures, retryAt: isoAt(intent.retryAt), ...cf.details },
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
    if (this.wake) clearTimeout(this.wake);
    const running = this.runner.stop();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.allSettled([running, ...this.inFlight.values()]), grace]);
    clearTimeout(timer);
  }
}

/** An order's charge as the loop hands it to the issuer, plus settling one never used. */
interface LoopCharge extends OrderCharge {
  /** After a failed issuance: refunds a spend committed for an order that was never sent. */
  settleUnused(): void;
}

function sameNameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a.map((n) => n.toLowerCase()));
  return b.every((n) => set.has(n.toLowerCase()));
}

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
 * Each certificate's pass is read state → plan (plan.ts, pure; its diagram) → carry out
 * the plan's effects. Timers (the interval, an early wake, the grace of stop) run on the
 * injected clock, and the backoff's jitter comes from the injected `random`, so the loop
 * runs on a ManualClock in unit tests.
 *
 * Per-certificate state:   idle --due/requested/saved order--> issuing --ok--> idle (failures = 0)
 *                                                               +--error--> idle (failures+1, retryAt)
 */
import type { Logger } from 'pino';
import { isoAt, yieldToLoop, type Clock, type Timer } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, toCertfleetError } from '../../shared/errors/index.js';
import type { CertStatus, DesiredRecord, RolloutState, VersionMeta } from '../../shared/model/index.js';
import { rolloutComplete, waveOf } from '../../shared/rollout/index.js';
import type { Pins } from '../rollback/index.js';
import { EventType } from '../../shared/wire/index.js';
import type { CertificateConfig } from '../config/index.js';
import { requestFor, type Issuer, type OrderCharge } from '../issuer/index.js';
import type { DesiredState, EventPublisher } from '../publish/index.js';
import type { BudgetKeeper, BudgetRequest, Spend } from '../budget/index.js';
import type { AriTracker } from '../ari/index.js';
import { CoalescingRunner } from '../../shared/runtime/index.js';
import type { CertStore } from '../store/index.js';
import { LogKey } from '../../shared/log/index.js';
import { cancelRenewal, clearBackoff, fromStored, intentKey, isEmptyIntent, NO_INTENT, requestRenewal, toStored, type RenewalIntent } from './intent.js';
import { afterFailed, afterIssued, lifetimeOf, planPass, resumeCharge, type OrderPayment, type PassFacts, type PassPlan } from './plan.js';
import { currentIssuer } from './fallback.js';

export { plan, type Plan, type PlanInput, type RenewalIntent } from './intent.js';
export { afterIssuerFailure, budgetIssuer, caDown, currentIssuer, fromIssuer, nextIssuer, type FallbackDecision, type FallbackFacts } from './fallback.js';
export { afterFailed, afterIssued, emergencyOf, planPass, resumeCharge, type FailureFacts, type FailurePlan, type PassFacts, type PassPlan } from './plan.js';

/**
 * Certificates a pass handles between two turns of the event loop. A certificate's step
 * costs tens of microseconds when nothing is due, so a slice holds the thread a few ms.
 */
export const PASS_SLICE = 64;

/** The budget calls the loop makes (BudgetKeeper implements them). */
export type LoopBudget = Pick<BudgetKeeper, 'check' | 'commit' | 'refund' | 'flushed' | 'recordAuthorizationFailure'>;

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
  /** The issuer the next order goes to (fallback.ts); '' with one unnamed issuer. */
  issuer: string;
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
  budget: LoopBudget;
  /** ARI windows; absent in tests that do not need them. */
  ari?: AriTracker;
  /** Jitter spread (fraction of lifetime). */
  spread: number;
  /** Whether an issued version of `name` waits in the spool (then no new order is placed). */
  spooled: (name: string) => boolean;
  /** Enrolled agents selected by a selector, with their last reports (controller/fleet). */
  selectedAgents: (selector: string) => RolloutAgent[];
  /** Uniform [0, 1) for the backoff's jitter. Default Math.random. */
  random?: () => number;
  /**
   * Several issuers (docs/renewal.md#issuers-and-fallback): each certificate's issuers
   * in order, each issuer's budgets and `fallbackAfter`. Absent: one issuer, `budget`,
   * and versions record no issuer.
   */
  issuers?: {
    chain: (cert: CertificateConfig) => readonly string[];
    budget: (issuer: string) => LoopBudget;
    fallbackAfter: (issuer: string) => number;
  };
  /** Counts passes, decisions and orders (controller/metrics); absent: not counted. */
  metrics?: LoopMetrics;
  /**
   * Whether this controller may do work now (controller/lease: only the leader runs the
   * loop). Asked at the start of every pass and before each certificate; a pass on a
   * follower does nothing. Absent: always (one controller, tests).
   */
  active?: () => boolean;
}

/**
 * What the loop counts. `sync(action)`: one certificate looked at, with the plan's action
 * or `error`; `order(outcome, code)`: an issuance started, issued, failed (with its
 * error code) or spooled. Implementations must not throw.
 */
export interface LoopMetrics {
  pass(): void;
  sync(action: string): void;
  order(outcome: 'started' | 'issued' | 'failed' | 'spooled', code?: string): void;
}

/** The runtime fields that mirror a certificate's durable renewal intent (leader and follower alike). */
function deriveFromIntent(rt: CertRuntime, intent: RenewalIntent): void {
  rt.failures = intent.failures;
  rt.backoffUntil = intent.retryAt;
  rt.lastError = intent.lastError;
  rt.lastErrorCode = intent.lastErrorCode;
  rt.force = intent.requestedAt > 0;
  rt.requestedAt = intent.requestedAt;
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
  private timer: Timer | undefined;
  /** An earlier pass than the interval's, for a retryAt or a wait ending before it. */
  private wake: Timer | undefined;
  private readonly runner: CoalescingRunner;
  private readonly random: () => number;
  private stopped = false;

  constructor(private readonly opts: ReconcilerOptions) {
    this.random = opts.random ?? Math.random;
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
        issuer: '',
      });
    }
  }

  /** Starts the periodic loop and runs a first pass now. */
  start(): void {
    this.kick();
    this.timer = this.opts.clock.every(this.opts.intervalMs, () => this.kick()).unref();
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
        void this.saveIntent(name).catch((err: unknown) => this.opts.log.warn({ [LogKey.cert]: name, [LogKey.err]: (err as Error).message }, 'renewal intent not saved'));
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

  /**
   * Forgets the renewal intents cached in memory, so each is read from the store again
   * (a new leader: the previous one may have written them since this controller last
   * read them). Issuances in flight are not touched.
   */
  forgetIntents(): void {
    this.intents.clear();
  }

  private active(): boolean {
    return this.opts.active?.() ?? true;
  }

  private async pass(): Promise<void> {
    // Followers start nothing (the leader's election kicks a pass); they only refresh
    // what operators' reads show.
    if (!this.active()) {
      await this.observe();
      return;
    }
    this.opts.metrics?.pass();
    await this.flushDesired();
    let n = 0;
    for (const cert of this.opts.certificates) {
      if (this.stopped || !this.active()) return;
      // The store answers most reads from memory, without I/O: let the API and the agents'
      // calls in between slices (yieldToLoop).
      if (++n % PASS_SLICE === 0) await yieldToLoop();
      try {
        await this.reconcileOne(cert);
      } catch (err) {
        // Store or NATS trouble while reading: try again on the next pass.
        this.opts.metrics?.sync('error');
        this.opts.log.warn({ [LogKey.cert]: cert.name, [LogKey.err]: (err as Error).message }, 'reconcile failed');
      }
    }
    this.scheduleWake();
  }

  /**
   * A follower's view (issue #12). Every controller answers `certs`, `show` and `status`
   * from this runtime, but only the leader runs passes: a follower that never led showed
   * every certificate pending with no version, and a deposed one what it knew when it
   * lost the lease. So on each tick a follower reads what the leader's passes read — the
   * newest and pinned versions, the durable renewal intent — and plans the schedule from
   * them, writing nothing (no desired pointer, intent, budget or order: `observe` only
   * assigns runtime fields, and plans with no free slot, so no budget is even asked).
   * ARI windows are the leader's alone; a follower shows the schedule without them.
   */
  private async observe(): Promise<void> {
    let n = 0;
    for (const cert of this.opts.certificates) {
      const rt = this.runtime.get(cert.name);
      if (this.stopped || this.active() || !rt) return;
      if (++n % PASS_SLICE === 0) await yieldToLoop(); // as in pass()
      try {
        const latest = await this.opts.store.latest(cert.name);
        const pin = await this.opts.pins.get(cert.name);
        const target = pin && latest && pin.version !== latest.version ? ((await this.opts.store.listVersions(cert.name)).find((v) => v.version === pin.version) ?? latest) : latest;
        const intent = fromStored(await this.opts.store.getObject<unknown>(intentKey(cert.name)));
        // Elected meanwhile: the passes own the runtime (and the intent cache) now.
        if (this.active()) return;
        const now = this.opts.clock.now();
        const p = planPass({
          spec: { names: cert.names, keyType: cert.keyType, ...(cert.renewBefore ? { renewBefore: cert.renewBefore } : {}) },
          latest,
          target,
          spread: this.opts.spread,
          slotFree: false,
          deferred: rt.deferredUntil !== 0,
          budget: () => {
            throw new Error('a follower asks no budget');
          },
          now,
          busy: null,
          ari: undefined,
          intent,
          resumableOrder: false,
        });
        rt.latest = latest;
        rt.pinned = pin && target && target.version === pin.version ? pin.version : 0;
        deriveFromIntent(rt, intent);
        rt.reason = p.reason;
        if (p.action === 'wait') {
          rt.nextCheck = p.at;
          rt.state = p.state ?? 'failed';
        } else {
          // Due (or requested): the leader orders it; a follower cannot tell how far it got.
          rt.nextCheck = now;
          if (rt.state !== 'issuing') rt.state = target ? 'ready' : 'pending';
        }
      } catch (err) {
        // Store trouble: the next tick reads again; reads show the last view meanwhile.
        this.opts.log.debug({ [LogKey.cert]: cert.name, [LogKey.err]: (err as Error).message }, 'follower view not refreshed');
      }
    }
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
    this.wake?.stop();
    this.wake = undefined;
    const delay = soonest - now;
    if (!(delay < this.opts.intervalMs)) return;
    this.wake = this.opts.clock.after(Math.max(delay, 10), () => this.kick()).unref();
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
    if (rt) deriveFromIntent(rt, intent);
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

  /** Read state → plan (plan.ts) → carry out the plan's effects. */
  private async reconcileOne(cert: CertificateConfig): Promise<void> {
    const rt = this.runtime.get(cert.name);
    if (!rt) return;
    // Asked before reading the store: a spooled version delivered in between is then
    // seen by the read below, never missed by both.
    const spooled = this.opts.spooled(cert.name);
    const { latest, target } = await this.readServed(cert, rt);
    const busy = this.inFlight.has(cert.name) ? 'in-flight' : spooled ? 'spooled' : null;
    const several = this.opts.issuers;
    const chain = several ? several.chain(cert) : [];
    // Read when planning, after the awaits: an issuance may have ended meanwhile.
    const common = (): Omit<PassFacts, 'busy' | 'ari' | 'intent' | 'resumableOrder'> => ({
      spec: { names: cert.names, keyType: cert.keyType, ...(cert.renewBefore ? { renewBefore: cert.renewBefore } : {}) },
      latest,
      target,
      spread: this.opts.spread,
      slotFree: this.inFlight.size < this.opts.concurrency,
      deferred: rt.deferredUntil !== 0,
      budget: (req: BudgetRequest) => this.opts.budget.check(req),
      ...(several ? { issuers: { chain, budget: (i: string, req: BudgetRequest) => several.budget(i).check(req) } } : {}),
      now: this.opts.clock.now(),
    });
    let facts: PassFacts;
    if (busy !== null) {
      facts = { ...common(), busy };
    } else {
      // Read only for a certificate that may start: ARI may ask the CA.
      const ari = target ? await this.opts.ari?.forVersion(target) : undefined;
      rt.ariWindow = ari?.window ?? null;
      const intent = await this.loadIntent(cert.name);
      const issuer = several ? currentIssuer(chain, intent.issuer) : undefined;
      rt.issuer = issuer ?? '';
      const saved = await this.opts.issuer.resumable(cert.name, cert.names, cert.keyType, issuer);
      facts = { ...common(), busy, ari, intent, resumableOrder: saved !== null };
    }
    await this.carryOut(cert, rt, latest, planPass(facts), facts.now);
  }

  /**
   * Reads the newest stored version and the pinned one, and keeps the desired pointer on
   * what agents should serve. A pin (rollback) decides what agents serve, and what the
   * schedule renews before.
   */
  private async readServed(cert: CertificateConfig, rt: CertRuntime): Promise<{ latest: VersionMeta | null; target: VersionMeta | null }> {
    const latest = await this.opts.store.latest(cert.name);
    rt.latest = latest;
    const pin = await this.opts.pins.get(cert.name);
    let target = latest;
    if (pin && latest && pin.version !== latest.version) {
      target = (await this.opts.store.listVersions(cert.name)).find((v) => v.version === pin.version) ?? latest;
    }
    rt.pinned = pin && target && target.version === pin.version ? pin.version : 0;
    if (target) await this.syncDesired(cert, target, rt.pinned !== 0);
    return { latest, target };
  }

  /** The effects of a pass plan: runtime fields, the deferral event, the budget spend, the issuance. */
  private async carryOut(cert: CertificateConfig, rt: CertRuntime, latest: VersionMeta | null, p: PassPlan, now: number): Promise<void> {
    this.opts.metrics?.sync(p.action);
    switch (p.action) {
      case 'busy':
        if (p.busy === 'spooled') rt.reason = p.reason;
        return;
      case 'wait':
        rt.reason = p.reason;
        rt.nextCheck = p.at;
        if (p.state) rt.state = p.state;
        rt.deferredUntil = 0;
        rt.deferredReason = '';
        return;
      case 'queued':
        rt.reason = p.reason;
        rt.nextCheck = now;
        return;
      case 'defer':
        rt.reason = p.reason;
        rt.deferredUntil = p.until;
        rt.deferredReason = p.budgetReason;
        rt.nextCheck = p.until;
        if (p.announce) {
          this.opts.log.info({ [LogKey.cert]: cert.name, until: isoAt(p.until), reason: p.budgetReason }, 'budget deferred');
          await this.opts.events.emit(EventType.deferred, {
            cert: cert.name,
            message: `order deferred until ${isoAt(p.until)}: ${p.budgetReason}`,
            details: { until: isoAt(p.until), limits: p.limits },
          });
        }
        return;
      case 'order':
        rt.reason = p.reason;
        rt.nextCheck = now;
        rt.deferredUntil = 0;
        rt.deferredReason = '';
        this.startIssue(cert, rt, latest, p.reason, this.chargeFor(p.request, p.payment, p.issuer), p.replaces, p.issuer, p.emergencyAt);
        return;
    }
  }

  /** The issuer's view of how the order is paid for (see {@link OrderPayment}). */
  private chargeFor(request: BudgetRequest, payment: OrderPayment, issuer: string | undefined): LoopCharge {
    const budget = this.budgetOf(issuer);
    // A saved order of another issuer is refunded to that issuer's budgets.
    const refund = (spend: Spend, other?: string): void => (other === undefined ? budget : this.budgetOf(other)).refund(spend);
    if (payment.kind === 'resume') {
      return {
        charge: async () => {
          const c = resumeCharge(budget.check(request), this.opts.clock.now());
          if (!c.ok) throw new CertfleetError(ErrorCode.BudgetDeferred, c.message, { retryable: true, retryAfterMs: c.retryAfterMs, details: { limits: c.limits } });
          budget.commit(c.spend);
          await budget.flushed();
          return c.spend;
        },
        refund,
        settleUnused: () => undefined,
      };
    }
    // Spent now, in the tick of the check, so orders started in one pass cannot
    // overdraw together; handed to the issuer for its order record, written to NATS
    // before the order is sent (a kill right after must not forget the charge).
    const spend = payment.spend;
    budget.commit(spend);
    let taken = false;
    return {
      charge: async () => {
        taken = true;
        await budget.flushed();
        return spend;
      },
      refund,
      // No new order came of it (a conflict before ordering, or a saved order that
      // turned up and was resumed): the certificate buckets get their tokens back.
      settleUnused: () => {
        if (!taken) budget.refund(spend);
      },
    };
  }

  /** The budgets of `issuer` (the single `budget` without several issuers). */
  private budgetOf(issuer: string | undefined): LoopBudget {
    return issuer !== undefined && this.opts.issuers ? this.opts.issuers.budget(issuer) : this.opts.budget;
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
      this.opts.log.warn({ [LogKey.cert]: cert.name, [LogKey.version]: d.version, wave: r.released, reason }, 'rollout halted');
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

  private startIssue(
    cert: CertificateConfig,
    rt: CertRuntime,
    latest: VersionMeta | null,
    reason: string,
    charge: LoopCharge,
    replaces: string | undefined,
    issuer: string | undefined,
    emergencyAt: number | undefined,
  ): void {
    const log = this.opts.log.child({ [LogKey.cert]: cert.name });
    const startedAt = this.opts.clock.now();
    const onlineAtStart = this.agentsCameOnline;
    rt.state = 'issuing';
    this.opts.metrics?.order('started');
    // Debug: the outcome ('certificate issued' with the reason, or 'issuance failed') is the info line.
    log.debug({ reason, replaces, ...(issuer === undefined ? {} : { [LogKey.issuer]: issuer }) }, 'issuance started');
    const job = this.opts.issuer
      .issue(
        {
          ...requestFor(cert),
          ...(replaces === undefined ? {} : { replaces }),
          ...(issuer === undefined ? {} : { issuer }),
          reason,
          charge,
        },
        latest?.version ?? 0,
      )
      .then(async (meta) => {
        this.opts.metrics?.order('issued');
        const done = afterIssued(this.intents.get(cert.name) ?? NO_INTENT, startedAt);
        this.setIntent(cert.name, done.intent);
        await this.saveIntent(cert.name).catch((err: unknown) => log.warn({ [LogKey.err]: (err as Error).message }, 'renewal intent not saved'));
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
          log.warn({ [LogKey.version]: meta.version, [LogKey.err]: (err as Error).message }, 'issued version not published yet; retried every pass');
        }
      })
      .catch(async (err: unknown) => {
        const cf = toCertfleetError(err);
        const identifier = cf.details['identifier'];
        const status = cf.details['status'];
        const several = this.opts.issuers;
        const failure = afterFailed({
          intent: this.intents.get(cert.name) ?? NO_INTENT,
          error: {
            code: cf.code,
            message: cf.message,
            retryAfterMs: cf.retryAfterMs,
            spooled: cf.details['spooled'] === true,
            identifier: typeof identifier === 'string' ? identifier : undefined,
            status: typeof status === 'number' ? status : undefined,
          },
          fallback:
            several && issuer !== undefined
              ? { chain: several.chain(cert), issuer, fallbackAfter: several.fallbackAfter(issuer), emergencyAt }
              : undefined,
          now: this.opts.clock.now(),
          startedAt,
          lifetimeMs: lifetimeOf(latest),
          agentCameOnline: this.agentsCameOnline !== onlineAtStart,
          random: this.random,
        });
        this.opts.metrics?.order(failure.outcome === 'spooled' ? 'spooled' : 'failed', cf.code);
        if (failure.outcome === 'spooled') {
          this.setIntent(cert.name, failure.intent);
          await this.saveIntent(cert.name).catch((e: unknown) => log.warn({ [LogKey.err]: (e as Error).message }, 'renewal intent not saved'));
          rt.state = 'pending';
          return;
        }
        charge.settleUnused();
        if (failure.authorizationFailure !== undefined) this.budgetOf(issuer).recordAuthorizationFailure(failure.authorizationFailure);
        const intent = failure.intent;
        this.setIntent(cert.name, intent);
        rt.state = 'failed';
        log.warn({ [LogKey.code]: cf.code, [LogKey.err]: cf.message, failures: intent.failures, retryAt: isoAt(intent.retryAt) }, 'issuance failed');
        if (failure.fallback !== undefined) {
          rt.issuer = intent.issuer;
          log.warn({ [LogKey.issuer]: issuer, next: intent.issuer, [LogKey.reason]: failure.fallback }, 'issuer fallback');
        }
        await this.saveIntent(cert.name).catch((e: unknown) => log.warn({ [LogKey.err]: (e as Error).message }, 'renewal intent not saved'));
        await this.opts.events.emit(EventType.failed, {
          cert: cert.name,
          message: cf.message,
          details: {
            code: cf.code,
            retryable: cf.retryable,
            failures: intent.failures,
            retryAt: isoAt(intent.retryAt),
            ...cf.details,
            ...(issuer === undefined ? {} : { issuer }),
            ...(failure.fallback === undefined ? {} : { nextIssuer: intent.issuer, fallback: failure.fallback }),
          },
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
    this.timer?.stop();
    this.wake?.stop();
    const running = this.runner.stop();
    let timer: Timer | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = this.opts.clock.after(graceMs, resolve);
    });
    await Promise.race([Promise.allSettled([running, ...this.inFlight.values()]), grace]);
    timer?.stop();
  }
}

/** An order's charge as the loop hands it to the issuer, plus settling one never used. */
interface LoopCharge extends OrderCharge {
  /** After a failed issuance: refunds a spend committed for an order that was never sent. */
  settleUnused(): void;
}

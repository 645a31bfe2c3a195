/**
 * The work loop's decisions, pure: what to do about one certificate on one pass, and
 * what to record when an issuance ends. The loop (index.ts) reads the facts, calls
 * these functions and carries out what they return; the fleet simulation
 * (bench/fleet-sim.ts) calls the same functions, so the simulated loop is the product's.
 * No I/O, no clock reads (`now` comes in), no Math.random (`random` comes in).
 *
 *   pass ──▶ read state (store: latest, pin; ARI window; intent; saved order)
 *              │
 *              ▼
 *           planPass ──▶ busy       an issuance runs, or a version waits in the spool
 *              │   ├──▶ wait       until `at` (schedule, backoff) ─────────▶ next pass
 *              │   ├──▶ queued     due, but every issuance slot is taken ──▶ next pass
 *              │   ├──▶ defer      a budget says no until `until` (announced once)
 *              │   └──▶ order      commit the spend now (or, resuming a saved order,
 *              │                    only if the CA lost it), carry `replaces`
 *              ▼
 *           issuer.issue ──ok──▶ afterIssued: request answered, backoff cleared, pin released
 *                         └fail─▶ afterFailed: unused spend refunded, authorization failure
 *                                 charged, failures+1 and retryAt (backoff or Retry-After);
 *                                 a certificate the spool holds counts as issued
 *
 * Order of the checks in planPass (first match wins): busy → the schedule and the
 * durable intent (intent.ts `plan`) → a free slot → the budgets.
 */
import type { VersionMeta } from '../../shared/model/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import type { BudgetRequest, CheckResult, LimitName, Spend } from '../budget/index.js';
import { backoffDelay, decide, emergencyPoint, type AriWindow, type ScheduleSpec } from '../scheduler/index.js';
import { afterFailure, afterSuccess, clearBackoff, plan, type RenewalIntent } from './intent.js';
import { afterIssuerFailure, budgetIssuer, currentIssuer } from './fallback.js';
import { sameNameSet } from '../names/index.js';

/** The ARI facts of the served version: the CA's window, our seed in it, and the `replaces` id. */
export interface AriFacts {
  window: AriWindow;
  seed: number;
  certId: string;
}

/** What the loop knows about a certificate when it plans a pass. */
export type PassFacts = {
  /** Configured names, key type and renewBefore. */
  spec: ScheduleSpec;
  /** The newest stored version (null: none yet). */
  latest: VersionMeta | null;
  /** The version agents serve: the pinned one during a rollback, else `latest`. */
  target: VersionMeta | null;
  /** Jitter spread (fraction of the lifetime). */
  spread: number;
  /** A new issuance may start now (fewer than `concurrency` in flight). */
  slotFree: boolean;
  /** The certificate is already deferred by a budget (the deferral was announced). */
  deferred: boolean;
  /** The budgets' answer for an order (BudgetKeeper.check / Budget.check at `now`); must not change state. */
  budget: (req: BudgetRequest) => CheckResult;
  /**
   * Several issuers (fallback.ts): the certificate's chain and each issuer's budgets
   * (must not change state). Absent: one issuer, asked through `budget`.
   */
  issuers?: { chain: readonly string[]; budget: (issuer: string, req: BudgetRequest) => CheckResult } | undefined;
  now: number;
} & (
  | {
      /** Why nothing may start: the loop reads nothing more. */
      busy: 'in-flight' | 'spooled';
    }
  | {
      busy: null;
      ari: AriFacts | undefined;
      intent: RenewalIntent;
      /** A saved order for the current names and key type exists (controller/issuer). */
      resumableOrder: boolean;
    }
);

/** How an order is paid for. */
export type OrderPayment =
  /** Spend `spend` now, in the tick of the check; refund it if no order used it. */
  | { kind: 'commit'; spend: Spend }
  /**
   * Resuming a saved order, charged when it was placed: nothing now. Only if the CA lost
   * the order does the new one go through the budgets (see {@link resumeCharge}).
   */
  | { kind: 'resume' };

/** What the loop does about one certificate this pass. */
export type PassPlan =
  | { action: 'busy'; busy: 'in-flight' | 'spooled'; reason: string }
  | {
      action: 'wait';
      reason: string;
      /** When to look again. */
      at: number;
      /** The state to show while waiting; undefined: keep the current one (a failure). */
      state: 'ready' | 'pending' | undefined;
    }
  | { action: 'queued'; reason: string }
  | {
      action: 'defer';
      reason: string;
      until: number;
      budgetReason: string;
      limits: LimitName[];
      /** First deferral since the last order: log it and emit a `deferred` event. */
      announce: boolean;
    }
  | {
      action: 'order';
      reason: string;
      /** What the budgets were (or will be) asked. */
      request: BudgetRequest;
      /** ARI `replaces` for the order. */
      replaces: string | undefined;
      payment: OrderPayment;
      /** The issuer that orders (and whose budgets pay); undefined without `issuers` facts. */
      issuer: string | undefined;
      /** The emergency point of the version agents serve (fallback.ts, after a failure). */
      emergencyAt: number | undefined;
    };

/** Reason shown while a spooled version waits. */
export const SPOOLED_REASON = 'an issued version waits in the spool until the store accepts it';

/** Plans one pass for one certificate (module comment: the order of the checks). */
export function planPass(f: PassFacts): PassPlan {
  if (f.busy !== null) return { action: 'busy', busy: f.busy, reason: f.busy === 'spooled' ? SPOOLED_REASON : '' };
  const { spec, latest, target, ari, intent, now } = f;
  const scheduled = decide(spec, target, now, intent.retryAt, { spread: f.spread, ...(ari ? { ari: { window: ari.window, seed: ari.seed } } : {}) });
  const owed = plan({ scheduled, intent, resumableOrder: f.resumableOrder, now });
  if (owed.action === 'wait') {
    return { action: 'wait', reason: owed.reason, at: owed.at, state: intent.failures === 0 ? (target ? 'ready' : 'pending') : undefined };
  }
  if (!f.slotFree) return { action: 'queued', reason: owed.reason };

  // A renewal of the same names is exempt from the per-account and per-domain limits;
  // an ARI renewal (replaces) from all. Both only at the CA that issued the served
  // version: another CA neither knows the certificate nor counts it as a renewal.
  const several = f.issuers;
  const current = several ? currentIssuer(several.chain, intent.issuer) : undefined;
  const issuedBy = several ? (latest?.issuer ?? several.chain[0]) : undefined;
  const requestAt = (issuer: string | undefined): { request: BudgetRequest; replaces: string | undefined } => {
    const sameCa = issuer === issuedBy;
    const renewal = sameCa && latest !== null && sameNameSet(latest.names, spec.names);
    const replaces = sameCa && owed.ari && renewal && ari ? ari.certId : undefined;
    return { request: { names: spec.names, emergency: owed.emergency, renewal, ...(replaces ? { replaces } : {}) }, replaces };
  };
  if (owed.resume) {
    const r = requestAt(current);
    return { action: 'order', reason: owed.reason, request: r.request, replaces: r.replaces, payment: { kind: 'resume' }, issuer: current, emergencyAt: emergencyOf(target) };
  }
  let verdict: CheckResult;
  let issuer = current;
  let reason = owed.reason;
  if (several && current !== undefined) {
    // A budget that holds the current issuer past the emergency point hands the order on.
    const b = budgetIssuer(several.chain, current, (i) => several.budget(i, requestAt(i).request), emergencyOf(target));
    verdict = b.verdict;
    issuer = b.issuer;
    if (b.reason !== '') reason = `${reason}; ${b.reason}`;
  } else {
    verdict = f.budget(requestAt(undefined).request);
  }
  if (!verdict.ok) {
    return { action: 'defer', reason: owed.reason, until: verdict.until, budgetReason: verdict.reason, limits: verdict.limits, announce: !f.deferred };
  }
  const { request, replaces } = requestAt(issuer);
  return { action: 'order', reason, request, replaces, payment: { kind: 'commit', spend: verdict.spend }, issuer, emergencyAt: emergencyOf(target) };
}

/** The emergency point of `meta` (scheduler emergencyPoint); undefined without a version. */
export function emergencyOf(meta: VersionMeta | null): number | undefined {
  if (!meta) return undefined;
  const notBefore = Date.parse(meta.notBefore);
  const notAfter = Date.parse(meta.notAfter);
  if (Number.isNaN(notAfter)) return undefined;
  return Number.isNaN(notBefore) ? notAfter : emergencyPoint(notBefore, notAfter);
}

/**
 * The charge of a resumed order whose saved order the CA no longer has: the budgets'
 * answer for the new order it needs, at `now`. `spend` to commit, or the deferral as a
 * retryable BUDGET_DEFERRED (the issuer then sends nothing).
 */
export function resumeCharge(verdict: CheckResult, now: number): { ok: true; spend: Spend } | { ok: false; message: string; retryAfterMs: number; limits: LimitName[] } {
  if (verdict.ok) return { ok: true, spend: verdict.spend };
  return { ok: false, message: `saved order unusable and a new one is deferred: ${verdict.reason}`, retryAfterMs: Math.max(0, verdict.until - now), limits: verdict.limits };
}

/** What to record after an issuance that started at `startedAt` stored a version. */
export function afterIssued(intent: RenewalIntent, startedAt: number): { intent: RenewalIntent; releasePin: true } {
  return { intent: afterSuccess(intent, startedAt), releasePin: true };
}

/** A failed issuance, as the loop saw it. */
export interface FailureFacts {
  intent: RenewalIntent;
  error: {
    code: string;
    message: string;
    retryAfterMs?: number | undefined;
    /** The CA issued and the spool holds the certificate (controller/spool). */
    spooled: boolean;
    /** The identifier whose validation failed (ACME_PROBLEM), if any. */
    identifier?: string | undefined;
    /** The HTTP status of the CA's problem answer, if any (fallback.ts caDown). */
    status?: number | undefined;
  };
  /**
   * Several issuers: the chain, the issuer the failed issuance used, its
   * `fallbackAfter`, and the served version's emergency point (fallback.ts). Absent:
   * one issuer, no fallback.
   */
  fallback?: { chain: readonly string[]; issuer: string; fallbackAfter: number; emergencyAt: number | undefined } | undefined;
  now: number;
  startedAt: number;
  /** Lifetime of the current version (caps the backoff); undefined without one. */
  lifetimeMs: number | undefined;
  /** An agent came online while the issuance ran. */
  agentCameOnline: boolean;
  /** Uniform [0, 1): the backoff's jitter. */
  random: () => number;
}

/** What to record after a failed issuance. */
export type FailurePlan =
  | {
      /** The renewal happened (the spool delivers it): answered like a success, the order stays charged. */
      outcome: 'spooled';
      intent: RenewalIntent;
    }
  | {
      outcome: 'failed';
      intent: RenewalIntent;
      /** Give back a spend committed for an order that was never sent. */
      refundUnused: true;
      /** Charge this identifier's authorization-failure budget. */
      authorizationFailure: string | undefined;
      /** Set when the certificate moves on to its next issuer (the intent's `issuer`): why. */
      fallback: string | undefined;
    };

/**
 * The bookkeeping of a failed issuance. Budgets: an order that was sent stays charged
 * while it can be resumed (the issuer refunds a dropped one); a spend no order used is
 * given back; a failed validation costs the identifier's authorization-failure budget.
 * Backoff: the scheduler's step (jittered by `random`, capped by the lifetime) or the
 * CA's Retry-After, whichever is later — except CHALLENGE_NOT_SERVED while an agent came
 * online, which is retried at once (seen in CI: a 10-minute wait with every agent online).
 */
export function afterFailed(f: FailureFacts): FailurePlan {
  // The CA issued and the spool holds the certificate until the store takes it: the
  // renewal happened, so a request it answered is done. Treating it as a failure kept
  // the request open and ordered a second certificate once the spool had delivered it.
  if (f.error.spooled) return { outcome: 'spooled', intent: afterSuccess(f.intent, f.startedAt) };
  const failed = afterFailure(f.intent, f.now, f.error, backoffDelay(f.intent.failures + 1, f.random, f.lifetimeMs));
  let intent = f.error.code === ErrorCode.ChallengeNotServed && f.agentCameOnline ? clearBackoff(failed) : failed;
  const authorizationFailure = f.error.code === ErrorCode.AcmeProblem ? f.error.identifier : undefined;
  let fallback: string | undefined;
  if (f.fallback) {
    const { chain, issuer } = f.fallback;
    const onCurrent = currentIssuer(chain, f.intent.issuer) === issuer;
    const d = afterIssuerFailure({
      chain,
      issuer,
      failure: { code: f.error.code, status: f.error.status },
      downBefore: onCurrent ? f.intent.issuerDown : 0,
      fallbackAfter: f.fallback.fallbackAfter,
      now: f.now,
      retryAt: intent.retryAt,
      emergencyAt: f.fallback.emergencyAt,
    });
    if (d.action === 'next') {
      // The next issuer is tried at once: waiting out the backoff of the one that failed
      // is what the fallback is there to avoid.
      intent = { ...intent, issuer: d.issuer, issuerDown: 0, retryAt: 0 };
      fallback = d.reason;
    } else if (onCurrent) {
      intent = { ...intent, issuerDown: d.downFailures };
    }
  }
  return { outcome: 'failed', intent, refundUnused: true, authorizationFailure, fallback };
}

/** The lifetime of `meta` in ms (undefined without a version). */
export function lifetimeOf(meta: VersionMeta | null): number | undefined {
  return meta ? Date.parse(meta.notAfter) - Date.parse(meta.notBefore) : undefined;
}


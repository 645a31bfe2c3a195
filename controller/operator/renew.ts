/**
 * What came of a `renew`: the operator used to hear "renewal requested" while a budget
 * held the order back for 31 hours (issue #14). After recording the durable request,
 * the operator module watches the work loop's state of the certificate for a few
 * seconds and answers with what the loop did: ordered, issued, deferred (until when, by
 * which budget), failed (and why), or queued when it has not acted yet.
 *
 * Pure: snapshots of the loop's state in, a verdict out. The loop is not changed for
 * this; it already keeps every fact (controller/reconcile CertRuntime). A pass that acted
 * on the request is recognised by the reason the loop records for it ("renewal requested
 * by X at <the request's time>"), by a state change, or by a new deferral.
 */
import { isoAt } from '../../shared/clock/index.js';
import { LIMIT_TITLES } from '../budget/index.js';
import type { CertRuntime } from '../reconcile/index.js';

/** The loop's facts about one certificate at one moment (CertRuntime is updated in place, so copied). */
export interface RenewWatch {
  state: CertRuntime['state'];
  latestVersion: number;
  failures: number;
  lastError: string;
  lastErrorCode: string;
  deferredUntil: number;
  deferredReason: string;
  backoffUntil: number;
  requestedAt: number;
  reason: string;
}

/** A copy of what {@link renewOutcome} compares. */
export function watchOf(rt: CertRuntime | undefined): RenewWatch {
  return {
    state: rt?.state ?? 'pending',
    latestVersion: rt?.latest?.version ?? 0,
    failures: rt?.failures ?? 0,
    lastError: rt?.lastError ?? '',
    lastErrorCode: rt?.lastErrorCode ?? '',
    deferredUntil: rt?.deferredUntil ?? 0,
    deferredReason: rt?.deferredReason ?? '',
    backoffUntil: rt?.backoffUntil ?? 0,
    requestedAt: rt?.requestedAt ?? 0,
    reason: rt?.reason ?? '',
  };
}

/** The answer to a renew request (the RenewCertificateResponse without its message). */
export interface RenewVerdict {
  outcome: 'ordered' | 'issued' | 'deferred' | 'failed' | 'queued';
  /** ordered/queued: the version the order will make; issued: the new version. */
  version: number;
  /** What the loop said, for the operator's line. */
  detail: string;
  deferredUntil?: number;
  /** The budget limits that hold the order back, by their CA titles. */
  budgets?: string[];
  reason?: string;
  errorCode?: string;
  backoffUntil?: number;
}

/**
 * What the loop did about a request recorded at `requestedAt` (epoch ms), comparing its
 * state `before` the request with `now`; null while undecided. With `final` (the wait
 * is over) never null: a deferral the loop still reports wins, else `queued`.
 *
 * First match wins: a newer version (issued); more failures (failed, even when the
 * issuance had started before the request: the request stays and is retried at the
 * backoff); an issuance that started (ordered); a deferral from a pass after the request
 * (deferred).
 */
export function renewOutcome(before: RenewWatch, now: RenewWatch, requestedAt: number, nowMs: number, final: boolean): RenewVerdict | null {
  const next = before.latestVersion + 1;
  if (now.latestVersion > before.latestVersion) return { outcome: 'issued', version: now.latestVersion, detail: `version ${now.latestVersion} issued` };
  if (now.failures > before.failures) {
    return {
      outcome: 'failed',
      version: next,
      detail: `failed${now.lastErrorCode === '' ? '' : ` (${now.lastErrorCode})`}: ${now.lastError || 'no reason given'}`,
      reason: now.lastError,
      errorCode: now.lastErrorCode,
      ...(now.backoffUntil > nowMs ? { backoffUntil: now.backoffUntil } : {}),
    };
  }
  if (now.state === 'issuing' && before.state !== 'issuing') return { outcome: 'ordered', version: next, detail: `ordered; it will be version ${next}` };
  const passAfterRequest = requestedAt > 0 && now.reason.includes(isoAt(requestedAt));
  const deferred = now.deferredUntil > nowMs && now.state !== 'issuing';
  if (deferred && (final || passAfterRequest || now.deferredUntil !== before.deferredUntil)) {
    const budgets = budgetsIn(now.deferredReason);
    return {
      outcome: 'deferred',
      version: next,
      detail: `deferred until ${isoAt(now.deferredUntil)} by ${budgets.length === 0 ? 'a rate-limit budget' : `budget ${budgets.join(', ')}`}`,
      deferredUntil: now.deferredUntil,
      budgets,
      reason: now.deferredReason,
    };
  }
  if (!final) return null;
  const why =
    now.state === 'issuing'
      ? 'an issuance that started before this request is still running; another one follows it'
      : 'recorded; the controller has not acted on it yet (busy with other issuances, or not the leader)';
  return { outcome: 'queued', version: next, detail: why };
}

/** The budget limits a deferral reason names (controller/budget writes their CA titles). */
export function budgetsIn(reason: string): string[] {
  return Object.values(LIMIT_TITLES).filter((title) => reason.includes(title));
}

/**
 * Several issuers per certificate, pure: which issuer the next order goes to, and when a
 * failure moves a certificate on to its next issuer (docs/renewal.md#issuers-and-fallback).
 *
 *   renewal starts ──▶ chain[0] ──fails, will not heal in time──▶ chain[1] ──▶ ... (last: stays)
 *        ▲                │ok                                        │ok
 *        └── next renewal ┴──────────── version records its issuer ──┘
 *
 * "Will not heal in time" is one of:
 *  - the CA is down: `fallbackAfter` consecutive failures with no answer (ACME_TRANSPORT)
 *    or a 5xx answer from this issuer;
 *  - a failure from the CA's side (any ACME_* code, or its budget deferring the order)
 *    when now, or the issuer's next attempt, is at or past the served version's
 *    emergency point (scheduler emergencyPoint: the last twentieth of its lifetime).
 * A failure on our side (HTTP-01 not served, DNS, the store) stays: another CA would
 * fail the same way. The current issuer is kept in the durable intent (intent.ts), so a
 * restart keeps it; a stored version resets it to the first issuer.
 */
import { ErrorCode } from '../../shared/errors/index.js';
import type { CheckResult } from '../budget/index.js';

/** What the fallback rule needs to know about one failure. */
export interface IssuerFailure {
  code: string;
  /** The HTTP status of the CA's answer, if it answered with a problem. */
  status?: number | undefined;
}

/** True when the failure says the CA itself is away: no answer, or a 5xx answer. */
export function caDown(f: IssuerFailure): boolean {
  if (f.code === ErrorCode.AcmeTransport) return true;
  return f.code === ErrorCode.AcmeProblem && f.status !== undefined && f.status >= 500;
}

/** True for failures that come from the issuer (its CA, or its budget), not from our side. */
export function fromIssuer(f: IssuerFailure): boolean {
  return f.code.startsWith('ACME_') || f.code === ErrorCode.BudgetDeferred;
}

/** The issuer a certificate is on: `current` when it is in the chain, else the first. */
export function currentIssuer(chain: readonly string[], current: string): string {
  return chain.includes(current) ? current : (chain[0] ?? '');
}

/** The issuer after `issuer` in `chain`, or undefined at its end. */
export function nextIssuer(chain: readonly string[], issuer: string): string | undefined {
  const i = chain.indexOf(issuer);
  return i < 0 ? undefined : chain[i + 1];
}

/** What the rule is told after an issuance at `issuer` failed. */
export interface FallbackFacts {
  /** The certificate's issuers in order. */
  chain: readonly string[];
  /** The issuer the failed issuance used. */
  issuer: string;
  failure: IssuerFailure;
  /** Consecutive CA-down failures at `issuer` before this one. */
  downBefore: number;
  /** `fallbackAfter` of `issuer`. */
  fallbackAfter: number;
  now: number;
  /** When `issuer` would be tried again (the backoff after this failure). */
  retryAt: number;
  /** The served version's emergency point; undefined without a version. */
  emergencyAt: number | undefined;
}

/** The rule's answer: stay (counting CA-down failures), or move on to `issuer`. */
export type FallbackDecision = { action: 'stay'; downFailures: number } | { action: 'next'; issuer: string; reason: string };

/** After a failure at `f.issuer` (module comment: when it moves on). */
export function afterIssuerFailure(f: FallbackFacts): FallbackDecision {
  const down = caDown(f.failure);
  const downFailures = down ? f.downBefore + 1 : 0;
  const next = nextIssuer(f.chain, f.issuer);
  if (next === undefined) return { action: 'stay', downFailures };
  if (down && downFailures >= f.fallbackAfter) {
    return { action: 'next', issuer: next, reason: `issuer ${f.issuer} is down (${downFailures} consecutive failure${downFailures === 1 ? '' : 's'}: ${f.failure.code}); trying ${next}` };
  }
  if (fromIssuer(f.failure) && f.emergencyAt !== undefined) {
    if (f.now >= f.emergencyAt) return { action: 'next', issuer: next, reason: `issuer ${f.issuer} failed (${f.failure.code}) in the emergency window; trying ${next}` };
    if (f.retryAt >= f.emergencyAt) return { action: 'next', issuer: next, reason: `issuer ${f.issuer} failed (${f.failure.code}) and its next attempt would fall in the emergency window; trying ${next}` };
  }
  return { action: 'stay', downFailures };
}

/**
 * The issuer whose budget pays for an order: `issuer` when its budget allows it, or when
 * its deferral ends before `emergencyAt`; otherwise the first later issuer whose budget
 * allows it. When none does, the verdict of `issuer` (the deferral to announce).
 */
export function budgetIssuer(
  chain: readonly string[],
  issuer: string,
  check: (issuer: string) => CheckResult,
  emergencyAt: number | undefined,
): { issuer: string; verdict: CheckResult; reason: string } {
  const first = check(issuer);
  if (first.ok || emergencyAt === undefined || first.until < emergencyAt) return { issuer, verdict: first, reason: '' };
  for (let next = nextIssuer(chain, issuer); next !== undefined; next = nextIssuer(chain, next)) {
    const verdict = check(next);
    if (verdict.ok) return { issuer: next, verdict, reason: `budget of issuer ${issuer} defers past the emergency point (${first.reason}); issuer ${next} orders` };
  }
  return { issuer, verdict: first, reason: '' };
}

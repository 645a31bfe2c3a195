/**
 * Several issuers with fallback (controller/reconcile/fallback.ts and its use in plan.ts):
 * when a failure moves a certificate on to its next issuer, which issuer's budget pays
 * for an order, that the choice survives a restart (the stored intent) and that a stored
 * version starts the next renewal at the first issuer again. Tables named by sentences,
 * a manual clock, the real Budget.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { afterIssuerFailure, budgetIssuer, currentIssuer, type FallbackFacts } from '../../controller/reconcile/fallback.js';
import { afterFailed, afterIssued, planPass, type FailureFacts, type PassFacts } from '../../controller/reconcile/plan.js';
import { fromStored, NO_INTENT, requestRenewal, toStored, type RenewalIntent } from '../../controller/reconcile/intent.js';
import { Budget, PRESETS, type BudgetRequest, type CheckResult } from '../../controller/budget/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import type { VersionMeta } from '../../shared/model/index.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 0, 1);
const CHAIN = ['primary', 'fallback'];
/** A 90-day version issued at T0: emergency point at day 85.5. */
const EMERGENCY = T0 + 90 * DAY - Math.ceil(90 * DAY * 0.05);

const down = { code: ErrorCode.AcmeTransport };
const fivexx = { code: ErrorCode.AcmeProblem, status: 503 };
const unauthorized = { code: ErrorCode.AcmeProblem, status: 403 };
const notServed = { code: ErrorCode.ChallengeNotServed };
const rateLimited = { code: ErrorCode.AcmeRateLimited, status: 429 };

const base: FallbackFacts = { chain: CHAIN, issuer: 'primary', failure: down, downBefore: 0, fallbackAfter: 2, now: T0 + 60 * DAY, retryAt: T0 + 60 * DAY + MIN, emergencyAt: EMERGENCY };

const RULE: Array<[string, Partial<FallbackFacts>, 'stay' | 'next', number?]> = [
  ['the first CA-down failure stays on the primary and counts it', {}, 'stay', 1],
  ['the second consecutive CA-down failure moves on to the fallback', { downBefore: 1 }, 'next'],
  ['a 5xx answer counts as the CA being down', { failure: fivexx, downBefore: 1 }, 'next'],
  ['with fallbackAfter 1 the first CA-down failure moves on', { fallbackAfter: 1 }, 'next'],
  ['a refused validation far from the emergency point stays (and resets the count)', { failure: unauthorized, downBefore: 1 }, 'stay', 0],
  ['a failure from the CA in the emergency window moves on at once', { failure: unauthorized, now: EMERGENCY + MIN, retryAt: EMERGENCY + 2 * MIN }, 'next'],
  ['a rate limit whose retry would fall past the emergency point moves on', { failure: rateLimited, retryAt: EMERGENCY + HOUR }, 'next'],
  ['a failure on our side stays even in the emergency window: another CA would fail the same way', { failure: notServed, now: EMERGENCY + MIN }, 'stay', 0],
  ['the last issuer has nowhere to go', { issuer: 'fallback', downBefore: 5 }, 'stay', 6],
  ['a first issuance (no version, no emergency point) moves on only when the CA is down', { failure: unauthorized, emergencyAt: undefined, retryAt: T0 + 365 * DAY }, 'stay', 0],
  ['a single issuer never moves', { chain: ['primary'], downBefore: 5 }, 'stay', 6],
];

for (const [name, over, want, downFailures] of RULE) {
  test(name, () => {
    const d = afterIssuerFailure({ ...base, ...over });
    assert.equal(d.action, want);
    if (d.action === 'next') assert.equal(d.issuer, CHAIN[CHAIN.indexOf(over.issuer ?? 'primary') + 1]);
    if (d.action === 'stay' && downFailures !== undefined) assert.equal(d.downFailures, downFailures);
  });
}

test('an issuer name no longer in the chain (configuration changed) counts as the first', () => {
  assert.equal(currentIssuer(CHAIN, ''), 'primary');
  assert.equal(currentIssuer(CHAIN, 'gone'), 'primary');
  assert.equal(currentIssuer(CHAIN, 'fallback'), 'fallback');
});

const ok: CheckResult = { ok: true, spend: { items: [], exemptions: [] } };
const deferTo = (until: number): CheckResult => ({ ok: false, until, reason: 'new-orders-per-account exhausted', limits: ['newOrdersPerAccount'] });

test('a budget deferral ending before the emergency point stays with the current issuer', () => {
  const b = budgetIssuer(CHAIN, 'primary', (i) => (i === 'primary' ? deferTo(EMERGENCY - HOUR) : ok), EMERGENCY);
  assert.equal(b.issuer, 'primary');
  assert.equal(b.verdict.ok, false);
});

test('a budget deferral past the emergency point hands the order to the next issuer whose budget allows it', () => {
  const b = budgetIssuer(CHAIN, 'primary', (i) => (i === 'primary' ? deferTo(EMERGENCY + HOUR) : ok), EMERGENCY);
  assert.equal(b.issuer, 'fallback');
  assert.ok(b.verdict.ok);
  assert.match(b.reason, /budget of issuer primary defers past the emergency point/);
});

test('when every budget defers, the current issuer’s deferral is the one announced', () => {
  const b = budgetIssuer(CHAIN, 'primary', (i) => deferTo(i === 'primary' ? EMERGENCY + HOUR : EMERGENCY + 2 * HOUR), EMERGENCY);
  assert.equal(b.issuer, 'primary');
  assert.ok(!b.verdict.ok && b.verdict.until === EMERGENCY + HOUR);
});

function version(issuedAt = T0): VersionMeta {
  return {
    name: 'web',
    version: 1,
    serial: '0a',
    fingerprint: 'ff',
    names: ['www.example.test'],
    notBefore: new Date(issuedAt).toISOString(),
    notAfter: new Date(issuedAt + 90 * DAY).toISOString(),
    issuedAt: new Date(issuedAt).toISOString(),
    keyType: 'ecdsa-p256',
    issuer: 'primary',
  };
}

function failure(intent: RenewalIntent, now: number, error: { code: string; status?: number }, fallbackAfter = 2): FailureFacts {
  return {
    intent,
    now,
    startedAt: now - MIN,
    lifetimeMs: 90 * DAY,
    agentCameOnline: false,
    random: () => 0.5,
    error: { ...error, message: 'x', spooled: false },
    fallback: { chain: CHAIN, issuer: currentIssuer(CHAIN, intent.issuer), fallbackAfter, emergencyAt: EMERGENCY },
  };
}

test('two CA-down failures move an operator’s renewal to the fallback, to be tried at once; a success goes back to the primary', () => {
  const now = T0 + 10 * DAY;
  const requested = requestRenewal(NO_INTENT, now - 2 * MIN, 'admin');
  const first = afterFailed(failure(requested, now, down));
  assert.ok(first.outcome === 'failed' && first.fallback === undefined);
  assert.equal(first.intent.issuer, '');
  assert.equal(first.intent.issuerDown, 1);
  assert.ok(first.intent.retryAt > now, 'the primary backs off as before');
  const second = afterFailed(failure(first.intent, now + MIN, down));
  assert.ok(second.outcome === 'failed' && second.fallback !== undefined && /primary is down/.test(second.fallback));
  assert.equal(second.intent.issuer, 'fallback');
  assert.equal(second.intent.issuerDown, 0);
  assert.equal(second.intent.retryAt, 0, 'the fallback is tried without waiting out the primary’s backoff');
  assert.equal(second.intent.failures, 2);
  assert.equal(second.intent.requestedAt, requested.requestedAt, 'the request stays until a version is stored');

  // The choice is durable: a restart reads it back.
  const reread = fromStored(JSON.parse(JSON.stringify(toStored(second.intent))));
  assert.equal(reread.issuer, 'fallback');

  // Planned from the restored intent, the order goes to the fallback and its budget.
  const asked: string[] = [];
  const budgets = new Map(CHAIN.map((n) => [n, new Budget(PRESETS.letsencrypt)]));
  const facts: PassFacts = {
    spec: { names: ['www.example.test'], keyType: 'ecdsa-p256' },
    latest: version(),
    target: version(),
    spread: 0.05,
    slotFree: true,
    deferred: false,
    budget: () => assert.fail('a single-issuer budget asked with several issuers'),
    issuers: {
      chain: CHAIN,
      budget: (i: string, req: BudgetRequest) => {
        asked.push(i);
        return (budgets.get(i) as Budget).check(req, now + 2 * MIN);
      },
    },
    now: now + 2 * MIN,
    busy: null,
    ari: undefined,
    intent: reread,
    resumableOrder: false,
  };
  const p = planPass(facts);
  assert.ok(p.action === 'order');
  assert.equal(p.issuer, 'fallback');
  assert.deepEqual(asked, ['fallback']);

  const done = afterIssued(reread, now + MIN);
  assert.equal(done.intent.issuer, '', 'the next renewal starts at the first issuer');
  assert.equal(currentIssuer(CHAIN, done.intent.issuer), 'primary');
});

test('a CA-down failure at the fallback keeps counting there, and a failure of another kind resets the count', () => {
  const now = T0 + 10 * DAY;
  const onFallback: RenewalIntent = { ...NO_INTENT, failures: 2, issuer: 'fallback' };
  const a = afterFailed(failure(onFallback, now, down));
  assert.equal(a.intent.issuer, 'fallback');
  assert.equal(a.intent.issuerDown, 1);
  const b = afterFailed(failure(a.intent, now, notServed));
  assert.equal(b.intent.issuerDown, 0);
});

test('a budget deferral of the primary past the emergency point orders from the fallback', () => {
  const now = EMERGENCY - DAY;
  const primary = new Budget(PRESETS.letsencrypt);
  // Spend the primary's per-exact-set bucket (5 per 7 days) on this name set.
  for (let i = 0; i < 5; i++) {
    const r = primary.check({ names: ['www.example.test'], emergency: true }, now);
    if (r.ok) primary.commit(r.spend, now);
  }
  const fallback = new Budget(PRESETS.letsencrypt);
  const p = planPass({
    spec: { names: ['www.example.test'], keyType: 'ecdsa-p256' },
    latest: version(),
    target: version(),
    spread: 0.05,
    slotFree: true,
    deferred: false,
    budget: () => assert.fail('unused'),
    issuers: { chain: CHAIN, budget: (i, req) => (i === 'primary' ? primary : fallback).check(req, now) },
    now,
    busy: null,
    ari: undefined,
    intent: requestRenewal(NO_INTENT, now - MIN, 'admin'),
    resumableOrder: false,
  });
  assert.ok(p.action === 'order', JSON.stringify(p));
  assert.equal(p.issuer, 'fallback');
  assert.match(p.reason, /budget of issuer primary defers past the emergency point/);
});

test('an order at another CA than the one that issued the served version carries no ARI replaces and is no renewal to its budgets', () => {
  const now = T0 + 62 * DAY;
  const asked: Array<[string, BudgetRequest]> = [];
  const budget = new Budget(PRESETS.letsencrypt);
  const facts = (intent: RenewalIntent): PassFacts => ({
    spec: { names: ['www.example.test'], keyType: 'ecdsa-p256' },
    latest: version(),
    target: version(),
    spread: 0,
    slotFree: true,
    deferred: false,
    budget: () => assert.fail('unused'),
    issuers: {
      chain: CHAIN,
      budget: (i, req) => {
        asked.push([i, req]);
        return budget.check(req, now);
      },
    },
    now,
    busy: null,
    ari: { window: { start: now - DAY, end: now + DAY }, seed: 0, certId: 'aaa.bbb' },
    intent,
    resumableOrder: false,
  });
  const atPrimary = planPass(facts(NO_INTENT));
  assert.ok(atPrimary.action === 'order' && atPrimary.issuer === 'primary');
  assert.equal(atPrimary.replaces, 'aaa.bbb', 'the CA that issued it gets replaces');
  const atFallback = planPass(facts({ ...NO_INTENT, failures: 2, issuer: 'fallback' }));
  assert.ok(atFallback.action === 'order' && atFallback.issuer === 'fallback');
  assert.equal(atFallback.replaces, undefined);
  assert.equal(atFallback.request.renewal, false);
  assert.equal(asked.at(-1)?.[0], 'fallback');
  assert.equal(asked.at(-1)?.[1].replaces, undefined);
});

test('an intent stored before issuers existed reads back on the first issuer', () => {
  const old = { requestedAt: '', requestedBy: '', failures: 1, retryAt: new Date(T0).toISOString(), lastErrorCode: 'ACME_TRANSPORT', lastError: 'x' };
  const i = fromStored(old);
  assert.equal(i.issuer, '');
  assert.equal(i.issuerDown, 0);
  assert.deepEqual(Object.keys(toStored(i)).sort(), Object.keys(old).sort(), 'a single-issuer object keeps its stored shape');
});

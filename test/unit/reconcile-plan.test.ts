/**
 * The work loop's pure plan (controller/reconcile/plan.ts): what one pass does about one
 * certificate, and what an ended issuance records. Tables named by sentences, a manual
 * clock for `now` and a seeded random for the backoff jitter; the budgets are the real
 * Budget with Let's Encrypt's limits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { afterFailed, afterIssued, planPass, resumeCharge, SPOOLED_REASON, type PassFacts, type PassPlan } from '../../controller/reconcile/plan.js';
import { NO_INTENT, requestRenewal, type RenewalIntent } from '../../controller/reconcile/intent.js';
import { Budget, PRESETS, type BudgetRequest } from '../../controller/budget/index.js';
import { BACKOFF_JITTER } from '../../controller/scheduler/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import type { VersionMeta } from '../../shared/model/index.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 0, 1);
const NAMES = ['www.example.test'];

function version(names = NAMES, lifetimeDays = 90, issuedAt = T0): VersionMeta {
  return {
    name: 'web',
    version: 1,
    serial: '0a1b',
    fingerprint: 'ff',
    names,
    notBefore: new Date(issuedAt).toISOString(),
    notAfter: new Date(issuedAt + lifetimeDays * DAY).toISOString(),
    issuedAt: new Date(issuedAt).toISOString(),
    keyType: 'ecdsa-p256',
  };
}

/** A budget with one bucket left empty: `exhausted` orders of new names are refused. */
function budgetAt(clock: ManualClock, exhausted = false): { budget: Budget; asked: BudgetRequest[]; check: PassFacts['budget'] } {
  const budget = new Budget(PRESETS.letsencrypt);
  if (exhausted) {
    for (let i = 0; i < 300; i++) {
      const r = budget.check({ names: [`h${i}.other${i}.test`], emergency: true }, clock.now());
      if (r.ok) budget.commit(r.spend, clock.now());
    }
  }
  const asked: BudgetRequest[] = [];
  return {
    budget,
    asked,
    check: (req) => {
      asked.push(req);
      return budget.check(req, clock.now());
    },
  };
}

interface Row {
  /** What the certificate looks like this pass. */
  latest: VersionMeta | null;
  at: number;
  intent?: RenewalIntent;
  resumableOrder?: boolean;
  busy?: 'in-flight' | 'spooled';
  slotFree?: boolean;
  deferred?: boolean;
  names?: string[];
  ari?: boolean;
  exhausted?: boolean;
}

const ARI_WINDOW = { start: T0 + 50 * DAY, end: T0 + 52 * DAY };

function facts(row: Row, clock: ManualClock, check: PassFacts['budget']): PassFacts {
  clock.set(row.at);
  const common = {
    spec: { names: row.names ?? NAMES, keyType: 'ecdsa-p256' as const },
    latest: row.latest,
    target: row.latest,
    spread: 0.05,
    slotFree: row.slotFree ?? true,
    deferred: row.deferred ?? false,
    budget: check,
    now: clock.now(),
  };
  if (row.busy) return { ...common, busy: row.busy };
  return {
    ...common,
    busy: null,
    ari: row.ari ? { window: ARI_WINDOW, seed: 0.5, certId: 'aki.serial' } : undefined,
    intent: row.intent ?? NO_INTENT,
    resumableOrder: row.resumableOrder ?? false,
  };
}

type Expect =
  | { action: 'busy'; reason: RegExp }
  | { action: 'wait'; reason: RegExp; at: number | 'later'; state: 'ready' | 'pending' | undefined }
  | { action: 'queued'; reason: RegExp }
  | { action: 'defer'; reason: RegExp; announce: boolean }
  | { action: 'order'; reason: RegExp; payment: 'commit' | 'resume'; replaces?: string; renewal: boolean; emergency: boolean };

const failedOnce: RenewalIntent = { ...NO_INTENT, failures: 1, retryAt: T0 + 61 * DAY + 10 * MIN, lastErrorCode: 'ACME_TRANSPORT', lastError: 'CA unreachable' };

const PASS_CASES: Array<[string, Row, Expect]> = [
  ['a certificate with an issuance in flight is left alone', { latest: null, at: T0, busy: 'in-flight' }, { action: 'busy', reason: /^$/ }],
  ['a certificate whose new version waits in the spool orders nothing', { latest: version(), at: T0 + 70 * DAY, busy: 'spooled' }, { action: 'busy', reason: /waits in the spool/ }],
  ['no certificate yet is ordered now, charged to every limit', { latest: null, at: T0 }, { action: 'order', reason: /no certificate yet/, payment: 'commit', renewal: false, emergency: false }],
  ['a fresh certificate waits for its renewal point and shows ready', { latest: version(), at: T0 + DAY }, { action: 'wait', reason: /renewal window not reached/, at: 'later', state: 'ready' }],
  ['a certificate in its window is renewed as a renewal of the same names', { latest: version(), at: T0 + 61 * DAY }, { action: 'order', reason: /renewal window/, payment: 'commit', renewal: true, emergency: false }],
  ['changed names are ordered as a new identifier set', { latest: version(), at: T0 + DAY, names: ['www.example.test', 'api.example.test'] }, { action: 'order', reason: /configuration changed/, payment: 'commit', renewal: false, emergency: false }],
  ['a certificate in its last twentieth is an emergency', { latest: version(), at: T0 + 86 * DAY }, { action: 'order', reason: /emergency/, payment: 'commit', renewal: true, emergency: true }],
  ['a due certificate with no free slot is queued without asking the budgets', { latest: version(), at: T0 + 61 * DAY, slotFree: false }, { action: 'queued', reason: /renewal window/ }],
  ['a failure backoff postpones a due renewal to its retryAt and keeps the failed state', { latest: version(), at: T0 + 61 * DAY, intent: failedOnce }, { action: 'wait', reason: /backing off/, at: failedOnce.retryAt, state: undefined }],
  ['an operator request renews a certificate that is not due', { latest: version(), at: T0 + DAY, intent: requestRenewal(NO_INTENT, T0 + DAY, 'admin') }, { action: 'order', reason: /renewal requested by admin/, payment: 'commit', renewal: true, emergency: false }],
  ['a saved order is resumed without charging the budgets again', { latest: version(), at: T0 + DAY, resumableOrder: true }, { action: 'order', reason: /saved before a restart.*resuming it/, payment: 'resume', renewal: true, emergency: false }],
  ['an order the budgets refuse is deferred, and announced the first time', { latest: null, at: T0, exhausted: true }, { action: 'defer', reason: /no certificate yet/, announce: true }],
  ['a deferral already announced is not announced again', { latest: null, at: T0, exhausted: true, deferred: true }, { action: 'defer', reason: /no certificate yet/, announce: false }],
  ['an emergency uses the reserve the budgets hold back', { latest: version(['a.test']), names: ['a.test', 'b.test'], at: T0 + 86 * DAY, exhausted: true }, { action: 'order', reason: /configuration changed; emergency/, payment: 'commit', renewal: false, emergency: true }],
  ['an ARI renewal carries replaces and is exempt from every limit', { latest: version(), at: T0 + 52 * DAY, ari: true, exhausted: true }, { action: 'order', reason: /ARI window reached/, payment: 'commit', replaces: 'aki.serial', renewal: true, emergency: false }],
  ['an ARI window with changed names is not a replacement', { latest: version(), names: ['www.example.test', 'b.example.test'], at: T0 + 52 * DAY, ari: true }, { action: 'order', reason: /configuration changed/, payment: 'commit', renewal: false, emergency: false }],
  ['before the ARI instant the certificate waits for it', { latest: version(), at: T0 + 40 * DAY, ari: true }, { action: 'wait', reason: /ARI window not reached/, at: 'later', state: 'ready' }],
];

for (const [name, row, want] of PASS_CASES) {
  test(name, () => {
    const clock = new ManualClock(T0);
    const b = budgetAt(clock, row.exhausted);
    const p: PassPlan = planPass(facts(row, clock, b.check));
    assert.equal(p.action, want.action, `plan: ${JSON.stringify(p)}`);
    assert.match(p.reason, want.reason);
    switch (want.action) {
      case 'wait': {
        assert.ok(p.action === 'wait');
        if (want.at === 'later') assert.ok(p.at > clock.now(), 'waits for a later instant');
        else assert.equal(p.at, want.at);
        assert.equal(p.state, want.state);
        break;
      }
      case 'queued':
        assert.equal(b.asked.length, 0, 'no budget asked without a slot');
        break;
      case 'defer': {
        assert.ok(p.action === 'defer');
        assert.ok(p.until > clock.now(), 'deferred to a later instant');
        assert.match(p.budgetReason, /New Orders per Account/);
        assert.equal(p.announce, want.announce);
        break;
      }
      case 'order': {
        assert.ok(p.action === 'order');
        assert.equal(p.payment.kind, want.payment);
        assert.equal(p.replaces, want.replaces);
        assert.equal(p.request.renewal, want.renewal);
        assert.equal(p.request.emergency, want.emergency);
        assert.equal(b.asked.length, want.payment === 'resume' ? 0 : 1, 'the budgets are asked once, or not at all for a resumed order');
        break;
      }
      default:
        assert.equal(b.asked.length, 0);
    }
  });
}

test('the spool’s reason is what a waiting certificate shows', () => assert.match(SPOOLED_REASON, /spool/));

// --- after an issuance -------------------------------------------------------------------

/** A seeded random: the backoff jitter is reproducible. */
function seeded(values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] ?? 0;
}

const notServed = { code: ErrorCode.ChallengeNotServed, message: 'HTTP-01 for www.example.test: edge-b (offline)', spooled: false };
const FAILURE_CASES: Array<[string, Partial<Parameters<typeof afterFailed>[0]> & { error: Parameters<typeof afterFailed>[0]['error'] }, { outcome: 'spooled' | 'failed'; retryIn: number | null; failures: number; authz?: string; requested?: boolean }]> = [
  ['a first failure backs off one minute, scattered by the injected random', { error: { code: ErrorCode.AcmeTransport, message: 'CA unreachable', spooled: false }, random: seeded([1]) }, { outcome: 'failed', retryIn: Math.round(MIN * (1 + BACKOFF_JITTER)), failures: 1 }],
  ['the same failure with the lowest draw backs off less', { error: { code: ErrorCode.AcmeTransport, message: 'CA unreachable', spooled: false }, random: seeded([0]) }, { outcome: 'failed', retryIn: Math.round(MIN * (1 - BACKOFF_JITTER)), failures: 1 }],
  ['a third failure backs off 100 minutes', { intent: { ...NO_INTENT, failures: 2 }, error: { code: ErrorCode.AcmeTransport, message: 'x', spooled: false }, random: seeded([0.5]) }, { outcome: 'failed', retryIn: 100 * MIN, failures: 3 }],
  ['the CA’s Retry-After wins over a shorter step', { error: { code: ErrorCode.AcmeRateLimited, message: 'slow down', retryAfterMs: 3 * HOUR, spooled: false } }, { outcome: 'failed', retryIn: 3 * HOUR, failures: 1 }],
  ['a short-lived certificate never backs off longer than a twentieth of its life', { intent: { ...NO_INTENT, failures: 5 }, lifetimeMs: 6 * DAY, error: { code: ErrorCode.AcmeTransport, message: 'x', spooled: false }, random: seeded([0.5]) }, { outcome: 'failed', retryIn: 6 * DAY / 20, failures: 6 }],
  ['a failed validation charges the identifier’s authorization-failure budget', { error: { code: ErrorCode.AcmeProblem, message: 'unauthorized', spooled: false, identifier: 'www.example.test' }, random: seeded([0.5]) }, { outcome: 'failed', retryIn: MIN, failures: 1, authz: 'www.example.test' }],
  ['HTTP-01 not served while no agent came online keeps its backoff', { error: notServed, random: seeded([0.5]) }, { outcome: 'failed', retryIn: MIN, failures: 1 }],
  ['HTTP-01 not served while an agent came online is retried at once', { error: notServed, agentCameOnline: true }, { outcome: 'failed', retryIn: null, failures: 1 }],
  ['a certificate the spool holds answers the request like a success', { intent: requestRenewal(NO_INTENT, T0 - MIN, 'admin'), error: { code: ErrorCode.StoreUnavailable, message: 'spooled', spooled: true } }, { outcome: 'spooled', retryIn: null, failures: 0, requested: false }],
  ['a failure keeps an operator request open', { intent: requestRenewal(NO_INTENT, T0 - MIN, 'admin'), error: { code: ErrorCode.AcmeTransport, message: 'x', spooled: false }, random: seeded([0.5]) }, { outcome: 'failed', retryIn: MIN, failures: 1, requested: true }],
];

for (const [name, input, want] of FAILURE_CASES) {
  test(name, () => {
    const clock = new ManualClock(T0);
    clock.advance(2 * MIN);
    const f = afterFailed({ intent: NO_INTENT, now: clock.now(), startedAt: T0, lifetimeMs: 90 * DAY, agentCameOnline: false, random: seeded([0.5]), ...input });
    assert.equal(f.outcome, want.outcome);
    assert.equal(f.intent.failures, want.failures);
    assert.equal(f.intent.retryAt, want.retryIn === null ? 0 : clock.now() + want.retryIn);
    if (want.requested !== undefined) assert.equal(f.intent.requestedAt > 0, want.requested);
    if (f.outcome === 'failed') {
      assert.equal(f.refundUnused, true, 'a spend no order used is always given back');
      assert.equal(f.authorizationFailure, want.authz);
      assert.equal(f.intent.lastErrorCode, input.error.code);
    }
  });
}

test('a success answers a request made before it started, not one made while it ran', () => {
  const clock = new ManualClock(T0);
  const startedAt = clock.now();
  assert.deepEqual(afterIssued(requestRenewal(NO_INTENT, startedAt - 1, 'admin'), startedAt).intent, NO_INTENT);
  clock.advance(MIN);
  const again = afterIssued(requestRenewal(failedOnce, clock.now(), 'admin'), startedAt);
  assert.equal(again.intent.requestedAt, clock.now());
  assert.equal(again.intent.failures, 0, 'the backoff ends with the success');
  assert.equal(again.releasePin, true);
});

test('a resumed order the CA lost goes through the budgets, and a refusal says until when', () => {
  const clock = new ManualClock(T0);
  const b = budgetAt(clock, true);
  const refused = resumeCharge(b.budget.check({ names: ['new.example.test'] }, clock.now()), clock.now());
  assert.equal(refused.ok, false);
  assert.ok(!refused.ok && refused.retryAfterMs > 0 && /saved order unusable/.test(refused.message));
  const allowed = resumeCharge(b.budget.check({ names: ['new.example.test'], renewal: true }, clock.now()), clock.now());
  assert.ok(allowed.ok && allowed.spend.items.length > 0);
});

test('a year of passes on the manual clock renews a 90-day certificate about every 60 days, never past its emergency point', () => {
  const clock = new ManualClock(T0);
  const b = budgetAt(clock);
  let latest: VersionMeta | null = null;
  const renewals: number[] = [];
  while (clock.now() < T0 + 365 * DAY) {
    const p = planPass({ spec: { names: NAMES, keyType: 'ecdsa-p256' }, latest, target: latest, spread: 0.05, slotFree: true, deferred: false, budget: b.check, now: clock.now(), busy: null, ari: undefined, intent: NO_INTENT, resumableOrder: false });
    if (p.action === 'order') {
      assert.ok(p.payment.kind === 'commit');
      b.budget.commit(p.payment.spend, clock.now());
      renewals.push(clock.now());
      latest = { ...version(NAMES, 90, clock.now()), serial: renewals.length.toString(16) };
      continue;
    }
    assert.equal(p.action, 'wait');
    clock.set(p.action === 'wait' ? p.at : clock.now() + HOUR);
  }
  assert.equal(renewals.length, 7, 'the first issuance and six renewals');
  for (let i = 1; i < renewals.length; i++) {
    const gap = (renewals[i]! - renewals[i - 1]!) / DAY;
    assert.ok(gap > 55 && gap <= 60, `renewed after ${gap.toFixed(1)} days`);
  }
});

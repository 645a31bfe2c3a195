/**
 * Durable renewal intent (controller/reconcile/intent.ts), pure: operator requests and
 * failure backoff as data, and the plan the work loop follows — with a manual clock, so
 * the hours between a failure and its retry pass in a line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  afterFailure,
  afterSuccess,
  cancelRenewal,
  clearBackoff,
  fromStored,
  isEmptyIntent,
  NO_INTENT,
  plan,
  requestRenewal,
  toStored,
  type RenewalIntent,
} from '../../controller/reconcile/intent.js';
import { backoffDelay, type Decision } from '../../controller/scheduler/index.js';
import { ManualClock } from '../../shared/clock/index.js';

const MIN = 60_000;
const YEAR = 365 * 86_400_000;
const failure = { code: 'ACME_TRANSPORT', message: 'CA unreachable' };

/** The scheduler's answer for a certificate years from its renewal point. */
function notDue(now: number): Decision {
  return { action: 'wait', reason: 'renewal window not reached (2/3 of the lifetime)', at: now + 3 * YEAR, emergency: false, ari: false };
}

test('a certificate nothing is owed waits as the schedule says', () => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  const p = plan({ scheduled: notDue(clock.now()), intent: NO_INTENT, resumableOrder: false, now: clock.now() });
  assert.equal(p.action, 'wait');
  assert.match(p.reason, /renewal window not reached/);
});

test('an operator request issues a certificate that is not due, and a failure is retried at its retryAt, not before', () => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  let intent = requestRenewal(NO_INTENT, clock.now(), 'admin');
  let p = plan({ scheduled: notDue(clock.now()), intent, resumableOrder: false, now: clock.now() });
  assert.equal(p.action, 'issue');
  assert.ok(p.action === 'issue' && p.requested && !p.resume);
  assert.match(p.reason, /renewal requested by admin/);

  const startedAt = clock.now();
  clock.advance(5_000);
  intent = afterFailure(intent, clock.now(), failure, backoffDelay(intent.failures + 1));
  assert.equal(intent.failures, 1);
  assert.equal(intent.retryAt, clock.now() + MIN);
  assert.ok(intent.requestedAt > 0, 'the request outlives the failure');
  assert.ok(startedAt < intent.retryAt);

  clock.advance(MIN - 1);
  p = plan({ scheduled: notDue(clock.now()), intent, resumableOrder: false, now: clock.now() });
  assert.equal(p.action, 'wait');
  assert.ok(p.action === 'wait' && p.at === intent.retryAt, 'the next look is the retryAt');
  assert.match(p.reason, /backing off after a failure/);

  clock.advance(1);
  p = plan({ scheduled: notDue(clock.now()), intent, resumableOrder: false, now: clock.now() });
  assert.equal(p.action, 'issue', 'at retryAt the request is tried again');
});

test('the CA’s Retry-After wins over a shorter backoff step', () => {
  const now = Date.UTC(2026, 0, 1);
  const intent = afterFailure(NO_INTENT, now, { ...failure, retryAfterMs: 30 * MIN }, backoffDelay(1));
  assert.equal(intent.retryAt, now + 30 * MIN);
});

test('a success ends the backoff and the request it served; a request made during the issuance stays', () => {
  const t0 = Date.UTC(2026, 0, 1);
  const failed = afterFailure(requestRenewal(NO_INTENT, t0, 'admin'), t0 + 1000, failure, MIN);
  const done = afterSuccess(failed, t0 + 2 * MIN);
  assert.ok(isEmptyIntent(done), 'nothing owed after a success that started after the request');
  const again = afterSuccess(requestRenewal(failed, t0 + 3 * MIN, 'admin'), t0 + 2 * MIN);
  assert.equal(again.requestedAt, t0 + 3 * MIN, 'asked again while issuing: one more renewal is owed');
  assert.equal(again.failures, 0);
  assert.equal(again.retryAt, 0);
});

test('a new operator request forgets the backoff; a cancel withdraws the request and keeps the backoff', () => {
  const t0 = Date.UTC(2026, 0, 1);
  const failed = afterFailure(requestRenewal(NO_INTENT, t0, 'admin'), t0, failure, 10 * MIN);
  const asked = requestRenewal(failed, t0 + MIN, 'admin');
  assert.equal(asked.retryAt, 0);
  assert.equal(plan({ scheduled: notDue(t0 + MIN), intent: asked, resumableOrder: false, now: t0 + MIN }).action, 'issue');
  const cancelled = cancelRenewal(failed);
  assert.equal(cancelled.requestedAt, 0);
  assert.equal(cancelled.retryAt, failed.retryAt);
  assert.equal(plan({ scheduled: notDue(t0 + 20 * MIN), intent: cancelled, resumableOrder: false, now: t0 + 20 * MIN }).action, 'wait');
});

test('a saved order is resumed at once whatever the schedule says, without a charge, but after a running backoff', () => {
  const t0 = Date.UTC(2026, 0, 1);
  const p = plan({ scheduled: notDue(t0), intent: NO_INTENT, resumableOrder: true, now: t0 });
  assert.ok(p.action === 'issue' && p.resume, 'resumed, marked so the budgets are not charged again');
  assert.match(p.reason, /order saved before a restart/);
  const backingOff = afterFailure(NO_INTENT, t0, { code: 'CHALLENGE_NOT_SERVED', message: 'edge-a offline' }, MIN);
  assert.equal(plan({ scheduled: notDue(t0), intent: backingOff, resumableOrder: true, now: t0 + 1000 }).action, 'wait');
  // An agent coming online ends a CHALLENGE_NOT_SERVED backoff.
  assert.equal(plan({ scheduled: notDue(t0), intent: clearBackoff(backingOff), resumableOrder: true, now: t0 + 1000 }).action, 'issue');
});

test('a due certificate with a saved order resumes it instead of charging a new one', () => {
  const t0 = Date.UTC(2026, 0, 1);
  const due: Decision = { action: 'issue', reason: 'no certificate yet', at: t0, emergency: false, ari: false };
  const p = plan({ scheduled: due, intent: NO_INTENT, resumableOrder: true, now: t0 });
  assert.ok(p.action === 'issue' && p.resume && !p.requested);
  assert.match(p.reason, /no certificate yet; resuming the saved order/);
  const fresh = plan({ scheduled: due, intent: NO_INTENT, resumableOrder: false, now: t0 });
  assert.ok(fresh.action === 'issue' && !fresh.resume);
});

test('the stored form round-trips, and a damaged object counts as nothing owed rather than failing', () => {
  const t0 = Date.UTC(2026, 0, 1);
  const intent: RenewalIntent = afterFailure(requestRenewal(NO_INTENT, t0, 'admin'), t0 + 1000, failure, MIN);
  const stored = toStored(intent);
  assert.equal(stored.retryAt, new Date(t0 + 1000 + MIN).toISOString());
  assert.deepEqual(fromStored(JSON.parse(JSON.stringify(stored))), intent);
  assert.deepEqual(fromStored(null), NO_INTENT);
  assert.deepEqual(fromStored('x'), NO_INTENT);
  assert.deepEqual(fromStored({ requestedAt: 'yesterday', failures: -3, retryAt: 7 }), NO_INTENT);
});

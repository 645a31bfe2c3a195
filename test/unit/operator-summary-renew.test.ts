/**
 * What `certfleet renew` answers (controller/operator renewOutcome): the work loop's
 * state before the request and after it, compared. It used to answer "renewal requested"
 * while a budget held the order back for 31 hours (issue #14).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { budgetsIn, renewOutcome, type RenewWatch } from '../../controller/operator/index.js';

const NOW = Date.parse('2026-03-01T12:00:00Z');
const REQUESTED = NOW - 50;
const H = 3_600_000;

const IDLE: RenewWatch = {
  state: 'ready',
  latestVersion: 2,
  failures: 0,
  lastError: '',
  lastErrorCode: '',
  deferredUntil: 0,
  deferredReason: '',
  backoffUntil: 0,
  requestedAt: 0,
  reason: 'renews at 2026-04-01T00:00:00.000Z',
};
const PASSED = `renewal requested by alice at ${new Date(REQUESTED).toISOString()}`;
const EXACT_SET = 'budget exhausted: New Certificates per Exact Set of Identifiers (5 per 7d) for example.test,www.example.test: 0 left, 1 held for emergencies; next possible 2026-03-02T19:00:00.000Z';

const requested = (over: Partial<RenewWatch>): RenewWatch => ({ ...IDLE, requestedAt: REQUESTED, ...over });

test('an issuance that started for the request: ordered, naming the version it will make', () => {
  const v = renewOutcome(IDLE, requested({ state: 'issuing', reason: PASSED }), REQUESTED, NOW, false);
  assert.equal(v?.outcome, 'ordered');
  assert.equal(v?.version, 3);
  assert.match(v?.detail ?? '', /version 3/);
});

test('a version that is already there: issued', () => {
  assert.deepEqual(renewOutcome(IDLE, requested({ latestVersion: 3 }), REQUESTED, NOW, false), { outcome: 'issued', version: 3, detail: 'version 3 issued' });
});

test('a budget deferral from a pass after the request: deferred until when, by which budget', () => {
  const v = renewOutcome(IDLE, requested({ deferredUntil: NOW + 31 * H, deferredReason: EXACT_SET, reason: PASSED }), REQUESTED, NOW, false);
  assert.equal(v?.outcome, 'deferred');
  assert.equal(v?.deferredUntil, NOW + 31 * H);
  assert.deepEqual(v?.budgets, ['New Certificates per Exact Set of Identifiers']);
  assert.equal(v?.detail, 'deferred until 2026-03-02T19:00:00.000Z by budget New Certificates per Exact Set of Identifiers');
});

test('a deferral left from an earlier pass is not taken for the answer until a pass after the request, or the wait is over', () => {
  const before = { ...IDLE, deferredUntil: NOW + 31 * H, deferredReason: EXACT_SET, requestedAt: REQUESTED - 60_000, reason: `renewal requested by alice at ${new Date(REQUESTED - 60_000).toISOString()}` };
  const stale = { ...before, requestedAt: REQUESTED };
  assert.equal(renewOutcome(before, stale, REQUESTED, NOW, false), null);
  assert.equal(renewOutcome(before, { ...stale, reason: PASSED }, REQUESTED, NOW, false)?.outcome, 'deferred');
  assert.equal(renewOutcome(before, stale, REQUESTED, NOW, true)?.outcome, 'deferred');
});

test('a failed attempt: failed with the code, the reason and the retry time', () => {
  const v = renewOutcome(IDLE, requested({ state: 'failed', failures: 1, lastErrorCode: 'ACME_PROBLEM', lastError: 'CA refused', backoffUntil: NOW + 5 * 60_000 }), REQUESTED, NOW, false);
  assert.equal(v?.outcome, 'failed');
  assert.equal(v?.errorCode, 'ACME_PROBLEM');
  assert.equal(v?.reason, 'CA refused');
  assert.equal(v?.backoffUntil, NOW + 5 * 60_000);
  assert.equal(v?.detail, 'failed (ACME_PROBLEM): CA refused');
});

test('nothing happened yet: undecided while waiting, then queued; an issuance running from before the request says another follows', () => {
  assert.equal(renewOutcome(IDLE, requested({}), REQUESTED, NOW, false), null);
  assert.equal(renewOutcome(IDLE, requested({}), REQUESTED, NOW, true)?.outcome, 'queued');
  const running = { ...IDLE, state: 'issuing' as const };
  assert.equal(renewOutcome(running, { ...running, requestedAt: REQUESTED }, REQUESTED, NOW, false), null);
  const q = renewOutcome(running, { ...running, requestedAt: REQUESTED }, REQUESTED, NOW, true);
  assert.equal(q?.outcome, 'queued');
  assert.match(q?.detail ?? '', /started before this request is still running; another one follows/);
});

test('budgetsIn finds every limit title a deferral reason names, and none in other text', () => {
  assert.deepEqual(budgetsIn(`${EXACT_SET}; New Orders per Account (300 per 3h) for acct: 0 left`), ['New Orders per Account', 'New Certificates per Exact Set of Identifiers']);
  assert.deepEqual(budgetsIn('something else'), []);
});

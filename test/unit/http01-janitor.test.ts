/**
 * Which HTTP-01 challenge records are leftovers (controller/solvers staleChallenges),
 * pure: records a killed controller left on NATS go; those being presented, too young
 * to judge, or belonging to the saved order of their certificate stay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { staleChallenges } from '../../controller/solvers/index.js';
import type { ChallengeRecord } from '../../shared/model/index.js';

const NOW = Date.UTC(2026, 0, 1, 12);
const MIN = 60_000;

function record(token: string, cert: string, ageMs: number): ChallengeRecord {
  return { token, cert, keyAuthorization: `${token}.x`, identifier: `${cert}.example.test`, selector: 'role=web', createdAt: new Date(NOW - ageMs).toISOString() };
}

test('at start-up every record not of a saved order goes, with the reason', () => {
  const records = [record('orphan', 'web', 30 * MIN), record('old', 'api', 30 * MIN), record('current', 'api', 5 * MIN), record('removed-cert', 'gone', MIN)];
  const orders = new Map([['api', { createdAt: NOW - 10 * MIN }]]);
  const stale = staleChallenges(records, { active: new Set(), orders, now: NOW, minAgeMs: 0 });
  assert.deepEqual(
    stale.map((s) => [s.token, s.reason]),
    [
      ['orphan', 'no order in flight'],
      ['old', 'older than the order in flight'],
      ['removed-cert', 'no order in flight'],
    ],
  );
});

test('a record this process presents, or one younger than the minimum age, stays', () => {
  const records = [record('mine', 'web', 30 * MIN), record('fresh', 'web', 2 * MIN), record('stale', 'web', 30 * MIN)];
  const stale = staleChallenges(records, { active: new Set(['mine']), orders: new Map(), now: NOW, minAgeMs: 10 * MIN });
  assert.deepEqual(
    stale.map((s) => s.token),
    ['stale'],
  );
});

test('a record with an unreadable date counts as old', () => {
  const r = { ...record('bad-date', 'web', 0), createdAt: 'yesterday' };
  assert.equal(staleChallenges([r], { active: new Set(), orders: new Map(), now: NOW, minAgeMs: 10 * MIN }).length, 1);
});

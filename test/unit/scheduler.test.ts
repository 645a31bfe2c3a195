import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, decide, renewalPoint } from '../../controller/scheduler/index.js';
import type { VersionMeta } from '../../shared/model/index.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);

function meta(lifetimeDays: number, names = ['a.test'], keyType: VersionMeta['keyType'] = 'ecdsa-p256'): VersionMeta {
  return {
    name: 'a',
    version: 1,
    serial: '01',
    fingerprint: 'ff',
    names,
    notBefore: new Date(T0).toISOString(),
    notAfter: new Date(T0 + lifetimeDays * DAY).toISOString(),
    issuedAt: new Date(T0).toISOString(),
    keyType,
  };
}
const spec = { names: ['a.test'], keyType: 'ecdsa-p256' as const };

test('a 90-day certificate renews at day 60', () => assert.equal(renewalPoint(T0, T0 + 90 * DAY), T0 + 60 * DAY));
test('a 6-day certificate renews at day 3 (half its life)', () => assert.equal(renewalPoint(T0, T0 + 6 * DAY), T0 + 3 * DAY));

const CASES: Array<[string, VersionMeta | null, number, number, 'issue' | 'wait', RegExp]> = [
  ['no version yet is issued now', null, T0, 0, 'issue', /no certificate yet/],
  ['a fresh certificate waits for its window', meta(90), T0 + DAY, 0, 'wait', /not reached/],
  ['a certificate in its window is renewed', meta(90), T0 + 61 * DAY, 0, 'issue', /renewal window/],
  ['an expired certificate is renewed', meta(90), T0 + 91 * DAY, 0, 'issue', /expired/],
  ['changed names trigger a new issuance', meta(90, ['a.test', 'b.test']), T0 + DAY, 0, 'issue', /configuration changed/],
  ['a changed key type triggers a new issuance', meta(90, ['a.test'], 'rsa-2048'), T0 + DAY, 0, 'issue', /configuration changed/],
  ['a backoff postpones a renewal', meta(90), T0 + 61 * DAY, T0 + 62 * DAY, 'wait', /backing off/],
  ['the last twentieth of the lifetime ignores the backoff', meta(90), T0 + 86 * DAY, T0 + 88 * DAY, 'issue', /renewal window/],
];
for (const [name, latest, now, backoff, action, reason] of CASES) {
  test(name, () => {
    const d = decide(spec, latest, now, backoff);
    assert.equal(d.action, action);
    assert.match(d.reason, reason);
  });
}

test('names compare as a set, case-insensitively', () => {
  assert.equal(decide({ names: ['B.test', 'a.test'], keyType: 'ecdsa-p256' }, meta(90, ['a.test', 'b.test']), T0 + DAY).action, 'wait');
});

test('backoff grows 1 min, 10 min, 100 min, then daily', () => {
  assert.deepEqual([1, 2, 3, 4, 9].map(backoffDelay), [60_000, 600_000, 6_000_000, DAY, DAY]);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, chooseAriInstant, decide, jitterMs, plannedRenewal, renewalPoint, type RenewBefore } from '../../controller/scheduler/index.js';
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
  assert.deepEqual([1, 2, 3, 4, 9].map((f) => backoffDelay(f)), [60_000, 600_000, 6_000_000, DAY, DAY]);
});

// --- jitter, renewBefore, ARI, emergency, backoff jitter -------------------------

function metaFor(name: string, serial: string, lifetimeDays: number): VersionMeta {
  return { ...meta(lifetimeDays), name, serial };
}

test('the jitter is stable for one certificate and differs between certificates', () => {
  const a1 = jitterMs('web-1', '0a1b', 90 * DAY);
  assert.equal(jitterMs('web-1', '0A1B', 90 * DAY), a1);
  const spread = new Set(Array.from({ length: 50 }, (_, i) => jitterMs(`web-${i}`, '0a1b', 90 * DAY)));
  assert.ok(spread.size >= 45, `only ${spread.size} distinct jitters for 50 certificates`);
});

test('the jitter stays within the spread and covers it', () => {
  const lifetime = 90 * DAY;
  const js = Array.from({ length: 2000 }, (_, i) => jitterMs(`c${i}.example.com`, (i * 7919).toString(16), lifetime, 0.05));
  assert.ok(js.every((j) => j >= 0 && j < 0.05 * lifetime));
  // Roughly uniform: each fifth of the spread gets 10-30 % of the certificates.
  const fifths = [0, 0, 0, 0, 0];
  for (const j of js) fifths[Math.floor((j / (0.05 * lifetime)) * 5)]! += 1;
  assert.ok(fifths.every((n) => n > 200 && n < 600), `buckets ${fifths.join(',')}`);
});

test('a zero spread means no jitter', () => assert.equal(jitterMs('a', '01', 90 * DAY, 0), 0));

const PLAN_CASES: Array<[string, number, RenewBefore | undefined, number, number]> = [
  // name, lifetime (days), renewBefore, earliest expected (days), latest expected (days) — renewal instant from notBefore
  ['the default is 2/3 of a 90-day lifetime minus up to 5 %', 90, undefined, 60 - 4.5, 60],
  ['a 6-day certificate renews at 1/2 minus up to 5 %', 6, undefined, 3 - 0.3, 3],
  ['renewBefore 30 days renews 30 days before expiry (jitter only earlier)', 90, { kind: 'duration', ms: 30 * DAY }, 60 - 4.5, 60],
  ['renewBefore 10 % renews when a tenth of the lifetime remains', 90, { kind: 'percent', percent: 10 }, 81 - 4.5, 81],
  ['a renewBefore longer than the lifetime falls back to the default', 6, { kind: 'duration', ms: 30 * DAY }, 3 - 0.3, 3],
  ['a renewBefore inside the last twentieth is clamped to the emergency point', 90, { kind: 'duration', ms: DAY }, 89 - 4.5, 85.5],
];
for (const [name, days, rb, lo, hi] of PLAN_CASES) {
  test(name, () => {
    const p = plannedRenewal({ name: 'x', serial: '77', notBefore: T0, notAfter: T0 + days * DAY }, rb);
    assert.ok(p.at >= T0 + lo * DAY && p.at <= T0 + hi * DAY, `${(p.at - T0) / DAY} days not in [${lo}, ${hi}]`);
  });
}

test('decide waits until the jittered point and then issues', () => {
  const m = metaFor('shop', 'abcd', 90);
  const d = decide(spec, m, T0 + DAY);
  assert.equal(d.action, 'wait');
  const point = plannedRenewal({ name: 'shop', serial: 'abcd', notBefore: T0, notAfter: T0 + 90 * DAY }, undefined).at;
  assert.equal(d.at, point);
  assert.equal(decide(spec, m, point - 1).action, 'wait');
  const now = decide(spec, m, point);
  assert.deepEqual([now.action, now.emergency, now.ari], ['issue', false, false]);
});

test('renewBefore in the spec moves the decision', () => {
  const d = decide({ ...spec, renewBefore: { kind: 'duration', ms: 10 * DAY } }, meta(90), T0 + 70 * DAY);
  assert.equal(d.action, 'wait');
  assert.match(d.reason, /renewBefore 10d/);
});

test('the ARI instant is inside the window, stable for a seed and spread across seeds', () => {
  const w = { start: T0 + 60 * DAY, end: T0 + 62 * DAY };
  const a = chooseAriInstant(w, 12345);
  assert.equal(chooseAriInstant(w, 12345), a);
  const instants = Array.from({ length: 1000 }, (_, s) => chooseAriInstant(w, s));
  assert.ok(instants.every((t) => t >= w.start && t < w.end));
  const firstHalf = instants.filter((t) => t < w.start + DAY).length;
  assert.ok(firstHalf > 400 && firstHalf < 600, `${firstHalf} of 1000 in the first half`);
  assert.equal(chooseAriInstant({ start: 5, end: 5 }, 1), 5);
});

test('an ARI window overrides the default point and marks the renewal as ARI', () => {
  const w = { start: T0 + 20 * DAY, end: T0 + 21 * DAY };
  const instant = chooseAriInstant(w, 7);
  const before = decide(spec, meta(90), instant - 1, 0, { ari: { window: w, seed: 7 } });
  assert.deepEqual([before.action, before.at, before.ari], ['wait', instant, true]);
  const due = decide(spec, meta(90), instant, 0, { ari: { window: w, seed: 7 } });
  assert.deepEqual([due.action, due.ari, due.emergency], ['issue', true, false]);
  assert.match(due.reason, /ARI window reached/);
});

test('an ARI window later than the emergency point is overruled by the emergency rule', () => {
  const w = { start: T0 + 89 * DAY, end: T0 + 89.5 * DAY };
  const wait = decide(spec, meta(90), T0 + 80 * DAY, 0, { ari: { window: w, seed: 1 } });
  assert.equal(wait.at, T0 + 85.5 * DAY);
  const d = decide(spec, meta(90), T0 + 86 * DAY, 0, { ari: { window: w, seed: 1 } });
  assert.deepEqual([d.action, d.emergency, d.ari], ['issue', true, false]);
});

test('an emergency inside an ARI window still carries replaces', () => {
  const w = { start: T0 + 80 * DAY, end: T0 + 89 * DAY };
  const d = decide(spec, meta(90), T0 + 86 * DAY, T0 + 88 * DAY, { ari: { window: w, seed: 3 } });
  assert.deepEqual([d.action, d.emergency, d.ari], ['issue', true, true]);
});

test('a backoff never postpones past the emergency point', () => {
  const d = decide(spec, meta(90), T0 + 61 * DAY, T0 + 89 * DAY);
  assert.deepEqual([d.action, d.at], ['wait', T0 + 85.5 * DAY]);
});

test('an expired certificate is an emergency', () => {
  const d = decide(spec, meta(90), T0 + 91 * DAY, T0 + 95 * DAY);
  assert.deepEqual([d.action, d.emergency], ['issue', true]);
});

test('a configuration change on a certificate in its last twentieth ignores the backoff', () => {
  const d = decide({ names: ['a.test', 'b.test'], keyType: 'ecdsa-p256' }, meta(90), T0 + 86 * DAY, T0 + 88 * DAY);
  assert.deepEqual([d.action, d.emergency], ['issue', true]);
  assert.match(d.reason, /configuration changed/);
});

test('a jittered backoff stays within ±10 % of its step', () => {
  const steps = [60_000, 600_000, 6_000_000, DAY];
  for (const [i, step] of steps.entries()) {
    assert.equal(backoffDelay(i + 1, () => 0), Math.round(step * 0.9));
    assert.ok(backoffDelay(i + 1, () => 0.999999) <= Math.round(step * 1.1));
    assert.equal(backoffDelay(i + 1, () => 0.5), step);
  }
  assert.equal(backoffDelay(0, () => 0.3), 0);
});

test('no backoff step is longer than a twentieth of the lifetime', () => {
  assert.deepEqual([1, 2, 3, 4, 9].map((f) => backoffDelay(f, undefined, 6 * DAY)), [60_000, 600_000, 6_000_000, 0.3 * DAY, 0.3 * DAY]);
  assert.equal(backoffDelay(4, undefined, 90 * DAY), DAY);
  assert.equal(backoffDelay(1, undefined, 10 * 60_000), 60_000);
});

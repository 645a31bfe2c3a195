/**
 * Several controllers (issue #12): what a controller does when it becomes leader and when
 * it stops being one, and the gate the work loop asks. Two contenders run a real
 * LeaderLease on one ManualClock over an in-memory compare-and-set bucket; the steps and
 * the loop are recorded, not faked away.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LEASE_KEY, Leadership, LeaderLease, controllerHealth, type LeaseKv, type LeaseRecord } from '../../controller/lease/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';

const TTL = 15_000;

function memoryBucket(): { kv: () => LeaseKv & { down: boolean } } {
  let value: { value: LeaseRecord; revision: number } | null = null;
  let revision = 0;
  return {
    kv: () => {
      const view = {
        down: false,
        get: (key: string) => {
          assert.equal(key, LEASE_KEY);
          if (view.down) return Promise.reject(new CertfleetError(ErrorCode.NatsUnavailable, 'no quorum', { retryable: true }));
          return Promise.resolve(value && { value: { ...value.value }, revision: value.revision });
        },
        update: (key: string, v: LeaseRecord, expected: number) => {
          if (view.down) return Promise.reject(new CertfleetError(ErrorCode.NatsUnavailable, 'no quorum', { retryable: true }));
          if ((value?.revision ?? 0) !== expected) return Promise.reject(new CertfleetError(ErrorCode.StoreConflict, 'wrong last sequence'));
          revision++;
          value = { value: v, revision };
          return Promise.resolve(revision);
        },
      };
      return view;
    },
  };
}

/** A controller: its lease, its leadership, and a journal of what ran. */
function controller(name: string, clock: ManualClock, kv: LeaseKv, gate?: { step: Promise<void> }) {
  const journal: string[] = [];
  const held: { leadership?: Leadership } = {};
  const lease = new LeaderLease({
    kv,
    clock,
    log: silentLogger(),
    name,
    address: `${name}:7443`,
    ttlMs: TTL,
    onElected: (epoch) => held.leadership?.elected(epoch),
    onDeposed: (why) => held.leadership?.deposed(why),
  });
  // A pass of the work loop: starts an order only when the gate says so.
  const pass = (): void => {
    if (held.leadership?.active() === true) journal.push(`order at epoch ${lease.fence()}`);
  };
  const leadership = new Leadership({
    lease,
    log: silentLogger(),
    onElected: [
      { name: 'budgets reloaded', run: async (epoch) => { journal.push(`budgets reloaded ${epoch}`); await gate?.step; } },
      { name: 'republish', run: (epoch) => journal.push(`republished at ${lease.fence()} (${epoch})`) },
    ],
    onActive: [{ name: 'kick', run: () => pass() }],
    onDeposed: [{ name: 'adopt', run: (epoch) => journal.push(`follows after ${epoch}`) }],
  });
  held.leadership = leadership;
  return { lease, leadership: leadership, journal, pass };
}

test('a new leader runs its election steps in order before the work loop may start anything, then the kick orders', async () => {
  const clock = new ManualClock(0);
  const bucket = memoryBucket();
  let release = (): void => undefined;
  const gate = { step: new Promise<void>((r) => (release = r)) };
  const a = controller('a', clock, bucket.kv(), gate);
  await a.lease.start();
  assert.equal(a.lease.isLeader(), true);
  // Leader, but the budgets are still being reloaded: the loop must wait.
  a.pass();
  assert.equal(a.leadership.active(), false);
  assert.deepEqual(a.journal, ['budgets reloaded 1']);
  release();
  await a.leadership.settled();
  assert.equal(a.leadership.active(), true);
  assert.deepEqual(a.journal, ['budgets reloaded 1', 'republished at 1 (1)', 'order at epoch 1']);
  await a.lease.stop();
});

test('a follower starts nothing; when the leader is cut off it stops acting before the follower takes over with epoch+1, and only then does the follower order', async () => {
  const clock = new ManualClock(0);
  const bucket = memoryBucket();
  const akv = bucket.kv();
  const a = controller('a', clock, akv);
  const b = controller('b', clock, bucket.kv());
  await a.lease.start();
  await b.lease.start();
  await a.leadership.settled();
  assert.equal(a.leadership.active(), true);
  b.pass();
  assert.equal(b.leadership.active(), false);
  assert.deepEqual(b.journal, [], 'the follower did nothing');

  // a loses NATS: it renews no more; its own clock deposes it before b may take over.
  akv.down = true;
  let aStopped = -1;
  let bLeads = -1;
  for (let t = 0; t <= 2 * TTL; t += 500) {
    await clock.tick(500);
    await a.leadership.settled();
    await b.leadership.settled();
    if (aStopped < 0 && !a.leadership.active()) aStopped = clock.now();
    if (bLeads < 0 && b.leadership.active()) bLeads = clock.now();
    // Never both.
    assert.ok(!(a.leadership.active() && b.leadership.active()), `both lead at ${clock.now()}`);
  }
  assert.ok(aStopped > 0 && bLeads > aStopped, `a stopped at ${aStopped}, b leads at ${bLeads}`);
  assert.throws(() => a.lease.fence(), (err: unknown) => isCertfleetError(err, ErrorCode.NotLeader));
  a.pass();
  assert.equal(a.journal.filter((l) => l.startsWith('order')).length, 1, 'the deposed leader started nothing more');
  assert.ok(a.journal.includes('follows after 1'), a.journal.join('; '));
  assert.deepEqual(b.journal, ['budgets reloaded 2', 'republished at 2 (2)', 'order at epoch 2']);
  await a.lease.stop();
  await b.lease.stop();
});

test('election steps are abandoned when the leader is deposed while they run, and a later election runs them all again', async () => {
  const clock = new ManualClock(0);
  const bucket = memoryBucket();
  const akv = bucket.kv();
  let release = (): void => undefined;
  const gate = { step: new Promise<void>((r) => (release = r)) };
  const a = controller('a', clock, akv, gate);
  await a.lease.start();
  // Cut off while the first step hangs: the lease runs out and a fence would refuse.
  akv.down = true;
  await clock.tick(TTL);
  release();
  await a.leadership.settled();
  assert.equal(a.leadership.active(), false);
  assert.deepEqual(a.journal, ['budgets reloaded 1', 'follows after 1'], 'no republish, no order');
  akv.down = false;
  await clock.tick(TTL / 3);
  await a.leadership.settled();
  assert.equal(a.leadership.active(), true);
  assert.deepEqual(a.journal.slice(2), ['budgets reloaded 2', 'republished at 2 (2)', 'order at epoch 2']);
  await a.lease.stop();
});

test('a controller is stale after a lease time without a heartbeat, deposed when it claims an epoch the lease moved past, degraded when its store is down, else ok', () => {
  const seenAt = '2026-01-01T00:00:00.000Z';
  const t = Date.parse(seenAt);
  assert.equal(controllerHealth({ seenAt, store: 'ok' }, t + TTL, TTL), 'ok');
  assert.equal(controllerHealth({ seenAt, store: 'ok' }, t + TTL + 1, TTL), 'stale');
  // A killed leader's last record still says "leader, epoch 1" while c2 leads at epoch 2.
  assert.equal(controllerHealth({ seenAt, store: 'ok', role: 'leader', epoch: 1 }, t + 1000, TTL, 2), 'deposed');
  assert.equal(controllerHealth({ seenAt, store: 'ok', role: 'leader', epoch: 2 }, t + 1000, TTL, 2), 'ok');
  assert.equal(controllerHealth({ seenAt, store: 'ok', role: 'follower', epoch: 0 }, t + 1000, TTL, 2), 'ok');
  assert.equal(controllerHealth({ seenAt, store: 'STORE_UNAVAILABLE' }, t + 1000, TTL), 'degraded');
  assert.equal(controllerHealth({ seenAt: 'garbage', store: 'ok' }, t, TTL), 'stale');
});

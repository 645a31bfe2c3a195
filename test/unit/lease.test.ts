/**
 * The leader lease: the pure decision as a table, then two contenders on one ManualClock
 * over an in-memory compare-and-set bucket (the real-NATS version runs in
 * test/integration/lease-cluster.test.ts against a three-node cluster).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decideLease, LEASE_KEY, LeaderLease, leaderUntil, type LeaseKv, type LeaseRecord } from '../../controller/lease/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';

const TTL = 15_000;
const rec = (holder: string, epoch: number, extra: Partial<LeaseRecord> = {}): LeaseRecord => ({
  holder,
  epoch,
  address: `${holder}:7443`,
  renewedAt: '2026-01-01T00:00:00.000Z',
  ttlMs: TTL,
  ...extra,
});

describe('decideLease', () => {
  const CASES: Array<[string, Parameters<typeof decideLease>[0], string, number | undefined]> = [
    ['an empty bucket is acquired at epoch 1', { self: 'a', now: 0, ttlMs: TTL, observed: { current: null, firstSeenAt: 0 }, heldRevision: undefined }, 'acquire', 1],
    ['the holder renews at the same epoch', { self: 'a', now: 5000, ttlMs: TTL, observed: { current: { record: rec('a', 3), revision: 7 }, firstSeenAt: 0 }, heldRevision: 7 }, 'renew', 3],
    [
      'another holder seen for less than a ttl is followed',
      { self: 'b', now: TTL - 1, ttlMs: TTL, observed: { current: { record: rec('a', 3), revision: 7 }, firstSeenAt: 0 }, heldRevision: undefined },
      'follow',
      undefined,
    ],
    [
      'another holder unchanged for a whole ttl is taken over at the next epoch',
      { self: 'b', now: TTL, ttlMs: TTL, observed: { current: { record: rec('a', 3), revision: 7 }, firstSeenAt: 0 }, heldRevision: undefined },
      'take-over',
      4,
    ],
    [
      'a record with our name but not our revision is an old process: waited out like any other',
      { self: 'a', now: 1000, ttlMs: TTL, observed: { current: { record: rec('a', 3), revision: 8 }, firstSeenAt: 0 }, heldRevision: 7 },
      'follow',
      undefined,
    ],
    [
      'a released lease is taken over at once',
      { self: 'b', now: 1, ttlMs: TTL, observed: { current: { record: rec('a', 3, { released: true }), revision: 9 }, firstSeenAt: 0 }, heldRevision: undefined },
      'take-over',
      4,
    ],
    [
      'an exclusive controller takes over a record an earlier process left at once',
      { self: 'a#2', now: 1, ttlMs: TTL, observed: { current: { record: rec('a#1', 3), revision: 9 }, firstSeenAt: 0 }, heldRevision: undefined, exclusive: true },
      'take-over',
      4,
    ],
  ];
  for (const [name, input, kind, epoch] of CASES) {
    test(name, () => {
      const action = decideLease(input);
      assert.equal(action.kind, kind);
      if (epoch !== undefined) assert.equal((action as { epoch: number }).epoch, epoch);
    });
  }

  test('a holder stops acting a margin before a follower could take over', () => {
    assert.equal(leaderUntil(1000, TTL, 3000), 1000 + TTL - 3000);
  });
});

/** A shared in-memory bucket with compare-and-set, and a per-contender "cut off" switch. */
class MemoryBucket {
  value: { value: LeaseRecord; revision: number } | null = null;
  private revision = 0;
  writes: LeaseRecord[] = [];

  view(): LeaseKv & { down: boolean } {
    const view = {
      down: false,
      get: (key: string) => {
        assert.equal(key, LEASE_KEY);
        if (view.down) return Promise.reject(new CertfleetError(ErrorCode.NatsUnavailable, 'no quorum', { retryable: true }));
        return Promise.resolve(this.value && { value: { ...this.value.value }, revision: this.value.revision });
      },
      update: (key: string, value: LeaseRecord, expected: number) => {
        assert.equal(key, LEASE_KEY);
        if (view.down) return Promise.reject(new CertfleetError(ErrorCode.NatsUnavailable, 'no quorum', { retryable: true }));
        if ((this.value?.revision ?? 0) !== expected) return Promise.reject(new CertfleetError(ErrorCode.StoreConflict, 'wrong last sequence'));
        this.revision++;
        this.value = { value, revision: this.revision };
        this.writes.push(value);
        return Promise.resolve(this.revision);
      },
    };
    return view;
  }
}

function contender(name: string, clock: ManualClock, kv: LeaseKv, extra: { exclusive?: boolean } = {}) {
  const events: string[] = [];
  const lease = new LeaderLease({
    kv,
    clock,
    log: silentLogger(),
    name,
    address: `${name}:7443`,
    ttlMs: TTL,
    ...extra,
    onElected: (epoch) => events.push(`elected ${epoch}`),
    onDeposed: (why) => events.push(`deposed: ${why}`),
  });
  return { lease, events };
}

/** Never two leaders at one instant: checked at every 100 ms of a span. */
async function neverTwoLeaders(clock: ManualClock, spanMs: number, ...leases: LeaderLease[]): Promise<void> {
  for (let t = 0; t < spanMs; t += 100) {
    await clock.tick(100);
    const leading = leases.filter((l) => l.isLeader());
    assert.ok(leading.length <= 1, `two leaders at ${clock.now()}`);
  }
}

describe('LeaderLease on a manual clock', () => {
  test('the first contender leads at epoch 1 and the second follows while it renews', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const a = contender('a', clock, bucket.view());
    const b = contender('b', clock, bucket.view());
    await a.lease.start();
    await b.lease.start();
    await neverTwoLeaders(clock, 5 * TTL, a.lease, b.lease);
    assert.equal(a.lease.isLeader(), true);
    assert.equal(a.lease.fence(), 1);
    assert.equal(b.lease.isLeader(), false);
    assert.throws(() => b.lease.fence(), (e: CertfleetError) => e.code === ErrorCode.NotLeader && /a#\w+ leads/.test(e.message));
    assert.equal(b.lease.view().leader?.holder, a.lease.self);
    assert.deepEqual(b.events, []);
    await a.lease.stop();
    await b.lease.stop();
  });

  test('a crashed leader is replaced after one ttl, at the next epoch, never before', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const a = contender('a', clock, bucket.view());
    const b = contender('b', clock, bucket.view());
    await a.lease.start();
    await b.lease.start();
    await clock.tick(TTL);
    // SIGKILL: the process is gone; its timer no longer runs and it releases nothing.
    const crashedAt = clock.now();
    (a.lease as unknown as { timer: { stop(): void } }).timer.stop();
    let tookOverAt: number | undefined;
    for (let t = 0; t < 3 * TTL && tookOverAt === undefined; t += 100) {
      await clock.tick(100);
      if (b.lease.isLeader()) tookOverAt = clock.now();
    }
    assert.ok(tookOverAt !== undefined, 'b never took over');
    assert.ok(tookOverAt - crashedAt >= TTL - TTL / 3, `took over ${tookOverAt - crashedAt} ms after the last renewal window`);
    assert.ok(tookOverAt - crashedAt <= TTL + TTL / 3 + 100, `took over only after ${tookOverAt - crashedAt} ms`);
    assert.equal(b.lease.fence(), 2);
    assert.deepEqual(b.events, ['elected 2']);
    await b.lease.stop();
  });

  test('a paused leader wakes deposed: fence refuses before any step runs, and it follows the new leader', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const a = contender('a', clock, bucket.view());
    const b = contender('b', clock, bucket.view());
    await a.lease.start();
    await b.lease.start();
    assert.equal(a.lease.fence(), 1);
    // SIGSTOP: a's timers do not run, but time passes for everyone.
    const timer = (a.lease as unknown as { timer: { stop(): void } }).timer;
    timer.stop();
    await clock.tick(2 * TTL);
    assert.equal(b.lease.fence(), 2);
    // SIGCONT: the first thing the old leader's work loop does is fence a write.
    assert.throws(() => a.lease.fence(), (e: CertfleetError) => e.code === ErrorCode.NotLeader);
    assert.deepEqual(a.events, ['elected 1', 'deposed: lease not renewed in time']);
    await a.lease.step();
    assert.equal(a.lease.isLeader(), false);
    assert.equal(bucket.writes.filter((w) => w.holder === a.lease.self && w.epoch === 1).length >= 1, true);
    assert.equal(bucket.writes.some((w) => w.holder === a.lease.self && w.epoch > 1), false, 'the old leader wrote nothing after it lost');
    await a.lease.stop();
    await b.lease.stop();
  });

  test('a leader cut off from NATS stops leading before anyone could take over', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const aKv = bucket.view();
    const a = contender('a', clock, aKv);
    const b = contender('b', clock, bucket.view());
    await a.lease.start();
    await b.lease.start();
    await clock.tick(TTL);
    aKv.down = true;
    await neverTwoLeaders(clock, 3 * TTL, a.lease, b.lease);
    assert.equal(a.lease.isLeader(), false);
    assert.equal(b.lease.isLeader(), true);
    // Back on the network, a sees b's record and stays a follower.
    aKv.down = false;
    await clock.tick(TTL);
    assert.equal(a.lease.isLeader(), false);
    assert.equal(b.lease.fence(), 2);
    await a.lease.stop();
    await b.lease.stop();
  });

  test('a graceful stop releases the lease and the follower leads at its next step, not a ttl later', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const a = contender('a', clock, bucket.view());
    const b = contender('b', clock, bucket.view());
    await a.lease.start();
    await b.lease.start();
    await clock.tick(TTL);
    await a.lease.stop();
    assert.equal(bucket.value?.value.released, true);
    await clock.tick(Math.floor(TTL / 3));
    assert.equal(b.lease.fence(), 2);
    await b.lease.stop();
  });

  test('two contenders stepping at the same moment: compare-and-set lets exactly one win', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const a = contender('a', clock, bucket.view());
    const b = contender('b', clock, bucket.view());
    await Promise.all([a.lease.step(), b.lease.step()]);
    assert.equal([a.lease.isLeader(), b.lease.isLeader()].filter(Boolean).length, 1);
    assert.equal(bucket.writes.length, 1);
  });

  test('an exclusive controller (file store) takes over what its previous process left without waiting', async () => {
    const clock = new ManualClock(0);
    const bucket = new MemoryBucket();
    const first = contender('ctl', clock, bucket.view(), { exclusive: true });
    await first.lease.start();
    (first.lease as unknown as { timer: { stop(): void } }).timer.stop(); // crashed
    const second = contender('ctl', clock, bucket.view(), { exclusive: true });
    await second.lease.start();
    assert.equal(second.lease.fence(), 2);
    await second.lease.stop();
  });
});

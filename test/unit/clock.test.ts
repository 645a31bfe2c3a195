/**
 * The clock owns every timer: under a ManualClock, sleeps, one-shot timers, periodic ticks and
 * deadlines all move only with advance/tick, so loops are tested with no real waiting.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, deadline, systemClock } from '../../shared/clock/index.js';

describe('ManualClock timers', () => {
  test('a sleep resolves only when the clock passes its due time', async () => {
    const clock = new ManualClock(0);
    let woke = false;
    const sleeping = clock.sleep(1000).then(() => (woke = true));
    await clock.tick(999);
    assert.equal(woke, false);
    await clock.tick(1);
    await sleeping;
    assert.equal(woke, true);
  });

  test('timers fire in due order with now() at their due time', () => {
    const clock = new ManualClock(0);
    const seen: Array<[string, number]> = [];
    clock.after(30, () => seen.push(['c', clock.now()]));
    clock.after(10, () => seen.push(['a', clock.now()]));
    clock.after(10, () => seen.push(['b', clock.now()]));
    clock.advance(100);
    assert.deepEqual(seen, [['a', 10], ['b', 10], ['c', 30]]);
    assert.equal(clock.now(), 100);
    assert.equal(clock.pendingTimers, 0);
  });

  test('a stopped timer never fires', () => {
    const clock = new ManualClock(0);
    let fired = false;
    clock.after(10, () => (fired = true)).stop();
    clock.advance(20);
    assert.equal(fired, false);
  });

  test('an aborted sleep rejects with the abort reason and leaves no timer behind', async () => {
    const clock = new ManualClock(0);
    const ac = new AbortController();
    const sleeping = clock.sleep(1000, ac.signal);
    ac.abort(new Error('stop now'));
    await assert.rejects(sleeping, /stop now/);
    assert.equal(clock.pendingTimers, 0);
    await assert.rejects(clock.sleep(5, AbortSignal.abort()), (e: Error) => e.name === 'AbortError');
  });

  test('every ticks once per period and stops when told', async () => {
    const clock = new ManualClock(0);
    let ticks = 0;
    const t = clock.every(100, () => ticks++);
    await clock.tick(350);
    assert.equal(ticks, 3);
    t.stop();
    await clock.tick(1000);
    assert.equal(ticks, 3);
    assert.equal(clock.pendingTimers, 0);
  });

  test('every skips a tick while the previous async call is still running', async () => {
    const clock = new ManualClock(0);
    let started = 0;
    let release!: () => void;
    const t = clock.every(100, () => {
      started++;
      return new Promise<void>((r) => (release = r));
    });
    await clock.tick(300);
    assert.equal(started, 1, 'ticks at 200 and 300 fell while the first call ran');
    release();
    await clock.tick(100);
    assert.equal(started, 2);
    t.stop();
  });

  test('a loop that sleeps, works and sleeps again runs to completion under tick', async () => {
    const clock = new ManualClock(0);
    let rounds = 0;
    const loop = (async () => {
      while (rounds < 5) {
        await clock.sleep(60_000);
        await Promise.resolve();
        rounds++;
      }
    })();
    assert.equal(await clock.runUntil(() => rounds === 5, 10 * 60_000), true);
    await loop;
    assert.equal(clock.now(), 5 * 60_000);
  });

  test('runUntil gives up after its limit of clock time', async () => {
    const clock = new ManualClock(0);
    assert.equal(await clock.runUntil(() => false, 5000), false);
    assert.equal(clock.now(), 5000);
  });
});

describe('deadline', () => {
  test('counts down on the clock and caps its sleeps at the deadline', async () => {
    const clock = new ManualClock(0);
    const d = deadline(clock, 1000);
    assert.equal(d.remaining(), 1000);
    const sleeping = d.sleep(5000);
    await clock.tick(1000);
    await sleeping;
    assert.equal(d.expired(), true);
    assert.equal(d.remaining(), 0);
  });
});

describe('systemClock', () => {
  test('sleeps on real timers and honours abort', async () => {
    const before = systemClock.now();
    await systemClock.sleep(5);
    assert.ok(systemClock.now() >= before);
    await assert.rejects(systemClock.sleep(10_000, AbortSignal.timeout(5)), (e: Error) => e.name === 'TimeoutError');
  });
});

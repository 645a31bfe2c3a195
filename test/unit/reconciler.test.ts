/**
 * The work loop (controller/reconcile Reconciler) on a ManualClock: its interval, its
 * early wakes and its stop grace are clock timers, the backoff's jitter is an injected
 * random, so hours of loop time pass in milliseconds. Collaborators are in-memory fakes
 * of our own interfaces (test/unit/fakes/loop.ts); the issuer is a stand-in whose every
 * issue() the test settles. The real servers are exercised by test/e2e (renewal,
 * durable, spool).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CertificateConfig } from '../../controller/config/index.js';
import type { IssueRequest, Issuer } from '../../controller/issuer/index.js';
import { Reconciler } from '../../controller/reconcile/index.js';
import { intentKey } from '../../controller/reconcile/intent.js';
import { ManualClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { clockBudget, MemoryStore, memoryDesired, noPins, recordedEvents } from './fakes/loop.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 0, 1);

function cert(name: string, names = [`${name}.example.test`]): CertificateConfig {
  return { name, names, keyType: 'ecdsa-p256', agents: 'role=web', challenge: 'http-01' } as unknown as CertificateConfig;
}

/** An issuer whose issuances wait for the test: `succeed` stores a 90-day version, `fail` rejects. */
class SteeredIssuer {
  readonly calls: Array<{ req: IssueRequest; settle: (err?: Error) => void }> = [];
  constructor(
    private readonly store: MemoryStore,
    private readonly clock: ManualClock,
  ) {}
  readonly issuer = {
    resumable: () => Promise.resolve(null),
    issue: (req: IssueRequest, expectedLatest: number) =>
      new Promise<VersionMeta>((resolve, reject) => {
        this.calls.push({
          req,
          settle: (err) => {
            if (err) return reject(err);
            const now = this.clock.now();
            const meta = { name: req.name, serial: `${req.name}-${this.calls.length}`, fingerprint: `fp-${this.calls.length}`, names: [...req.names], notBefore: new Date(now).toISOString(), notAfter: new Date(now + 90 * DAY).toISOString(), issuedAt: new Date(now).toISOString(), keyType: req.keyType };
            this.store.putVersion(req.name, { certPem: '', chainPem: '', keyPem: '', meta }, expectedLatest).then(resolve, reject);
          },
        });
      }),
  } as unknown as Issuer;
  count(name: string): number {
    return this.calls.filter((c) => c.req.name === name).length;
  }
  last(name: string): { req: IssueRequest; settle: (err?: Error) => void } {
    const c = this.calls.filter((x) => x.req.name === name).at(-1);
    assert.ok(c, `an issuance of ${name}`);
    return c;
  }
}

function setup(certs: CertificateConfig[], opts: { intervalMs?: number; concurrency?: number; random?: () => number; active?: () => boolean } = {}) {
  const clock = new ManualClock(T0);
  const store = new MemoryStore();
  const steer = new SteeredIssuer(store, clock);
  const budget = clockBudget(clock);
  const { events, seen } = recordedEvents();
  const loop = new Reconciler({
    certificates: certs,
    store,
    issuer: steer.issuer,
    desired: memoryDesired(),
    events,
    clock,
    log: silentLogger(),
    intervalMs: opts.intervalMs ?? HOUR,
    concurrency: opts.concurrency ?? 4,
    pins: noPins,
    budget,
    spread: 0.05,
    spooled: () => false,
    selectedAgents: () => [],
    random: opts.random ?? (() => 0.5),
    ...(opts.active ? { active: opts.active } : {}),
  });
  return { clock, store, steer, budget, seen, loop };
}

/** Stores a version of `name` issued at `at` (90 days), as an earlier run of the loop would have. */
async function issued(store: MemoryStore, name: string, names: string[], at: number): Promise<void> {
  const meta = { name, serial: `${name}-0`, fingerprint: 'fp-0', names, notBefore: new Date(at).toISOString(), notAfter: new Date(at + 90 * DAY).toISOString(), issuedAt: new Date(at).toISOString(), keyType: 'ecdsa-p256' as const };
  await store.putVersion(name, { certPem: '', chainPem: '', keyPem: '', meta }, 0);
}

test('a due certificate is ordered once, however many passes run while it is in flight', async () => {
  const { clock, steer, loop } = setup([cert('web')], { intervalMs: 10 * MIN });
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => steer.count('web') === 1, MIN), 'ordered on the first pass');
    await clock.tick(2 * HOUR); // twelve more passes
    assert.equal(steer.count('web'), 1);
    assert.equal(loop.status('web')?.state, 'issuing');
    steer.last('web').settle();
    assert.ok(await clock.runUntil(() => loop.status('web')?.state === 'ready', MIN));
    await clock.tick(5 * DAY);
    assert.equal(steer.count('web'), 1, 'a fresh version waits for its renewal point');
    assert.match(loop.status('web')?.reason ?? '', /renewal window not reached/);
  } finally {
    await stopNow(loop, clock);
  }
});

test('an order the budgets defer is announced once and wakes at the instant the budget allows it', async () => {
  const { clock, steer, budget, seen, loop } = setup([cert('web')], { intervalMs: DAY });
  // Another fleet spent the account's new-order bucket just now.
  for (let i = 0; i < 300; i++) {
    const r = budget.budget.check({ names: [`h${i}.x${i}.test`], emergency: true }, clock.now());
    if (r.ok) budget.budget.commit(r.spend, clock.now());
  }
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => (loop.status('web')?.deferredUntil ?? 0) > 0, MIN));
    const until = loop.status('web')?.deferredUntil ?? 0;
    assert.ok(until > clock.now() && until < clock.now() + DAY, 'deferred to within the interval, so the loop wakes for it');
    assert.equal(seen.filter((e) => e.type === 'deferred').length, 1);
    await clock.tick(until - clock.now() - 1);
    assert.equal(steer.count('web'), 0, 'not ordered before the budget allows it');
    assert.ok(await clock.runUntil(() => steer.count('web') === 1, 2 * MIN), 'ordered when the wake fires');
    assert.ok(clock.now() - until < 100, `ordered at the deferral's end, not at the next interval (late by ${clock.now() - until} ms)`);
    assert.equal(seen.filter((e) => e.type === 'deferred').length, 1, 'announced once');
    assert.equal(loop.status('web')?.deferredUntil, 0);
  } finally {
    await stopNow(loop, clock);
  }
});

test('a failure is backed off by the injected random and retried when the clock passes the backoff', async () => {
  // random 1 → the longest jitter: 1 min + 10 %.
  const { clock, steer, store, loop } = setup([cert('web')], { intervalMs: HOUR, random: () => 1 });
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => steer.count('web') === 1, MIN));
    steer.last('web').settle(new CertfleetError(ErrorCode.AcmeTransport, 'CA unreachable', { retryable: true }));
    assert.ok(await clock.runUntil(() => loop.status('web')?.state === 'failed', MIN));
    const failedAt = clock.now();
    const rt = loop.status('web');
    assert.equal(rt?.failures, 1);
    assert.equal(rt?.backoffUntil, failedAt + 66_000);
    assert.ok(await store.getObject(intentKey('web')), 'the backoff is a durable record');
    await clock.tick(65_999);
    assert.equal(steer.count('web'), 1, 'no retry inside the backoff');
    assert.ok(await clock.runUntil(() => steer.count('web') === 2, MIN), 'retried once the backoff passed');
    assert.ok(clock.now() - failedAt < 66_100);
    steer.last('web').settle();
    assert.ok(await clock.runUntil(() => loop.status('web')?.state === 'ready', MIN));
    assert.equal(loop.status('web')?.failures, 0);
    assert.equal(await store.getObject(intentKey('web')), null, 'nothing owed after the success');
  } finally {
    await stopNow(loop, clock);
  }
});

test('an operator renew request for a certificate that is not due is ordered and answered by the success', async () => {
  const { clock, steer, store, loop } = setup([cert('web')], { intervalMs: HOUR });
  await issued(store, 'web', ['web.example.test'], T0);
  loop.start();
  try {
    await clock.tick(DAY);
    assert.equal(steer.count('web'), 0, 'a fresh version is not renewed');
    await loop.renewNow('web', 'alice');
    assert.ok(loop.status('web')?.force);
    assert.ok(await clock.runUntil(() => steer.count('web') === 1, MIN));
    assert.match(loop.status('web')?.reason ?? '', /renewal requested by alice/);
    steer.last('web').settle();
    assert.ok(await clock.runUntil(() => loop.status('web')?.force === false, MIN), 'the request is answered');
    assert.equal(await store.getObject(intentKey('web')), null);
    assert.equal((await store.latest('web'))?.version, 2);
    await clock.tick(DAY);
    assert.equal(steer.count('web'), 1, 'answered once');
  } finally {
    await stopNow(loop, clock);
  }
});

test('the concurrency limit holds orders back and the next starts when one ends', async () => {
  const { clock, steer, loop } = setup([cert('a'), cert('b'), cert('c')], { concurrency: 2, intervalMs: HOUR });
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => steer.calls.length === 2, MIN));
    await clock.tick(10 * MIN);
    assert.equal(steer.calls.length, 2);
    assert.equal(steer.count('c'), 0);
    steer.last('a').settle();
    assert.ok(await clock.runUntil(() => steer.count('c') === 1, MIN), 'the freed slot is used at once, not at the next interval');
  } finally {
    await stopNow(loop, clock);
  }
});

/** A loop with one issuance in flight, being stopped with `graceMs`; `stopped()` says whether stop() returned. */
async function stoppingWithOneInFlight(graceMs: number) {
  const { clock, steer, loop } = setup([cert('web')]);
  loop.start();
  assert.ok(await clock.runUntil(() => steer.count('web') === 1, MIN));
  let done = false;
  const stopping = loop.stop(graceMs).then(() => (done = true));
  return { clock, steer, stopping, stopped: () => done };
}

test('stop() waits for an issuance in flight up to its grace on clock time, then returns', async () => {
  const { clock, stopping, stopped } = await stoppingWithOneInFlight(5_000);
  await clock.tick(4_999);
  assert.equal(stopped(), false, 'still within the grace');
  await clock.tick(1);
  assert.equal(stopped(), true, 'returned when the grace ran out on the clock');
  await stopping;
});

test('stop() returns as soon as the issuance in flight ends within the grace', async () => {
  const { clock, steer, stopping, stopped } = await stoppingWithOneInFlight(60_000);
  await clock.tick(1_000);
  steer.last('web').settle();
  await clock.tick(1);
  assert.equal(stopped(), true, 'returned before the grace ran out');
  await stopping;
  assert.equal(clock.pendingTimers, 0, 'no timer left behind');
});

/** Stops the loop, letting the clock run its grace if something is still in flight. */
async function stopNow(loop: Reconciler, clock: ManualClock): Promise<void> {
  const stopping = loop.stop(1);
  await clock.tick(1);
  await stopping;
}

test('with two issuers the loop moves on after two CA-down failures at once, keeps the choice across a restart, and starts the next renewal at the first', async () => {
  const clock = new ManualClock(T0);
  const store = new MemoryStore();
  const steer = new SteeredIssuer(store, clock);
  const budgets = { primary: clockBudget(clock), fallback: clockBudget(clock) };
  const build = (): Reconciler =>
    new Reconciler({
      certificates: [cert('web')],
      store,
      issuer: steer.issuer,
      desired: memoryDesired(),
      events: recordedEvents().events,
      clock,
      log: silentLogger(),
      intervalMs: HOUR,
      concurrency: 4,
      pins: noPins,
      budget: budgets.primary,
      spread: 0.05,
      spooled: () => false,
      selectedAgents: () => [],
      random: () => 0.5,
      issuers: { chain: () => ['primary', 'fallback'], budget: (i) => (i === 'fallback' ? budgets.fallback : budgets.primary), fallbackAfter: () => 2 },
    });
  const down = (): Error => new CertfleetError(ErrorCode.AcmeTransport, 'ACME request to https://ca.test failed: connect ECONNREFUSED', { retryable: true });
  let loop = build();
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => steer.count('web') === 1, MIN));
    assert.equal(steer.last('web').req.issuer, 'primary');
    steer.last('web').settle(down());
    assert.ok(await clock.runUntil(() => steer.count('web') === 2, 2 * MIN), 'the primary is retried after its backoff');
    assert.equal(steer.last('web').req.issuer, 'primary');
    const failedAt = clock.now();
    steer.last('web').settle(down());
    assert.ok(await clock.runUntil(() => steer.count('web') === 3, 10 * MIN), 'the fallback orders');
    assert.ok(clock.now() - failedAt < MIN, 'at once, not after the primary’s 10-minute backoff');
    assert.equal(steer.last('web').req.issuer, 'fallback');
    assert.ok(budgets.fallback.commits > 0, 'paid from the fallback’s budgets');
    assert.equal(loop.status('web')?.issuer, 'fallback');

    // A restart keeps the choice (the stored intent).
    steer.last('web').settle(down());
    assert.ok(await clock.runUntil(() => loop.status('web')?.state === 'failed', MIN));
    assert.equal((await store.getObject<{ issuer?: string }>(intentKey('web')))?.issuer, 'fallback');
    await stopNow(loop, clock);
    loop = build();
    loop.start();
    assert.ok(await clock.runUntil(() => steer.count('web') === 4, 2 * DAY));
    assert.equal(steer.last('web').req.issuer, 'fallback', 'the restarted loop orders from the fallback');
    steer.last('web').settle();
    assert.ok(await clock.runUntil(() => loop.status('web')?.state === 'ready', MIN));
    assert.equal(await store.getObject(intentKey('web')), null, 'a stored version clears the intent');

    await clock.runUntil(() => steer.count('web') === 5, 90 * DAY);
    assert.equal(steer.last('web').req.issuer, 'primary', 'the next renewal starts at the first issuer');
  } finally {
    await stopNow(loop, clock);
  }
});

test('a follower orders nothing, and shows what the leader stored: the newest version, ready, its next renewal', async () => {
  const { clock, store, steer, budget, loop } = setup([cert('web')], { intervalMs: 10 * MIN, active: () => false });
  await issued(store, 'web', ['web.example.test'], T0 - DAY);
  const commits = budget.commits;
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => loop.status('web')?.latest?.version === 1, MIN), 'the stored version is shown');
    const rt = loop.status('web');
    assert.equal(rt?.state, 'ready');
    assert.ok((rt?.nextCheck ?? 0) > clock.now(), 'the next renewal is ahead');
    // The leader stores version 2: the follower shows it at its next tick.
    const meta = { name: 'web', serial: 'web-2', fingerprint: 'fp-2', names: ['web.example.test'], notBefore: new Date(clock.now()).toISOString(), notAfter: new Date(clock.now() + 90 * DAY).toISOString(), issuedAt: new Date(clock.now()).toISOString(), keyType: 'ecdsa-p256' as const };
    await store.putVersion('web', { certPem: '', chainPem: '', keyPem: '', meta }, 1);
    assert.ok(await clock.runUntil(() => loop.status('web')?.latest?.version === 2, 20 * MIN));
    // Far past the renewal point: still nothing ordered, nothing spent.
    await clock.tick(80 * DAY);
    assert.equal(steer.count('web'), 0);
    assert.equal(budget.commits, commits, 'no budget spent');
  } finally {
    await stopNow(loop, clock);
  }
});

test('a pass over many certificates answered from memory lets I/O callbacks run between slices', async () => {
  // 500 certificates with fresh versions: nothing due, every read answered from memory
  // (as the file store's caches answer), so no await in the pass waits for I/O.
  const certs = Array.from({ length: 500 }, (_, i) => cert(`c${i}`));
  const { clock, store, loop } = setup(certs, { intervalMs: HOUR });
  for (const c of certs) await issued(store, c.name, c.names, T0);
  let reads = 0;
  const latest = store.latest.bind(store);
  store.latest = (name) => {
    reads++;
    return latest(name);
  };
  // An I/O callback queued as the pass starts (a gRPC call arriving) and when it ran.
  let readsWhenCallbackRan = -1;
  setImmediate(() => (readsWhenCallbackRan = reads));
  loop.start();
  try {
    assert.ok(await clock.runUntil(() => reads >= certs.length, MIN), 'the pass read every certificate');
    assert.ok(readsWhenCallbackRan >= 0, 'the callback ran');
    assert.ok(readsWhenCallbackRan < certs.length, `the callback waited for the whole pass (${readsWhenCallbackRan} of ${certs.length} read before it)`);
  } finally {
    await stopNow(loop, clock);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Budget,
  BudgetConfigSchema,
  PRESETS,
  describeLimit,
  limitsFromConfig,
  registeredDomain,
  type BudgetLimits,
  type BudgetRequest,
  type CheckResult,
} from '../../controller/budget/index.js';
import { ManualClock } from '../../shared/clock/index.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const LE = PRESETS.letsencrypt;

/** Spends `n` requests built by `make(i)` at the clock's time; returns how many were allowed. */
function spend(b: Budget, clock: ManualClock, n: number, make: (i: number) => BudgetRequest): number {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const r = b.check(make(i), clock.now());
    if (r.ok) {
      b.commit(r.spend, clock.now());
      ok++;
    }
  }
  return ok;
}

function refused(r: CheckResult): Extract<CheckResult, { ok: false }> {
  if (r.ok) assert.fail('expected a refusal');
  return r;
}

// Each row: a limit, the requests that fill it, how many pass before the reserve
// (80 % of capacity) and with emergency (the full capacity).
const BUCKET_CASES: Array<[string, (i: number) => BudgetRequest, number, RegExp]> = [
  ['New Orders per Account allows 240 ordinary orders of 300 per 3h (60 held back)', (i) => ({ names: [`h${i}.d${i}.example`] }), 240, /New Orders per Account \(300 per 3h\)/],
  ['New Certificates per Registered Domain allows 40 ordinary certificates of 50 per 7d', (i) => ({ names: [`h${i}.shop.example.co.uk`] }), 40, /Registered Domain \(50 per 7d\) for example\.co\.uk:/],
  ['New Certificates per Exact Set allows 4 ordinary certificates of 5 per 7d', () => ({ names: ['b.example.org', 'A.example.org'], renewal: true }), 4, /Exact Set of Identifiers \(5 per 7d\) for a\.example\.org,b\.example\.org/],
];
for (const [name, make, ordinary, reason] of BUCKET_CASES) {
  test(name, () => {
    const clock = new ManualClock();
    const b = new Budget(LE);
    assert.equal(spend(b, clock, ordinary + 10, make), ordinary);
    const r = refused(b.check(make(ordinary + 11), clock.now()));
    assert.match(r.reason, reason);
    assert.ok(r.until > clock.now());
    // The emergency share is still there, and only for emergencies.
    const capacity = ordinary / 0.8;
    assert.equal(spend(b, clock, capacity, (i) => ({ ...make(i + 1000), emergency: true })), capacity - ordinary);
    assert.equal(b.check({ ...make(5000), emergency: true }, clock.now()).ok, false);
  });
}

test('Authorization Failures per Identifier block an identifier after its failures, not others', () => {
  const clock = new ManualClock();
  const b = new Budget(LE);
  for (let i = 0; i < 4; i++) b.recordAuthorizationFailure('Bad.example.com', clock.now());
  const r = refused(b.check({ names: ['bad.example.com', 'ok.example.com'] }, clock.now()));
  assert.match(r.reason, /Authorization Failures per Identifier per Account \(5 per 1h\) for bad\.example\.com/);
  assert.deepEqual(r.limits, ['authzFailuresPerIdentifier']);
  assert.equal(b.check({ names: ['ok.example.com'] }, clock.now()).ok, true);
  // One failure's worth is held for emergencies; the fifth failure empties it.
  assert.equal(b.check({ names: ['bad.example.com'], emergency: true }, clock.now()).ok, true);
  b.recordAuthorizationFailure('bad.example.com', clock.now());
  assert.equal(b.check({ names: ['bad.example.com'], emergency: true }, clock.now()).ok, false);
  // Refill: one token every 12 minutes.
  clock.advance(12 * MIN);
  assert.equal(b.check({ names: ['bad.example.com'], emergency: true }, clock.now()).ok, true);
  assert.equal(b.check({ names: ['bad.example.com'] }, clock.now()).ok, false);
  clock.advance(12 * MIN);
  assert.equal(b.check({ names: ['bad.example.com'] }, clock.now()).ok, true);
});

test('a refusal says when the request can go, and it can go exactly then', () => {
  const clock = new ManualClock();
  const b = new Budget(LE);
  spend(b, clock, 240, (i) => ({ names: [`n${i}.example`] }));
  const r = refused(b.check({ names: ['late.example'] }, clock.now()));
  assert.equal(r.until, clock.now() + 36_000); // one token every 3h/300 = 36 s
  clock.set(r.until - 1);
  assert.equal(b.check({ names: ['late.example'] }, clock.now()).ok, false);
  clock.set(r.until);
  assert.equal(b.check({ names: ['late.example'] }, clock.now()).ok, true);
});

test('buckets refill continuously, one token per period/capacity, up to capacity', () => {
  const clock = new ManualClock();
  const b = new Budget(LE, { emergencyReserve: 0 });
  spend(b, clock, 50, (i) => ({ names: [`x${i}.refill.example`] }));
  const domain = () => b.levels(clock.now()).find((l) => l.key === 'refill.example');
  assert.equal(domain()?.available, 0);
  assert.equal(domain()?.nextTokenAt, clock.now() + Math.ceil((7 * DAY) / 50));
  clock.advance(Math.ceil((7 * DAY) / 50) * 3);
  assert.equal(domain()?.available, 3);
  clock.advance(30 * DAY);
  assert.equal(domain(), undefined, 'a full bucket is not listed');
  assert.equal(spend(b, clock, 60, (i) => ({ names: [`y${i}.refill.example`] })), 50);
});

const EXEMPTION_CASES: Array<[string, BudgetRequest, boolean]> = [
  // With the account, domain and set buckets all empty (emergency included):
  ['an ARI renewal carrying replaces is exempt from every limit', { names: ['a.full.example'], replaces: 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE', renewal: true }, true],
  ['an ARI renewal is exempt even from authorization failures', { names: ['a.full.example'], replaces: 'x' }, true],
  ['a plain renewal of the same set still counts for the exact set', { names: ['a.full.example'], renewal: true }, false],
  ['a new identifier set is not exempt', { names: ['new.full.example'] }, false],
];
for (const [name, req, ok] of EXEMPTION_CASES) {
  test(name, () => {
    const clock = new ManualClock();
    const b = new Budget(LE, { emergencyReserve: 0 });
    spend(b, clock, 300, (i) => ({ names: [`f${i}.full.example`] }));
    spend(b, clock, 5, () => ({ names: ['a.full.example'], renewal: true }));
    for (let i = 0; i < 5; i++) b.recordAuthorizationFailure('a.full.example', clock.now());
    const r = b.check({ ...req, emergency: true }, clock.now());
    assert.equal(r.ok, ok, r.ok ? '' : r.reason);
    if (r.ok) assert.deepEqual(r.spend.items, []);
  });
}

test('a renewal of the same set is exempt from the per-account and per-domain limits', () => {
  const clock = new ManualClock();
  const b = new Budget(LE, { emergencyReserve: 0 });
  assert.equal(spend(b, clock, 400, (i) => ({ names: [`r${i}.one.example`] })), 50); // domain bucket empties first
  assert.equal(spend(b, clock, 400, (i) => ({ names: [`r${i}.d${i}.example`] })), 250); // account bucket: 300 in all
  const r = b.check({ names: ['r1.one.example'], renewal: true }, clock.now());
  assert.ok(r.ok);
  assert.deepEqual(r.spend.items.map((s) => s.limit), ['certificatesPerExactSet']);
  assert.match(r.spend.exemptions.join(), /exempt from per-account and per-domain/);
});

test('a refund returns the certificate tokens of an order that produced no certificate, not the order token', () => {
  const clock = new ManualClock();
  const b = new Budget(LE);
  const r = b.check({ names: ['a.refund.example'] }, clock.now());
  assert.ok(r.ok);
  b.commit(r.spend, clock.now());
  b.refund(r.spend, clock.now());
  const lv = b.levels(clock.now());
  assert.equal(lv.find((l) => l.limit === 'newOrdersPerAccount')?.available, 299);
  assert.equal(lv.find((l) => l.limit === 'certificatesPerDomain'), undefined);
  assert.equal(lv.find((l) => l.limit === 'certificatesPerExactSet'), undefined);
});

test('a certificate spanning two registered domains spends one token from each', () => {
  const b = new Budget(LE);
  const r = b.check({ names: ['www.a.example', 'a.example', 'x.b.example', '*.b.example'] }, 0);
  assert.ok(r.ok);
  assert.deepEqual(
    r.spend.items.filter((s) => s.limit === 'certificatesPerDomain').map((s) => s.key).sort(),
    ['a.example', 'b.example'],
  );
});

const DOMAIN_CASES: Array<[string, string]> = [
  ['www.example.com', 'example.com'],
  ['new.blog.example.co.uk', 'example.co.uk'],
  ['*.Example.COM', 'example.com'],
  ['alice.github.io', 'alice.github.io'],
  ['192.0.2.7', '192.0.2.7'],
  ['2001:db8:1:2::5', '2001:db8:1:2::/64'],
  ['localhost', 'localhost'],
];
for (const [name, expected] of DOMAIN_CASES) {
  test(`the registered domain of ${name} is ${expected}`, () => assert.equal(registeredDomain(name), expected));
}

test('the state survives a JSON round trip, so a restart forgets nothing', () => {
  const clock = new ManualClock();
  const b = new Budget(LE);
  spend(b, clock, 100, (i) => ({ names: [`s${i}.state.example`] }));
  b.recordAuthorizationFailure('s1.state.example', clock.now());
  clock.advance(HOUR);
  const text = JSON.stringify(b.toJSON(clock.now()));
  const back = Budget.fromJSON(LE, JSON.parse(text) as ReturnType<Budget['toJSON']>);
  assert.deepEqual(back.levels(clock.now()), b.levels(clock.now()));
  assert.deepEqual(back.check({ names: ['z.state.example'] }, clock.now()), b.check({ names: ['z.state.example'] }, clock.now()));
  assert.ok(back.levels(clock.now()).some((l) => l.limit === 'certificatesPerDomain' && l.key === 'state.example'));
});

test('a state of an unknown version is refused', () => {
  assert.throws(() => Budget.fromJSON(LE, { version: 2 as 1, buckets: {} }), RangeError);
});

test('the none preset allows anything', () => {
  const clock = new ManualClock();
  const b = new Budget(PRESETS.none);
  assert.equal(spend(b, clock, 1000, () => ({ names: ['same.example'] })), 1000);
  assert.deepEqual(b.levels(clock.now()), []);
});

test('the staging preset uses the staging numbers', () => {
  assert.deepEqual(
    Object.values(PRESETS['letsencrypt-staging']).map((l) => (l ? describeLimit(l) : '-')),
    ['1500 per 3h', '30000 per 7d', '30000 per 7d', '200 per 1h'],
  );
});

test('levels describe every bucket for certfleet budgets', () => {
  const clock = new ManualClock();
  const b = new Budget(LE);
  spend(b, clock, 2, (i) => ({ names: [`l${i}.lv.example`] }));
  const acct = b.levels(clock.now())[0];
  assert.deepEqual(acct, {
    limit: 'newOrdersPerAccount',
    title: 'New Orders per Account',
    key: 'account',
    human: '300 per 3h',
    available: 298,
    capacity: 300,
    reserved: 60,
    nextTokenAt: clock.now() + 36_000,
  });
});

test('custom numbers come from the config schema; null switches a limit off', () => {
  const cfg = BudgetConfigSchema.parse({
    preset: 'letsencrypt',
    emergencyReserve: 0.5,
    limits: { newOrdersPerAccount: { count: 10, period: '1h' }, certificatesPerDomain: null },
  });
  const limits: BudgetLimits = limitsFromConfig(cfg);
  assert.deepEqual(limits.newOrdersPerAccount, { count: 10, periodMs: HOUR });
  assert.equal(limits.certificatesPerDomain, null);
  assert.deepEqual(limits.certificatesPerExactSet, LE.certificatesPerExactSet);
  const clock = new ManualClock();
  const b = Budget.fromConfig(cfg);
  assert.equal(spend(b, clock, 20, (i) => ({ names: [`c${i}.same.example`] })), 5);
  assert.deepEqual(limitsFromConfig(BudgetConfigSchema.parse({ preset: 'custom' })), PRESETS.none);
});

test('the config schema reports bad budgets', () => {
  const r = BudgetConfigSchema.safeParse({ preset: 'zerossl', emergencyReserve: 2, limits: { newOrdersPerAccount: { count: 0, period: 'soon' }, extra: 1 } });
  assert.equal(r.success, false);
  const paths = r.error?.issues.map((i) => i.path.join('.')) ?? [];
  for (const p of ['preset', 'emergencyReserve', 'limits.newOrdersPerAccount.count', 'limits.newOrdersPerAccount.period', 'limits']) assert.ok(paths.includes(p), `${p} not reported in ${paths.join(', ')}`);
});

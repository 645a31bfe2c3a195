/**
 * Fleet simulation: the real scheduler (controller/scheduler) and budget
 * (controller/budget) driven on a virtual clock (shared/clock ManualClock) through a
 * simple model of the work loop, to show that a large fleet never lets a certificate
 * expire and never trips a Let's Encrypt rate limit.
 *
 *   node dist/bench/fleet-sim.js                 # 90-, 45- and 6-day lifetimes
 *   node dist/bench/fleet-sim.js --lifetime 6    # one lifetime
 *   options: --certs 10000 --domains 2000 --days 365 --seed 1 --check-minutes 1
 *            --concurrency 10 --order-minutes 2 --failure-rate 0.05 --outage-hours 24
 *            --outage-day D (default: the middle of the first renewal wave)
 *            --changes-per-day 20 --burst 0 --burst-day 10 --spread 0.05 --ari --json
 *
 * The work loop is the controller's own: every decision is controller/reconcile/plan.ts
 * (`planPass` for a pass over one certificate, `afterIssued` / `afterFailed` for the
 * bookkeeping when an issuance ends), fed with the real scheduler and budget. Only the
 * world around it is modelled here:
 *  - every certificate exists at the start, all issued at T0 (an imported fleet);
 *  - a pass runs every --check-minutes, and at once when an issuance ends (the
 *    controller kicks one then); it plans the certificates whose wake time has come
 *    and the due ones waiting for a slot, in configuration order as the controller's
 *    pass walks them, with at most --concurrency issuances in flight; an issuance takes
 *    --order-minutes;
 *  - the issuer and the CA as controller/issuer sees them: an order placed during the
 *    outage never reaches the CA (its certificate buckets are refunded); one the
 *    outage or a 5xx interrupts stays saved and is resumed, not ordered or charged
 *    again; a failed validation kills the order (refunded, the identifier's
 *    authorization failure recorded);
 *  - the CA fails --failure-rate of attempts at random (half of them failed
 *    validations, half retryable), and everything for --outage-hours;
 *  - --changes-per-day certificates a day get a new name (a new identifier set, so
 *    not a renewal: those orders count against the per-account and per-domain limits);
 *    --burst N gives N certificates a new name at once on --burst-day (a migration),
 *    more than the per-account limit lets through, so the budget has to defer;
 *  - the budget state goes through toJSON/JSON/fromJSON once a simulated day, as a
 *    controller restart would;
 *  - a separate model of Let's Encrypt's limits (GCRA, written independently of the
 *    budget code, with the documented exemptions) counts every order or certificate
 *    the CA would have refused: "budget violations".
 */
import { Budget, PRESETS, registeredDomain, type BudgetState, type Spend } from '../controller/budget/index.js';
import { afterFailed, afterIssued, lifetimeOf, planPass, type AriFacts } from '../controller/reconcile/plan.js';
import { NO_INTENT, type RenewalIntent } from '../controller/reconcile/intent.js';
import { ManualClock } from '../shared/clock/index.js';
import { ErrorCode } from '../shared/errors/index.js';
import type { VersionMeta } from '../shared/model/index.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 0, 1);

interface Options {
  lifetimes: number[];
  certs: number;
  domains: number;
  days: number;
  seed: number;
  checkMinutes: number;
  concurrency: number;
  orderMinutes: number;
  failureRate: number;
  outageHours: number;
  outageDay: number | undefined;
  changesPerDay: number;
  burst: number;
  burstDay: number;
  spread: number;
  ari: boolean;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    lifetimes: [90, 45, 6],
    certs: 10_000,
    domains: 2_000,
    days: 365,
    seed: 1,
    checkMinutes: 1,
    concurrency: 10,
    orderMinutes: 2,
    failureRate: 0.05,
    outageHours: 24,
    outageDay: undefined,
    changesPerDay: 20,
    burst: 0,
    burstDay: 10,
    spread: 0.05,
    ari: false,
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    const next = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v)) throw new Error(`${a} needs a number`);
      return v;
    };
    switch (a) {
      case '--lifetime': o.lifetimes = [next()]; break;
      case '--certs': o.certs = next(); break;
      case '--domains': o.domains = next(); break;
      case '--days': o.days = next(); break;
      case '--seed': o.seed = next(); break;
      case '--check-minutes': o.checkMinutes = next(); break;
      case '--concurrency': o.concurrency = next(); break;
      case '--order-minutes': o.orderMinutes = next(); break;
      case '--failure-rate': o.failureRate = next(); break;
      case '--outage-hours': o.outageHours = next(); break;
      case '--outage-day': o.outageDay = next(); break;
      case '--changes-per-day': o.changesPerDay = next(); break;
      case '--burst': o.burst = next(); break;
      case '--burst-day': o.burstDay = next(); break;
      case '--spread': o.spread = next(); break;
      case '--ari': o.ari = true; break;
      case '--json': o.json = true; break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  return o;
}

/** mulberry32: a small seeded PRNG, [0, 1). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A binary min-heap of certificate indexes keyed by a number. */
class Heap {
  private keys: number[] = [];
  private vals: number[] = [];
  get size(): number {
    return this.keys.length;
  }
  peekKey(): number {
    return this.keys[0] ?? Infinity;
  }
  push(key: number, val: number): void {
    const k = this.keys;
    const v = this.vals;
    let i = k.length;
    k.push(key);
    v.push(val);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (k[p]! <= key) break;
      k[i] = k[p]!;
      v[i] = v[p]!;
      i = p;
    }
    k[i] = key;
    v[i] = val;
  }
  pop(): number {
    const k = this.keys;
    const v = this.vals;
    const top = v[0]!;
    const lastK = k.pop()!;
    const lastV = v.pop()!;
    const n = k.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && k[r]! < k[l]! ? r : l;
        if (k[c]! >= lastK) break;
        k[i] = k[c]!;
        v[i] = v[c]!;
        i = c;
      }
      k[i] = lastK;
      v[i] = lastV;
    }
    return top;
  }
}

/**
 * Let's Encrypt's limits as the CA applies them, independent of controller/budget:
 * GCRA (the algorithm behind Let's Encrypt's token buckets), keyed by a theoretical
 * arrival time; new orders are counted when placed, certificates when issued, and the
 * documented exemptions applied (ARI renewals: all; renewals of an identical set:
 * per account and per domain).
 */
class LetsEncryptModel {
  private readonly tat = new Map<string, number>();
  readonly issuedSets = new Set<string>();
  violations = 0;
  readonly violationsByLimit: Record<string, number> = {};

  private allow(key: string, count: number, period: number, now: number): boolean {
    const t = period / count;
    const tat = Math.max(this.tat.get(key) ?? now, now);
    // Small epsilon: float periods (36 s, 201.6 min) against integer milliseconds.
    if (tat + t - now > period + 1e-6) return false;
    this.tat.set(key, tat + t);
    return true;
  }

  private violate(limit: string): void {
    this.violations++;
    this.violationsByLimit[limit] = (this.violationsByLimit[limit] ?? 0) + 1;
  }

  /** An order arrives at the CA. */
  order(names: readonly string[], ari: boolean, now: number): void {
    if (ari) return;
    const set = setKey(names);
    if (!this.issuedSets.has(set) && !this.allow('orders', 300, 3 * HOUR, now)) this.violate('newOrdersPerAccount');
    // The CA refuses an order for an identifier whose failure bucket is empty.
    for (const n of names) {
      const tat = this.tat.get(`authz|${n}`) ?? now;
      if (Math.max(tat, now) + HOUR / 5 - now > HOUR + 1e-6) this.violate('authzFailuresPerIdentifier');
    }
  }

  /** A certificate is issued. */
  issued(names: readonly string[], ari: boolean, now: number): void {
    const set = setKey(names);
    if (!ari) {
      if (!this.issuedSets.has(set)) {
        for (const d of new Set(names.map(registeredDomain))) if (!this.allow(`domain|${d}`, 50, 7 * DAY, now)) this.violate('certificatesPerDomain');
      }
      if (!this.allow(`set|${set}`, 5, 7 * DAY, now)) this.violate('certificatesPerExactSet');
    }
    this.issuedSets.add(set);
  }

  /** A validation failed. */
  authzFailure(names: readonly string[], now: number): void {
    for (const n of names) this.allow(`authz|${n}`, 5, HOUR, now);
  }
}

function setKey(names: readonly string[]): string {
  return [...new Set(names.map((n) => n.toLowerCase()))].sort().join(',');
}

interface Cert {
  spec: { names: string[]; keyType: 'ecdsa-p256' };
  latest: VersionMeta;
  notBefore: number;
  notAfter: number;
  /** The durable intent the controller keeps (failures, retryAt). */
  intent: RenewalIntent;
  inFlight: boolean;
  ariSeed: number;
  everExpired: boolean;
  /** Deferred by a budget (the loop's `deferredUntil !== 0`). */
  deferred: boolean;
  /** The order the issuer keeps for this certificate (`orders/<name>`), with what it was charged. */
  saved: { names: string[]; spend: Spend } | null;
  /** The one live entry of this certificate in the wake heap (older entries are stale). */
  wakeAt: number;
}

/** An issuance in flight: what it was asked, and whether a new order reached the CA. */
interface Attempt {
  names: string[];
  ari: boolean;
  startedAt: number;
  /** Placed during the outage: no order exists at the CA. */
  unplaced: boolean;
}

interface Result {
  lifetimeDays: number;
  certificates: number;
  registeredDomains: number;
  simulatedDays: number;
  orders: number;
  issued: number;
  failedOrders: number;
  expiredCertificates: number;
  expiredEvents: number;
  budgetViolations: number;
  violationsByLimit: Record<string, number>;
  budgetDeferrals: number;
  budgetDeferralChecks: number;
  emergencyRenewals: number;
  minMarginAtRenewal: string;
  peakOrders3h: number;
  peakNonExemptOrders3h: number;
  busiestHour: number;
  meanPerHour: number;
  outage: string;
  wallMs: number;
}

function simulate(o: Options, lifetimeDays: number): Result {
  const started = process.hrtime.bigint();
  const rand = prng(o.seed * 7919 + lifetimeDays);
  const clock = new ManualClock(T0);
  const lifetime = lifetimeDays * DAY;
  const end = T0 + o.days * DAY;
  const tick = o.checkMinutes * MIN;
  const ca = new LetsEncryptModel();
  let budget = new Budget(PRESETS.letsencrypt);
  const tlds = ['test', 'co.uk', 'example', 'github.io'];

  const hex = (): string => Math.floor(rand() * 2 ** 48).toString(16).padStart(12, '0');
  const newVersion = (names: readonly string[], name: string, version: number, at: number): VersionMeta => ({
    name,
    version,
    serial: hex(),
    fingerprint: '',
    names: [...names],
    notBefore: new Date(at).toISOString(),
    notAfter: new Date(at + lifetime).toISOString(),
    issuedAt: new Date(at).toISOString(),
    keyType: 'ecdsa-p256',
  });

  const certs: Cert[] = [];
  for (let i = 0; i < o.certs; i++) {
    const d = i % o.domains;
    const site = `site${d}.${tlds[d % tlds.length]}`;
    const names = i % 3 === 0 ? [`svc${i}.${site}`, `www.svc${i}.${site}`] : [`svc${i}.${site}`];
    const spec = { names, keyType: 'ecdsa-p256' as const };
    const latest = newVersion(names, `cert-${i}`, 1, T0);
    certs.push({ spec, latest, notBefore: T0, notAfter: T0 + lifetime, intent: NO_INTENT, inFlight: false, ariSeed: Math.floor(rand() * 2 ** 32), everExpired: false, deferred: false, saved: null, wakeAt: T0 });
    ca.issuedSets.add(setKey(names));
  }
  const registered = new Set(certs.map((c) => registeredDomain(c.spec.names[0] ?? '')));

  // The outage lands in the middle of the first renewal wave unless told otherwise.
  const waveMid = (lifetimeDays < 10 ? 0.5 : 2 / 3) * lifetime - (o.spread / 2) * lifetime;
  const outageStart = T0 + (o.outageDay !== undefined ? o.outageDay * DAY : Math.round(waveMid));
  const outageEnd = outageStart + o.outageHours * HOUR;
  const inOutage = (t: number): boolean => t >= outageStart && t < outageEnd;

  /** The CA's renewalInfo window when --ari: a 2-day window (1/3 of it for short certs) around 2/3 of the lifetime. */
  const ariFor = (c: Cert): AriFacts | undefined => {
    if (!o.ari) return undefined;
    const width = Math.min(2 * DAY, lifetime / 30);
    const start = c.notBefore + Math.round((lifetimeDays < 10 ? 0.5 : 2 / 3) * lifetime - width);
    return { window: { start, end: start + width }, seed: c.ariSeed, certId: c.latest.serial };
  };

  const wake = new Heap(); // when to plan a certificate again
  const queued = new Heap(); // due certificates waiting for a slot, in configuration order
  const inFlight = new Heap(); // completion times
  const schedule = (i: number, at: number): void => {
    certs[i]!.wakeAt = at;
    wake.push(at, i);
  };
  for (let i = 0; i < certs.length; i++) schedule(i, T0);

  const minutes = Math.ceil((end - T0) / MIN) + 1;
  const perMinute = new Uint16Array(minutes);
  const perMinuteNonExempt = new Uint16Array(minutes);
  const attempts = new Map<number, Attempt>();
  let orders = 0;
  let issued = 0;
  let failedOrders = 0;
  let expiredEvents = 0;
  let deferrals = 0;
  let deferralChecks = 0;
  let emergencies = 0;
  let minMargin = Infinity;
  let nextRestart = T0 + DAY;
  let nextChange = o.changesPerDay > 0 ? T0 + DAY / o.changesPerDay : Infinity;
  let changeSeq = 0;
  let nextBurst = o.burst > 0 ? T0 + o.burstDay * DAY : Infinity;

  /** One pass of the loop over certificate `i` (controller/reconcile reconcileOne). */
  const pass = (i: number, now: number): void => {
    const c = certs[i]!;
    const p = planPass({
      spec: c.spec,
      latest: c.latest,
      target: c.latest,
      spread: o.spread,
      slotFree: attempts.size < o.concurrency,
      deferred: c.deferred,
      budget: (req) => budget.check(req, now),
      now,
      busy: c.inFlight ? 'in-flight' : null,
      ari: ariFor(c),
      intent: c.intent,
      resumableOrder: c.saved !== null && setKey(c.saved.names) === setKey(c.spec.names),
    });
    switch (p.action) {
      case 'busy':
        return;
      case 'wait':
        c.deferred = false;
        schedule(i, Math.max(p.at, now + 1));
        return;
      case 'queued':
        queued.push(i, i);
        return;
      case 'defer':
        deferralChecks++;
        if (p.announce) deferrals++;
        c.deferred = true;
        schedule(i, Math.max(p.until, now + 1));
        return;
      case 'order': {
        c.deferred = false;
        if (p.request.emergency === true) emergencies++;
        const names = [...c.spec.names];
        const ari = p.replaces !== undefined;
        let unplaced = false;
        if (p.payment.kind === 'commit') {
          // controller/issuer: a saved order for other names is dropped (refunded) first.
          if (c.saved) budget.refund(c.saved.spend, now);
          c.saved = null;
          budget.commit(p.payment.spend, now);
          if (inOutage(now)) {
            // placeOrder fails: no order at the CA, its certificate buckets come back.
            budget.refund(p.payment.spend, now);
            unplaced = true;
          } else {
            c.saved = { names, spend: p.payment.spend };
            orders++;
            const m = Math.floor((now - T0) / MIN);
            perMinute[m] = (perMinute[m] ?? 0) + 1;
            if (!p.request.renewal) perMinuteNonExempt[m] = (perMinuteNonExempt[m] ?? 0) + 1;
            ca.order(names, ari, now);
          }
        }
        c.inFlight = true;
        attempts.set(i, { names, ari, startedAt: now, unplaced });
        inFlight.push(now + o.orderMinutes * MIN, i);
        return;
      }
    }
  };

  while (clock.now() <= end) {
    const now = clock.now();

    // Issuances that ended: the bookkeeping of controller/reconcile (afterIssued /
    // afterFailed) and of controller/issuer (a dead order refunded and dropped).
    while (inFlight.size > 0 && inFlight.peekKey() <= now) {
      const i = inFlight.pop();
      const c = certs[i]!;
      const a = attempts.get(i)!;
      attempts.delete(i);
      c.inFlight = false;
      // Placed during the outage, or the outage fell while it ran (as the old model: it
      // started before the outage ended and ends after it began).
      const outage = a.unplaced || (a.startedAt < outageEnd && now >= outageStart);
      const fails = outage || rand() < o.failureRate;
      if (fails) {
        failedOrders++;
        const authz = !outage && rand() < 0.5;
        const failure = afterFailed({
          intent: c.intent,
          error: authz
            ? { code: ErrorCode.AcmeProblem, message: 'unauthorized', spooled: false, identifier: a.names[0] }
            : { code: ErrorCode.AcmeTransport, message: 'CA unreachable', spooled: false },
          now,
          startedAt: a.startedAt,
          lifetimeMs: lifetimeOf(c.latest),
          agentCameOnline: false,
          random: rand,
        });
        if (authz && c.saved) {
          // A failed validation kills the order: the issuer drops it and refunds it.
          budget.refund(c.saved.spend, now);
          c.saved = null;
        }
        if (failure.outcome === 'failed' && failure.authorizationFailure !== undefined) {
          budget.recordAuthorizationFailure(failure.authorizationFailure, now);
          ca.authzFailure([failure.authorizationFailure], now);
        }
        c.intent = failure.intent;
      } else {
        if (now >= c.notAfter) {
          expiredEvents++;
          c.everExpired = true;
        }
        minMargin = Math.min(minMargin, (c.notAfter - now) / (c.notAfter - c.notBefore));
        ca.issued(a.names, a.ari, now);
        issued++;
        c.saved = null;
        c.latest = newVersion(a.names, c.latest.name, c.latest.version + 1, now);
        c.notBefore = now;
        c.notAfter = now + lifetime;
        c.intent = afterIssued(c.intent, a.startedAt).intent;
      }
      schedule(i, now);
    }

    // Configuration changes: a name added (a new identifier set).
    const addName = (i: number): void => {
      const c = certs[i]!;
      const base = c.spec.names[0] ?? '';
      c.spec = { ...c.spec, names: [...c.spec.names, `extra${changeSeq++}.${base.slice(base.indexOf('.') + 1)}`] };
      if (!c.inFlight) schedule(i, now);
    };
    while (nextChange <= now) {
      addName(Math.floor(rand() * certs.length));
      nextChange += DAY / o.changesPerDay;
    }
    if (nextBurst <= now) {
      for (let k = 0; k < o.burst; k++) addName(Math.floor(rand() * certs.length));
      nextBurst = Infinity;
    }

    // A controller restart: the budget comes back from its persisted JSON.
    if (now >= nextRestart) {
      const state = JSON.parse(JSON.stringify(budget.toJSON(now))) as BudgetState;
      budget = Budget.fromJSON(PRESETS.letsencrypt, state);
      nextRestart += DAY;
    }

    // The pass, in configuration order: certificates whose wake time has come, merged
    // with the due ones waiting for a slot. A waiting one is planned again only while a
    // slot is free (with none its plan is "queued" again: nothing changes), so a pass
    // costs what it starts, not the length of the queue.
    const due = new Heap();
    while (wake.size > 0 && wake.peekKey() <= now) {
      const at = wake.peekKey();
      const i = wake.pop();
      if (at === certs[i]!.wakeAt) due.push(i, i);
    }
    for (;;) {
      // Taken from the queue only with a slot free, so planPass never says "queued" to it.
      const fromQueue = attempts.size < o.concurrency && queued.size > 0 && queued.peekKey() < due.peekKey();
      if (!fromQueue && due.size === 0) break;
      pass(fromQueue ? queued.pop() : due.pop(), now);
    }

    // Next pass: the next tick at or after the next thing that can happen; at once
    // (next tick) while due certificates wait and a slot is free.
    let next = Math.min(wake.peekKey(), inFlight.peekKey(), nextChange, nextRestart, nextBurst);
    if (attempts.size < o.concurrency && queued.size > 0) next = now + tick;
    next = Math.max(now + tick, T0 + Math.ceil((next - T0) / tick) * tick);
    clock.advance(next - now);
  }

  let expiredCerts = 0;
  for (const c of certs) if (c.everExpired || c.notAfter <= end) expiredCerts++;

  const window = (arr: Uint16Array, size: number): number => {
    let sum = 0;
    let peak = 0;
    for (let m = 0; m < arr.length; m++) {
      sum += arr[m] ?? 0;
      if (m >= size) sum -= arr[m - size] ?? 0;
      if (sum > peak) peak = sum;
    }
    return peak;
  };
  let busiest = 0;
  for (let h = 0; h * 60 < minutes; h++) {
    let s = 0;
    for (let m = h * 60; m < Math.min(minutes, h * 60 + 60); m++) s += perMinute[m] ?? 0;
    busiest = Math.max(busiest, s);
  }
  return {
    lifetimeDays,
    certificates: o.certs,
    registeredDomains: registered.size,
    simulatedDays: o.days,
    orders,
    issued,
    failedOrders,
    expiredCertificates: expiredCerts,
    expiredEvents,
    budgetViolations: ca.violations,
    violationsByLimit: ca.violationsByLimit,
    budgetDeferrals: deferrals,
    budgetDeferralChecks: deferralChecks,
    emergencyRenewals: emergencies,
    minMarginAtRenewal: `${(minMargin * 100).toFixed(1)}% of lifetime`,
    peakOrders3h: window(perMinute, 180),
    peakNonExemptOrders3h: window(perMinuteNonExempt, 180),
    busiestHour: busiest,
    meanPerHour: Math.round((orders / (o.days * 24)) * 10) / 10,
    outage: `${new Date(outageStart).toISOString()} + ${o.outageHours}h`,
    wallMs: Number((process.hrtime.bigint() - started) / 1_000_000n),
  };
}

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  const results = o.lifetimes.map((l) => simulate(o, l));
  const rssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
  if (o.json) {
    console.log(JSON.stringify({ options: o, results, peakRssMiB: rssMiB }, null, 2));
  } else {
    console.log(
      `fleet-sim: ${o.certs} certificates, ${o.domains} registered domains, ${o.days} days, check every ${o.checkMinutes} min, ` +
        `concurrency ${o.concurrency}, ${o.orderMinutes} min per order, ${o.failureRate * 100}% CA failures, ${o.outageHours}h outage, ` +
        `${o.changesPerDay} name changes/day${o.burst ? `, ${o.burst} at once on day ${o.burstDay}` : ''}, spread ${o.spread}${o.ari ? ', ARI' : ''}, seed ${o.seed}`,
    );
    for (const r of results) {
      console.log(`\nlifetime ${r.lifetimeDays} days (outage ${r.outage})`);
      console.log(`  certificates that expired   ${r.expiredCertificates}`);
      console.log(`  budget violations           ${r.budgetViolations}${r.budgetViolations ? ' ' + JSON.stringify(r.violationsByLimit) : ''}`);
      console.log(`  orders / issued / failed    ${r.orders} / ${r.issued} / ${r.failedOrders}`);
      console.log(`  orders deferred by budget   ${r.budgetDeferrals} (re-checks while deferred: ${r.budgetDeferralChecks})`);
      console.log(`  emergency renewals          ${r.emergencyRenewals}`);
      console.log(`  least margin at renewal     ${r.minMarginAtRenewal}`);
      console.log(`  peak orders in any 3h       ${r.peakOrders3h} (not renewals: ${r.peakNonExemptOrders3h}; Let's Encrypt: 300 per 3h)`);
      console.log(`  busiest hour vs mean        ${r.busiestHour} vs ${r.meanPerHour} orders/h (${(r.busiestHour / r.meanPerHour).toFixed(1)}x)`);
      console.log(`  wall clock                  ${(r.wallMs / 1000).toFixed(1)} s`);
    }
    console.log(`\npeak RSS ${rssMiB} MiB (whole process)`);
  }
  const bad = results.some((r) => r.expiredCertificates > 0 || r.budgetViolations > 0);
  process.exitCode = bad ? 1 : 0;
}

main();

/**
 * Rate-limit budgets: token buckets that mirror the CA's published limits, so an order
 * that would be refused is never sent. Pure state machine: requests and `now` in,
 * decisions out; the state is a plain serialisable object ({@link Budget.toJSON}) that
 * the caller persists (JetStream KV) so a restart does not forget what was spent.
 *
 * Buckets (Let's Encrypt's names; each refills continuously, one token every
 * period/capacity, as Let's Encrypt documents its own token buckets):
 *   newOrdersPerAccount          one bucket; 1 token per new order
 *   certificatesPerDomain        one per registered domain (public suffix list, private
 *                                section included); 1 token per registered domain named
 *   certificatesPerExactSet      one per identifier set (lower-cased, sorted)
 *   authzFailuresPerIdentifier   one per identifier; spent by recordAuthorizationFailure,
 *                                an order needs 1 token left for each of its names
 * Exemptions (what Let's Encrypt does):
 *   - an ARI renewal (order carries `replaces`) is exempt from every bucket;
 *   - a renewal of exactly the same identifier set is exempt from newOrdersPerAccount
 *     and certificatesPerDomain (still counts for the exact set).
 * Emergency share: each bucket holds back floor(capacity × emergencyReserve) tokens
 * (default 20 %) that only requests marked `emergency` may use.
 *
 * Protocol: `check()` then `commit()` in the same tick (no await between), when the
 * order is placed. Certificate buckets (per domain, per exact set) are spent then too,
 * which is stricter than the CA (it counts them at issuance) and safe with orders in
 * flight; `refund()` gives them back when an order ends without a certificate.
 */
import { isIP } from 'node:net';
import { getDomain } from 'tldts';
import { duration, z } from '../../shared/config/index.js';

/** The limits modelled. */
export type LimitName = 'newOrdersPerAccount' | 'certificatesPerDomain' | 'certificatesPerExactSet' | 'authzFailuresPerIdentifier';

/** One limit: `count` tokens per `periodMs`, refilled one every periodMs/count. */
export interface Limit {
  count: number;
  periodMs: number;
}

/** Every limit; null means not enforced. */
export type BudgetLimits = Record<LimitName, Limit | null>;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Display names, as the CA's documentation calls them. */
export const LIMIT_TITLES: Record<LimitName, string> = {
  newOrdersPerAccount: 'New Orders per Account',
  certificatesPerDomain: 'New Certificates per Registered Domain',
  certificatesPerExactSet: 'New Certificates per Exact Set of Identifiers',
  authzFailuresPerIdentifier: 'Authorization Failures per Identifier per Account',
};

const LIMIT_NAMES = Object.keys(LIMIT_TITLES) as LimitName[];

/**
 * Presets. `letsencrypt`: production numbers (letsencrypt.org/docs/rate-limits).
 * `letsencrypt-staging`: the staging environment's (letsencrypt.org/docs/
 * staging-environment; its page says "30000 per second" for registered domains, read
 * as per week like every other certificate limit). `none`: nothing enforced.
 */
export const PRESETS = {
  letsencrypt: {
    newOrdersPerAccount: { count: 300, periodMs: 3 * HOUR },
    certificatesPerDomain: { count: 50, periodMs: 7 * DAY },
    certificatesPerExactSet: { count: 5, periodMs: 7 * DAY },
    authzFailuresPerIdentifier: { count: 5, periodMs: HOUR },
  },
  'letsencrypt-staging': {
    newOrdersPerAccount: { count: 1500, periodMs: 3 * HOUR },
    certificatesPerDomain: { count: 30_000, periodMs: 7 * DAY },
    certificatesPerExactSet: { count: 30_000, periodMs: 7 * DAY },
    authzFailuresPerIdentifier: { count: 200, periodMs: HOUR },
  },
  none: {
    newOrdersPerAccount: null,
    certificatesPerDomain: null,
    certificatesPerExactSet: null,
    authzFailuresPerIdentifier: null,
  },
} as const satisfies Record<string, BudgetLimits>;

export type PresetName = keyof typeof PRESETS;

/** Default share of each bucket held back for emergencies. */
export const DEFAULT_EMERGENCY_RESERVE = 0.2;

const limitSchema = z.object({ count: z.number().int().positive(), period: duration }).strict();

/**
 * The `budgets` section of controller.yaml (the config module embeds it):
 *
 *   budgets:
 *     preset: letsencrypt          # letsencrypt | letsencrypt-staging | none | custom
 *     emergencyReserve: 0.2        # share of each bucket only emergencies may use
 *     limits:                      # per-limit overrides; `custom` starts from none
 *       newOrdersPerAccount: { count: 300, period: 3h }
 *       certificatesPerDomain: null   # null switches a limit off
 *
 * Defaults: preset letsencrypt, reserve 0.2, no overrides.
 */
export const BudgetConfigSchema = z
  .object({
    preset: z.enum(['letsencrypt', 'letsencrypt-staging', 'none', 'custom']).default('letsencrypt'),
    emergencyReserve: z.number().min(0).max(0.9).default(DEFAULT_EMERGENCY_RESERVE),
    limits: z
      .object({
        newOrdersPerAccount: limitSchema.nullable().optional(),
        certificatesPerDomain: limitSchema.nullable().optional(),
        certificatesPerExactSet: limitSchema.nullable().optional(),
        authzFailuresPerIdentifier: limitSchema.nullable().optional(),
      })
      .strict()
      .default({}),
  })
  .strict();

export type BudgetConfig = z.output<typeof BudgetConfigSchema>;

/** The limits a parsed config asks for: the preset (`custom` = none) with overrides applied. */
export function limitsFromConfig(cfg: BudgetConfig): BudgetLimits {
  const base: BudgetLimits = { ...(cfg.preset === 'custom' ? PRESETS.none : PRESETS[cfg.preset]) };
  for (const name of LIMIT_NAMES) {
    const o = cfg.limits[name];
    if (o === null) base[name] = null;
    else if (o !== undefined) base[name] = { count: o.count, periodMs: o.period };
  }
  return base;
}

/** "300 per 3h", "50 per 7d". */
export function describeLimit(limit: Limit): string {
  const p = limit.periodMs;
  const unit = p % DAY === 0 ? `${p / DAY}d` : p % HOUR === 0 ? `${p / HOUR}h` : p % 60_000 === 0 ? `${p / 60_000}m` : `${p / 1000}s`;
  return `${limit.count} per ${unit}`;
}

/**
 * The registered domain a name counts against, as Let's Encrypt computes it: the
 * public suffix list (ICANN and private sections, from the `tldts` package, no network)
 * plus one label; a wildcard counts as its base; an IPv4 address is its own, an IPv6
 * address its /64. A name that is itself a public suffix (or unlisted, e.g. `localhost`)
 * counts as itself.
 */
export function registeredDomain(name: string): string {
  const n = name.toLowerCase().replace(/^\*\./, '').replace(/\.$/, '');
  const ip = isIP(n.replace(/^\[|\]$/g, ''));
  if (ip === 4) return n;
  if (ip === 6) return ipv6Slash64(n.replace(/^\[|\]$/g, ''));
  return getDomain(n, { allowPrivateDomains: true }) ?? n;
}

function ipv6Slash64(addr: string): string {
  const [head = '', tail = ''] = addr.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = addr.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/** An order the caller wants to place. */
export interface BudgetRequest {
  /** The identifiers of the order (DNS names or IP addresses). */
  names: readonly string[];
  /** Set for certificates in their last twentieth (scheduler `emergency`): may use the reserve. */
  emergency?: boolean;
  /** The `replaces` value of an ARI renewal: exempt from every limit. */
  replaces?: string;
  /** A previous certificate has exactly these names: exempt from per-account and per-domain limits. */
  renewal?: boolean;
}

/** One bucket debit. */
export interface SpendItem {
  limit: LimitName;
  key: string;
  cost: number;
}

/** What an allowed request will take; pass it to commit (and refund on failure). */
export interface Spend {
  items: SpendItem[];
  /** Human notes on the exemptions applied ("ARI renewal: exempt from all limits"). */
  exemptions: string[];
}

export type CheckResult =
  | { ok: true; spend: Spend }
  | {
      ok: false;
      /** Which limit(s) and how full, for the "deferred" event and `certfleet show`. */
      reason: string;
      /** Earliest instant (ms) at which every blocking bucket has refilled enough. */
      until: number;
      limits: LimitName[];
    };

/** One bucket's level, for `certfleet budgets` and metrics. */
export interface BucketLevel {
  limit: LimitName;
  /** "New Orders per Account". */
  title: string;
  /** "account", a registered domain, an identifier set or an identifier. */
  key: string;
  /** "300 per 3h". */
  human: string;
  /** Whole tokens available now (reserve included). */
  available: number;
  capacity: number;
  /** Tokens only emergencies may use. */
  reserved: number;
  /** When the next whole token arrives; null when full. */
  nextTokenAt: number | null;
}

/** Serialisable state: only buckets below capacity (a full bucket equals an absent one). */
export interface BudgetState {
  version: 1;
  buckets: Record<string, { level: number; at: number }>;
}

export interface BudgetOptions {
  /** Share held back for emergencies, 0..0.9; default 0.2. */
  emergencyReserve?: number;
}

/** The fleet's budgets against one CA account. Not thread-safe by design (one event loop). */
export class Budget {
  private readonly buckets = new Map<string, { level: number; at: number }>();
  private readonly reserveShare: number;

  constructor(
    readonly limits: BudgetLimits,
    opts: BudgetOptions = {},
  ) {
    this.reserveShare = opts.emergencyReserve ?? DEFAULT_EMERGENCY_RESERVE;
  }

  /** A budget for a parsed `budgets` config section. */
  static fromConfig(cfg: BudgetConfig, state?: BudgetState): Budget {
    const b = new Budget(limitsFromConfig(cfg), { emergencyReserve: cfg.emergencyReserve });
    if (state) b.restore(state);
    return b;
  }

  /**
   * Whether `req` may be sent at `now`. Never changes state. Refusals say which
   * limit, how full it is, and the earliest instant every blocking bucket allows it.
   */
  check(req: BudgetRequest, now: number): CheckResult {
    const names = [...new Set(req.names.map((n) => n.toLowerCase()))].sort();
    const exemptions: string[] = [];
    if (req.replaces) return { ok: true, spend: { items: [], exemptions: ['ARI renewal (replaces): exempt from all limits'] } };

    const items: SpendItem[] = [];
    if (req.renewal) exemptions.push('renewal of the same identifier set: exempt from per-account and per-domain limits');
    else {
      if (this.limits.newOrdersPerAccount) items.push({ limit: 'newOrdersPerAccount', key: 'account', cost: 1 });
      if (this.limits.certificatesPerDomain) {
        for (const d of new Set(names.map(registeredDomain))) items.push({ limit: 'certificatesPerDomain', key: d, cost: 1 });
      }
    }
    if (this.limits.certificatesPerExactSet) items.push({ limit: 'certificatesPerExactSet', key: names.join(','), cost: 1 });

    const blocked: Array<{ limit: LimitName; key: string; level: number; need: number; until: number }> = [];
    const emergency = req.emergency === true;
    for (const it of items) {
      const need = it.cost + (emergency ? 0 : this.reserved(it.limit));
      const level = this.level(it.limit, it.key, now);
      if (level < need) blocked.push({ ...it, level, need, until: this.whenLevel(it.limit, it.key, need, now) });
    }
    // A failing identifier is not spent by the order: the CA refuses new orders for it
    // while its failure bucket is empty, so we require one failure's worth left.
    if (this.limits.authzFailuresPerIdentifier) {
      for (const n of names) {
        const need = 1 + (emergency ? 0 : this.reserved('authzFailuresPerIdentifier'));
        const level = this.level('authzFailuresPerIdentifier', n, now);
        if (level < need) blocked.push({ limit: 'authzFailuresPerIdentifier', key: n, level, need, until: this.whenLevel('authzFailuresPerIdentifier', n, need, now) });
      }
    }
    if (blocked.length === 0) return { ok: true, spend: { items, exemptions } };
    const until = Math.max(...blocked.map((b) => b.until));
    const reason = blocked
      .map((b) => {
        const lim = this.limits[b.limit];
        const held = emergency ? '' : `, ${this.reserved(b.limit)} held for emergencies`;
        return `${LIMIT_TITLES[b.limit]} (${lim ? describeLimit(lim) : ''}) for ${b.key}: ${Math.max(0, Math.floor(b.level))} left${held}`;
      })
      .join('; ');
    return { ok: false, reason: `budget exhausted: ${reason}; next possible ${new Date(until).toISOString()}`, until, limits: [...new Set(blocked.map((b) => b.limit))] };
  }

  /** Debits an allowed spend (from {@link check} in the same tick). */
  commit(spend: Spend, now: number): void {
    for (const it of spend.items) this.add(it.limit, it.key, -it.cost, now);
  }

  /**
   * Gives back the certificate buckets (per domain, per exact set) of a committed spend
   * whose order ended without a certificate: the CA counts those at issuance only. The
   * new-order token stays spent (the CA counted the order).
   */
  refund(spend: Spend, now: number): void {
    for (const it of spend.items) {
      if (it.limit === 'certificatesPerDomain' || it.limit === 'certificatesPerExactSet') this.add(it.limit, it.key, it.cost, now);
    }
  }

  /** Records a failed authorization (the CA's validation failed) for an identifier. */
  recordAuthorizationFailure(identifier: string, now: number): void {
    if (this.limits.authzFailuresPerIdentifier) this.add('authzFailuresPerIdentifier', identifier.toLowerCase(), -1, now);
  }

  /**
   * Every bucket's level at `now`: the account bucket always (when enforced), other
   * buckets while below capacity (untouched ones are full). Sorted by limit, then
   * emptiest first.
   */
  levels(now: number): BucketLevel[] {
    const out: BucketLevel[] = [];
    const seen = new Set<string>();
    const push = (limit: LimitName, key: string): void => {
      const lim = this.limits[limit];
      if (!lim || seen.has(`${limit}|${key}`)) return;
      seen.add(`${limit}|${key}`);
      const level = this.level(limit, key, now);
      const interval = lim.periodMs / lim.count;
      out.push({
        limit,
        title: LIMIT_TITLES[limit],
        key,
        human: describeLimit(lim),
        available: Math.max(0, Math.floor(level)),
        capacity: lim.count,
        reserved: this.reserved(limit),
        nextTokenAt: level >= lim.count ? null : now + Math.ceil((Math.floor(level) + 1 - level) * interval),
      });
    };
    push('newOrdersPerAccount', 'account');
    for (const id of this.buckets.keys()) {
      const [limit, key] = splitId(id);
      if (this.level(limit, key, now) < (this.limits[limit]?.count ?? 0)) push(limit, key);
    }
    const order = new Map(LIMIT_NAMES.map((n, i) => [n, i]));
    return out.sort((a, b) => (order.get(a.limit) ?? 0) - (order.get(b.limit) ?? 0) || a.available - b.available || a.key.localeCompare(b.key));
  }

  /** The state to persist; buckets back at capacity are dropped. */
  toJSON(now?: number): BudgetState {
    const buckets: BudgetState['buckets'] = {};
    for (const [id, b] of this.buckets) {
      const [limit, key] = splitId(id);
      if (now !== undefined && this.level(limit, key, now) >= (this.limits[limit]?.count ?? 0)) continue;
      buckets[id] = { level: b.level, at: b.at };
    }
    return { version: 1, buckets };
  }

  /**
   * Replaces the state with a persisted one. Buckets of limits no longer enforced are
   * dropped; levels above a (lowered) capacity are clamped. Throws RangeError on a
   * state of another version (the caller decides whether to start empty).
   */
  restore(state: BudgetState): void {
    if (state.version !== 1) throw new RangeError(`unknown budget state version ${String(state.version)}`);
    this.buckets.clear();
    for (const [id, b] of Object.entries(state.buckets)) {
      const [limit] = splitId(id);
      const lim = this.limits[limit];
      if (!lim || !Number.isFinite(b.level) || !Number.isFinite(b.at)) continue;
      this.buckets.set(id, { level: Math.min(b.level, lim.count), at: b.at });
    }
  }

  /** A budget restored from {@link toJSON} output. */
  static fromJSON(limits: BudgetLimits, state: BudgetState, opts: BudgetOptions = {}): Budget {
    const b = new Budget(limits, opts);
    b.restore(state);
    return b;
  }

  private reserved(limit: LimitName): number {
    const lim = this.limits[limit];
    return lim ? Math.floor(lim.count * this.reserveShare) : 0;
  }

  /** Continuous refill: level grows by 1 every period/count, up to capacity. */
  private level(limit: LimitName, key: string, now: number): number {
    const lim = this.limits[limit];
    if (!lim) return Infinity;
    const b = this.buckets.get(`${limit}|${key}`);
    if (!b) return lim.count;
    const elapsed = Math.max(0, now - b.at);
    return Math.min(lim.count, b.level + (elapsed * lim.count) / lim.periodMs);
  }

  private whenLevel(limit: LimitName, key: string, need: number, now: number): number {
    const lim = this.limits[limit];
    if (!lim) return now;
    const level = this.level(limit, key, now);
    if (level >= need) return now;
    return now + Math.ceil(((need - level) * lim.periodMs) / lim.count);
  }

  private add(limit: LimitName, key: string, delta: number, now: number): void {
    const lim = this.limits[limit];
    if (!lim) return;
    const id = `${limit}|${key}`;
    const prev = this.buckets.get(id);
    // Time never runs backwards for a bucket: a late caller's `now` refills nothing.
    const at = Math.max(now, prev?.at ?? now);
    // Debt is allowed (two commits of one check); refill pays it back.
    const level = Math.min(lim.count, this.level(limit, key, at) + delta);
    this.buckets.set(id, { level, at });
  }
}

function splitId(id: string): [LimitName, string] {
  const i = id.indexOf('|');
  return [id.slice(0, i) as LimitName, id.slice(i + 1)];
}

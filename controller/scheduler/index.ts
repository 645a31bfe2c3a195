/**
 * When a certificate needs a new version. Pure: configuration, the latest stored
 * version, the CA's ARI window (when it offers one) and `now` in; a decision with its
 * reason out. The work loop (controller/reconcile) acts on it; nothing here does I/O,
 * reads the clock or draws random numbers (randomness comes in as seeds or an injected
 * `random`, so a restart decides the same thing and a simulated year is reproducible).
 *
 * Rules, first match wins (E = notAfter − lifetime/20, the emergency instant):
 *  1. no version stored                     → issue now ("no certificate yet")
 *  2. names or key type differ from config  → issue now ("configuration changed")
 *  3. expired                               → issue now, emergency ("expired")
 *  4. now ≥ E                               → issue now, emergency, whatever ARI or a
 *                                              backoff says
 *  5. ARI window known                      → issue at the instant chosen inside it
 *                                              (chooseAriInstant), order carries `replaces`
 *  6. otherwise                             → issue at the renewal point:
 *       base  = renewBefore (duration or % of lifetime before notAfter) when configured
 *               and shorter than the lifetime, else notBefore + 2/3 of the lifetime
 *               (1/2 when the lifetime is under 10 days)
 *       point = base − jitter, jitter = u·spread·lifetime, u ∈ [0,1) from a hash of
 *               name + serial (stable across restarts, different per certificate)
 *       never later than E.
 * A failure backoff postpones an "issue now" of rules 1, 2, 5 and 6, but never past E.
 *
 *      issued ──wait──▶ renewal point / ARI instant ──issue──▶ (ok) issued
 *                                  │                    └─(fail)─▶ backoff ─▶ retry
 *                                  └────────── E reached: emergency, backoff ignored
 */
import type { KeyType, VersionMeta } from '../../shared/model/index.js';
import { sameNameSet } from '../names/index.js';

/** How long before expiry to renew: a duration, or a percentage of the lifetime. */
export type RenewBefore = { kind: 'duration'; ms: number } | { kind: 'percent'; percent: number };

/** The parts of a certificate's configuration the schedule depends on. */
export interface ScheduleSpec {
  names: readonly string[];
  keyType: KeyType;
  /** Overrides the default 2/3 (1/2) renewal point; ignored when ≥ the lifetime. */
  renewBefore?: RenewBefore;
}

/** A renewalInfo suggested window (RFC 9773 §4.2), epoch milliseconds, start < end. */
export interface AriWindow {
  start: number;
  end: number;
}

/** Optional inputs of {@link decide}. */
export interface DecideOptions {
  /** Jitter spread as a fraction of the lifetime; default {@link DEFAULT_SPREAD}. */
  spread?: number;
  /**
   * The CA's current renewalInfo window and the persisted seed that picks the instant
   * inside it. Absent when the CA has no ARI or the window is not fetched yet.
   */
  ari?: { window: AriWindow; seed: number };
}

/**
 * What to do about one certificate. `at` is when to act (now for "issue", the instant
 * to look again for "wait"). `emergency` marks the last twentieth of the lifetime (and
 * expiry): budgets let such requests use their reserve. `ari` says the renewal follows
 * the CA's ARI window, so the order should carry `replaces`.
 */
export interface Decision {
  action: 'issue' | 'wait';
  reason: string;
  at: number;
  emergency: boolean;
  ari: boolean;
}

const DAY_MS = 86_400_000;

/**
 * Default jitter spread: 5 % of the lifetime (4.5 days for 90-day, 7.2 h for 6-day
 * certificates). Large enough that a fleet issued on one day renews over days, not in
 * one burst (10,000 certificates over 4.5 days ≈ 93 orders an hour, under Let's
 * Encrypt's 100 an hour for new orders); small enough to keep ≥ 28 % of the lifetime as
 * margin before the emergency point. It only ever moves renewal earlier.
 */
export const DEFAULT_SPREAD = 0.05;

/** The emergency share of a lifetime: the last 1/20. */
export const EMERGENCY_FRACTION = 1 / 20;

/**
 * The default renewal instant (no jitter, no renewBefore) of a certificate valid from
 * `notBefore` to `notAfter`: 2/3 of the lifetime, 1/2 when the lifetime is under 10
 * days, so a 6-day certificate keeps 3 days of margin.
 */
export function renewalPoint(notBefore: number, notAfter: number): number {
  const lifetime = notAfter - notBefore;
  const fraction = lifetime < 10 * DAY_MS ? 1 / 2 : 2 / 3;
  return notBefore + Math.floor(lifetime * fraction);
}

/** The instant after which renewal is an emergency: notAfter − lifetime/20. */
export function emergencyPoint(notBefore: number, notAfter: number): number {
  return notAfter - Math.ceil((notAfter - notBefore) * EMERGENCY_FRACTION);
}

/**
 * FNV-1a (32 bit) of `text` mapped to [0, 1). Not for security: it only has to be
 * stable across restarts and releases and to scatter similar names.
 */
export function unitHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final avalanche (murmur3 fmix32): FNV's low bits alone cluster for names that
  // differ only in their last characters (web-1, web-2, ...).
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4_294_967_296;
}

/**
 * The certificate's jitter in [0, spread·lifetime), derived from its name and serial:
 * the same certificate always gets the same jitter; its next version (new serial) a
 * fresh one, so certificates do not stay lock-stepped forever.
 */
export function jitterMs(name: string, serial: string, lifetimeMs: number, spread = DEFAULT_SPREAD): number {
  if (!(spread > 0) || lifetimeMs <= 0) return 0;
  return Math.floor(unitHash(`${name}\u0000${serial.toLowerCase()}`) * spread * lifetimeMs);
}

/**
 * The one instant inside an ARI window this controller will renew at (RFC 9773 §4.2:
 * "select a uniform random time within the suggested window"). Uniform in
 * [start, end) given a uniformly drawn `seed`; the caller draws the seed once, persists
 * it with the certificate, and so a restart picks the same instant. A window whose end
 * is not after its start yields its start.
 */
export function chooseAriInstant(window: AriWindow, seed: number): number {
  const width = window.end - window.start;
  if (!(width > 0)) return window.start;
  return window.start + Math.floor(unitHash(`ari\u0000${seed}`) * width);
}

/** Why the point was chosen; part of the decision's reason. */
export interface PlannedRenewal {
  at: number;
  basis: string;
}

/**
 * The planned (non-ARI) renewal instant of one version: renewBefore or the default
 * fraction, minus its jitter, clamped into [notBefore, emergency point].
 */
export function plannedRenewal(
  cert: { name: string; serial: string; notBefore: number; notAfter: number },
  renewBefore: RenewBefore | undefined,
  spread = DEFAULT_SPREAD,
): PlannedRenewal {
  const { notBefore, notAfter } = cert;
  const lifetime = notAfter - notBefore;
  let base = renewalPoint(notBefore, notAfter);
  let basis = lifetime < 10 * DAY_MS ? '1/2 of the lifetime' : '2/3 of the lifetime';
  if (renewBefore) {
    const before = renewBefore.kind === 'duration' ? renewBefore.ms : Math.floor((lifetime * renewBefore.percent) / 100);
    // As cert-manager does: a renewBefore as long as the certificate would renew it
    // the moment it is issued, forever; fall back to the default instead.
    if (before > 0 && before < lifetime) {
      base = notAfter - before;
      basis = renewBefore.kind === 'duration' ? `renewBefore ${formatDuration(before)}` : `renewBefore ${renewBefore.percent}%`;
    } else {
      basis += ' (renewBefore ignored: not shorter than the lifetime)';
    }
  }
  const jitter = jitterMs(cert.name, cert.serial, lifetime, spread);
  const at = Math.max(notBefore, Math.min(base - jitter, emergencyPoint(notBefore, notAfter)));
  return { at, basis: jitter > 0 ? `${basis}, ${formatDuration(jitter)} early (jitter)` : basis };
}

/**
 * Decides for one certificate (rules in the module comment). `backoffUntil` is the end
 * of the current failure backoff (0 when none). Never throws for a well-formed
 * VersionMeta; unparsable dates count as expired (renew now) rather than never.
 */
export function decide(
  spec: ScheduleSpec,
  latest: VersionMeta | null,
  now: number,
  backoffUntil = 0,
  opts: DecideOptions = {},
): Decision {
  if (latest === null) return withBackoff(issue('no certificate yet', now), now, backoffUntil, Infinity);

  const notBefore = Date.parse(latest.notBefore);
  const parsedNotAfter = Date.parse(latest.notAfter);
  const notAfter = Number.isNaN(parsedNotAfter) ? now : parsedNotAfter;
  const emergencyAt = Number.isNaN(notBefore) ? notAfter : emergencyPoint(notBefore, notAfter);
  const emergency = now >= emergencyAt;

  if (!sameNameSet(spec.names, latest.names) || spec.keyType !== latest.keyType) {
    const d = issue('configuration changed', now);
    if (emergency) return { ...d, emergency: true, reason: 'configuration changed; emergency: the current version is in its last twentieth' };
    return withBackoff(d, now, backoffUntil, emergencyAt);
  }
  const ariWindow = opts.ari?.window;
  // Past the window's start the CA wants this replaced: `replaces` makes the order an
  // ARI renewal even when the emergency rule is what fires.
  const ariDue = ariWindow !== undefined && now >= ariWindow.start;
  if (now >= notAfter) return { action: 'issue', reason: 'expired', at: now, emergency: true, ari: ariDue };
  if (emergency) {
    return { action: 'issue', reason: 'renewal window passed; emergency: last twentieth of the lifetime', at: now, emergency: true, ari: ariDue };
  }

  if (opts.ari) {
    const instant = Math.min(chooseAriInstant(opts.ari.window, opts.ari.seed), emergencyAt);
    if (now >= instant) return withBackoff({ ...issue(`ARI window reached (instant ${iso(instant)})`, now), ari: true }, now, backoffUntil, emergencyAt);
    return { action: 'wait', reason: `ARI window not reached (instant ${iso(instant)} in ${iso(opts.ari.window.start)}..${iso(opts.ari.window.end)})`, at: instant, emergency: false, ari: true };
  }

  const plan = plannedRenewal({ name: latest.name, serial: latest.serial, notBefore, notAfter }, spec.renewBefore, opts.spread);
  if (now >= plan.at) return withBackoff(issue(`renewal window (${plan.basis})`, now), now, backoffUntil, emergencyAt);
  return { action: 'wait', reason: `renewal window not reached (${plan.basis})`, at: plan.at, emergency: false, ari: false };
}

function issue(reason: string, now: number): Decision {
  return { action: 'issue', reason, at: now, emergency: false, ari: false };
}

/** An "issue now" postponed by a running backoff, waking no later than `cap`. */
function withBackoff(d: Decision, now: number, backoffUntil: number, cap: number): Decision {
  if (!(backoffUntil > now)) return d;
  return { ...d, action: 'wait', reason: `${d.reason}; backing off after a failure`, at: Math.min(backoffUntil, cap) };
}

const BACKOFF_STEPS = [60_000, 600_000, 6_000_000] as const;

/** Jitter applied to a backoff: ±10 %, so certificates that failed together (a CA outage) do not retry together. */
export const BACKOFF_JITTER = 0.1;

/**
 * Backoff after `failures` consecutive failures: 1 min, 10 min, 100 min, then daily;
 * 0 for no failure. With `lifetimeMs` (the current certificate's lifetime) no step is
 * longer than a twentieth of it: a day is a sixth of a 6-day certificate, and the
 * fleet simulation showed such certificates reaching their emergency point after two
 * daily steps. With `random` (returning [0, 1), e.g. Math.random or a seeded PRNG) the
 * delay is scattered by ±{@link BACKOFF_JITTER}; without, it is the exact step (tests,
 * and callers that add their own jitter).
 */
export function backoffDelay(failures: number, random?: () => number, lifetimeMs?: number): number {
  if (failures <= 0) return 0;
  let base: number = BACKOFF_STEPS[failures - 1] ?? DAY_MS;
  if (lifetimeMs !== undefined && lifetimeMs > 0) base = Math.min(base, Math.max(60_000, Math.floor(lifetimeMs * EMERGENCY_FRACTION)));
  if (!random) return base;
  return Math.round(base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * random()));
}

function iso(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms);
}

/** "4d12h", "7h12m", "36s": short human durations for reasons. */
export function formatDuration(ms: number): string {
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * size;
    if (parts.length === 2) break;
  }
  return parts.length > 0 ? parts.join('') : '0s';
}

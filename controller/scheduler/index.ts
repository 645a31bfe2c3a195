/**
 * When a certificate needs a new version. Pure: configuration, the latest stored
 * version and `now` in; a decision with its reason out. The work loop (controller/
 * reconcile) acts on it; nothing here does I/O or reads the clock.
 *
 * Rules, first match wins:
 *  1. no version stored                     → issue now ("no certificate yet")
 *  2. names or key type differ from config  → issue now ("configuration changed")
 *  3. expired                               → issue now ("expired")
 *  4. past the renewal point                → issue now ("renewal window")
 *     renewal point = notBefore + 2/3 of the lifetime (1/2 when the lifetime is under
 *     10 days, so a 6-day certificate keeps 3 days of margin)
 *  5. otherwise                             → wait until the renewal point
 * A failure backoff, when present, postpones an "issue now" (never past expiry's last
 * twentieth of the lifetime, where it is ignored).
 */
import type { KeyType, VersionMeta } from '../../shared/model/index.js';

/** The parts of a certificate's configuration the schedule depends on. */
export interface ScheduleSpec {
  names: readonly string[];
  keyType: KeyType;
}

export type Decision =
  | { action: 'issue'; reason: string; at: number }
  | { action: 'wait'; reason: string; at: number };

const DAY_MS = 86_400_000;

/** The instant a certificate valid from `notBefore` to `notAfter` should be renewed. */
export function renewalPoint(notBefore: number, notAfter: number): number {
  const lifetime = notAfter - notBefore;
  const fraction = lifetime < 10 * DAY_MS ? 1 / 2 : 2 / 3;
  return notBefore + Math.floor(lifetime * fraction);
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a.map((x) => x.toLowerCase()));
  return b.every((x) => s.has(x.toLowerCase()));
}

/**
 * Decides for one certificate. `backoffUntil` is the end of the current failure backoff
 * (0 when none).
 */
export function decide(spec: ScheduleSpec, latest: VersionMeta | null, now: number, backoffUntil = 0): Decision {
  const issue = (reason: string, lastTwentieth = false): Decision =>
    backoffUntil > now && !lastTwentieth
      ? { action: 'wait', reason: `${reason}; backing off after a failure`, at: backoffUntil }
      : { action: 'issue', reason, at: now };

  if (latest === null) return issue('no certificate yet');
  if (!sameSet(spec.names, latest.names) || spec.keyType !== latest.keyType) return issue('configuration changed');

  const notBefore = Date.parse(latest.notBefore);
  const notAfter = Date.parse(latest.notAfter);
  const lastTwentieth = now >= notAfter - (notAfter - notBefore) / 20;
  if (now >= notAfter) return issue('expired', true);
  const point = renewalPoint(notBefore, notAfter);
  if (now >= point) return issue('renewal window', lastTwentieth);
  return { action: 'wait', reason: 'renewal window not reached', at: point };
}

/** Backoff after `failures` consecutive failures: 1 min, 10 min, 100 min, then daily. */
export function backoffDelay(failures: number): number {
  if (failures <= 0) return 0;
  const steps = [60_000, 600_000, 6_000_000];
  return steps[failures - 1] ?? DAY_MS;
}

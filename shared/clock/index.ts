/**
 * The one source of time. Code that decides (scheduler, budgets, backoff, token expiry)
 * takes a Clock instead of calling Date.now(), so tests and the fleet simulation can run
 * a year of renewals on a virtual clock.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

/** Wall-clock time. */
export const systemClock: Clock = { now: () => Date.now() };

/** A clock that only moves when told to; for tests and simulations. */
export class ManualClock implements Clock {
  private current: number;

  constructor(start: number | Date = Date.UTC(2026, 0, 1)) {
    this.current = typeof start === 'number' ? start : start.getTime();
  }

  now(): number {
    return this.current;
  }

  /** Moves time forward by `ms` (never backwards). */
  advance(ms: number): void {
    if (ms < 0) throw new RangeError('ManualClock cannot go backwards');
    this.current += ms;
  }

  set(at: number | Date): void {
    this.current = typeof at === 'number' ? at : at.getTime();
  }
}

/** RFC 3339 text for a clock reading. */
export function isoAt(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * The one source of time, and the one owner of timers.
 *
 * Code that decides (scheduler, budgets, backoff, token expiry) reads `now()` from a Clock;
 * code that waits (poll loops, retry sleeps, periodic sweeps, deadlines) asks the same Clock to
 * `sleep`, `after` or `every`. Under the system clock those are real timers; under a
 * ManualClock they fire only when the test or the fleet simulation advances time, so a unit test
 * of a loop that polls for two minutes runs in milliseconds and a deadline measured by the clock
 * is also waited for on the clock.
 *
 * Raw `setTimeout`/`setInterval`/`Date.now()` live only in this file (a lint rule keeps it so).
 */

/** A scheduled callback: `stop()` cancels it; `unref()` lets the process exit while it waits. */
export interface Timer {
  stop(): void;
  /** Returns the same timer, so `clock.every(...).unref()` reads as one line. */
  unref(): Timer;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Resolves after `ms` of this clock's time. When `signal` aborts first it rejects with the
   * signal's reason (an AbortError by default), as `timers/promises` does.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` once after `ms`. */
  after(ms: number, fn: () => void): Timer;
  /**
   * Calls `fn` every `ms`. A call that returns a promise is not overlapped by the next one: the
   * tick that falls while it runs is skipped (a slow sweep never piles up behind itself).
   */
  every(ms: number, fn: () => unknown): Timer;
}

/**
 * What `sleep` rejects with: the signal's reason (typed as Error, as AbortSignal reasons are
 * in practice: `abort()` and `AbortSignal.timeout` both give DOMExceptions), or an AbortError.
 */
function abortReason(signal: AbortSignal): Error {
  if (signal.reason !== undefined) return signal.reason as Error;
  const err = new Error('The operation was aborted');
  err.name = 'AbortError';
  return err;
}

/** `every` on top of `after`: one rescheduling loop that skips ticks while `fn` is still running. */
function everyOn(clock: Pick<Clock, 'after'>, ms: number, fn: () => unknown): Timer {
  let current: Timer | undefined;
  let stopped = false;
  let running = false;
  let unref = false;
  const schedule = (): void => {
    if (stopped) return;
    current = clock.after(ms, tick);
    if (unref) current.unref();
  };
  const tick = (): void => {
    schedule();
    if (running) return;
    let result: unknown;
    try {
      result = fn();
    } catch {
      return; // a throwing tick must not end the loop; callers log inside fn
    }
    if (result instanceof Promise) {
      running = true;
      result.then(
        () => (running = false),
        () => (running = false),
      );
    }
  };
  schedule();
  const timer: Timer = {
    stop: () => {
      stopped = true;
      current?.stop();
    },
    unref: () => {
      unref = true;
      current?.unref();
      return timer;
    },
  };
  return timer;
}

class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const onAbort = (): void => {
        clearTimeout(handle);
        reject(abortReason(signal!));
      };
      const handle = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, Math.max(0, ms));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  after(ms: number, fn: () => void): Timer {
    const handle = setTimeout(fn, Math.max(0, ms));
    const timer: Timer = {
      stop: () => clearTimeout(handle),
      unref: () => {
        handle.unref();
        return timer;
      },
    };
    return timer;
  }

  every(ms: number, fn: () => unknown): Timer {
    return everyOn(this, ms, fn);
  }
}

/** Wall-clock time and real timers. */
export const systemClock: Clock = new SystemClock();

interface Pending {
  due: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that only moves when told to; for tests and simulations. Its timers fire, in due
 * order and with `now()` set to their due time, when `advance` passes them.
 */
export class ManualClock implements Clock {
  private current: number;
  private pending: Pending[] = [];
  private seq = 0;

  constructor(start: number | Date = Date.UTC(2026, 0, 1)) {
    this.current = typeof start === 'number' ? start : start.getTime();
  }

  now(): number {
    return this.current;
  }

  /** How many timers are waiting (sleeps, `after`, the next tick of each `every`). */
  get pendingTimers(): number {
    return this.pending.length;
  }

  /** When the earliest waiting timer is due, or undefined when none waits. */
  nextDue(): number | undefined {
    return this.pending[0]?.due;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const onAbort = (): void => {
        timer.stop();
        reject(abortReason(signal!));
      };
      const timer = this.after(ms, () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  after(ms: number, fn: () => void): Timer {
    const entry: Pending = { due: this.current + Math.max(0, ms), seq: this.seq++, fn };
    // Keep `pending` sorted by (due, seq): equal due times fire in the order they were set.
    let i = this.pending.length;
    while (i > 0 && (this.pending[i - 1]!.due > entry.due)) i--;
    this.pending.splice(i, 0, entry);
    const timer: Timer = {
      stop: () => {
        const at = this.pending.indexOf(entry);
        if (at >= 0) this.pending.splice(at, 1);
      },
      unref: () => timer,
    };
    return timer;
  }

  every(ms: number, fn: () => unknown): Timer {
    return everyOn(this, ms, fn);
  }

  /**
   * Moves time forward by `ms` (never backwards), firing every timer due on the way.
   * Synchronous: a sleeper's continuation runs on the next microtask, so a loop that sleeps again
   * after waking needs `tick` (which lets it) to be advanced past its next sleep.
   */
  advance(ms: number): void {
    if (ms < 0) throw new RangeError('ManualClock cannot go backwards');
    const until = this.current + ms;
    while (this.fireNext(until));
    this.current = until;
  }

  /** Fires the earliest timer due by `until` (setting now() to its due time); false when none is. */
  private fireNext(until: number): boolean {
    const next = this.pending[0];
    if (next === undefined || next.due > until) return false;
    this.pending.shift();
    this.current = next.due;
    next.fn();
    return true;
  }

  /**
   * Moves time forward by `ms` like `advance`, but after each timer fires it lets pending
   * promise continuations and I/O callbacks run, so loops that sleep, wake, work and sleep again
   * make progress through the whole span. The way to drive async code on a manual clock.
   */
  async tick(ms: number): Promise<void> {
    if (ms < 0) throw new RangeError('ManualClock cannot go backwards');
    const until = this.current + ms;
    await settle();
    while (this.fireNext(until)) await settle();
    this.current = until;
    await settle();
  }

  /**
   * Advances to each next timer until `done()` holds or `limitMs` of clock time has passed;
   * returns whether `done()` held. For "run the loop until it converges" tests.
   */
  async runUntil(done: () => boolean, limitMs: number): Promise<boolean> {
    const until = this.current + limitMs;
    await settle();
    while (!done()) {
      const next = this.pending[0];
      if (next === undefined || next.due > until) {
        await this.tick(Math.max(0, until - this.current));
        return done();
      }
      await this.tick(next.due - this.current);
    }
    return true;
  }

  /** Jumps to `at` without firing timers (they fire on the next advance). */
  set(at: number | Date): void {
    this.current = typeof at === 'number' ? at : at.getTime();
  }
}

/** Lets queued microtasks and I/O callbacks run (a few rounds, for chains of awaits). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * One turn of the event loop: resolves after pending I/O callbacks (gRPC calls, NATS
 * messages) have run. Not a timer, so the same under a ManualClock. For loops over many
 * items whose awaits resolve without I/O (answers from memory): awaiting a promise that
 * is already resolved runs only microtasks, so such a loop would hold the thread to its
 * end (issue #13: a pass over 10,000 certificates).
 */
export function yieldToLoop(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/** A point in clock time that something must finish by. */
export interface Deadline {
  readonly at: number;
  /** Milliseconds left, never negative. */
  remaining(): number;
  expired(): boolean;
  /** Sleeps `ms` or until the deadline, whichever is sooner. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** A deadline `ms` from now on `clock`. */
export function deadline(clock: Clock, ms: number): Deadline {
  const at = clock.now() + ms;
  return {
    at,
    remaining: () => Math.max(0, at - clock.now()),
    expired: () => clock.now() >= at,
    sleep: (wait, signal) => clock.sleep(Math.min(wait, Math.max(0, at - clock.now())), signal),
  };
}

/** A Date `ms` from now on `clock` (gRPC deadlines take Dates). */
export function dateIn(clock: Clock, ms: number): Date {
  return new Date(clock.now() + ms);
}

/** RFC 3339 text for a clock reading. */
export function isoAt(ms: number): string {
  return new Date(ms).toISOString();
}

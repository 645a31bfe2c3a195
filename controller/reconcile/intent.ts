/**
 * Durable renewal intent: what the work loop still owes a certificate, kept as a small
 * store object (`renewals/<name>`) so a restart or a crash never forgets it (DESIGN:
 * "operator requests and retries are records, not memory").
 *
 *   - an operator's `renew` request, outstanding until an issuance that started after it
 *     succeeds, or until the operator cancels it;
 *   - the failure backoff: consecutive failures, when to try again, the last error.
 *
 * Pure: every function takes the intent, `now` and data, and returns a new intent or a
 * plan with its reason. The loop (index.ts) reads and writes the objects.
 *
 *   (none) --renew--> requested --issuance started after the request ok--> (none)
 *     |                  |  +--failure--> requested, failures+1, retryAt
 *     |                  +--cancel--> (none, backoff kept)
 *     +--scheduled renewal fails--> failures+1, retryAt --ok--> (none)
 */
import type { Decision } from '../scheduler/index.js';
import { ObjectKey } from '../store/index.js';

/** Object key of a certificate's intent in the CertStore. */
export function intentKey(name: string): string {
  return ObjectKey.renewal(name);
}

/** What the loop still owes one certificate. Times are epoch ms; 0 means none. */
export interface RenewalIntent {
  /** When an operator asked for a renewal that is still outstanding. */
  requestedAt: number;
  /** Who asked (operator name), for show and events. */
  requestedBy: string;
  /** Consecutive failed issuances. */
  failures: number;
  /** Earliest next attempt after the last failure. */
  retryAt: number;
  lastErrorCode: string;
  lastError: string;
  /**
   * The issuer this renewal has moved on to (fallback.ts); '' for the certificate's
   * first issuer. A stored version resets it: each renewal starts at the first.
   */
  issuer: string;
  /** Consecutive CA-down failures at `issuer` (fallback.ts `fallbackAfter`). */
  issuerDown: number;
}

/** The intent of a certificate nothing is owed. */
export const NO_INTENT: RenewalIntent = Object.freeze({ requestedAt: 0, requestedBy: '', failures: 0, retryAt: 0, lastErrorCode: '', lastError: '', issuer: '', issuerDown: 0 });

/** The stored form: times as ISO strings, so an operator can read the object. */
export interface StoredIntent {
  requestedAt: string;
  requestedBy: string;
  failures: number;
  retryAt: string;
  lastErrorCode: string;
  lastError: string;
  /** Absent in objects written before issuers, and while on the first issuer. */
  issuer?: string;
  issuerDown?: number;
}

/** True when nothing is owed: the object can be deleted. */
export function isEmptyIntent(i: RenewalIntent): boolean {
  return i.requestedAt === 0 && i.failures === 0 && i.retryAt === 0 && i.issuer === '' && i.issuerDown === 0;
}

export function toStored(i: RenewalIntent): StoredIntent {
  const iso = (ms: number): string => (ms > 0 ? new Date(ms).toISOString() : '');
  return {
    requestedAt: iso(i.requestedAt),
    requestedBy: i.requestedBy,
    failures: i.failures,
    retryAt: iso(i.retryAt),
    lastErrorCode: i.lastErrorCode,
    lastError: i.lastError,
    // Only when set: the object of a single-issuer certificate stays as it was.
    ...(i.issuer === '' ? {} : { issuer: i.issuer }),
    ...(i.issuerDown === 0 ? {} : { issuerDown: i.issuerDown }),
  };
}

/**
 * Reads a stored intent. Unreadable fields count as absent rather than failing the
 * certificate: a damaged object must not stop renewals (it is rewritten on the next
 * change). Returns NO_INTENT for anything that is not an object.
 */
export function fromStored(raw: unknown): RenewalIntent {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return NO_INTENT;
  const o = raw as Record<string, unknown>;
  const time = (v: unknown): number => {
    const ms = typeof v === 'string' && v !== '' ? Date.parse(v) : NaN;
    return Number.isFinite(ms) && ms > 0 ? ms : 0;
  };
  const text = (v: unknown): string => (typeof v === 'string' ? v.slice(0, 2000) : '');
  const count = (v: unknown): number => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : 0);
  const failures = count(o['failures']);
  return {
    requestedAt: time(o['requestedAt']),
    requestedBy: text(o['requestedBy']),
    failures,
    retryAt: time(o['retryAt']),
    lastErrorCode: text(o['lastErrorCode']),
    lastError: text(o['lastError']),
    issuer: text(o['issuer']).slice(0, 63),
    issuerDown: count(o['issuerDown']),
  };
}

/**
 * An operator asks for a renewal now: recorded at `now`, and the failure backoff is
 * forgotten (the operator may have fixed the cause). Failures keep counting.
 */
export function requestRenewal(i: RenewalIntent, now: number, by: string): RenewalIntent {
  return { ...i, requestedAt: now, requestedBy: by, retryAt: 0 };
}

/** The operator withdraws an outstanding request; the failure backoff stays. */
export function cancelRenewal(i: RenewalIntent): RenewalIntent {
  return { ...i, requestedAt: 0, requestedBy: '' };
}

/**
 * An issuance failed at `now`; the next attempt waits `delayMs` (the scheduler's
 * backoff), or longer when the CA said so (`retryAfterMs`). The request stays.
 */
export function afterFailure(i: RenewalIntent, now: number, failure: { code: string; message: string; retryAfterMs?: number | undefined }, delayMs: number): RenewalIntent {
  return {
    ...i,
    failures: i.failures + 1,
    retryAt: now + Math.max(delayMs, failure.retryAfterMs ?? 0),
    lastErrorCode: failure.code,
    lastError: failure.message,
  };
}

/**
 * An issuance that started at `startedAt` stored a new version: the backoff ends, and
 * a request made before that start is done. One made while it ran asks for another.
 */
export function afterSuccess(i: RenewalIntent, startedAt: number): RenewalIntent {
  const stillRequested = i.requestedAt > startedAt;
  return { ...NO_INTENT, ...(stillRequested ? { requestedAt: i.requestedAt, requestedBy: i.requestedBy } : {}) };
}

/** A failure backoff that only an agent coming online can end (HTTP-01 not served). */
export function clearBackoff(i: RenewalIntent): RenewalIntent {
  return { ...i, retryAt: 0 };
}

/** What the loop does about a certificate this pass. */
export type Plan =
  | { action: 'wait'; reason: string; at: number }
  | {
      action: 'issue';
      reason: string;
      emergency: boolean;
      /** The order should carry ARI `replaces`. */
      ari: boolean;
      /**
       * A saved order is resumed: it was charged to the budgets when it was placed, so
       * no budget is checked or spent again (issue #8: killed orders were charged twice).
       */
      resume: boolean;
      /** Set when an operator request is what makes the certificate due. */
      requested: boolean;
    };

/** What the loop knows, besides the schedule, when it plans. */
export interface PlanInput {
  /** The scheduler's decision, made with `intent.retryAt` as its backoff. */
  scheduled: Decision;
  intent: RenewalIntent;
  /** A saved order for the current names and key type exists (controller/issuer). */
  resumableOrder: boolean;
  now: number;
}

/**
 * Decides, first match wins:
 *  1. the schedule says issue                → issue (resuming a saved order if there is one)
 *  2. an operator request is outstanding     → issue now, or wait for the failure backoff
 *  3. a saved order exists                   → resume it now (a crash or a kill left it;
 *                                              it was paid for), or after the backoff
 *  4. otherwise                              → wait as the schedule says
 * Requests and saved orders act whatever the schedule says: a certificate years from
 * its renewal point still gets the renewal an operator asked for.
 */
export function plan(input: PlanInput): Plan {
  const { scheduled, intent, resumableOrder, now } = input;
  const resumeNote = resumableOrder ? '; resuming the saved order' : '';
  if (scheduled.action === 'issue') {
    return { action: 'issue', reason: scheduled.reason + resumeNote, emergency: scheduled.emergency, ari: scheduled.ari, resume: resumableOrder, requested: false };
  }
  const backoff = intent.retryAt > now ? intent.retryAt : 0;
  const until = (at: number): number => Math.min(at, scheduled.at);
  if (intent.requestedAt > 0) {
    const base = `renewal requested by ${intent.requestedBy || 'an operator'} at ${new Date(intent.requestedAt).toISOString()}`;
    if (backoff > 0) return { action: 'wait', reason: `${base}; backing off after a failure (retry at ${new Date(backoff).toISOString()})`, at: until(backoff) };
    return { action: 'issue', reason: base + resumeNote, emergency: false, ari: false, resume: resumableOrder, requested: true };
  }
  if (resumableOrder) {
    const base = 'an order saved before a restart is pending';
    if (backoff > 0) return { action: 'wait', reason: `${base}; backing off after a failure (retry at ${new Date(backoff).toISOString()})`, at: until(backoff) };
    return { action: 'issue', reason: `${base}; resuming it`, emergency: false, ari: false, resume: true, requested: false };
  }
  return { action: 'wait', reason: scheduled.reason, at: scheduled.at };
}

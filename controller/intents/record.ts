/**
 * Intents: the record a follower controller writes for the leader, and the pure decisions
 * about it. No I/O here; every time is a `now` handed in.
 *
 * ```
 *   follower writes (create-only)          leader, while it leads (each step CAS on the revision)
 *   pending (gen 1, signed by follower) ──claim──> taken (gen 2, by, epoch) ──run──> done (gen 3,
 *        │                                          │                                 result | error)
 *        │ older than 2 min, future-dated,          │ taken at an older epoch and
 *        │ unsigned, badly signed, replayed         │ not done: that leader lost its
 *        └──refuse──> done (RECORD_REFUSED)         └─ lease mid-call ──> done (INTENT_UNANSWERED)
 *
 *   the follower reads `done`, answers its caller and deletes the key; the leader sweeps
 *   keys older than `sweepAfterMs` (callers that gave up, refused records).
 * ```
 *
 * Every step is signed (shared/signing, kind `intent`) with the controllers' record key and
 * its generation is its step (1, 2, 3): a reader checks the signature before it believes
 * a state, so a writer to the bucket that is not a controller can neither order a call nor
 * fake an answer. A step is taken with compare-and-set on the revision it was read at, so
 * an intent is claimed once, even across a failover, and answered once.
 */
import { z } from 'zod';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { recordParser } from '../../shared/records/index.js';
import { isoAt } from '../../shared/clock/index.js';
import { canonicalJson, type SignatureVerdict } from '../../shared/signing/index.js';
import { OPERATOR_ROLES } from '../../shared/model/index.js';
import { argsProblem, INTENT_METHODS, operatorName, type IntentMethod } from './methods.js';

/** An intent older than this (leader's clock) is refused: its caller stopped waiting long ago. */
export const INTENT_MAX_AGE_MS = 120_000;
/** How long a follower waits for the answer by default (the CLI's call deadline). */
export const DEFAULT_INTENT_TIMEOUT_MS = 60_000;
/** Keys older than this are deleted by the leader's sweep. */
export const DEFAULT_SWEEP_AFTER_MS = 10 * 60_000;

/** The generation of each step: a record whose generation is not its step is malformed. */
export const STEP = { pending: 1, taken: 2, done: 3 } as const;
export type IntentState = keyof typeof STEP;

const timestamp = z
  .string()
  .max(64)
  .refine((s) => !Number.isNaN(Date.parse(s)), 'not a date-time');
const controllerId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}#[0-9a-f]{8}$/, 'not a controller id (name#incarnation)');
const signable = z.union([z.string().max(65_536), z.int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER), z.boolean(), z.null()]);

/** An error as it travels back: what the caller of the follower sees, field for field. */
const wireErrorSchema = z.strictObject({
  code: z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]),
  message: z.string().max(8192),
  retryable: z.boolean(),
  retryAfterMs: z.int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  details: z.record(z.string().max(64), signable),
});
export type WireError = z.output<typeof wireErrorSchema>;

/** A value of the intents bucket (key: its `id`). */
export const intentRecordSchema = z
  .strictObject({
    id: z.string().regex(/^[0-9a-f]{32}$/, 'not an intent id'),
    method: z.enum(INTENT_METHODS as [IntentMethod, ...IntentMethod[]]),
    args: z.array(z.unknown()).max(8),
    /** The operator the API authenticated ('' for calls that take no actor). */
    operator: z.union([z.literal(''), operatorName]),
    /** The weakest role the call needs; the follower's API checked the caller has it. */
    role: z.enum(OPERATOR_ROLES),
    createdAt: timestamp,
    /** The follower's controller id. */
    from: controllerId,
    /** X25519 public key (base64url) the result is sealed to (./seal.ts). */
    replyKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'not an X25519 public key'),
    state: z.enum(['pending', 'taken', 'done']),
    by: controllerId.optional(),
    epoch: z.int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    takenAt: timestamp.optional(),
    doneAt: timestamp.optional(),
    /** The method's return value as JSON, sealed to `replyKey`. */
    result: z.string().max(1_000_000).optional(),
    error: wireErrorSchema.optional(),
    generation: z.int().min(1).max(3),
    keyId: z.string().regex(/^[0-9a-f]{16}$/, 'not a key id').optional(),
    signature: z.string().regex(/^[A-Za-z0-9_-]{86}$/, 'not an Ed25519 signature (base64url)').optional(),
  })
  .superRefine((r, ctx) => {
    const problem = shapeProblem(r);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
  });

export type IntentRecord = z.output<typeof intentRecordSchema>;

/** Why the fields of `r` do not fit its state or method (no values), or undefined. */
function shapeProblem(r: Omit<IntentRecord, 'signature' | 'keyId'>): string | undefined {
  if (r.generation !== STEP[r.state]) return `generation: not the step of state ${r.state}`;
  const taken = r.by !== undefined && r.epoch !== undefined && r.takenAt !== undefined;
  const answered = (r.result !== undefined ? 1 : 0) + (r.error !== undefined ? 1 : 0);
  if (r.state === 'pending' && (r.by !== undefined || r.epoch !== undefined || answered !== 0)) return 'state: a pending intent has no taker or answer';
  if (r.state === 'taken' && (!taken || answered !== 0)) return 'state: a taken intent has a taker and no answer';
  if (r.state === 'done' && (answered !== 1 || r.doneAt === undefined)) return 'state: a done intent has exactly one of result and error';
  return argsProblem(r.method, r.args, r.operator);
}

/** The parse function for openKv: strict schema, and the id must be the key. */
export const parseIntentRecord = recordParser(intentRecordSchema, 'id');

/** A new pending intent (unsigned). */
export function pendingIntent(input: { id: string; method: IntentMethod; args: unknown[]; operator: string; role: IntentRecord['role']; from: string; replyKey: string; now: number }): IntentRecord {
  return {
    id: input.id,
    method: input.method,
    args: input.args,
    operator: input.operator,
    role: input.role,
    createdAt: isoAt(input.now),
    from: input.from,
    replyKey: input.replyKey,
    state: 'pending',
    generation: STEP.pending,
  };
}

/** Strips the signature fields (before the next step is signed). */
function unsigned(r: IntentRecord): IntentRecord {
  const rest = { ...r };
  delete rest.keyId;
  delete rest.signature;
  return rest;
}

/** `r` claimed by leader `by` at `epoch` (unsigned). */
export function claimed(r: IntentRecord, by: string, epoch: number, now: number): IntentRecord {
  return { ...unsigned(r), state: 'taken', by, epoch, takenAt: isoAt(now), generation: STEP.taken };
}

/** `r` answered (unsigned): `result` is the sealed return value, or `error` what it threw. */
export function answered(r: IntentRecord, outcome: { result: string } | { error: WireError }, now: number): IntentRecord {
  const base = unsigned(r);
  delete base.result;
  delete base.error;
  return { ...base, state: 'done', doneAt: isoAt(now), generation: STEP.done, ...outcome };
}

/** Milliseconds since the intent was written (negative when future-dated). */
export function intentAge(r: IntentRecord, now: number): number {
  return now - Date.parse(r.createdAt);
}

/** What the leader does with one record of the bucket. */
export type LeaderAction =
  | { kind: 'run' }
  | { kind: 'refuse'; why: string }
  | { kind: 'interrupted'; why: string }
  | { kind: 'ignore'; why: string };

export interface LeaderView {
  now: number;
  /** The epoch this leader holds. */
  epoch: number;
  /** Ids this process is running right now (never touched from outside). */
  running: ReadonlySet<string>;
  /** Ids this process answered before (a pending record with one of them is a replay). */
  answered: ReadonlySet<string>;
  maxAgeMs?: number;
}

/**
 * The leader's decision for `r` whose signature verdict is `verdict`. Pure.
 * A pending intent runs when it is signed, fresh and not a replay; else it is refused.
 * A taken one at an older epoch lost its leader mid-call: whether it ran is unknown, so it
 * is answered INTENT_UNANSWERED, never run again. Done ones are left for their caller.
 */
export function decideIntent(r: IntentRecord, verdict: SignatureVerdict, view: LeaderView): LeaderAction {
  if (r.state === 'done') return { kind: 'ignore', why: 'answered' };
  if (view.running.has(r.id)) return { kind: 'ignore', why: 'running here' };
  if (!verdict.ok) return r.state === 'pending' ? { kind: 'refuse', why: `${verdict.problem}: ${verdict.message}` } : { kind: 'ignore', why: `taken record ${verdict.problem}` };
  if (r.state === 'taken') {
    const epoch = r.epoch ?? 0;
    if (epoch < view.epoch) return { kind: 'interrupted', why: `taken by ${r.by ?? '?'} at epoch ${epoch}, which lost the lease before it answered` };
    return { kind: 'ignore', why: `taken at epoch ${epoch}` };
  }
  if (view.answered.has(r.id)) return { kind: 'refuse', why: 'replay of an intent already answered' };
  const age = intentAge(r, view.now);
  const maxAge = view.maxAgeMs ?? INTENT_MAX_AGE_MS;
  if (age > maxAge) return { kind: 'refuse', why: `written ${Math.round(age / 1000)} s ago (limit ${Math.round(maxAge / 1000)} s)` };
  if (age < -maxAge) return { kind: 'refuse', why: `dated ${Math.round(-age / 1000)} s in the future` };
  return { kind: 'run' };
}

/** Whether the leader's sweep deletes `r`: written more than `afterMs` ago (or dated absurdly far ahead). */
export function sweepable(r: IntentRecord, now: number, afterMs = DEFAULT_SWEEP_AFTER_MS): boolean {
  const age = intentAge(r, now);
  return age > afterMs || age < -afterMs;
}

/**
 * An error as it goes on the wire: the code, message, retryable flag, Retry-After and the
 * details a signature can cover (strings, safe integers, booleans, null; anything else as
 * its JSON text), so the follower throws what the leader's backend threw.
 */
export function errorToWire(err: unknown): WireError {
  const cf = err instanceof CertfleetError ? err : new CertfleetError(ErrorCode.Internal, 'internal error (see the leader controller log)', { cause: err });
  const details: WireError['details'] = {};
  for (const [k, v] of Object.entries(cf.details).slice(0, 32)) {
    if (k.length > 64 || v === undefined) continue;
    let ok = false;
    try {
      canonicalJson(v);
      ok = v === null || typeof v !== 'object';
    } catch {
      ok = false;
    }
    details[k] = ok ? (v as string | number | boolean | null) : String(JSON.stringify(v) ?? '').slice(0, 4096);
  }
  return {
    code: cf.code,
    message: cf.message.slice(0, 8192),
    retryable: cf.retryable,
    ...(cf.retryAfterMs !== undefined && Number.isFinite(cf.retryAfterMs) ? { retryAfterMs: Math.max(0, Math.round(cf.retryAfterMs)) } : {}),
    details,
  };
}

/** The CertfleetError a wire error stands for. */
export function errorFromWire(w: WireError): CertfleetError {
  return new CertfleetError(w.code, w.message, { retryable: w.retryable, details: { ...w.details }, ...(w.retryAfterMs !== undefined ? { retryAfterMs: w.retryAfterMs } : {}) });
}

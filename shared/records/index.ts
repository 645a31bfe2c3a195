/**
 * Strict schemas of the records certfleet reads back from NATS: desired pointers,
 * HTTP-01 challenges and agent status. A record is data from the bus, not from our own
 * memory: any writer with access to a bucket (an older or newer controller, an operator
 * with the `nats` CLI, a bug) can put anything there, so every value is checked with the
 * same strictness as the configuration before any code looks at it (issue #8: one
 * `{"selector":"*"}` without a name made every agent's report throw every 5 s).
 *
 * {@link recordParser} turns a schema into the `parse` function openKv (shared/nats)
 * takes. Its error messages name the fields that are wrong and why, never a value: a
 * record can hold things that must not end up in logs.
 *
 * The schemas are shared/check's, not zod's: the agent parses every record it reads and
 * must not load zod (issue #13, agent memory). {@link recordParser} also takes the
 * controller's own zod schemas (a structural `safeParse`).
 *
 * The schemas mirror the TypeScript interfaces in shared/model; a compile-time check
 * below fails the build when the two drift apart (a field added to one but not the
 * other), because a strict schema that lags behind the model would make every reader
 * skip every record of a newer writer.
 */
import { c, type Infer } from '../check/index.js';
import type { CertStatus, ChallengeRecord, DesiredRecord, HookOutcome, RecordRefusals, RolloutState } from '../model/index.js';
import { parseSelector } from '../selector/index.js';
import { AGENT_NAME_PATTERN, CERT_NAME_PATTERN } from '../wire/index.js';

/** Lower-case hex SHA-256 of a certificate's DER. */
const fingerprint = c.string().regex(/^[0-9a-f]{64}$/, 'not a lower-case hex SHA-256 fingerprint');
/** A version number: versions start at 1. */
const version = c.int().min(1).max(Number.MAX_SAFE_INTEGER);
/** A count or version where 0 means "none". */
const versionOrZero = c.int().min(0).max(Number.MAX_SAFE_INTEGER);
const certName = c.string().regex(CERT_NAME_PATTERN, 'not a valid certificate name');
const agentName = c.string().regex(AGENT_NAME_PATTERN, 'not a valid agent name');
/** An RFC 3339 time as written by shared/clock isoAt (any form Date.parse reads is accepted). */
const timestamp = c
  .string()
  .max(64)
  .refine((s) => !Number.isNaN(Date.parse(s)), 'not a date-time');
/** A DNS name a certificate covers, optionally a wildcard. */
const dnsName = c
  .string()
  .max(253)
  .regex(/^(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/, 'not a DNS name');
const names = c.array(dnsName).min(1).max(100);
/** A label selector (shared/selector); the text is not repeated in the message. */
const selector = c
  .string()
  .max(4096)
  .refine((s) => {
    try {
      parseSelector(s);
      return true;
    } catch {
      return false;
    }
  }, 'not a valid label selector');
/** base64url without padding: ACME tokens and JWK thumbprints. */
const base64url = c.string().min(1).max(512).regex(/^[A-Za-z0-9_-]+$/, 'not base64url');

const rolloutSchema = c.strictObject({
  from: c.strictObject({ version, fingerprint, notAfter: timestamp, names }),
  waves: c.array(selector).max(100),
  released: versionOrZero,
  halted: c.boolean(),
  haltReason: c.string().max(8192),
});

/** Signature fields every signed record carries (shared/signing). */
const generation = c.int().min(1).max(Number.MAX_SAFE_INTEGER);
/** The leader epoch (fencing token) of the controller that signed the record (shared/signing). */
const epoch = c.int().min(0).max(Number.MAX_SAFE_INTEGER);
const keyId = c.string().regex(/^[0-9a-f]{16}$/, 'not a key id');
const signature = c.string().regex(/^[A-Za-z0-9_-]{86}$/, 'not an Ed25519 signature (base64url)');

/** A value of the `desired` bucket (key: its `name`). */
export const desiredRecordSchema = c.strictObject({
  name: certName,
  version,
  fingerprint,
  names,
  notAfter: timestamp,
  selector,
  updatedAt: timestamp,
  rollout: rolloutSchema.optional(),
  pinned: c.boolean().optional(),
  epoch: epoch.optional(),
  generation: generation.optional(),
  keyId: keyId.optional(),
  signature: signature.optional(),
});

/** A value of the `challenges` bucket (key: its `token`). */
export const challengeRecordSchema = c
  .strictObject({
    token: base64url,
    keyAuthorization: c.string().max(1024).regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'not a key authorization (token.thumbprint)'),
    identifier: dnsName,
    cert: certName,
    selector,
    createdAt: timestamp,
    expiresAt: timestamp.optional(),
    epoch: epoch.optional(),
    generation: generation.optional(),
    keyId: keyId.optional(),
    signature: signature.optional(),
  })
  .refine((r) => r.keyAuthorization.startsWith(`${r.token}.`), { message: 'key authorization is not for this token', path: ['keyAuthorization'] });

const hookOutcomeSchema = c.strictObject({
  ran: c.boolean(),
  exitCode: c.int(),
  signal: c.string().max(32),
  timedOut: c.boolean(),
  durationMs: c.number().min(0).max(Number.MAX_SAFE_INTEGER),
  outputTail: c.string().max(16384),
});

/** What one agent reports about one certificate (inside an agent record). */
export const certStatusSchema = c.strictObject({
  name: certName,
  version: versionOrZero,
  fingerprint: c.union([c.literal(''), fingerprint]),
  desiredVersion: versionOrZero,
  state: c.enum(['installed', 'failed', 'pending']),
  hook: hookOutcomeSchema.nullable(),
  servedVerified: c.boolean(),
  error: c.string().max(8192),
  errorCode: c.string().max(64),
  updatedAt: c.string().max(64),
  failedVersion: versionOrZero,
  rollback: c.enum(['', 'restored', 'restore-failed']),
});

/** Records an agent refused (agent/trust), as reported. */
export const recordRefusalsSchema = c.strictObject({
  total: c.int().min(0).max(Number.MAX_SAFE_INTEGER),
  byReason: c.record(c.string().regex(/^[a-z-]{1,32}$/, 'not a refusal reason'), c.int().min(0).max(Number.MAX_SAFE_INTEGER)),
  last: c.string().max(1024),
  lastAt: c.string().max(64),
});

/** A value of the `agents` bucket (key: its `name`): the last report of one agent. */
export const agentRecordSchema = c.strictObject({
  name: agentName,
  http01Address: c.string().max(300),
  agentVersion: c.string().max(64),
  lastSeen: timestamp,
  certificates: c.array(certStatusSchema).max(10_000),
  refusals: recordRefusalsSchema.optional(),
});

/** The agent status record as stored (controller/fleet). */
export type AgentRecord = Infer<typeof agentRecordSchema>;

/** What is wrong with a record, as one line without any of its values. */
export class RecordError extends Error {
  override readonly name = 'RecordError';
}

/** A problem as a schema reports it (shared/check's and zod 4's issues both fit). */
export interface SchemaIssue {
  readonly code: string;
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
  readonly keys?: ReadonlyArray<string>;
}

/** Anything with zod's `safeParse`: a shared/check schema, or a zod schema of the controller. */
export interface RecordSchema<T> {
  safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: ReadonlyArray<SchemaIssue> } };
}

/** The value a {@link RecordSchema} produces. */
export type RecordOf<S> = S extends { safeParse(value: unknown): infer R } ? (R extends { success: true; data: infer D } ? D : never) : never;

/**
 * A parse function for openKv: validates `value` with `schema`, and, when `keyField` is
 * given, that the record names the key it is stored under (a desired record for `web`
 * stored under `api` is as wrong as one without a name). Throws {@link RecordError}
 * whose message lists each problem as `path: message`, values left out.
 */
export function recordParser<S extends RecordSchema<unknown>>(schema: S, keyField?: keyof RecordOf<S> & string): (value: unknown, key: string) => RecordOf<S> {
  return (value, key) => {
    const result = schema.safeParse(value);
    if (!result.success) throw new RecordError(describeIssues(result.error.issues));
    if (keyField !== undefined && (result.data as Record<string, unknown>)[keyField] !== key) {
      throw new RecordError(`${keyField}: does not match the key`);
    }
    return result.data as RecordOf<S>;
  };
}

/** `path: message; ...` for at most five issues; the messages carry no input values. */
function describeIssues(issues: ReadonlyArray<SchemaIssue>): string {
  const parts = issues.slice(0, 5).map((i) => {
    const path = i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '');
    // Unknown keys are named when they look like field names (what a reader needs); a
    // key is text any writer chose, so anything else is only counted.
    const message = i.code === 'unrecognized_keys' && i.keys !== undefined ? `unknown field(s) ${i.keys.map((k) => (/^[A-Za-z0-9_]{1,40}$/.test(k) ? k : '(unprintable)')).join(', ')}` : i.message;
    return path === '' ? message : `${path}: ${message}`;
  });
  if (issues.length > 5) parts.push(`${issues.length - 5} more`);
  return parts.join('; ');
}

/** Parsers for the buckets, ready for openKv's `parse` option. */
export const parseDesiredRecord = recordParser(desiredRecordSchema, 'name');
export const parseChallengeRecord = recordParser(challengeRecordSchema, 'token');
export const parseAgentRecord = recordParser(agentRecordSchema, 'name');

// --- compile-time checks: the schemas produce exactly the model's types -----------------
type Exact<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const exact = <T extends true>(): T => true as T;
void exact<Exact<Infer<typeof desiredRecordSchema>, DesiredRecord>>();
void exact<Exact<Infer<typeof rolloutSchema>, RolloutState>>();
void exact<Exact<Infer<typeof challengeRecordSchema>, ChallengeRecord>>();
void exact<Exact<Infer<typeof hookOutcomeSchema>, HookOutcome>>();
void exact<Exact<Infer<typeof certStatusSchema>, CertStatus>>();
void exact<Exact<Infer<typeof recordRefusalsSchema>, RecordRefusals>>();

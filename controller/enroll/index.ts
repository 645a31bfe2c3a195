/**
 * Agent enrolment: one-time bootstrap tokens and the registry of enrolled agents.
 *
 * Lifecycle of a token:
 *
 * ```
 *   createToken ──> stored as enroll/<sha256(token)> ──redeem──> deleted, enroll-used/<hash> marker
 *                                 │
 *                                 └── expiresAt passes ──> refused (deleted on the next redeem
 *                                                          attempt or by pruneExpired)
 * ```
 *
 * Only the SHA-256 of a token is stored, so a copy of the store (or a backup) does not
 * hold a usable token. redeem refuses unknown, expired and used tokens with one code
 * and one message (ENROLL_TOKEN_INVALID), so a guesser learns nothing; the real reason
 * goes to the log. A token is consumed when redeem returns, even if the caller's later
 * steps fail, so callers validate the CSR before redeeming.
 *
 * The registry (`agents/<name>`) holds each agent's labels and the serial of its
 * current client certificate. Enrolling the same name again replaces the serial, and
 * {@link Enrollment.authenticateAgent} then refuses the old certificate.
 *
 * Lifecycle of a registration (issue #9):
 *
 * ```
 *   recordAgent ──> active (serial S) ──recordRenewal──> active (S, pending P)
 *        ▲               │   ▲                                  │
 *        │               │   └──── first call with P: S := P ───┘
 *        │               └──removeAgent──> removed (every call refused, naming who and when;
 *        │                                  unused tokens for the name issued before withdrawn)
 *        └────────── a new token for the name (re-enrolment) ──────┘
 * ```
 *
 * A renewed certificate does not retire the current one at once: the agent might crash
 * before it has written the new one, and would then be locked out. The old serial stays
 * accepted until the new one is first presented (or the old certificate expires).
 *
 * Concurrency: safe for one controller process. Two concurrent redeems of one token in
 * this process cannot both succeed (an in-flight guard plus the store's atomic delete);
 * across controllers it relies on the backend's deleteObject telling who removed it.
 *
 * Registrations in memory (issue #13): {@link Enrollment.authenticateAgent} runs on every
 * agent call, and reading `agents/<name>` each time was a fifth of the controller's busy
 * time at 100 agents. It answers from a copy kept in memory:
 *  - this Enrollment's own writes (enrol, renewal, promotion, removal) replace the copy
 *    when the write returns, and a store read that began before a write is never kept,
 *    so a removal is refused on the very next call on this controller;
 *  - no refusal but a removal is decided from memory: an unknown name, or a serial that is
 *    neither the current nor the pending one, is read again from the store first (an
 *    enrolment or renewal on another controller is accepted at once);
 *  - a copy is trusted for `registrationTtlMs` ({@link REGISTRATION_TTL_MS} on a shared
 *    store such as Vault; for ever on the file store, which one controller holds
 *    exclusively). So on a shared store a removal or re-enrolment made on ANOTHER
 *    controller is honoured here within that time; the store offers no change signal
 *    cheaper than the read itself.
 */
import crypto from 'node:crypto';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { componentLogger, LogKey, silentLogger, type Logger } from '../../shared/log/index.js';
import { AGENT_NAME_PATTERN } from '../../shared/wire/index.js';
import { ObjectKey, ObjectPrefix, type CertStore } from '../store/index.js';

/**
 * The store abilities enrolment needs (any CertStore has them). `kind` 'file' means no
 * other controller writes it (controller/store lock), so registrations read from it stay
 * valid until this process changes them.
 */
export type ObjectStore = Pick<CertStore, 'getObject' | 'putObject' | 'deleteObject' | 'listObjects'> & Partial<Pick<CertStore, 'kind'>>;

/**
 * How long a registration read from a store other controllers share is trusted in memory:
 * the bound on how late a removal made on another controller takes effect here.
 */
export const REGISTRATION_TTL_MS = 1000;

/** Options of {@link Enrollment}. */
export interface EnrollmentOptions {
  /**
   * Milliseconds a registration read from the store is trusted (see the module comment);
   * default {@link REGISTRATION_TTL_MS}, or Infinity when `store.kind` is 'file'. 0 reads
   * on every call.
   */
  registrationTtlMs?: number;
}

/** A registration kept in memory, read (or written) at `at`. null: not enrolled. */
interface CachedRegistration {
  reg: AgentRegistration | null;
  at: number;
}

export type Labels = Record<string, string>;

/** One enrolled agent, as stored under `agents/<name>`. */
export interface AgentRegistration {
  name: string;
  labels: Labels;
  /** Serial (lower-case hex) of the agent's current client certificate. */
  certSerial: string;
  /** RFC 3339. */
  enrolledAt: string;
  /** RFC 3339: when the current client certificate expires (absent in records from before issue #9). */
  certNotAfter?: string;
  /** A renewed certificate's serial, accepted with certSerial until it is first presented. */
  pendingSerial?: string;
  pendingNotAfter?: string;
  /** RFC 3339; set once the agent was removed (every call refused from then on). */
  removedAt?: string;
  /** The operator who removed it. */
  removedBy?: string;
}

/** What {@link Enrollment.removeAgent} did. */
export interface AgentRemoval {
  registration: AgentRegistration;
  /** It had been removed before this call (nothing changed in the registry). */
  alreadyRemoved: boolean;
  /** Unused enrolment tokens for the name, created before the removal, that were deleted. */
  tokensWithdrawn: number;
}

/** What a token binds: returned by redeem. */
export interface TokenGrant {
  agent: string;
  labels: Labels;
}

/** Tokens last one hour unless asked otherwise (the gRPC API's `ttl_seconds: 0`). */
export const DEFAULT_TOKEN_TTL_MS = 3600 * 1000;
/** Longest token lifetime accepted: long enough to bake into an image, short enough to expire. */
export const MAX_TOKEN_TTL_MS = 30 * 24 * 3600 * 1000;
/** Prefix of every bootstrap token, so it is recognisable in a secret scanner. */
export const TOKEN_PREFIX = 'cft_';

const TOKEN_PATTERN = /^cft_[A-Za-z0-9_-]{43}$/; // 32 bytes base64url, no padding
const LABEL_PATTERN = /^[a-zA-Z0-9._/-]{1,63}$/;
const LABEL_VALUE_PATTERN = /^[a-zA-Z0-9._/-]{0,63}$/;
const MAX_LABELS = 64;
const INVALID_MESSAGE = 'enrolment token is invalid, expired or already used';

interface TokenRecord {
  agent: string;
  labels: Labels;
  createdAt: string;
  expiresAt: string;
}

interface UsedRecord {
  agent: string;
  usedAt: string;
  expiresAt: string;
}

/**
 * Throws USAGE_INVALID unless `labels` is a plain object of at most 64 entries whose keys
 * (1–63 chars) and values (0–63 chars) use only `[a-zA-Z0-9._/-]`.
 */
export function checkLabels(labels: unknown): asserts labels is Labels {
  if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, 'labels must be an object of strings');
  }
  const entries = Object.entries(labels as Record<string, unknown>);
  if (entries.length > MAX_LABELS) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `at most ${MAX_LABELS} labels are allowed`);
  }
  for (const [k, v] of entries) {
    if (!LABEL_PATTERN.test(k)) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `invalid label key ${JSON.stringify(k)}`, { details: { label: k } });
    }
    if (typeof v !== 'string' || !LABEL_VALUE_PATTERN.test(v)) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `invalid value for label ${k}`, { details: { label: k } });
    }
  }
}

/** Throws USAGE_INVALID unless `name` matches AGENT_NAME_PATTERN. */
export function checkAgentName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !AGENT_NAME_PATTERN.test(name)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `invalid agent name ${JSON.stringify(name)}`, {
      details: { agent: name },
    });
  }
}

/** Bootstrap tokens and the agent registry, kept as CertStore objects. */
export class Enrollment {
  private readonly log: Logger;
  /** Token hashes being redeemed right now in this process. */
  private readonly redeeming = new Set<string>();
  private readonly ttlMs: number;
  private readonly registrations = new Map<string, CachedRegistration>();
  /** Per name, bumped by every write of this process: a read that overlapped one is not kept. */
  private readonly writes = new Map<string, number>();

  constructor(
    private readonly store: ObjectStore,
    private readonly clock: Clock,
    log: Logger = silentLogger(),
    options: EnrollmentOptions = {},
  ) {
    this.log = componentLogger(log, 'enroll');
    this.ttlMs = options.registrationTtlMs ?? (store.kind === 'file' ? Infinity : REGISTRATION_TTL_MS);
  }

  /**
   * Creates a one-time token enrolling agent `agent` with `labels`, valid `ttlMs`
   * (default one hour, at most 30 days). The token is `cft_` + 32 random bytes
   * base64url; only its SHA-256 is stored. USAGE_INVALID for a bad name, labels or ttl;
   * store errors propagate.
   */
  async createToken(opts: { agent: string; labels?: Labels; ttlMs?: number }): Promise<{ token: string; expiresAt: string }> {
    checkAgentName(opts.agent);
    const labels = { ...(opts.labels ?? {}) };
    checkLabels(labels);
    const ttlMs = opts.ttlMs === undefined || opts.ttlMs === 0 ? DEFAULT_TOKEN_TTL_MS : opts.ttlMs;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_TOKEN_TTL_MS) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `token ttl must be between 1 ms and ${MAX_TOKEN_TTL_MS} ms`, {
        details: { ttlMs },
      });
    }
    const token = TOKEN_PREFIX + crypto.randomBytes(32).toString('base64url');
    const now = this.clock.now();
    const record: TokenRecord = { agent: opts.agent, labels, createdAt: isoAt(now), expiresAt: isoAt(now + ttlMs) };
    await this.store.putObject(ObjectKey.enrollToken(hashToken(token)), record);
    this.log.info({ [LogKey.agent]: opts.agent, expiresAt: record.expiresAt }, 'enrolment token created');
    return { token, expiresAt: record.expiresAt };
  }

  /**
   * Consumes `token` and returns the agent name and labels it binds. Unknown, malformed,
   * expired and already-used tokens all fail with ENROLL_TOKEN_INVALID and the same
   * message; the log says which. Store errors propagate (the token is then not consumed
   * unless the delete had already happened).
   */
  async redeem(token: string): Promise<TokenGrant> {
    if (typeof token !== 'string' || !TOKEN_PATTERN.test(token)) throw this.refuse('malformed');
    const hash = hashToken(token);
    if (this.redeeming.has(hash)) throw this.refuse('redeem already in progress', hash);
    this.redeeming.add(hash);
    try {
      const key = ObjectKey.enrollToken(hash);
      const raw = await this.store.getObject<unknown>(key);
      if (raw === null) {
        const used = await this.store.getObject<UsedRecord>(ObjectKey.enrollUsed(hash));
        throw this.refuse(used === null ? 'unknown' : `already used at ${String(used.usedAt)}`, hash, used?.agent);
      }
      const record = parseTokenRecord(raw, key);
      const now = this.clock.now();
      if (now >= Date.parse(record.expiresAt)) {
        await this.store.deleteObject(key);
        throw this.refuse(`expired at ${record.expiresAt}`, hash, record.agent);
      }
      // The delete is the commit point: only the caller that removed the object wins.
      if (!(await this.store.deleteObject(key))) throw this.refuse('used concurrently', hash, record.agent);
      const marker: UsedRecord = { agent: record.agent, usedAt: isoAt(now), expiresAt: record.expiresAt };
      await this.store.putObject(ObjectKey.enrollUsed(hash), marker).catch((err: unknown) => {
        // The token is consumed either way; the marker only improves a later log line.
        this.log.warn({ [LogKey.err]: err, [LogKey.agent]: record.agent }, 'used-token marker not written');
      });
      this.log.info({ [LogKey.agent]: record.agent, tokenHash: hash.slice(0, 12) }, 'enrolment token redeemed');
      return { agent: record.agent, labels: { ...record.labels } };
    } finally {
      this.redeeming.delete(hash);
    }
  }

  /**
   * Removes expired tokens and used-token markers whose token would have expired by now.
   * Returns how many objects were removed. Safe to run at any time.
   */
  async pruneExpired(): Promise<number> {
    const now = this.clock.now();
    let removed = 0;
    for (const prefix of [ObjectPrefix.enrollTokens, ObjectPrefix.enrollUsed]) {
      for (const key of await this.store.listObjects(prefix)) {
        const rec = await this.store.getObject<{ expiresAt?: unknown }>(key);
        if (rec !== null && typeof rec.expiresAt === 'string' && now >= Date.parse(rec.expiresAt)) {
          if (await this.store.deleteObject(key)) removed++;
        }
      }
    }
    if (removed > 0) this.log.info({ removed }, 'expired enrolment tokens pruned');
    return removed;
  }

  /**
   * Records (or replaces) agent `name`'s registration. Re-enrolling a name replaces its
   * serial, which retires the previous certificate. USAGE_INVALID for a bad name,
   * labels, serial or date.
   */
  async recordAgent(reg: AgentRegistration): Promise<AgentRegistration> {
    checkAgentName(reg.name);
    checkLabels(reg.labels);
    if (typeof reg.certSerial !== 'string' || !/^[0-9a-f]{1,64}$/.test(reg.certSerial)) {
      throw new CertfleetError(ErrorCode.UsageInvalid, 'certSerial must be lower-case hex', { details: { agent: reg.name } });
    }
    if (typeof reg.enrolledAt !== 'string' || Number.isNaN(Date.parse(reg.enrolledAt))) {
      throw new CertfleetError(ErrorCode.UsageInvalid, 'enrolledAt must be an RFC 3339 time', { details: { agent: reg.name } });
    }
    // A fresh record: a removal or a pending renewal of an earlier enrolment does not carry over.
    const record: AgentRegistration = {
      name: reg.name,
      labels: { ...reg.labels },
      certSerial: reg.certSerial,
      enrolledAt: reg.enrolledAt,
      ...(reg.certNotAfter === undefined ? {} : { certNotAfter: reg.certNotAfter }),
    };
    const previous = await this.getAgent(reg.name);
    await this.writeAgent(reg.name, record);
    this.log.info(
      { agent: reg.name, serial: reg.certSerial, replacedSerial: previous?.certSerial, wasRemoved: previous?.removedAt !== undefined },
      previous === null ? 'agent enrolled' : 'agent re-enrolled',
    );
    return record;
  }

  /**
   * Removes agent `name` from the fleet on behalf of operator `actor`: the registration
   * is kept, marked removed, so {@link authenticateAgent} refuses every certificate of
   * the name from the next call on and says who removed it when. Unused enrolment tokens
   * for the name created before now are deleted, so an old token cannot bring it back;
   * a token created afterwards re-enrols it (a fresh registration). Idempotent: removing
   * a removed agent changes nothing and reports `alreadyRemoved`. NOT_FOUND when the name
   * never enrolled; store errors propagate.
   */
  async removeAgent(name: string, actor: string): Promise<AgentRemoval> {
    const reg = await this.getAgent(name);
    if (reg === null) throw new CertfleetError(ErrorCode.NotFound, `agent ${name} is not enrolled`, { details: { agent: name } });
    if (reg.removedAt !== undefined) return { registration: reg, alreadyRemoved: true, tokensWithdrawn: 0 };
    const now = this.clock.now();
    const record: AgentRegistration = { ...reg, removedAt: isoAt(now), removedBy: actor };
    delete record.pendingSerial;
    delete record.pendingNotAfter;
    await this.writeAgent(name, record);
    let tokensWithdrawn = 0;
    for (const key of await this.store.listObjects(ObjectPrefix.enrollTokens)) {
      const raw = await this.store.getObject<unknown>(key);
      if (raw === null) continue;
      let tok: TokenRecord;
      try {
        tok = parseTokenRecord(raw, key);
      } catch {
        continue; // not ours to judge here; redeem refuses it anyway
      }
      const created = Date.parse(tok.createdAt);
      if (tok.agent === name && (Number.isNaN(created) || created <= now) && (await this.store.deleteObject(key))) tokensWithdrawn++;
    }
    this.log.info({ [LogKey.agent]: name, actor, serial: reg.certSerial, tokensWithdrawn }, 'agent removed');
    return { registration: record, alreadyRemoved: false, tokensWithdrawn };
  }

  /**
   * Records a renewed client certificate (`serial`, expiring `notAfter`) for agent `name`,
   * whose current certificate is `currentSerial`. The new serial is accepted alongside
   * the current one until it is first presented (see the lifecycle above); a second
   * renewal before that replaces the pending one. UNAUTHENTICATED when the agent is
   * unknown, removed, or its current certificate changed meanwhile.
   */
  async recordRenewal(name: string, currentSerial: string, serial: string, notAfter: string): Promise<AgentRegistration> {
    const reg = await this.getAgent(name);
    if (reg === null) throw notEnrolled(name);
    if (reg.removedAt !== undefined) throw removedError(reg);
    if (reg.certSerial !== currentSerial.toLowerCase()) {
      throw new CertfleetError(ErrorCode.Unauthenticated, `agent ${name} presented a replaced certificate`, {
        details: { agent: name, reason: 'certificate replaced meanwhile', serial: currentSerial },
      });
    }
    const record: AgentRegistration = { ...reg, pendingSerial: serial.toLowerCase(), pendingNotAfter: notAfter };
    await this.writeAgent(name, record);
    this.log.info({ [LogKey.agent]: name, serial: record.pendingSerial, notAfter, replacedPending: reg.pendingSerial }, 'agent identity renewed');
    return record;
  }

  /** The registration of `name`, or null if it never enrolled. STORE_CORRUPT if unreadable. */
  async getAgent(name: string): Promise<AgentRegistration | null> {
    checkAgentName(name);
    const key = ObjectKey.agent(name);
    const raw = await this.store.getObject<unknown>(key);
    return raw === null ? null : parseAgentRecord(raw, key);
  }

  /** Every registration, sorted by name. */
  async listAgents(): Promise<AgentRegistration[]> {
    const out: AgentRegistration[] = [];
    for (const key of await this.store.listObjects(ObjectPrefix.agents)) {
      const raw = await this.store.getObject<unknown>(key);
      if (raw !== null) out.push(parseAgentRecord(raw, key)); // null: deleted since listed
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * The gate after verifyClientCertificate (controller/pki), on every agent call: the
   * agent must be enrolled, not removed, and `serial` must be its current certificate's
   * or its pending renewed one's (the first call with the pending one makes it current,
   * which retires the old). Otherwise UNAUTHENTICATED with `details.reason`; a removed
   * agent is told who removed it and when. Answers from memory where it may (module
   * comment: a removal on this controller holds from the next call, one on another
   * controller sharing the store within `registrationTtlMs`), otherwise one store read;
   * plus one write on the first call with a renewed certificate.
   */
  async authenticateAgent(name: string, serial: string): Promise<AgentRegistration> {
    const presented = serial.toLowerCase();
    const cached = this.remembered(name);
    // Only an acceptance or a removal is decided from memory: anything
    // else may be another controller's enrolment or renewal, so it is read again.
    if (cached?.reg != null && (cached.reg.removedAt !== undefined || cached.reg.certSerial === presented)) {
      return this.judge(name, copyRegistration(cached.reg), presented, serial);
    }
    return this.judge(name, await this.readAgent(name), presented, serial);
  }

  private async judge(name: string, reg: AgentRegistration | null, presented: string, serial: string): Promise<AgentRegistration> {
    if (reg === null) throw notEnrolled(name);
    if (reg.removedAt !== undefined) throw removedError(reg);
    if (reg.certSerial === presented) return reg;
    if (reg.pendingSerial !== undefined && reg.pendingSerial === presented) {
      const promoted: AgentRegistration = { ...reg, certSerial: presented };
      if (reg.pendingNotAfter === undefined) delete promoted.certNotAfter;
      else promoted.certNotAfter = reg.pendingNotAfter;
      delete promoted.pendingSerial;
      delete promoted.pendingNotAfter;
      await this.writeAgent(name, promoted);
      this.log.info({ [LogKey.agent]: name, serial: presented, retiredSerial: reg.certSerial }, 'renewed agent identity in use; previous certificate retired');
      return copyRegistration(promoted);
    }
    throw new CertfleetError(ErrorCode.Unauthenticated, `agent ${name} presented a replaced certificate`, {
      details: { agent: name, reason: 'certificate replaced by a later enrolment', serial },
    });
  }

  /** The copy in memory of `name`'s registration while it is trusted, else undefined. */
  private remembered(name: string): CachedRegistration | undefined {
    const c = this.registrations.get(name);
    if (c === undefined) return undefined;
    if (this.clock.now() - c.at < this.ttlMs) return c;
    this.registrations.delete(name);
    return undefined;
  }

  /** Reads `name` from the store and keeps it, unless a write of this process overlapped the read. */
  private async readAgent(name: string): Promise<AgentRegistration | null> {
    const before = this.writes.get(name) ?? 0;
    const at = this.clock.now();
    const reg = await this.getAgent(name);
    if ((this.writes.get(name) ?? 0) === before && this.ttlMs > 0) this.registrations.set(name, { reg: reg && copyRegistration(reg), at });
    return reg;
  }

  /** Stores `name`'s registration and replaces the copy in memory once the write returned. */
  private async writeAgent(name: string, record: AgentRegistration): Promise<void> {
    const bump = (): void => void this.writes.set(name, (this.writes.get(name) ?? 0) + 1);
    bump();
    this.registrations.delete(name);
    try {
      await this.store.putObject(ObjectKey.agent(name), record);
    } finally {
      bump(); // a read begun while the write ran may have seen either value
    }
    if (this.ttlMs > 0) this.registrations.set(name, { reg: copyRegistration(record), at: this.clock.now() });
  }

  private refuse(reason: string, hash?: string, agent?: string): CertfleetError {
    // Log a prefix of the hash only: enough to correlate, useless to an attacker.
    this.log.warn({ reason, [LogKey.agent]: agent, tokenHash: hash?.slice(0, 12) }, 'enrolment token refused');
    return new CertfleetError(ErrorCode.EnrollTokenInvalid, INVALID_MESSAGE);
  }
}

/** A copy the caller may keep or change without touching the one in memory. */
function copyRegistration(reg: AgentRegistration): AgentRegistration {
  return { ...reg, labels: { ...reg.labels } };
}

function notEnrolled(name: string): CertfleetError {
  return new CertfleetError(ErrorCode.Unauthenticated, `agent ${name} is not enrolled`, { details: { agent: name, reason: 'not enrolled' } });
}

/** The refusal a removed agent gets on every call: who removed it, when, and how to bring it back. */
function removedError(reg: AgentRegistration): CertfleetError {
  return new CertfleetError(
    ErrorCode.Unauthenticated,
    `agent ${reg.name} was removed by ${reg.removedBy ?? 'an operator'} at ${reg.removedAt ?? '?'}; enrol it again with a new token to bring it back`,
    { details: { agent: reg.name, reason: 'removed', removedBy: reg.removedBy, removedAt: reg.removedAt } },
  );
}

function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

function corrupt(key: string, why: string): CertfleetError {
  return new CertfleetError(ErrorCode.StoreCorrupt, `store object ${key} is malformed: ${why}`, { details: { key } });
}

function parseTokenRecord(raw: unknown, key: string): TokenRecord {
  if (typeof raw !== 'object' || raw === null) throw corrupt(key, 'not an object');
  const o = raw as Record<string, unknown>;
  if (typeof o['agent'] !== 'string' || typeof o['expiresAt'] !== 'string' || Number.isNaN(Date.parse(o['expiresAt']))) {
    throw corrupt(key, 'agent or expiresAt missing');
  }
  const labels = o['labels'] ?? {};
  try {
    checkLabels(labels);
  } catch {
    throw corrupt(key, 'labels invalid');
  }
  return { agent: o['agent'], labels, createdAt: typeof o['createdAt'] === 'string' ? o['createdAt'] : '', expiresAt: o['expiresAt'] };
}

function parseAgentRecord(raw: unknown, key: string): AgentRegistration {
  if (typeof raw !== 'object' || raw === null) throw corrupt(key, 'not an object');
  const o = raw as Record<string, unknown>;
  const labels = o['labels'] ?? {};
  if (
    typeof o['name'] !== 'string' ||
    typeof o['certSerial'] !== 'string' ||
    typeof o['enrolledAt'] !== 'string' ||
    typeof labels !== 'object' ||
    labels === null
  ) {
    throw corrupt(key, 'name, certSerial, enrolledAt or labels missing');
  }
  const optional = (field: string): string | undefined => {
    const v = o[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw corrupt(key, `${field} is not a string`);
    return v;
  };
  const out: AgentRegistration = {
    name: o['name'],
    labels: { ...(labels as Labels) },
    certSerial: o['certSerial'],
    enrolledAt: o['enrolledAt'],
  };
  for (const field of ['certNotAfter', 'pendingSerial', 'pendingNotAfter', 'removedAt', 'removedBy'] as const) {
    const v = optional(field);
    if (v !== undefined) out[field] = v;
  }
  return out;
}

/**
 * Operator access: who the operators are (the registry) and what each role may call (the
 * policy).
 *
 * An operator credential is a client certificate from the controller's CA whose URI SAN
 * names the operator (`urn:certfleet:operator:<name>`, controller/pki). The certificate
 * proves the name; the registry decides everything else. Each operator has a record
 * `operators/<name>` in the CertStore with its role, the serial of its one valid
 * certificate, who created it and when, and whether it is revoked. The API reads that
 * record on every call, so a revocation or a role change holds from the next call on,
 * without waiting for the certificate to expire, and on every controller sharing the
 * store.
 *
 * ```
 *   create ──> active (role R, serial S) ──set-role──> active (role R', serial S)
 *                 │
 *                 └──revoke──> revoked (every call refused; `create` of the same name
 *                                        issues a new certificate with a new serial)
 * ```
 *
 * The policy is one pure table: each OperatorService method and the weakest role that may
 * call it ({@link REQUIRED_ROLE}); roles are ordered (viewer < operator < admin). A
 * method missing from the table is refused to every role.
 */
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, silentLogger, type Logger } from '../../shared/log/index.js';
import { OPERATOR_ROLES, isOperatorRole, type OperatorRole } from '../../shared/model/index.js';
import { AGENT_NAME_PATTERN } from '../../shared/wire/index.js';
import { ObjectKey, ObjectPrefix, type CertStore } from '../store/index.js';

export { OPERATOR_ROLES, isOperatorRole, type OperatorRole };

/**
 * The weakest role allowed to call each OperatorService method. `RemoveAgent` is listed
 * before its RPC exists so that it is admin-only the day it is added.
 */
export const REQUIRED_ROLE = {
  GetStatus: 'viewer',
  ListCertificates: 'viewer',
  ListAgents: 'viewer',
  ShowCertificate: 'viewer',
  GetHistory: 'viewer',
  ListEvents: 'viewer',
  FollowEvents: 'viewer',
  ListBudgets: 'viewer',
  WhoAmI: 'viewer',
  RenewCertificate: 'operator',
  Rollback: 'operator',
  Release: 'operator',
  // Like renew and rollback, an incident action: the on-call operator must be able to
  // revoke a compromised key without an admin (docs/operations.md).
  RevokeCertificate: 'operator',
  DryRun: 'operator',
  CheckChallenges: 'operator',
  CreateEnrollmentToken: 'admin',
  RemoveAgent: 'admin',
  CreateOperator: 'admin',
  ListOperators: 'admin',
  RevokeOperator: 'admin',
  SetOperatorRole: 'admin',
} as const satisfies Record<string, OperatorRole>;

/** An OperatorService method the policy knows. */
export type OperatorMethod = keyof typeof REQUIRED_ROLE;

/** The outcome of {@link authorize}. `needs` is the weakest role that would be allowed (undefined: none). */
export type AccessDecision = { allowed: true } | { allowed: false; needs: OperatorRole | undefined };

/** Whether `role` may call `method`. Pure. Unknown methods and unknown roles are refused. */
export function authorize(role: string, method: string): AccessDecision {
  const needs = Object.hasOwn(REQUIRED_ROLE, method) ? REQUIRED_ROLE[method as OperatorMethod] : undefined;
  if (needs === undefined) return { allowed: false, needs: undefined };
  if (!isOperatorRole(role)) return { allowed: false, needs };
  return OPERATOR_ROLES.indexOf(role) >= OPERATOR_ROLES.indexOf(needs) ? { allowed: true } : { allowed: false, needs };
}

/**
 * The PERMISSION_DENIED error for an operator whose role may not call `method`; the
 * message names the operator, its role, what it tried and the role it would need.
 */
export function permissionDenied(name: string, role: string, method: string): CertfleetError {
  const decision = authorize(role, method);
  const needs = decision.allowed ? undefined : decision.needs;
  const what = METHOD_WORDS[method as OperatorMethod] ?? method;
  const hint = needs === undefined ? 'no role may call it' : `it needs role ${needs}${needs === 'admin' ? '' : ' or above'}`;
  return new CertfleetError(ErrorCode.PermissionDenied, `operator ${name} has role ${role}, which may not ${what} (${method}); ${hint}`, {
    details: { operator: name, role, method, ...(needs === undefined ? {} : { needs }) },
  });
}

/** What each method does, in the words of a refusal ("may not ..."). */
const METHOD_WORDS: Record<OperatorMethod, string> = {
  GetStatus: 'read the status',
  ListCertificates: 'list certificates',
  ListAgents: 'list agents',
  ShowCertificate: 'show a certificate',
  GetHistory: 'read a history',
  ListEvents: 'read events',
  FollowEvents: 'follow events',
  ListBudgets: 'read budgets',
  WhoAmI: 'ask who it is',
  RenewCertificate: 'renew certificates',
  Rollback: 'roll certificates back',
  Release: 'release rollback pins',
  RevokeCertificate: 'revoke certificates',
  DryRun: 'rehearse issuances against the staging CA',
  CheckChallenges: 'check challenge paths',
  CreateEnrollmentToken: 'create enrolment tokens',
  RemoveAgent: 'remove agents',
  CreateOperator: 'create operators',
  ListOperators: 'list operators',
  RevokeOperator: 'revoke operators',
  SetOperatorRole: 'change roles',
};

/** One operator, as stored under `operators/<name>`. */
export interface OperatorRecord {
  name: string;
  role: OperatorRole;
  /** Serial (lower-case hex) of the one certificate that authenticates this operator. */
  serial: string;
  /** RFC 3339: when that certificate expires. */
  notAfter: string;
  /** The operator who created it, or `controller` for the bootstrap admin. */
  createdBy: string;
  createdAt: string;
  revoked: boolean;
  revokedBy?: string;
  revokedAt?: string;
  /** The last role change, if any. */
  roleChangedBy?: string;
  roleChangedAt?: string;
}

/** The name of the operator whose credentials the controller writes to `admin-credentials.json`. */
export const BOOTSTRAP_ADMIN = 'admin';
/** `createdBy` of records the controller made itself. */
export const CONTROLLER_ACTOR = 'controller';

/** The store abilities the registry needs (any CertStore has them). */
export type ObjectStore = Pick<CertStore, 'getObject' | 'putObject' | 'listObjects'>;

/**
 * The operator registry over the CertStore. Writes are serialised within this process;
 * across controllers the store is last-writer-wins (operator management is rare and
 * done by people).
 */
export class OperatorRegistry {
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: ObjectStore,
    private readonly clock: Clock,
    log: Logger = silentLogger(),
  ) {
    this.log = componentLogger(log, 'access');
  }

  /** The record of `name`, or null. STORE_CORRUPT when the stored value is not a record. */
  async get(name: string): Promise<OperatorRecord | null> {
    checkOperatorName(name);
    const raw = await this.store.getObject<unknown>(ObjectKey.operator(name));
    if (raw === null) return null;
    const rec = parseRecord(raw);
    if (rec === null) {
      throw new CertfleetError(ErrorCode.StoreCorrupt, `store object ${ObjectKey.operator(name)} is not an operator record`, { details: { key: ObjectKey.operator(name) } });
    }
    return rec;
  }

  /** Every operator, revoked ones included, sorted by name. */
  async list(): Promise<OperatorRecord[]> {
    const out: OperatorRecord[] = [];
    for (const key of await this.store.listObjects(ObjectPrefix.operators)) {
      const rec = parseRecord(await this.store.getObject<unknown>(key));
      if (rec === null) this.log.warn({ key }, 'malformed operator record skipped');
      else out.push(rec);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * The record of the operator a verified certificate names, if that certificate is its
   * current one and it is not revoked. UNAUTHENTICATED otherwise, with a message that
   * says which (unknown, revoked, replaced by a newer certificate).
   */
  async authenticate(id: { name: string; serial: string }): Promise<OperatorRecord> {
    const rec = await this.get(id.name);
    if (rec === null) {
      throw new CertfleetError(ErrorCode.Unauthenticated, `operator ${id.name} is not registered with this controller`, { details: { operator: id.name, reason: 'unknown' } });
    }
    if (rec.serial !== id.serial) {
      throw new CertfleetError(ErrorCode.Unauthenticated, `these credentials of operator ${id.name} were replaced by newer ones${rec.revoked ? ' (and the operator is revoked)' : ''}`, {
        details: { operator: id.name, reason: 'replaced' },
      });
    }
    if (rec.revoked) {
      throw new CertfleetError(ErrorCode.Unauthenticated, `operator ${id.name} was revoked${rec.revokedBy ? ` by ${rec.revokedBy}` : ''}${rec.revokedAt ? ` at ${rec.revokedAt}` : ''}`, {
        details: { operator: id.name, reason: 'revoked' },
      });
    }
    return rec;
  }

  /**
   * The whole check of one operator call: {@link authenticate}, then {@link authorize}
   * of the record's current role for `method` (PERMISSION_DENIED naming the role).
   */
  async check(id: { name: string; serial: string }, method: string): Promise<OperatorRecord> {
    const rec = await this.authenticate(id);
    if (!authorize(rec.role, method).allowed) throw permissionDenied(rec.name, rec.role, method);
    return rec;
  }

  /**
   * Records a new operator with the certificate `serial`. A name that exists and is not
   * revoked is refused (USAGE_INVALID: revoke it first, or pick another name); a revoked
   * name is taken over by the new record (its old certificate stays refused: another serial).
   */
  create(opts: { name: string; role: string; serial: string; notAfter: string; by: string }): Promise<OperatorRecord> {
    return this.serial(async () => {
      const role = opts.role;
      checkRole(role);
      await this.checkCreate(opts.name, role);
      const rec: OperatorRecord = {
        name: opts.name,
        role,
        serial: opts.serial,
        notAfter: opts.notAfter,
        createdBy: opts.by,
        createdAt: isoAt(this.clock.now()),
        revoked: false,
      };
      await this.store.putObject(ObjectKey.operator(opts.name), rec);
      this.log.info({ operator: opts.name, role: opts.role, by: opts.by }, 'operator created');
      return rec;
    });
  }

  /**
   * The refusals of {@link create} (bad name or role, an active operator of that name),
   * so a caller can check before it issues a certificate.
   */
  async checkCreate(name: string, role: string): Promise<void> {
    checkOperatorName(name);
    checkRole(role);
    const existing = await this.get(name);
    if (existing !== null && !existing.revoked) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `operator ${name} already exists (role ${existing.role}); revoke it first or choose another name`, { details: { operator: name } });
    }
  }

  /**
   * Revokes `name`: its certificate is refused from the next call on. NOT_FOUND for an
   * unknown name; revoking a revoked operator changes nothing and returns its record.
   * The last active admin cannot be revoked (USAGE_INVALID): nobody could manage
   * operators any more.
   */
  revoke(name: string, by: string): Promise<OperatorRecord> {
    return this.serial(async () => {
      const rec = await this.require(name);
      if (rec.revoked) return rec;
      if (rec.role === 'admin') await this.keepAnAdmin(name, `revoke ${name}`);
      const next: OperatorRecord = { ...rec, revoked: true, revokedBy: by, revokedAt: isoAt(this.clock.now()) };
      await this.store.putObject(ObjectKey.operator(name), next);
      this.log.info({ operator: name, by }, 'operator revoked');
      return next;
    });
  }

  /**
   * Gives `name` a new role from the next call on; returns the previous role. NOT_FOUND
   * for an unknown name, USAGE_INVALID for a revoked operator, an unknown role, or a
   * change that would leave no active admin.
   */
  setRole(name: string, role: string, by: string): Promise<{ previous: OperatorRole; record: OperatorRecord }> {
    return this.serial(async () => {
      checkRole(role);
      const rec = await this.require(name);
      if (rec.revoked) throw new CertfleetError(ErrorCode.UsageInvalid, `operator ${name} is revoked; create it again instead`, { details: { operator: name } });
      if (rec.role === 'admin' && role !== 'admin') await this.keepAnAdmin(name, `make ${name} ${role}`);
      const next: OperatorRecord = { ...rec, role, roleChangedBy: by, roleChangedAt: isoAt(this.clock.now()) };
      if (rec.role !== role) {
        await this.store.putObject(ObjectKey.operator(name), next);
        this.log.info({ operator: name, from: rec.role, to: role, by }, 'operator role changed');
      }
      return { previous: rec.role, record: rec.role === role ? rec : next };
    });
  }

  /**
   * Makes sure the bootstrap admin (`admin-credentials.json`) is registered. Called at
   * start with the serial of the certificate in that file.
   *  - no record yet (a new controller, or one upgraded from before roles): it is
   *    recorded as the `admin` operator with role admin — so an upgraded controller keeps
   *    accepting its existing admin certificate;
   *  - `fresh` (the controller has just written a new file because it was missing) and the
   *    record is active: the record takes the new serial, and the old file's certificate
   *    is refused from now on;
   *  - otherwise the record stays as it is (a revoked bootstrap admin stays revoked).
   * Returns the record.
   */
  ensureBootstrapAdmin(opts: { serial: string; notAfter: string; fresh: boolean }): Promise<OperatorRecord> {
    return this.serial(async () => {
      const rec = await this.get(BOOTSTRAP_ADMIN);
      if (rec === null || (opts.fresh && !rec.revoked && rec.serial !== opts.serial)) {
        const next: OperatorRecord = rec === null
          ? { name: BOOTSTRAP_ADMIN, role: 'admin', serial: opts.serial, notAfter: opts.notAfter, createdBy: CONTROLLER_ACTOR, createdAt: isoAt(this.clock.now()), revoked: false }
          : { ...rec, serial: opts.serial, notAfter: opts.notAfter };
        await this.store.putObject(ObjectKey.operator(BOOTSTRAP_ADMIN), next);
        this.log.info({ operator: BOOTSTRAP_ADMIN, role: next.role }, rec === null ? 'bootstrap admin registered' : 'bootstrap admin credentials replaced');
        return next;
      }
      return rec;
    });
  }

  private async require(name: string): Promise<OperatorRecord> {
    const rec = await this.get(name);
    if (rec === null) throw new CertfleetError(ErrorCode.NotFound, `no operator named ${name}`, { details: { operator: name } });
    return rec;
  }

  private async keepAnAdmin(name: string, what: string): Promise<void> {
    const others = (await this.list()).filter((r) => r.name !== name && r.role === 'admin' && !r.revoked);
    if (others.length === 0) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `refusing to ${what}: it is the last active admin (create another admin first)`, { details: { operator: name } });
    }
  }

  /** Runs `fn` after every write this registry started before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** Throws USAGE_INVALID unless `name` is a valid operator name (the agent-name rules). */
export function checkOperatorName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !AGENT_NAME_PATTERN.test(name)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `invalid operator name ${JSON.stringify(name)} (lower-case letters, digits and '-', at most 63)`, {
      details: { operator: name },
    });
  }
}

function checkRole(role: unknown): asserts role is OperatorRole {
  if (!isOperatorRole(role)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `invalid role ${JSON.stringify(role)}: one of ${OPERATOR_ROLES.join(', ')}`, { details: { role } });
  }
}

/** The value as an OperatorRecord, or null when it does not have the shape. */
function parseRecord(raw: unknown): OperatorRecord | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  const r = raw as Record<string, unknown>;
  const str = (k: string): boolean => typeof r[k] === 'string';
  if (!str('name') || !str('serial') || !str('notAfter') || !str('createdBy') || !str('createdAt') || !isOperatorRole(r['role']) || typeof r['revoked'] !== 'boolean') return null;
  return raw as OperatorRecord;
}

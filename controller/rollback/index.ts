/**
 * Rollback pins. `certfleet rollback NAME [--to N]` moves a certificate's desired pointer
 * back to an older, still valid version and pins it there: the newer version is not
 * pushed again until the pin is released, by `certfleet release NAME` or by the next
 * issuance (the scheduler keeps renewing before the pinned version expires, and a new
 * version replaces the pin). History is never rewritten: versions stay immutable.
 *
 * Pins are store objects (`pins/<name>`), so they survive restarts and are shared by
 * every controller using the same store.
 *
 * A version revoked at the CA (`certfleet revoke`, marks in revocations.ts) is never a
 * rollback target and never pinned: rollback refuses it with VERSION_REVOKED, and a pin
 * that points at one (written before the revocation) is ignored.
 */
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { validateBundle } from '../../shared/bundle/index.js';
import type { Bundle, VersionMeta } from '../../shared/model/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';

export { Revocations, type Revocation } from './revocations.js';

/** A pin as stored. */
export interface Pin {
  version: number;
  /** Version desired before the rollback. */
  from: number;
  at: string;
  by: string;
}

function pinKey(name: string): string {
  return ObjectKey.pin(name);
}

function isPin(v: unknown): v is Pin {
  const p = v as Partial<Pin> | null;
  return typeof p?.version === 'number' && Number.isInteger(p.version) && p.version > 0;
}

/**
 * Picks the version to roll back to. Pure. `to` 0 means the newest version before
 * `desired` that is not `revoked`. Refuses (NOT_FOUND / USAGE_INVALID) unknown, current,
 * newer-than-newest and expired versions, and (VERSION_REVOKED) a version revoked at the
 * CA, with a message saying which and why.
 */
export function rollbackTarget(
  name: string,
  versions: readonly VersionMeta[],
  desired: number,
  to: number,
  now: number,
  revoked: ReadonlySet<number> = new Set(),
): VersionMeta {
  if (versions.length === 0) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no versions`);
  let target: VersionMeta | undefined;
  if (to === 0) {
    const older = [...versions].filter((v) => v.version < desired).sort((a, b) => b.version - a.version);
    target = older.find((v) => !revoked.has(v.version));
    if (!target) {
      if (older.length > 0) {
        throw new CertfleetError(ErrorCode.VersionRevoked, `certificate ${name} has no version before v${desired} that is not revoked (revoked: ${older.map((v) => `v${v.version}`).join(', ')})`, {
          details: { cert: name, versions: older.map((v) => v.version) },
        });
      }
      throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no version before v${desired} to roll back to`);
    }
  } else {
    target = versions.find((v) => v.version === to);
    if (!target) {
      throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no version ${to} (versions: ${versions.map((v) => v.version).join(', ')})`);
    }
    if (revoked.has(to)) throw revokedRefusal(name, to);
    if (to === desired) throw new CertfleetError(ErrorCode.UsageInvalid, `certificate ${name} is already at version ${to}`);
  }
  if (Date.parse(target.notAfter) <= now) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `version ${target.version} of ${name} expired at ${target.notAfter}; refusing to roll back to it`);
  }
  return target;
}

/**
 * Checks the stored material of the version a rollback would pin, before anything moves.
 * Pure. The store's meta can be intact while the files beside it were overwritten or
 * damaged; pinning such a version sends every agent a bundle it must refuse, and leaves
 * the fleet on nothing. Runs the agents' own validation (shared/bundle): the key matches
 * the certificate, the certificate covers `configNames`, its fingerprint is the stored
 * meta's (and `target`'s, which the version list showed), it has not expired. Throws the
 * validation's code (BUNDLE_INVALID, BUNDLE_KEY_MISMATCH, BUNDLE_NAMES_MISSING,
 * BUNDLE_EXPIRED; STORE_CORRUPT when the material is missing) with a message that says
 * the rollback was refused and nothing changed.
 */
export function checkRollbackBundle(target: VersionMeta, bundle: Bundle | null, configNames: readonly string[], now: number): void {
  const refuse = (code: ErrorCode, why: string, cause?: unknown): CertfleetError =>
    new CertfleetError(code, `refusing to roll back ${target.name} to version ${target.version}: ${why}; nothing was changed`, {
      cause,
      details: { cert: target.name, version: target.version },
    });
  if (bundle === null) throw refuse(ErrorCode.StoreCorrupt, 'the store lists the version but holds no material for it');
  if (bundle.meta.fingerprint !== target.fingerprint) {
    throw refuse(ErrorCode.BundleInvalid, `the stored meta's fingerprint changed (${bundle.meta.fingerprint.slice(0, 16)}..., listed as ${target.fingerprint.slice(0, 16)}...)`);
  }
  try {
    validateBundle(bundle, { now, requiredNames: [...configNames], expectedVersion: target.version });
  } catch (err) {
    const cf = err instanceof CertfleetError ? err : new CertfleetError(ErrorCode.BundleInvalid, String(err), { cause: err });
    throw refuse(cf.code, `the stored bundle fails validation: ${cf.message}`, cf);
  }
}

/** The VERSION_REVOKED refusal of serving `version` of `name` again. */
export function revokedRefusal(name: string, version: number): CertfleetError {
  return new CertfleetError(
    ErrorCode.VersionRevoked,
    `version ${version} of ${name} was revoked at the CA; refusing to serve it again ("certfleet history ${name}" lists the versions that are not revoked)`,
    { details: { cert: name, version } },
  );
}

/**
 * Reads and writes pins. A pin never points at a revoked version: `set` refuses one
 * (VERSION_REVOKED) and `get` ignores one written before the version was revoked (a
 * rollback racing a revoke), so the work loop serves the newest version instead.
 */
export class Pins {
  constructor(private readonly store: Pick<CertStore, 'getObject' | 'putObject' | 'deleteObject'>) {}

  async get(name: string): Promise<Pin | null> {
    const v = await this.store.getObject<unknown>(pinKey(name));
    if (!isPin(v)) return null;
    return (await this.isRevoked(name, v.version)) ? null : v;
  }

  /** The pin as stored, also one that holds a revoked version (which {@link get} ignores). */
  async stored(name: string): Promise<Pin | null> {
    const v = await this.store.getObject<unknown>(pinKey(name));
    return isPin(v) ? v : null;
  }

  async set(name: string, pin: Pin): Promise<void> {
    if (await this.isRevoked(name, pin.version)) throw revokedRefusal(name, pin.version);
    await this.store.putObject(pinKey(name), pin);
  }

  private async isRevoked(name: string, version: number): Promise<boolean> {
    return (await this.store.getObject<unknown>(ObjectKey.revocation(name, version))) !== null;
  }

  /** Removes the pin; true when there was one. */
  async release(name: string): Promise<boolean> {
    return this.store.deleteObject(pinKey(name));
  }
}

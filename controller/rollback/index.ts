/**
 * Rollback pins. `certfleet rollback NAME [--to N]` moves a certificate's desired pointer
 * back to an older, still valid version and pins it there: the newer version is not
 * pushed again until the pin is released, by `certfleet release NAME` or by the next
 * issuance (the scheduler keeps renewing before the pinned version expires, and a new
 * version replaces the pin). History is never rewritten: versions stay immutable.
 *
 * Pins are store objects (`pins/<name>`), so they survive restarts and are shared by
 * every controller using the same store.
 */
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import type { CertStore } from '../store/index.js';

/** A pin as stored. */
export interface Pin {
  version: number;
  /** Version desired before the rollback. */
  from: number;
  at: string;
  by: string;
}

function pinKey(name: string): string {
  return `pins/${name}`;
}

function isPin(v: unknown): v is Pin {
  const p = v as Partial<Pin> | null;
  return typeof p?.version === 'number' && Number.isInteger(p.version) && p.version > 0;
}

/**
 * Picks the version to roll back to. Pure. `to` 0 means the version just before
 * `desired`. Refuses (NOT_FOUND / USAGE_INVALID) unknown, current, newer-than-newest
 * and expired versions with a message saying which and why.
 */
export function rollbackTarget(name: string, versions: readonly VersionMeta[], desired: number, to: number, now: number): VersionMeta {
  if (versions.length === 0) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no versions`);
  let target: VersionMeta | undefined;
  if (to === 0) {
    target = [...versions].filter((v) => v.version < desired).sort((a, b) => b.version - a.version)[0];
    if (!target) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no version before v${desired} to roll back to`);
  } else {
    target = versions.find((v) => v.version === to);
    if (!target) {
      throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no version ${to} (versions: ${versions.map((v) => v.version).join(', ')})`);
    }
    if (to === desired) throw new CertfleetError(ErrorCode.UsageInvalid, `certificate ${name} is already at version ${to}`);
  }
  if (Date.parse(target.notAfter) <= now) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `version ${target.version} of ${name} expired at ${target.notAfter}; refusing to roll back to it`);
  }
  return target;
}

/** Reads and writes pins. */
export class Pins {
  constructor(private readonly store: Pick<CertStore, 'getObject' | 'putObject' | 'deleteObject'>) {}

  async get(name: string): Promise<Pin | null> {
    const v = await this.store.getObject<unknown>(pinKey(name));
    return isPin(v) ? v : null;
  }

  async set(name: string, pin: Pin): Promise<void> {
    await this.store.putObject(pinKey(name), pin);
  }

  /** Removes the pin; true when there was one. */
  async release(name: string): Promise<boolean> {
    return this.store.deleteObject(pinKey(name));
  }
}

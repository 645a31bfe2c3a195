/**
 * Revocation marks: which stored versions were revoked at the CA, by whom, when, why.
 *
 * Versions are immutable (controller/store), so a revocation is a document beside the
 * version, `revocations/<name>/<version>`, never a change of it. Rollback and pins read
 * the marks to refuse a revoked version; `certfleet history` and `show` show them. The
 * marks are shared by every controller using the same store and survive restarts.
 */
import { isRevocationReason, type RevocationReason } from '../../shared/wire/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';

/** One version's revocation, as stored. */
export interface Revocation {
  version: number;
  /** Serial of the revoked certificate, lower-case hex (what the CA's status pages list). */
  serial: string;
  reason: RevocationReason;
  /** RFC 5280 CRLReason code sent to the CA. */
  reasonCode: number;
  /** RFC 3339: when the controller recorded it. */
  at: string;
  /** The operator who revoked it. */
  by: string;
  /** The CA answered alreadyRevoked (revoked before, by us or by someone else). */
  alreadyRevokedAtCa: boolean;
}

function isRevocation(v: unknown): v is Revocation {
  const r = v as Partial<Revocation> | null;
  return (
    typeof r?.version === 'number' &&
    Number.isInteger(r.version) &&
    r.version > 0 &&
    typeof r.at === 'string' &&
    typeof r.by === 'string' &&
    isRevocationReason(r.reason)
  );
}

/**
 * Reads and writes revocation marks. A damaged mark still counts as revoked (the key
 * exists, so the version was revoked): refusing a version by mistake is recoverable,
 * serving a revoked one is not. Errors are the store's.
 */
export class Revocations {
  constructor(private readonly store: Pick<CertStore, 'getObject' | 'putObject' | 'listObjects'>) {}

  /** The mark of `version` of `name`, or null when it was never revoked. */
  async get(name: string, version: number): Promise<Revocation | null> {
    const v = await this.store.getObject<unknown>(ObjectKey.revocation(name, version));
    if (v === null) return null;
    return isRevocation(v) ? v : damaged(version);
  }

  /** Every revoked version of `name`, by version number. */
  async all(name: string): Promise<Map<number, Revocation>> {
    const prefix = ObjectKey.revocationsOf(name);
    const out = new Map<number, Revocation>();
    for (const key of await this.store.listObjects(prefix)) {
      const version = Number(key.slice(prefix.length));
      if (!Number.isSafeInteger(version) || version <= 0) continue;
      const v = await this.store.getObject<unknown>(key);
      if (v !== null) out.set(version, isRevocation(v) ? v : damaged(version));
    }
    return out;
  }

  /** Records `rev` (replacing an earlier mark of the same version). */
  async set(name: string, rev: Revocation): Promise<void> {
    await this.store.putObject(ObjectKey.revocation(name, rev.version), rev);
  }
}

/** What an unreadable mark is read as: revoked, for an unknown reason. */
function damaged(version: number): Revocation {
  return { version, serial: '', reason: 'unspecified', reasonCode: 0, at: '', by: '', alreadyRevokedAtCa: false };
}

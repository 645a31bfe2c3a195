/**
 * The controller's record-signing keys and per-certificate generations (issue #9): every
 * desired pointer and HTTP-01 challenge it writes to NATS is signed (shared/signing), and
 * agents act only on what verifies with a key the controller gave them over mutual TLS.
 *
 * Keys live in the store like the CA, under {@link SIGNING_KEYS_OBJECT_KEY} (0600 in the
 * file store; never logged, never on NATS). A ring holds at most three keys:
 *
 * ```
 *   (first start) ──> active
 *   prepare:  + next          agents learn it at their next resync (public keys of every
 *                             key in the ring go out with GetAssignments and Enroll)
 *   activate: next -> active, active -> retiring
 *                             records are signed with the new key; the controller re-signs
 *                             every desired pointer at its next start (DesiredState.open)
 *   retire:   - retiring      agents drop it at their next resync
 * ```
 *
 * Generations: one counter per certificate under `signing/generations/<name>`, reserved
 * in blocks and persisted before a record carrying one is published, so a restarted
 * controller never reuses one.
 * Concurrency: only the leader signs (controller/lease); a new leader forgets the cache
 * ({@link RecordSigner.forgetGenerations}) and its records carry a newer epoch, which
 * agents compare first.
 */
import crypto from 'node:crypto';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import type { SigningPublicKey } from '../../shared/model/index.js';
import { generateSigningKey, publicKeyOf, signRecord, type RecordKind } from '../../shared/signing/index.js';
import type { Logger } from '../../shared/log/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';

/** Where the key ring is kept in the store. */
export const SIGNING_KEYS_OBJECT_KEY = ObjectKey.signingKeys;

export type SigningKeyState = 'active' | 'next' | 'retiring';
/** A rotation step: see the module comment. */
export type RotationPhase = 'prepare' | 'activate' | 'retire';

/** One key of the ring as stored. `privateKeyPem` is secret. */
interface StoredKey {
  keyId: string;
  privateKeyPem: string;
  state: SigningKeyState;
  createdAt: string;
}

/** A key of the ring without its secret, for listings. */
export interface SigningKeyInfo {
  keyId: string;
  publicKey: string;
  state: SigningKeyState;
  createdAt: string;
}

type ObjectStore = Pick<CertStore, 'getObject' | 'putObject'>;

function corrupt(why: string): CertfleetError {
  return new CertfleetError(ErrorCode.StoreCorrupt, `store object ${SIGNING_KEYS_OBJECT_KEY} is malformed: ${why}`, { details: { key: SIGNING_KEYS_OBJECT_KEY } });
}

/** Reads the ring; null when absent. STORE_CORRUPT when it is not a valid ring. */
async function readRing(store: ObjectStore): Promise<StoredKey[] | null> {
  const raw = await store.getObject<unknown>(SIGNING_KEYS_OBJECT_KEY);
  if (raw === null) return null;
  const keys = (raw as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw corrupt('no keys');
  const ring: StoredKey[] = [];
  for (const k of keys as unknown[]) {
    const o = k as Partial<StoredKey>;
    if (typeof o.privateKeyPem !== 'string' || (o.state !== 'active' && o.state !== 'next' && o.state !== 'retiring')) throw corrupt('a key lacks its key or state');
    let keyId: string;
    try {
      keyId = publicKeyOf(o.privateKeyPem).keyId;
    } catch {
      throw corrupt('a key is not an Ed25519 private key');
    }
    if (o.keyId !== keyId) throw corrupt('a key id does not match its key');
    ring.push({ keyId, privateKeyPem: o.privateKeyPem, state: o.state, createdAt: typeof o.createdAt === 'string' ? o.createdAt : '' });
  }
  if (ring.filter((k) => k.state === 'active').length !== 1) throw corrupt('not exactly one active key');
  return ring;
}

async function writeRing(store: ObjectStore, ring: StoredKey[]): Promise<void> {
  await store.putObject(SIGNING_KEYS_OBJECT_KEY, { keys: ring });
}

function newKey(state: SigningKeyState, now: number): StoredKey {
  const k = generateSigningKey();
  return { keyId: k.publicKey.keyId, privateKeyPem: k.privateKeyPem, state, createdAt: isoAt(now) };
}

function info(ring: readonly StoredKey[]): SigningKeyInfo[] {
  return ring.map((k) => ({ keyId: k.keyId, publicKey: publicKeyOf(k.privateKeyPem).publicKey, state: k.state, createdAt: k.createdAt }));
}

/**
 * Applies one rotation step to the ring in the store and returns the ring after it.
 * USAGE_INVALID when the step does not apply (prepare with a next key already there,
 * activate without one or while an older key is still retiring, retire with nothing
 * retiring). A running controller reads the ring at start: restart it after a step.
 */
export async function rotateSigningKeys(store: ObjectStore, phase: RotationPhase, now: number): Promise<SigningKeyInfo[]> {
  const ring = (await readRing(store)) ?? [newKey('active', now)];
  const has = (s: SigningKeyState): boolean => ring.some((k) => k.state === s);
  let next: StoredKey[];
  switch (phase) {
    case 'prepare':
      if (has('next')) throw new CertfleetError(ErrorCode.UsageInvalid, 'a next signing key is already prepared; activate it');
      next = [...ring, newKey('next', now)];
      break;
    case 'activate':
      if (!has('next')) throw new CertfleetError(ErrorCode.UsageInvalid, 'no next signing key: prepare one first');
      if (has('retiring')) throw new CertfleetError(ErrorCode.UsageInvalid, 'an older signing key is still retiring: retire it first');
      next = ring.map((k) => ({ ...k, state: k.state === 'next' ? 'active' : 'retiring' }));
      break;
    case 'retire':
      if (!has('retiring')) throw new CertfleetError(ErrorCode.UsageInvalid, 'no signing key is retiring');
      next = ring.filter((k) => k.state !== 'retiring');
      break;
  }
  await writeRing(store, next);
  return info(next);
}

/** The ring without secrets; creates it when absent. */
export async function listSigningKeys(store: ObjectStore, now: number): Promise<SigningKeyInfo[]> {
  return info(await loadOrCreateRing(store, now));
}

async function loadOrCreateRing(store: ObjectStore, now: number): Promise<StoredKey[]> {
  const ring = await readRing(store);
  if (ring !== null) return ring;
  const created = [newKey('active', now)];
  await writeRing(store, created);
  return created;
}

/**
 * How many generations {@link RecordSigner.nextGeneration} reserves with one store write:
 * an issuance of a certificate with up to three names signs its challenges and its new
 * desired pointer with one write.
 */
export const GENERATION_BLOCK = 4;

/**
 * Signs records for the fleet: the active key of the ring read at start, and the
 * per-certificate generation counters.
 */
export class RecordSigner {
  /** Per certificate: the last generation handed out and the highest one reserved in the store. */
  private readonly generations = new Map<string, { last: number; reserved: number }>();
  /** Per certificate: the reservation in progress, so the next waits for it. */
  private readonly pending = new Map<string, Promise<void>>();
  /** Ring keys parsed for signing, by key id. */
  private readonly parsed = new Map<string, crypto.KeyObject>();

  private constructor(
    private readonly store: ObjectStore,
    private readonly ring: readonly StoredKey[],
  ) {}

  /** Loads the ring, creating it (one active key) on first start. Store errors propagate. */
  static async open(store: ObjectStore, clock: Clock, log: Logger): Promise<RecordSigner> {
    const ring = await loadOrCreateRing(store, clock.now());
    const signer = new RecordSigner(store, ring);
    log.info({ active: signer.activeKeyId(), keys: ring.map((k) => `${k.keyId} (${k.state})`) }, 'record signing keys loaded');
    return signer;
  }

  /** Id of the key new records are signed with. */
  activeKeyId(): string {
    return this.active().keyId;
  }

  /** Public keys of every key in the ring: what agents must trust (sent over mTLS only). */
  publicKeys(): SigningPublicKey[] {
    return this.ring.map((k) => publicKeyOf(k.privateKeyPem));
  }

  /**
   * The next generation of `cert`'s records: above every generation handed out before
   * (persisted) and above `atLeast` (the generation of the record it replaces, which
   * another controller may have written). Durable before it is returned: the store holds
   * a reservation at or above it. Store errors propagate (the caller's work loop retries).
   *
   * Generations are reserved {@link GENERATION_BLOCK} at a time (one fsynced write, not
   * one per record: an issuance signs a challenge per name and a desired pointer). The
   * stored value is the highest generation that may have been handed out, so a restarted
   * controller or a new leader continues above it; the unused rest of a block is skipped,
   * which agents do not mind (they only compare). Calls for one certificate are
   * serialised, so two concurrent reservations never store a lower value last.
   */
  nextGeneration(cert: string, atLeast = 0): Promise<number> {
    const prev = this.pending.get(cert) ?? Promise.resolve();
    const run = prev.then(() => this.reserve(cert, atLeast));
    const settled = run.then(() => undefined, () => undefined);
    this.pending.set(cert, settled);
    void settled.then(() => {
      if (this.pending.get(cert) === settled) this.pending.delete(cert);
    });
    return run;
  }

  private async reserve(cert: string, atLeast: number): Promise<number> {
    const key = ObjectKey.signingGeneration(cert);
    let g = this.generations.get(cert);
    if (g === undefined) {
      const stored = await this.store.getObject<{ generation?: unknown }>(key);
      const last = typeof stored?.generation === 'number' && Number.isSafeInteger(stored.generation) ? stored.generation : 0;
      g = { last, reserved: last };
    }
    const next = Math.max(g.last, atLeast) + 1;
    let reserved = g.reserved;
    if (next > reserved) {
      reserved = next + GENERATION_BLOCK - 1;
      await this.store.putObject(key, { generation: reserved });
    }
    this.generations.set(cert, { last: next, reserved });
    return next;
  }

  /**
   * Forgets the generations cached in memory, so the next of each is read from the store
   * again: a controller that becomes leader continues above what the previous leader
   * persisted, not above what it cached itself.
   */
  forgetGenerations(): void {
    this.generations.clear();
  }

  /** `record` with a fresh generation of `cert`, signed with the active key. */
  async sign<T extends object & { generation?: number | undefined }>(kind: RecordKind, cert: string, record: T): Promise<T & { generation: number; keyId: string; signature: string }> {
    const generation = await this.nextGeneration(cert, record.generation ?? 0);
    const active = this.active();
    // Signed with the key parsed once: Node would parse the PEM again for every record.
    let key = this.parsed.get(active.keyId);
    if (key === undefined) {
      key = crypto.createPrivateKey(active.privateKeyPem);
      this.parsed.set(active.keyId, key);
    }
    return signRecord(kind, { ...record, generation }, { keyId: active.keyId, privateKeyPem: key });
  }

  /**
   * `record` signed with the active key as it is, its `generation` set by the caller and
   * no counter touched (no store write): for records whose order is not per certificate,
   * such as intents (controller/intents: the generation is the step of their life).
   */
  signAsIs<T extends object & { generation: number }>(kind: RecordKind, record: T): T & { keyId: string; signature: string } {
    return signRecord(kind, record, this.active());
  }

  private active(): StoredKey {
    const k = this.ring.find((x) => x.state === 'active');
    if (!k) throw new CertfleetError(ErrorCode.Internal, 'no active signing key');
    return k;
  }
}

/**
 * Signed records: how the controller signs what it tells the fleet over NATS (desired
 * pointers, HTTP-01 challenges), and the pure checks an agent applies before acting on
 * one (issue #9). NATS decides what every load balancer serves; a writer to a bucket is
 * not necessarily the controller, so an agent acts only on records the controller signed.
 *
 * Scheme: Ed25519 (node:crypto) over a detached, canonical serialisation of the record:
 *
 *   payload = "certfleet-record-v1:" + kind + "\n" + canonicalJson(record without `signature`)
 *
 * `kind` (`desired` | `challenge` | `intent`) separates the record types, so a signature
 * made for one can never be replayed as another. `keyId` and `generation` are inside the
 * signed payload. canonicalJson is RFC 8785 (JCS) for the values records hold (strings,
 * safe integers, booleans, arrays, objects): keys sorted by UTF-16 code units, no
 * whitespace, strings as JSON.stringify writes them. Records are validated by strict
 * schemas first (shared/records), so there are no unknown fields a writer could add
 * without breaking the signature.
 *
 * The key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key, so
 * it can be recomputed from the key (an agent refuses a key set whose ids do not match).
 *
 * Generations: every record the controller writes for a certificate takes the next
 * value of one per-certificate counter persisted in its store. A record whose
 * generation is below the highest an agent has accepted for that certificate is a
 * replay ({@link generationVerdict}).
 *
 * Epochs (issue #12, several controllers): a record also carries the leader lease's
 * epoch (fencing token) of the controller that wrote it, absent = 0. Records compare by
 * (epoch, generation) lexicographically, so a record a deposed leader signed after a new
 * leader took over (an older epoch) is a replay however high its generation.
 */
import crypto from 'node:crypto';
import type { SigningPublicKey } from '../model/index.js';

/**
 * What a signature covers: the record kinds never share one. `intent`: an operator call a
 * follower controller hands to the leader (controller/intents); only controllers verify it.
 */
export type RecordKind = 'desired' | 'challenge' | 'intent';

/** The fields a signed record carries. */
export interface SignatureFields {
  epoch?: number | undefined;
  generation?: number | undefined;
  keyId?: string | undefined;
  signature?: string | undefined;
}

/** Why a record's signature is not accepted. */
export type SignatureProblem = 'unsigned' | 'unknown-key' | 'bad-signature';

export type SignatureVerdict = { ok: true; keyId: string } | { ok: false; problem: SignatureProblem; message: string };

const PAYLOAD_PREFIX = 'certfleet-record-v1:';

/**
 * RFC 8785 canonical JSON for record values. Throws TypeError for values records never
 * hold (non-integer or unsafe numbers, functions, symbols, bigint): a signature over an
 * ambiguous serialisation would be worthless. `undefined` object members are left out,
 * as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new TypeError('canonicalJson: only safe integers are signed');
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map((v: unknown) => canonicalJson(v)).join(',')}]`;
  if (typeof value === 'object') {
    const o = value as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  throw new TypeError(`canonicalJson: cannot sign a ${typeof value}`);
}

/** The bytes signed for `record` of `kind` (its `signature` field left out). */
export function signingPayload(kind: RecordKind, record: object): Buffer {
  const rest: Record<string, unknown> = { ...(record as Record<string, unknown>) };
  delete rest['signature'];
  return Buffer.from(`${PAYLOAD_PREFIX}${kind}\n${canonicalJson(rest)}`, 'utf8');
}

/** The key id of a raw Ed25519 public key given as base64url. */
export function keyIdOf(publicKey: string): string {
  return crypto.createHash('sha256').update(Buffer.from(publicKey, 'base64url')).digest('hex').slice(0, 16);
}

/** A new Ed25519 key pair: PKCS#8 PEM private key (secret) and its public half. */
export function generateSigningKey(): { privateKeyPem: string; publicKey: SigningPublicKey } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
  const x = (publicKey.export({ format: 'jwk' }) as { x?: string }).x ?? '';
  return { privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey: { keyId: keyIdOf(x), publicKey: x } };
}

/** The public half of a PKCS#8 PEM Ed25519 private key. */
export function publicKeyOf(privateKeyPem: string): SigningPublicKey {
  const x = (crypto.createPublicKey(privateKeyPem).export({ format: 'jwk' }) as { x?: string }).x ?? '';
  return { keyId: keyIdOf(x), publicKey: x };
}

/**
 * Signs `record` (which must already carry its `generation`) with `key` (PEM, or the key
 * already parsed): returns a copy with `keyId` and `signature` set. Any earlier signature fields are replaced.
 */
export function signRecord<T extends object>(kind: RecordKind, record: T & { generation: number }, key: { keyId: string; privateKeyPem: string | crypto.KeyObject }): T & { generation: number; keyId: string; signature: string } {
  const unsigned: Record<string, unknown> = { ...record, keyId: key.keyId };
  delete unsigned['signature'];
  const signature = crypto.sign(null, signingPayload(kind, unsigned), key.privateKeyPem).toString('base64url');
  return { ...(unsigned as T & { generation: number; keyId: string }), signature };
}

/** A set of trusted public keys, by key id, ready for {@link verifyRecord}. */
export type TrustedKeys = ReadonlyMap<string, crypto.KeyObject>;

/**
 * Builds the trusted key map from public keys. Throws TypeError for a key that is not a
 * 32-byte Ed25519 key or whose key id is not derived from it (a mislabeled key would
 * let one key stand in for another in logs and rotation).
 */
export function trustedKeys(keys: readonly SigningPublicKey[]): TrustedKeys {
  const out = new Map<string, crypto.KeyObject>();
  for (const k of keys) {
    if (!/^[A-Za-z0-9_-]{43}$/.test(k.publicKey)) throw new TypeError(`signing key ${k.keyId}: not a base64url Ed25519 public key`);
    if (keyIdOf(k.publicKey) !== k.keyId) throw new TypeError(`signing key ${k.keyId}: key id does not match the key`);
    out.set(k.keyId, crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: k.publicKey }, format: 'jwk' }));
  }
  return out;
}

/**
 * Checks the signature of `record`: `unsigned` when a signature field or the
 * generation is missing, `unknown-key` when `keyId` is not among `keys`,
 * `bad-signature` when it does not verify. Never throws.
 */
export function verifyRecord(kind: RecordKind, record: object & SignatureFields, keys: TrustedKeys): SignatureVerdict {
  const { keyId, signature, generation } = record;
  if (typeof keyId !== 'string' || typeof signature !== 'string' || typeof generation !== 'number') {
    return { ok: false, problem: 'unsigned', message: 'record is not signed' };
  }
  const key = keys.get(keyId);
  if (key === undefined) return { ok: false, problem: 'unknown-key', message: `record signed with unknown key ${keyId.replace(/[^0-9a-f]/g, '?')}` };
  let valid = false;
  try {
    valid = crypto.verify(null, signingPayload(kind, record), key, Buffer.from(signature, 'base64url'));
  } catch {
    valid = false;
  }
  return valid ? { ok: true, keyId } : { ok: false, problem: 'bad-signature', message: `signature does not verify with key ${keyId}` };
}

/**
 * Where a record stands in its certificate's history: the leader epoch that wrote it
 * (0 before there were leases) and its generation. Compared lexicographically.
 */
export interface RecordStamp {
  epoch: number;
  generation: number;
}

/** The stamp of a record (absent fields count as 0). */
export function stampOf(record: { epoch?: number | undefined; generation?: number | undefined }): RecordStamp {
  return { epoch: record.epoch ?? 0, generation: record.generation ?? 0 };
}

/** A bare number is a generation of epoch 0 (what was stored before epochs existed). */
function asStamp(s: number | RecordStamp): RecordStamp {
  return typeof s === 'number' ? { epoch: 0, generation: s } : s;
}

/**
 * How a record's stamp compares with the highest accepted for its certificate (0 or
 * {epoch 0, generation 0}: none yet), by (epoch, generation) lexicographically: `older`
 * records are replays and must be refused (an older epoch is refused whatever its
 * generation: a deposed leader's write); `same` is the record already accepted (seen
 * again over another path, or rewritten unchanged).
 */
export function generationVerdict(record: number | RecordStamp, highest: number | RecordStamp): 'newer' | 'same' | 'older' {
  const r = asStamp(record);
  const h = asStamp(highest);
  if (r.epoch !== h.epoch) return r.epoch > h.epoch ? 'newer' : 'older';
  if (r.generation > h.generation) return 'newer';
  return r.generation === h.generation ? 'same' : 'older';
}

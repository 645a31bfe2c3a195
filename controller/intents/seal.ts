/**
 * Results sealed for the one controller that asked.
 *
 * A result can be a secret (an enrolment token from `token create`) and must not sit on
 * NATS readable by anyone who can read the bucket. The follower puts a fresh X25519 public
 * key in its intent (`replyKey`) and keeps the private half in memory for that one call;
 * the leader seals the result to it: ephemeral X25519, HKDF-SHA256 (salt: the intent id),
 * AES-256-GCM with the intent id as associated data, so a sealed result cannot be moved to
 * another intent. Wire form: base64url(ephemeral public key 32 | iv 12 | tag 16 | ciphertext).
 */
import crypto from 'node:crypto';

const INFO = Buffer.from('certfleet-intent-result-v1');

/** A reply key pair for one call: `publicKey` (base64url raw X25519) goes into the intent. */
export interface ReplyKey {
  publicKey: string;
  privateKey: crypto.KeyObject;
}

export function newReplyKey(): ReplyKey {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('x25519');
  return { publicKey: rawPublic(publicKey), privateKey };
}

function rawPublic(key: crypto.KeyObject): string {
  return (key.export({ format: 'jwk' }) as { x?: string }).x ?? '';
}

function publicFromRaw(x: string): crypto.KeyObject {
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
}

function aesKey(secret: Buffer, id: string): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', secret, Buffer.from(id), INFO, 32));
}

/** Seals `plaintext` to `replyKey` for intent `id`. Throws TypeError for a malformed reply key. */
export function seal(plaintext: string, replyKey: string, id: string): string {
  const eph = crypto.generateKeyPairSync('x25519');
  const secret = crypto.diffieHellman({ privateKey: eph.privateKey, publicKey: publicFromRaw(replyKey) });
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv('aes-256-gcm', aesKey(secret, id), iv);
  cipher.setAAD(Buffer.from(id));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return Buffer.concat([Buffer.from(rawPublic(eph.publicKey), 'base64url'), iv, cipher.getAuthTag(), ct]).toString('base64url');
}

/** Opens a sealed result of intent `id`; throws when it was not sealed to `key` for `id`. */
export function unseal(sealed: string, key: ReplyKey, id: string): string {
  const buf = Buffer.from(sealed, 'base64url');
  if (buf.length < 60) throw new TypeError('sealed result too short');
  const epk = publicFromRaw(buf.subarray(0, 32).toString('base64url'));
  const secret = crypto.diffieHellman({ privateKey: key.privateKey, publicKey: epk });
  const decipher = crypto.createDecipheriv('aes-256-gcm', aesKey(secret, id), buf.subarray(32, 44));
  decipher.setAAD(Buffer.from(id));
  decipher.setAuthTag(buf.subarray(44, 60));
  return Buffer.concat([decipher.update(buf.subarray(60)), decipher.final()]).toString('utf8');
}

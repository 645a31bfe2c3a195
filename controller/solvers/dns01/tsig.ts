/**
 * TSIG (RFC 8945): HMAC signatures on DNS messages with a shared secret.
 *
 * Request: MAC = HMAC(secret, message-without-TSIG || TSIG variables), then the TSIG
 * record is appended and ARCOUNT incremented (§4.3.1). Response: MAC = HMAC(secret,
 * request-MAC-length || request-MAC || response-without-TSIG (ARCOUNT decremented, ID set
 * back to the TSIG's original ID) || TSIG variables) (§4.3.2, §5.3). The TSIG variables
 * are the key name and algorithm in canonical (lower-case, uncompressed) form, class ANY,
 * TTL 0, time signed (48 bits), fudge, error and other data — not the MAC size, MAC or
 * original ID.
 *
 * Pure: the time is passed in, nothing is sent.
 */
import crypto from 'node:crypto';
import { MessageWriter, RRClass, RRType, WireError, encodeName, parseMessage, readName, sameName, canonicalName } from './wire.js';

/** Algorithms we sign with. hmac-md5 and hmac-sha1 are deliberately absent (RFC 8945 §6). */
export const TSIG_ALGORITHMS = {
  'hmac-sha256': 'sha256',
  'hmac-sha384': 'sha384',
  'hmac-sha512': 'sha512',
} as const;

export type TsigAlgorithm = keyof typeof TSIG_ALGORITHMS;

/** A TSIG key. `secret` is the decoded key bytes; never log it. */
export interface TsigKey {
  /** The key's name as the server knows it, e.g. `certfleet-key.` */
  name: string;
  algorithm: TsigAlgorithm;
  secret: Buffer;
}

/** Default fudge (allowed clock skew), seconds — what BIND and nsupdate use. */
export const DEFAULT_FUDGE = 300;

/** The TSIG variables of §4.3.3, canonical form. */
function variables(key: TsigKey, timeSigned: number, fudge: number, error: number, other: Buffer): Buffer {
  const w = new MessageWriter();
  w.bytes(encodeName(key.name, true)).u16(RRClass.ANY).u32(0);
  w.bytes(encodeName(key.algorithm, true)).bytes(time48(timeSigned)).u16(fudge).u16(error).u16(other.length).bytes(other);
  return w.toBuffer();
}

function time48(seconds: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUIntBE(Math.floor(seconds), 0, 6);
  return b;
}

function hmac(key: TsigKey, parts: Buffer[]): Buffer {
  const h = crypto.createHmac(TSIG_ALGORITHMS[key.algorithm], key.secret);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** A signed message and the MAC the response will be chained to. */
export interface SignedMessage {
  message: Buffer;
  mac: Buffer;
}

/**
 * Signs `message` (a complete message without a TSIG record) at `timeSigned` (seconds
 * since the epoch). Returns the message with the TSIG record appended.
 */
export function signMessage(message: Buffer, key: TsigKey, timeSigned: number, fudge = DEFAULT_FUDGE): SignedMessage {
  if (message.length < 12) throw new WireError('message shorter than a header');
  const mac = hmac(key, [message, variables(key, timeSigned, fudge, 0, Buffer.alloc(0))]);
  const id = message.readUInt16BE(0);
  const rdata = new MessageWriter()
    .bytes(encodeName(key.algorithm, true))
    .bytes(time48(timeSigned))
    .u16(fudge)
    .u16(mac.length)
    .bytes(mac)
    .u16(id)
    .u16(0)
    .u16(0)
    .toBuffer();
  const rr = new MessageWriter().record({ name: canonicalName(key.name), type: RRType.TSIG, klass: RRClass.ANY, ttl: 0, rdata }, false).toBuffer();
  const out = Buffer.concat([message, rr]);
  out.writeUInt16BE(message.readUInt16BE(10) + 1, 10);
  return { message: out, mac };
}

/** The TSIG record of a message, decoded. */
export interface TsigRecord {
  keyName: string;
  algorithm: string;
  timeSigned: number;
  fudge: number;
  mac: Buffer;
  originalId: number;
  /** 0, or a TSIG error such as 16 BADSIG, 17 BADKEY, 18 BADTIME. */
  error: number;
  other: Buffer;
  /** Offset of the TSIG record in the message (where the unsigned message ends). */
  offset: number;
}

/** The TSIG record of `raw` (which must be the last additional record), or null. */
export function readTsig(raw: Buffer): TsigRecord | null {
  const msg = parseMessage(raw);
  const last = msg.additional[msg.additional.length - 1];
  if (!last || last.type !== RRType.TSIG) return null;
  const { name: algorithm, next } = readName(raw, last.rdataOffset);
  const end = last.rdataOffset + last.rdata.length;
  let pos = next;
  const need = (n: number): void => {
    if (pos + n > end) throw new WireError('TSIG record truncated');
  };
  need(10);
  const timeSigned = raw.readUIntBE(pos, 6);
  const fudge = raw.readUInt16BE(pos + 6);
  const macSize = raw.readUInt16BE(pos + 8);
  pos += 10;
  need(macSize + 6);
  const mac = raw.subarray(pos, pos + macSize);
  pos += macSize;
  const originalId = raw.readUInt16BE(pos);
  const error = raw.readUInt16BE(pos + 2);
  const otherLen = raw.readUInt16BE(pos + 4);
  pos += 6;
  need(otherLen);
  const other = raw.subarray(pos, pos + otherLen);
  return { keyName: last.name, algorithm, timeSigned, fudge, mac, originalId, error, other, offset: last.offset };
}

/** Why a response's signature was not accepted. */
export type TsigVerdict =
  | { ok: true }
  | { ok: false; reason: 'unsigned' | 'wrong-key' | 'bad-mac' | 'bad-time' | 'server-error'; error?: number; detail: string };

/**
 * Checks the signature of a response to a request signed with `key` whose MAC was
 * `requestMac`, at `nowSeconds`. A TSIG error from the server (BADSIG, BADKEY, BADTIME:
 * the server did not accept *our* signature) is `server-error` with the code in `error`.
 */
export function verifyResponse(raw: Buffer, key: TsigKey, requestMac: Buffer, nowSeconds: number): TsigVerdict {
  const tsig = readTsig(raw);
  if (tsig === null) return { ok: false, reason: 'unsigned', detail: 'the response carries no TSIG record' };
  if (tsig.error !== 0) return { ok: false, reason: 'server-error', error: tsig.error, detail: `the server answered with TSIG error ${tsig.error}` };
  if (!sameName(tsig.keyName, key.name) || !sameName(tsig.algorithm, key.algorithm)) {
    return { ok: false, reason: 'wrong-key', detail: `signed with ${tsig.keyName} ${tsig.algorithm}, expected ${key.name} ${key.algorithm}` };
  }
  const unsigned = Buffer.from(raw.subarray(0, tsig.offset));
  unsigned.writeUInt16BE(tsig.originalId, 0);
  unsigned.writeUInt16BE(unsigned.readUInt16BE(10) - 1, 10);
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(requestMac.length);
  const expected = hmac(key, [prefix, requestMac, unsigned, variables(key, tsig.timeSigned, tsig.fudge, tsig.error, tsig.other)]);
  // Truncated MACs (RFC 8945 §5.2.2.1) are not accepted: servers we talk to send full ones.
  if (tsig.mac.length !== expected.length || !crypto.timingSafeEqual(tsig.mac, expected)) {
    return { ok: false, reason: 'bad-mac', detail: 'the response MAC does not match (wrong secret or altered message)' };
  }
  if (Math.abs(nowSeconds - tsig.timeSigned) > tsig.fudge) {
    return { ok: false, reason: 'bad-time', detail: `the response was signed at ${tsig.timeSigned}, ${Math.round(nowSeconds - tsig.timeSigned)} s from now (fudge ${tsig.fudge} s)` };
  }
  return { ok: true };
}

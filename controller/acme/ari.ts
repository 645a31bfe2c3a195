/**
 * ACME Renewal Information (RFC 9773), the pure parts: the certificate identifier, the
 * RenewalInfo object and the next time to ask again. No I/O; the client (client.ts)
 * does the GET and hands the answer here.
 *
 * The identifier (§4.1) is `base64url(AKI keyIdentifier) "." base64url(serial)`, both
 * unpadded, where the serial is the DER INTEGER's content bytes exactly as the
 * certificate carries them — so a serial whose first byte has the high bit set keeps
 * its leading 0x00 (RFC example: 00:87:65:43:21 → "AIdlQyE"). Reading the bytes out of
 * the certificate, instead of re-encoding a number, makes that automatic. Node's
 * X509Certificate exposes neither the raw serial nor the AKI, hence the small DER
 * walker below.
 */
import { X509Certificate } from 'node:crypto';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { parseRetryAfterMs } from './problem.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/**
 * Bounds certfleet puts on a renewalInfo Retry-After (RFC 9773 §4.3.2: clients MUST set
 * "reasonable limits"; its example is 1 min – 1 day). certfleet polls no more often
 * than hourly and at least weekly, as its issue asks: a fleet of thousands of
 * certificates must not poll every minute, and a CA saying "ask me in a month" is
 * still asked weekly.
 */
export const ARI_MIN_RETRY_MS = HOUR_MS;
export const ARI_MAX_RETRY_MS = 7 * DAY_MS;
/** RFC 9773 §4.3.3: after a long-term error (absent Retry-After, bad object, 4xx, refused) ask again after six hours. */
export const ARI_ERROR_RETRY_MS = 6 * HOUR_MS;
/** Each delay is moved by up to this fraction, so certificates issued together do not poll together. */
export const ARI_JITTER_FRACTION = 0.1;

/** A suggested renewal window, epoch milliseconds; `start < end` always. */
export interface RenewalWindow {
  start: number;
  end: number;
}

/** What the CA suggests for one certificate (RFC 9773 §4.2), and when to ask again. */
export interface RenewalInfo {
  window: RenewalWindow;
  /** The CA's page explaining the window (e.g. a mass-revocation notice); show it to operators. */
  explanationUrl?: string;
  /** When to fetch this RenewalInfo again: Retry-After clamped and jittered (see {@link ariRetryAfterMs}). */
  retryAfterMs: number;
}

/** Unpadded base64url, as RFC 9773 §4.1 requires for both halves. */
export function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** The RFC 9773 identifier from its two byte strings (AKI keyIdentifier, serial content bytes). */
export function ariCertIdFromParts(keyIdentifier: Uint8Array, serialContent: Uint8Array): string {
  return `${base64url(keyIdentifier)}.${base64url(serialContent)}`;
}

/** True when `id` has the shape of an RFC 9773 identifier (two non-empty base64url parts). */
export function isAriCertId(id: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(id);
}

/**
 * The RFC 9773 §4.1 certificate identifier of `cert` (PEM — the first certificate
 * in it — or DER). Rejects with BUNDLE_INVALID when the input is not a certificate or
 * has no Authority Key Identifier with a keyIdentifier (RFC 9773 assumes RFC 5280
 * certificates, which always carry one when issued by a CA).
 */
export function ariCertId(cert: string | Uint8Array): string {
  let der: Buffer;
  try {
    der = Buffer.from(new X509Certificate(typeof cert === 'string' ? cert : Buffer.from(cert)).raw);
  } catch (err) {
    throw new CertfleetError(ErrorCode.BundleInvalid, 'cannot compute the ARI identifier: not a readable certificate', { cause: err });
  }
  const { serial, keyIdentifier } = readSerialAndAki(der);
  if (keyIdentifier === undefined) {
    throw new CertfleetError(ErrorCode.BundleInvalid, 'cannot compute the ARI identifier: certificate has no Authority Key Identifier keyIdentifier', {
      details: { reason: 'noAuthorityKeyIdentifier' },
    });
  }
  return ariCertIdFromParts(keyIdentifier, serial);
}

/**
 * Delay until the next renewalInfo fetch from a Retry-After header value: clamped to
 * [`min`, `max`], then moved by up to {@link ARI_JITTER_FRACTION} of itself — later,
 * or earlier when later would pass `max` — with `random()` in [0, 1). An absent or
 * unreadable header is a long-term error (RFC 9773 §4.3.3): {@link ARI_ERROR_RETRY_MS},
 * jittered the same way.
 */
export function ariRetryAfterMs(
  header: unknown,
  nowMs: number,
  random: () => number,
  bounds: { min: number; max: number } = { min: ARI_MIN_RETRY_MS, max: ARI_MAX_RETRY_MS },
): number {
  const hinted = parseRetryAfterMs(header, nowMs);
  const base = hinted === undefined ? ARI_ERROR_RETRY_MS : Math.min(bounds.max, Math.max(bounds.min, hinted));
  return jitter(base, random, bounds);
}

/** `base` moved by up to ARI_JITTER_FRACTION of itself, staying within bounds. */
export function jitter(base: number, random: () => number, bounds: { min: number; max: number } = { min: ARI_MIN_RETRY_MS, max: ARI_MAX_RETRY_MS }): number {
  const offset = Math.floor(Math.min(Math.max(random(), 0), 1) * base * ARI_JITTER_FRACTION);
  const later = base + offset;
  return later <= bounds.max ? later : Math.max(bounds.min, base - offset);
}

/**
 * Reads a RenewalInfo object (RFC 9773 §4.2). Rejects with ACME_PROBLEM (retryable,
 * retryAfterMs six hours jittered, `details.reason = 'invalidRenewalInfo'`) when
 * `suggestedWindow` is missing, a timestamp is not RFC 3339, or `end` does not follow
 * `start` — §4.2 says to treat such an answer as no answer.
 */
export function parseRenewalInfo(data: unknown, retryAfterMs: number, errorRetryMs: number, url?: string): RenewalInfo {
  const invalid = (why: string): CertfleetError =>
    new CertfleetError(ErrorCode.AcmeProblem, `invalid renewalInfo from the CA: ${why}`, {
      retryable: true,
      retryAfterMs: errorRetryMs,
      details: { reason: 'invalidRenewalInfo', url },
    });
  const obj = typeof data === 'object' && data !== null ? (data as Record<string, unknown>) : undefined;
  const win = obj?.['suggestedWindow'];
  if (typeof win !== 'object' || win === null) throw invalid('no suggestedWindow');
  const start = rfc3339(((win as Record<string, unknown>)['start']));
  const end = rfc3339(((win as Record<string, unknown>)['end']));
  if (start === undefined || end === undefined) throw invalid('suggestedWindow start/end is not an RFC 3339 timestamp');
  if (end <= start) throw invalid('suggestedWindow end does not follow start');
  const info: RenewalInfo = { window: { start, end }, retryAfterMs };
  const explanation = obj?.['explanationURL'];
  if (typeof explanation === 'string' && explanation !== '') info.explanationUrl = explanation;
  return info;
}

// RFC 3339 date-time: full date, 'T', time, optional fraction, 'Z' or an offset.
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function rfc3339(v: unknown): number | undefined {
  if (typeof v !== 'string' || !RFC3339.test(v)) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

// --- a minimal DER reader: just enough of RFC 5280 to find the serial and the AKI ---

interface Tlv {
  tag: number;
  /** Content bytes. */
  value: Buffer;
  /** Offset just past this element. */
  end: number;
}

const TAG_SEQUENCE = 0x30;
const TAG_INTEGER = 0x02;
const TAG_OID = 0x06;
const TAG_BOOLEAN = 0x01;
const TAG_OCTET_STRING = 0x04;
const TAG_VERSION = 0xa0; // [0] EXPLICIT Version
const TAG_EXTENSIONS = 0xa3; // [3] EXPLICIT Extensions
const TAG_KEY_IDENTIFIER = 0x80; // [0] IMPLICIT KeyIdentifier inside AuthorityKeyIdentifier
/** id-ce-authorityKeyIdentifier, 2.5.29.35, DER content bytes. */
const OID_AKI = Buffer.from([0x55, 0x1d, 0x23]);

function readTlv(buf: Buffer, offset: number): Tlv {
  const tag = buf[offset];
  let len = buf[offset + 1];
  if (tag === undefined || len === undefined) throw malformed('truncated element');
  let pos = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw malformed('unsupported length');
    len = 0;
    for (let i = 0; i < n; i++) {
      const b = buf[pos + i];
      if (b === undefined) throw malformed('truncated length');
      len = len * 256 + b;
    }
    pos += n;
  }
  const end = pos + len;
  if (end > buf.length) throw malformed('element runs past the end');
  return { tag, value: buf.subarray(pos, end), end };
}

function children(content: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let off = 0; off < content.length; ) {
    const t = readTlv(content, off);
    out.push(t);
    off = t.end;
  }
  return out;
}

function malformed(why: string): CertfleetError {
  return new CertfleetError(ErrorCode.BundleInvalid, `cannot compute the ARI identifier: malformed certificate DER (${why})`);
}

/** The serial's content bytes and the AKI keyIdentifier (when present) of a DER certificate. */
function readSerialAndAki(der: Buffer): { serial: Buffer; keyIdentifier: Buffer | undefined } {
  const cert = readTlv(der, 0);
  if (cert.tag !== TAG_SEQUENCE) throw malformed('certificate is not a SEQUENCE');
  const tbs = children(cert.value)[0];
  if (tbs?.tag !== TAG_SEQUENCE) throw malformed('tbsCertificate is not a SEQUENCE');
  const fields = children(tbs.value);
  const serialField = fields[0]?.tag === TAG_VERSION ? fields[1] : fields[0];
  if (serialField?.tag !== TAG_INTEGER || serialField.value.length === 0) throw malformed('no serialNumber INTEGER');
  const extsWrapper = fields.find((f) => f.tag === TAG_EXTENSIONS);
  let keyIdentifier: Buffer | undefined;
  if (extsWrapper !== undefined) {
    const exts = children(extsWrapper.value)[0];
    if (exts?.tag !== TAG_SEQUENCE) throw malformed('extensions are not a SEQUENCE');
    for (const ext of children(exts.value)) {
      const [oid, second, third] = children(ext.value);
      if (oid?.tag !== TAG_OID || !oid.value.equals(OID_AKI)) continue;
      const octets = second?.tag === TAG_BOOLEAN ? third : second;
      if (octets?.tag !== TAG_OCTET_STRING) throw malformed('AKI extnValue is not an OCTET STRING');
      const aki = readTlv(octets.value, 0);
      if (aki.tag !== TAG_SEQUENCE) throw malformed('AuthorityKeyIdentifier is not a SEQUENCE');
      keyIdentifier = children(aki.value).find((c) => c.tag === TAG_KEY_IDENTIFIER)?.value;
    }
  }
  return { serial: Buffer.from(serialField.value), keyIdentifier: keyIdentifier === undefined ? undefined : Buffer.from(keyIdentifier) };
}

/**
 * Certificate inspection, shared by the controller (checking what the CA issued) and the
 * agent (checking what it is about to install). Only node:crypto: the agent stays light.
 *
 * Conventions every caller relies on: fingerprints are the lower-case hex SHA-256 of the
 * DER encoding with no separators; serials are lower-case hex; DNS names are lower case
 * without a trailing dot.
 */
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import type { KeyType } from '../model/index.js';

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Facts of one parsed certificate. */
export interface CertificateInfo {
  /** SHA-256 of the DER, lower-case hex, no colons. */
  fingerprint: string;
  /** Serial number, lower-case hex (as node:crypto prints it, leading zeros kept). */
  serial: string;
  /** DNS subjectAltNames, lower case, in certificate order. IP and other SAN kinds are left out. */
  names: string[];
  notBefore: Date;
  notAfter: Date;
  /** Issuer distinguished name, as node:crypto prints it (one RDN per line). */
  issuer: string;
  subject: string;
  /** The parsed certificate, for checks this module does not wrap. */
  x509: X509Certificate;
}

/**
 * Splits a PEM text into its CERTIFICATE blocks, in order, each ending with a newline.
 * Anything between blocks (comments, `Bag Attributes`, keys) is ignored; an empty or
 * certificate-less text gives an empty array. Never throws.
 */
export function splitPemChain(pem: string): string[] {
  return (pem.match(PEM_CERT) ?? []).map((block) => `${block.replace(/\r\n/g, '\n')}\n`);
}

/** Lower-case, no trailing dot: the one form names are compared in. */
export function normalizeName(name: string): string {
  const lower = name.trim().toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Parses the first certificate of `pem`.
 * Throws CertfleetError BUNDLE_INVALID when there is no certificate or it cannot be parsed.
 */
export function parseCertificate(pem: string): CertificateInfo {
  const x509 = toX509(pem);
  return {
    fingerprint: createHash('sha256').update(x509.raw).digest('hex'),
    serial: x509.serialNumber.toLowerCase(),
    names: dnsNamesOf(x509),
    notBefore: new Date(x509.validFrom),
    notAfter: new Date(x509.validTo),
    issuer: x509.issuer,
    subject: x509.subject,
    x509,
  };
}

/**
 * Fingerprint (lower-case hex SHA-256 of the DER) of a certificate given as PEM text, a
 * PEM buffer, or DER bytes. For PEM, the first certificate counts. DER bytes are hashed
 * as given, without parsing. Throws BUNDLE_INVALID for PEM without a parsable certificate.
 */
export function fingerprintOf(pemOrDer: string | Uint8Array): string {
  if (typeof pemOrDer === 'string') return sha256Hex(toX509(pemOrDer).raw);
  const text = Buffer.from(pemOrDer.buffer, pemOrDer.byteOffset, pemOrDer.byteLength);
  if (text.subarray(0, 64).toString('latin1').includes('-----BEGIN')) return sha256Hex(toX509(text.toString('utf8')).raw);
  return sha256Hex(text);
}

/**
 * True when the private key `keyPem` (PKCS#8, or PKCS#1/SEC1) is the partner of the
 * public key in `certPem`. Works for every key type node:crypto reads (ECDSA, RSA, Ed25519):
 * OpenSSL compares the public halves.
 * Throws BUNDLE_INVALID when the key or the certificate cannot be parsed, so a caller can
 * tell "garbage" from "a real key that belongs to another certificate".
 */
export function keyMatchesCertificate(keyPem: string, certPem: string): boolean {
  return keyMatchesX509(parsePrivateKey(keyPem), toX509(certPem));
}

/**
 * {@link keyMatchesCertificate} for a private key and a certificate already parsed (throws
 * for a public key). OpenSSL's X509_check_private_key (~1 µs): exporting both public keys
 * as DER to compare them cost ~0.7 ms of the thread per check (issue #13).
 */
export function keyMatchesX509(key: KeyObject, cert: X509Certificate): boolean {
  return cert.checkPrivateKey(key);
}

/**
 * The certfleet key type of a private key (`ecdsa-p256`, `rsa-2048`, ...), or null when it
 * is one certfleet does not issue (Ed25519, P-521, an odd RSA size).
 * Throws BUNDLE_INVALID when the key cannot be parsed.
 */
export function keyTypeOf(keyPem: string): KeyType | null {
  return keyTypeOfKey(parsePrivateKey(keyPem));
}

/** {@link keyTypeOf} for a key already parsed. */
export function keyTypeOfKey(key: KeyObject): KeyType | null {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return 'ecdsa-p256';
    if (details.namedCurve === 'secp384r1') return 'ecdsa-p384';
    return null;
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength;
    if (bits === 2048) return 'rsa-2048';
    if (bits === 3072) return 'rsa-3072';
    if (bits === 4096) return 'rsa-4096';
  }
  return null;
}

/**
 * Parses a private key (PKCS#8, or PKCS#1/SEC1 PEM). Throws BUNDLE_INVALID when it cannot
 * be parsed (the message never carries key bytes).
 */
export function parsePrivateKey(keyPem: string): KeyObject {
  try {
    return createPrivateKey({ key: keyPem, format: 'pem' });
  } catch (err) {
    // The node error text never contains key bytes, but keep the message generic anyway.
    throw new CertfleetError(ErrorCode.BundleInvalid, 'private key cannot be parsed', { cause: err });
  }
}

/**
 * The names of `required` that `certNames` do not cover, normalised (lower case, no
 * trailing dot), in the order first required, without duplicates. A wildcard
 * `*.example.com` covers exactly one extra label (`a.example.com`), not the apex and not
 * `a.b.example.com`; a required wildcard is covered only by the same wildcard. Pure.
 */
export function namesCovered(required: string[], certNames: string[]): string[] {
  const have = new Set(certNames.map(normalizeName));
  const missing: string[] = [];
  for (const raw of required) {
    const name = normalizeName(raw);
    if (missing.includes(name)) continue;
    if (have.has(name)) continue;
    const dot = name.indexOf('.');
    const wildcard = dot > 0 && !name.startsWith('*.') ? `*${name.slice(dot)}` : undefined;
    if (wildcard !== undefined && have.has(wildcard)) continue;
    missing.push(name);
  }
  return missing;
}

/**
 * Problems with the order of `leafPem` followed by the certificates of `chainPem`: each
 * must be issued by the next (names, key identifiers and key usage agree, and the
 * signature verifies with the next one's key), and every chain certificate must be a CA.
 * Trust in the last certificate is not judged: agents do not carry the CA's roots.
 * Returns one sentence per problem; an empty array means the order is right (an empty
 * chain has nothing to check). Unparsable certificates are reported, not thrown.
 */
export function chainProblems(leafPem: string, chainPem: string, leaf?: X509Certificate): string[] {
  const leafBlocks = leaf === undefined ? splitPemChain(leafPem).slice(0, 1) : [];
  const blocks = [...leafBlocks, ...splitPemChain(chainPem)];
  if (blocks.length === 0 && leaf === undefined) return ['no leaf certificate'];
  const problems: string[] = [];
  const parsed: (X509Certificate | undefined)[] = blocks.map((block, i) => {
    const at = leaf === undefined ? i : i + 1;
    try {
      // Chain certificates are few and shared by many leaves (one intermediate per CA):
      // parsed once, not once per certificate checked.
      return at === 0 ? new X509Certificate(block) : chainCertificate(block);
    } catch {
      problems.push(`${label(at)} cannot be parsed`);
      return undefined;
    }
  });
  const certs = leaf === undefined ? parsed : [leaf, ...parsed];
  for (let i = 0; i < certs.length; i++) {
    const cert = certs[i];
    const issuer = certs[i + 1];
    if (cert === undefined) continue;
    if (i > 0 && !cert.ca) problems.push(`${label(i)} (${oneLine(cert.subject)}) is not a CA certificate`);
    if (issuer === undefined) continue;
    if (!cert.checkIssued(issuer)) {
      problems.push(`${label(i)} (${oneLine(cert.subject)}) is not issued by ${label(i + 1)} (${oneLine(issuer.subject)})`);
    } else if (!cert.verify(issuer.publicKey)) {
      problems.push(`${label(i)} signature does not verify with the key of ${label(i + 1)}`);
    }
  }
  return problems;
}

/** Chain certificates parsed so far, by PEM block; bounded (oldest forgotten first). */
const chainCache = new Map<string, X509Certificate>();
const CHAIN_CACHE_SIZE = 32;

function chainCertificate(block: string): X509Certificate {
  const hit = chainCache.get(block);
  if (hit !== undefined) return hit;
  const cert = new X509Certificate(block);
  chainCache.set(block, cert);
  if (chainCache.size > CHAIN_CACHE_SIZE) {
    const oldest = chainCache.keys().next().value;
    if (oldest !== undefined) chainCache.delete(oldest);
  }
  return cert;
}

function label(i: number): string {
  return i === 0 ? 'leaf' : `chain certificate ${i}`;
}

function oneLine(dn: string): string {
  return dn.split('\n').join(', ');
}

function toX509(pem: string): X509Certificate {
  const first = splitPemChain(pem)[0];
  if (first === undefined) throw new CertfleetError(ErrorCode.BundleInvalid, 'no PEM certificate found');
  try {
    return new X509Certificate(first);
  } catch (err) {
    throw new CertfleetError(ErrorCode.BundleInvalid, 'certificate cannot be parsed', { cause: err });
  }
}

function dnsNamesOf(x509: X509Certificate): string[] {
  const san = x509.subjectAltName;
  if (san === undefined) return [];
  // Node prints "DNS:a.example.com, DNS:b.example.com, IP Address:..."; a DNS name cannot
  // contain ", " so splitting on it is safe (node quotes entries that would be ambiguous).
  return san
    .split(', ')
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => normalizeName(entry.slice(4)));
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Bundle validation: may this certificate version be installed (or stored) now?
 *
 * Pure: the bundle and `now` go in, a verdict comes out (nothing on success, a
 * CertfleetError on failure). The agent runs it before touching disk; the controller can
 * run it on what the CA returned before storing it.
 *
 * Checks, in order (the first failure is thrown):
 *   1. BUNDLE_INVALID       name, version or fingerprint fields malformed; the leaf, chain
 *                           or key unparsable; certPem not exactly one certificate; leaf
 *                           fingerprint or key type different from meta; chain out of order
 *   2. BUNDLE_KEY_MISMATCH  the private key does not belong to the leaf
 *   3. BUNDLE_NAMES_MISSING the leaf does not cover the required names (listed in the message)
 *   4. BUNDLE_EXPIRED       notAfter <= now, or notBefore later than now + clock skew
 */
import type { KeyObject } from 'node:crypto';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { CERT_NAME_PATTERN } from '../wire/index.js';
import type { Bundle } from '../model/index.js';
import { chainProblems, keyMatchesX509, keyTypeOfKey, namesCovered, parseCertificate, parsePrivateKey, splitPemChain, type CertificateInfo } from '../pki/index.js';

export interface ValidateOptions {
  /** Milliseconds since the epoch (from a Clock). */
  now: number;
  /** Names the certificate must cover; default `meta.names`. */
  requiredNames?: string[];
  /** When given, `meta.version` must equal it (the version that was asked for). */
  expectedVersion?: number;
  /**
   * How far in the future notBefore may be before the bundle counts as not yet valid;
   * default 5 minutes, so a node whose clock lags the CA's a little still installs a
   * freshly issued certificate. Never applied to notAfter.
   */
  clockSkewMs?: number;
  /**
   * `parseCertificate(bundle.certPem)` when the caller has it already (the controller
   * parsed it to build `meta`): not parsed again. Must be of this very certPem.
   */
  leaf?: CertificateInfo;
  /** `bundle.keyPem` already parsed, when the caller has it: not parsed again. Must be of this very keyPem. */
  key?: KeyObject;
}

/** Default tolerance for a notBefore slightly in the future. */
export const DEFAULT_CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Certificate names become directory names on agents, so a bundle must carry one that
 * follows the project's rule (shared/wire CERT_NAME_PATTERN: lower-case letters,
 * digits and '-', at most 63 characters).
 */
export function isValidCertName(name: string): boolean {
  return CERT_NAME_PATTERN.test(name);
}

/**
 * Throws a CertfleetError (codes above) when `bundle` must not be installed at `opts.now`;
 * returns nothing when it may. Error `details` carry the cert name, version and the
 * specific facts (missing names, dates, chain problems); never key material.
 */
export function validateBundle(bundle: Bundle, opts: ValidateOptions): void {
  const { meta } = bundle;
  const where = { cert: meta.name, version: meta.version };
  const invalid = (message: string, details: Record<string, unknown> = {}, cause?: unknown): CertfleetError =>
    new CertfleetError(ErrorCode.BundleInvalid, `${meta.name} v${meta.version}: ${message}`, {
      details: { ...where, ...details },
      cause,
    });

  if (typeof meta.name !== 'string' || !isValidCertName(meta.name)) {
    throw invalid('certificate name is not a safe identifier', { name: meta.name });
  }
  if (!Number.isSafeInteger(meta.version) || meta.version < 1) {
    throw invalid('version must be a positive integer');
  }
  if (opts.expectedVersion !== undefined && meta.version !== opts.expectedVersion) {
    throw invalid(`version mismatch: expected v${opts.expectedVersion}`, { expectedVersion: opts.expectedVersion });
  }

  const leafBlocks = splitPemChain(bundle.certPem);
  if (leafBlocks.length !== 1) {
    throw invalid(`certPem must hold exactly one certificate, found ${leafBlocks.length}`);
  }
  let leaf: CertificateInfo;
  try {
    leaf = opts.leaf ?? parseCertificate(bundle.certPem);
  } catch (err) {
    throw invalid('leaf certificate cannot be parsed', {}, err);
  }
  if (leaf.fingerprint !== meta.fingerprint) {
    throw invalid('leaf fingerprint differs from meta.fingerprint', { fingerprint: leaf.fingerprint, metaFingerprint: meta.fingerprint });
  }
  if (bundle.chainPem.trim() !== '' && splitPemChain(bundle.chainPem).length === 0) {
    throw invalid('chainPem holds no PEM certificate');
  }
  const problems = chainProblems(bundle.certPem, bundle.chainPem, leaf.x509);
  if (problems.length > 0) throw invalid(`bad chain: ${problems.join('; ')}`, { chainProblems: problems });

  let matches: boolean;
  let keyType;
  try {
    // The key and the leaf are parsed once for every check.
    const key = opts.key ?? parsePrivateKey(bundle.keyPem);
    matches = keyMatchesX509(key, leaf.x509);
    keyType = keyTypeOfKey(key);
  } catch (err) {
    throw invalid('private key cannot be parsed', {}, err);
  }
  if (!matches) {
    throw new CertfleetError(ErrorCode.BundleKeyMismatch, `${meta.name} v${meta.version}: private key does not match the certificate`, { details: where });
  }
  if (keyType !== meta.keyType) {
    throw invalid(`key type is ${keyType ?? 'unsupported'}, meta says ${meta.keyType}`, { keyType, metaKeyType: meta.keyType });
  }

  const missing = namesCovered(opts.requiredNames ?? meta.names, leaf.names);
  if (missing.length > 0) {
    throw new CertfleetError(ErrorCode.BundleNamesMissing, `${meta.name} v${meta.version}: certificate does not cover ${missing.join(', ')}`, {
      details: { ...where, missing, certNames: leaf.names },
    });
  }

  const notAfter = leaf.notAfter.getTime();
  const notBefore = leaf.notBefore.getTime();
  if (notAfter <= opts.now) {
    throw new CertfleetError(ErrorCode.BundleExpired, `${meta.name} v${meta.version}: expired at ${leaf.notAfter.toISOString()}`, {
      details: { ...where, notAfter: leaf.notAfter.toISOString() },
    });
  }
  if (notBefore > opts.now + (opts.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS)) {
    throw new CertfleetError(ErrorCode.BundleExpired, `${meta.name} v${meta.version}: not valid before ${leaf.notBefore.toISOString()}`, {
      details: { ...where, notBefore: leaf.notBefore.toISOString() },
    });
  }
}

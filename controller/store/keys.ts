/**
 * Validation shared by every CertStore backend, so the file store and the Vault store
 * accept and refuse exactly the same names, keys and records.
 */
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { KEY_TYPES, type VersionMeta } from '../../shared/model/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import type { VersionInput } from './index.js';

/**
 * One object-key segment: lower-case letters, digits, `_`, `.`, `-`, not starting with a
 * dot (so a key can never name a hidden or temporary file, nor `.` / `..`).
 */
const SEGMENT = '[a-z0-9_-][a-z0-9_.-]*';
/** Object keys: segments joined by `/`, e.g. `acme/account/1`, `enroll/<sha256 hex>`. */
export const OBJECT_KEY_PATTERN = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*$`);
const OBJECT_PREFIX_PATTERN = new RegExp(`^(?:${SEGMENT}/)*(?:${SEGMENT})?$`);
const MAX_KEY_LENGTH = 512;

function invalid(message: string, details: Record<string, unknown>): CertfleetError {
  return new CertfleetError(ErrorCode.UsageInvalid, message, { details });
}

/** Throws USAGE_INVALID unless `name` is a valid certificate name (CERT_NAME_PATTERN). */
export function checkCertName(name: string): void {
  if (typeof name !== 'string' || !CERT_NAME_PATTERN.test(name)) {
    throw invalid(`invalid certificate name ${JSON.stringify(name)}`, { cert: name });
  }
}

/** Throws USAGE_INVALID unless `version` is a positive integer. */
export function checkVersionNumber(version: number): void {
  if (!Number.isSafeInteger(version) || version < 1) {
    throw invalid(`invalid version ${String(version)}`, { version });
  }
}

/** Throws USAGE_INVALID unless `expectedLatest` is 0 or a positive integer. */
export function checkExpectedLatest(expectedLatest: number): void {
  if (!Number.isSafeInteger(expectedLatest) || expectedLatest < 0) {
    throw invalid(`invalid expectedLatest ${String(expectedLatest)}`, { expectedLatest });
  }
}

/** Throws USAGE_INVALID unless `key` is a valid object key (see {@link OBJECT_KEY_PATTERN}). */
export function checkObjectKey(key: string): void {
  if (typeof key !== 'string' || key.length > MAX_KEY_LENGTH || !OBJECT_KEY_PATTERN.test(key) || key.includes('..')) {
    throw invalid(`invalid object key ${JSON.stringify(key)}`, { key });
  }
}

/** Throws USAGE_INVALID unless `prefix` is empty, a key, a key ending in `/`, or a key's start. */
export function checkObjectPrefix(prefix: string): void {
  if (
    typeof prefix !== 'string' ||
    prefix.length > MAX_KEY_LENGTH ||
    !OBJECT_PREFIX_PATTERN.test(prefix) ||
    prefix.includes('..')
  ) {
    throw invalid(`invalid object key prefix ${JSON.stringify(prefix)}`, { prefix });
  }
}

/**
 * Checks what a caller asks putVersion to store: the meta names the same certificate,
 * the certificate and key are present. The store does not parse certificates (that is
 * the issuer's job); it refuses records that could never be served.
 */
export function checkVersionInput(name: string, input: VersionInput): void {
  if (input.meta.name !== name) {
    throw invalid(`version meta names ${JSON.stringify(input.meta.name)}, not ${JSON.stringify(name)}`, {
      cert: name,
    });
  }
  for (const field of ['certPem', 'keyPem'] as const) {
    if (typeof input[field] !== 'string' || input[field].trim() === '') {
      throw invalid(`version input has an empty ${field}`, { cert: name, field });
    }
  }
  if (typeof input.chainPem !== 'string') throw invalid('version input chainPem must be a string', { cert: name });
}

/**
 * Validates a stored VersionMeta read back from `where` (a file path or a Vault path);
 * anything malformed, or naming another certificate or version than expected, is
 * STORE_CORRUPT naming `where`.
 */
export function parseVersionMeta(raw: unknown, where: string, expected: { name: string; version?: number }): VersionMeta {
  const bad = (why: string): CertfleetError =>
    new CertfleetError(ErrorCode.StoreCorrupt, `corrupt version metadata in ${where}: ${why}`, {
      details: { file: where, cert: expected.name },
    });
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('not a JSON object');
  const o = raw as Record<string, unknown>;
  for (const f of ['name', 'serial', 'fingerprint', 'notBefore', 'notAfter', 'issuedAt', 'keyType'] as const) {
    if (typeof o[f] !== 'string') throw bad(`${f} is not a string`);
  }
  if (!Number.isSafeInteger(o['version']) || (o['version'] as number) < 1) throw bad('version is not a positive integer');
  if (!Array.isArray(o['names']) || !o['names'].every((n) => typeof n === 'string')) throw bad('names is not a string list');
  if (!(KEY_TYPES as readonly string[]).includes(o['keyType'] as string)) throw bad('unknown keyType');
  if (o['name'] !== expected.name) throw bad(`names certificate ${String(o['name'])}`);
  if (expected.version !== undefined && o['version'] !== expected.version) throw bad(`says version ${String(o['version'])}`);
  if (o['profile'] !== undefined && typeof o['profile'] !== 'string') throw bad('profile is not a string');
  return {
    name: o['name'],
    version: o['version'] as number,
    serial: o['serial'] as string,
    fingerprint: o['fingerprint'] as string,
    names: [...(o['names'])],
    notBefore: o['notBefore'] as string,
    notAfter: o['notAfter'] as string,
    issuedAt: o['issuedAt'] as string,
    keyType: o['keyType'] as VersionMeta['keyType'],
    // Optional (versions stored before ACME profiles have none).
    ...(typeof o['profile'] === 'string' ? { profile: o['profile'] } : {}),
    // Optional: versions stored before issuers were recorded have none.
    ...(typeof o['issuer'] === 'string' && o['issuer'] !== '' ? { issuer: o['issuer'] } : {}),
  };
}

/**
 * The meta of version `version` of `name`: only the known fields, in a fixed order, so
 * what putVersion returns equals what a later read returns (every store uses this).
 */
export function versionMeta(name: string, version: number, m: Omit<VersionMeta, 'version' | 'name'>): VersionMeta {
  return {
    name,
    version,
    serial: m.serial,
    fingerprint: m.fingerprint,
    names: [...m.names],
    notBefore: m.notBefore,
    notAfter: m.notAfter,
    issuedAt: m.issuedAt,
    keyType: m.keyType,
    ...(m.profile === undefined ? {} : { profile: m.profile }),
    ...(m.issuer === undefined ? {} : { issuer: m.issuer }),
  };
}

/**
 * The start every backend's putVersion shares: checks the name, `expectedLatest` and the
 * input (USAGE_INVALID), then gives the number the new version gets and its meta as it
 * will be stored and returned. Pure; the compare-and-set itself is the backend's.
 */
export function prepareVersion(name: string, input: VersionInput, expectedLatest: number): { version: number; meta: VersionMeta } {
  checkCertName(name);
  checkExpectedLatest(expectedLatest);
  checkVersionInput(name, input);
  const version = expectedLatest + 1;
  return { version, meta: versionMeta(name, version, input.meta) };
}

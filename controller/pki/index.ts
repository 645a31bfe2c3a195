/**
 * The controller's own small certificate authority.
 *
 * It is not the ACME CA: it only secures certfleet's own traffic. It issues
 *  - the controller's gRPC server certificate (serverAuth),
 *  - one client certificate per enrolled agent (clientAuth, URI SAN
 *    `urn:certfleet:agent:<name>`), signed from a CSR whose key never left the agent,
 *  - operator client certificates for the CLI (clientAuth, URI SAN
 *    `urn:certfleet:operator:<name>`, the role at issue time as OU; the operator
 *    registry in controller/access decides the role and whether it is revoked).
 *
 * The gRPC server asks for a client certificate but does not require one at the TLS
 * layer (an agent that is enrolling has none yet), so {@link verifyClientCertificate}
 * is the gate every authenticated call goes through. Identity comes from the URI SAN
 * only, never from the subject CN, and the controller sets it itself: whatever a CSR
 * asks for is ignored.
 *
 * Everything is ECDSA P-256 with SHA-256. Time is passed in (`now`, ms since the epoch)
 * so tests can issue expired or not-yet-valid certificates without waiting.
 */
// @peculiar/x509 2.x resolves its services through tsyringe, which needs the Reflect
// metadata polyfill loaded before the library itself; ESM evaluates imports in order.
import 'reflect-metadata';
import crypto, { webcrypto } from 'node:crypto';
import net from 'node:net';
import * as x509 from '@peculiar/x509';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { AGENT_NAME_PATTERN } from '../../shared/wire/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';

x509.cryptoProvider.set(webcrypto);

const EC_KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const EC_SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** The CA's certificate and private key. `keyPem` is secret: store it 0600, never log it. */
export interface CaMaterial {
  /** Self-signed CA certificate, PEM. This is what agents and the CLI trust. */
  certPem: string;
  /** PKCS#8 private key, PEM. */
  keyPem: string;
}

/** A certificate with its freshly generated private key. */
export interface IssuedKeyPair {
  certPem: string;
  keyPem: string;
}

/** Who a verified client certificate belongs to. */
export interface ClientIdentity {
  role: ClientRole;
  name: string;
  /** Serial number, lower-case hex; the agent registry compares it to catch replaced certificates. */
  serial: string;
}

export type ClientRole = 'agent' | 'operator';

/** URI SAN prefixes that carry a client's identity. */
export const IDENTITY_URI_PREFIX = 'urn:certfleet:';
export const AGENT_URI_PREFIX = `${IDENTITY_URI_PREFIX}agent:`;
export const OPERATOR_URI_PREFIX = `${IDENTITY_URI_PREFIX}operator:`;

/** Agent certificates last this long unless `validityDays` says otherwise. */
export const DEFAULT_AGENT_VALIDITY_DAYS = 90;

const DAY_MS = 24 * 3600 * 1000;
// Certificates start a few minutes in the past so an agent or CLI whose clock is a
// little behind the controller's does not reject a certificate issued a second ago.
const BACKDATE_MS = 5 * 60 * 1000;
const CA_VALIDITY_YEARS = 10;
const LEAF_VALIDITY_DAYS = 365;
const OID_CLIENT_AUTH = x509.ExtendedKeyUsage.clientAuth as string;
const OID_SERVER_AUTH = x509.ExtendedKeyUsage.serverAuth as string;
/** Object key of the CA in the CertStore. */
export const CA_OBJECT_KEY = ObjectKey.controllerCa;

/**
 * Creates a new self-signed CA: valid 10 years from `now` (backdated 5 minutes),
 * basicConstraints CA with path length 0 (it signs leaves only), keyUsage
 * keyCertSign|cRLSign. `commonName` defaults to "certfleet controller CA".
 */
export async function createControllerCa(opts: { now: number; commonName?: string }): Promise<CaMaterial> {
  const { keyPem, keys } = await generateEcKeyPair();
  const notAfter = new Date(opts.now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [opts.commonName ?? 'certfleet controller CA'] }],
    notBefore: new Date(opts.now - BACKDATE_MS),
    notAfter,
    keys,
    signingAlgorithm: EC_SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem };
}

/**
 * Returns the CA kept in the store under {@link CA_OBJECT_KEY}, creating and storing one
 * on first start. A stored value that is not a CA document fails with STORE_CORRUPT;
 * store errors propagate. Meant for a single controller: two controllers starting at
 * once on an empty store could each create one (the later write wins).
 */
export async function loadOrCreateControllerCa(
  store: Pick<CertStore, 'getObject' | 'putObject'>,
  now: number,
): Promise<CaMaterial> {
  const stored = await store.getObject<unknown>(CA_OBJECT_KEY);
  if (stored !== null) {
    if (!isCaMaterial(stored)) {
      throw new CertfleetError(ErrorCode.StoreCorrupt, `store object ${CA_OBJECT_KEY} is not a CA document`, {
        details: { key: CA_OBJECT_KEY },
      });
    }
    return { certPem: stored.certPem, keyPem: stored.keyPem };
  }
  const ca = await createControllerCa({ now });
  await store.putObject(CA_OBJECT_KEY, ca);
  return ca;
}

function isCaMaterial(v: unknown): v is CaMaterial {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o['certPem'] === 'string' && typeof o['keyPem'] === 'string';
}

/**
 * Issues the controller's TLS server certificate for `hosts` (DNS names and IP
 * addresses; the first is also the CN), serverAuth, valid one year. At least one host is
 * required (USAGE_INVALID otherwise).
 */
export async function issueServerCertificate(
  ca: CaMaterial,
  opts: { hosts: string[]; now: number },
): Promise<IssuedKeyPair> {
  const first = opts.hosts[0];
  if (first === undefined) {
    throw new CertfleetError(ErrorCode.UsageInvalid, 'a server certificate needs at least one host');
  }
  const { keyPem, keys } = await generateEcKeyPair();
  const cert = await signLeaf(ca, {
    commonName: first,
    publicKey: keys.publicKey,
    sans: opts.hosts.map((h) => ({ type: net.isIP(h) === 0 ? 'dns' : 'ip', value: h }) as const),
    eku: OID_SERVER_AUTH,
    now: opts.now,
    validityMs: LEAF_VALIDITY_DAYS * DAY_MS,
  });
  return { certPem: cert.toString('pem'), keyPem };
}

/**
 * Signs an agent's CSR. The CSR's signature must verify (proof the agent holds the key)
 * and its key must be ECDSA P-256/P-384 or RSA of at least 2048 bits; otherwise
 * CSR_INVALID. The subject and any extensions the CSR requests are ignored: the
 * certificate says CN=<agent>, URI SAN `urn:certfleet:agent:<agent>`, EKU clientAuth
 * only, valid `validityMs` (or `validityDays`; default 90 days; the controller passes
 * `api.agentIdentityValidity`). It is backdated 5 minutes, or a tenth of a short
 * validity, so the agent's renewal point (2/3 of the lifetime) stays in the future.
 * `agent` must match AGENT_NAME_PATTERN (USAGE_INVALID otherwise). Returns the serial
 * (lower-case hex) for the agent registry and notAfter (RFC 3339).
 */
export async function signAgentCsr(
  ca: CaMaterial,
  csrPem: string,
  opts: { agent: string; now: number; validityDays?: number; validityMs?: number },
): Promise<{ certPem: string; serial: string; notAfter: string }> {
  checkIdentityName('agent', opts.agent);
  const validityMs = opts.validityMs ?? (opts.validityDays ?? DEFAULT_AGENT_VALIDITY_DAYS) * DAY_MS;
  if (!Number.isFinite(validityMs) || validityMs <= 0) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `agent certificate validity must be positive, got ${validityMs} ms`);
  }
  const csr = await parseAgentCsr(csrPem);
  const cert = await signLeaf(ca, {
    commonName: opts.agent,
    publicKey: csr.publicKey,
    sans: [{ type: 'url', value: AGENT_URI_PREFIX + opts.agent }],
    eku: OID_CLIENT_AUTH,
    now: opts.now,
    validityMs,
    backdateMs: Math.min(BACKDATE_MS, Math.floor(validityMs / 10)),
  });
  return { certPem: cert.toString('pem'), serial: cert.serialNumber.toLowerCase(), notAfter: cert.notAfter.toISOString() };
}

/**
 * Checks a CSR the way {@link signAgentCsr} does (PKCS#10, acceptable key, signature
 * verifies) without signing it; CSR_INVALID otherwise. The enrolment API calls this
 * before redeeming the one-time token, so a broken CSR does not burn the token.
 */
export async function checkAgentCsr(csrPem: string): Promise<void> {
  await parseAgentCsr(csrPem);
}

async function parseAgentCsr(csrPem: string): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new CertfleetError(ErrorCode.CsrInvalid, 'CSR is not a PKCS#10 request', { cause: err });
  }
  checkCsrKey(csr);
  let signatureOk: boolean;
  try {
    signatureOk = await csr.verify();
  } catch (err) {
    throw new CertfleetError(ErrorCode.CsrInvalid, 'CSR signature cannot be checked', { cause: err });
  }
  if (!signatureOk) throw new CertfleetError(ErrorCode.CsrInvalid, 'CSR signature does not verify');
  return csr;
}

/** Operator certificates last this long unless `validityDays` says otherwise. */
export const DEFAULT_OPERATOR_VALIDITY_DAYS = LEAF_VALIDITY_DAYS;

/**
 * Issues an operator's client certificate with a new key: CN=<operator>, OU=<role> when
 * given, URI SAN `urn:certfleet:operator:<operator>`, EKU clientAuth, valid one year.
 * `operator` follows the agent-name rules (USAGE_INVALID otherwise). The OU only records
 * the role at issue time for people reading the certificate: the controller's operator
 * registry (controller/access) decides the role on every call.
 */
export async function issueOperatorCertificate(
  ca: CaMaterial,
  opts: { operator: string; now: number; role?: string },
): Promise<{ certPem: string; keyPem: string; serial: string; notAfter: string }> {
  checkIdentityName('operator', opts.operator);
  const { keyPem, keys } = await generateEcKeyPair();
  const cert = await signLeaf(ca, {
    commonName: opts.operator,
    ...(opts.role === undefined ? {} : { organizationalUnit: opts.role }),
    publicKey: keys.publicKey,
    sans: [{ type: 'url', value: OPERATOR_URI_PREFIX + opts.operator }],
    eku: OID_CLIENT_AUTH,
    now: opts.now,
    validityMs: LEAF_VALIDITY_DAYS * DAY_MS,
  });
  return { certPem: cert.toString('pem'), keyPem, serial: cert.serialNumber.toLowerCase(), notAfter: cert.notAfter.toISOString() };
}

/**
 * Signs an operator's CSR (made by `certfleet operators create`, whose key never leaves
 * the machine it runs on). The CSR is checked as for agents (CSR_INVALID); its subject
 * and extensions are ignored: the certificate says CN=<operator>, OU=<role>, URI SAN
 * `urn:certfleet:operator:<operator>`, EKU clientAuth, valid `validityDays` (default 365).
 */
export async function signOperatorCsr(
  ca: CaMaterial,
  csrPem: string,
  opts: { operator: string; role: string; now: number; validityDays?: number },
): Promise<{ certPem: string; serial: string; notAfter: string }> {
  checkIdentityName('operator', opts.operator);
  const validityDays = opts.validityDays ?? DEFAULT_OPERATOR_VALIDITY_DAYS;
  if (!Number.isFinite(validityDays) || validityDays <= 0) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `validityDays must be positive, got ${validityDays}`);
  }
  const csr = await parseAgentCsr(csrPem);
  const cert = await signLeaf(ca, {
    commonName: opts.operator,
    organizationalUnit: opts.role,
    publicKey: csr.publicKey,
    sans: [{ type: 'url', value: OPERATOR_URI_PREFIX + opts.operator }],
    eku: OID_CLIENT_AUTH,
    now: opts.now,
    validityMs: validityDays * DAY_MS,
  });
  return { certPem: cert.toString('pem'), serial: cert.serialNumber.toLowerCase(), notAfter: cert.notAfter.toISOString() };
}

/** Serial (lower-case hex) and expiry (RFC 3339) of a PEM certificate; USAGE_INVALID when unreadable. */
export function certificateSerial(certPem: string): { serial: string; notAfter: string } {
  try {
    const cert = new x509.X509Certificate(certPem);
    return { serial: cert.serialNumber.toLowerCase(), notAfter: cert.notAfter.toISOString() };
  } catch (err) {
    throw new CertfleetError(ErrorCode.UsageInvalid, 'certificate is unreadable', { cause: err });
  }
}

/**
 * Decides whether a client certificate (PEM string or DER bytes, as the TLS layer hands
 * it over) authenticates an agent or an operator. It must be issued and signed by `ca`,
 * be within its validity at `now`, not be a CA, carry EKU clientAuth, and have exactly
 * one `urn:certfleet:` URI SAN naming a role and a valid name. Anything else fails with
 * UNAUTHENTICATED; `details.reason` says which check failed (for the log; callers should
 * not tell the peer more than "unauthenticated").
 *
 * Whether the serial is still the agent's current one is the registry's question
 * (controller/enroll), not this function's.
 */
export function verifyClientCertificate(
  ca: CaMaterial,
  certDerOrPem: string | Uint8Array,
  now: number,
): ClientIdentity {
  // Every agent call presents the same certificate: what does not depend on `now` is
  // decided once per (CA, certificate) — two X.509 parses and a signature check each
  // time were a tenth of the controller's thread while issuing (issue #13).
  const cacheKey = typeof certDerOrPem === 'string' ? certDerOrPem : Buffer.from(certDerOrPem.buffer, certDerOrPem.byteOffset, certDerOrPem.byteLength).toString('latin1');
  let verified = verifiedClients.get(ca.certPem);
  const hit = verified?.get(cacheKey);
  if (hit !== undefined) return checkValidity(hit, now);
  const fresh = verifyClientCertificateOnce(ca, certDerOrPem);
  if (verified === undefined) {
    verified = new Map();
    verifiedClients.set(ca.certPem, verified);
    if (verifiedClients.size > 4) verifiedClients.delete(verifiedClients.keys().next().value ?? '');
  }
  verified.set(cacheKey, fresh);
  if (verified.size > VERIFIED_CLIENTS_MAX) verified.delete(verified.keys().next().value ?? '');
  return checkValidity(fresh, now);
}

/** Certificates that passed the checks that do not depend on the time, by CA and certificate. */
const verifiedClients = new Map<string, Map<string, VerifiedClient>>();
/** Per CA; oldest forgotten first (a fleet of 10,000 agents re-verifies some, which is correct, only slower). */
const VERIFIED_CLIENTS_MAX = 10_000;

interface VerifiedClient {
  identity: ClientIdentity;
  notBefore: number;
  notAfter: number;
}

function checkValidity(v: VerifiedClient, now: number): ClientIdentity {
  if (now < v.notBefore) throw unauthenticated('not yet valid');
  if (now > v.notAfter) throw unauthenticated('expired');
  return { ...v.identity };
}

/** Every check of {@link verifyClientCertificate} but the validity period. */
function verifyClientCertificateOnce(ca: CaMaterial, certDerOrPem: string | Uint8Array): VerifiedClient {
  let cert: crypto.X509Certificate;
  let parsed: x509.X509Certificate;
  try {
    cert = new crypto.X509Certificate(typeof certDerOrPem === 'string' ? certDerOrPem : Buffer.from(certDerOrPem));
    parsed = new x509.X509Certificate(new Uint8Array(cert.raw));
  } catch (err) {
    throw unauthenticated('certificate unreadable', err);
  }
  const caCert = new crypto.X509Certificate(ca.certPem);
  // checkIssued compares issuer/subject names and key identifiers; verify checks the
  // signature itself. A certificate from another CA with our CA's name fails the second.
  if (!cert.checkIssued(caCert)) throw unauthenticated('not issued by the controller CA');
  if (!cert.verify(caCert.publicKey)) throw unauthenticated('signature does not verify against the controller CA');
  const bc = parsed.getExtension(x509.BasicConstraintsExtension);
  if (bc?.ca === true) throw unauthenticated('is a CA certificate');
  const eku = parsed.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku === null || !eku.usages.map(String).includes(OID_CLIENT_AUTH)) {
    throw unauthenticated('no clientAuth extended key usage');
  }
  const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = (san?.names.items ?? [])
    .filter((n) => n.type === 'url' && n.value.startsWith(IDENTITY_URI_PREFIX))
    .map((n) => n.value);
  if (uris.length !== 1) throw unauthenticated(`expected one certfleet URI SAN, found ${uris.length}`);
  const identity = parseIdentityUri(uris[0] ?? '');
  if (identity === null) throw unauthenticated('certfleet URI SAN is malformed');
  return { identity: { ...identity, serial: parsed.serialNumber.toLowerCase() }, notBefore: parsed.notBefore.getTime(), notAfter: parsed.notAfter.getTime() };
}

function parseIdentityUri(uri: string): { role: ClientRole; name: string } | null {
  for (const [role, prefix] of [
    ['agent', AGENT_URI_PREFIX],
    ['operator', OPERATOR_URI_PREFIX],
  ] as const) {
    if (uri.startsWith(prefix)) {
      const name = uri.slice(prefix.length);
      return AGENT_NAME_PATTERN.test(name) ? { role, name } : null;
    }
  }
  return null;
}

function unauthenticated(reason: string, cause?: unknown): CertfleetError {
  return new CertfleetError(ErrorCode.Unauthenticated, `client certificate rejected: ${reason}`, {
    details: { reason },
    cause,
  });
}

function checkIdentityName(role: ClientRole, name: string): void {
  if (!AGENT_NAME_PATTERN.test(name)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `invalid ${role} name ${JSON.stringify(name)}`, {
      details: { [role]: name },
    });
  }
}

function checkCsrKey(csr: x509.Pkcs10CertificateRequest): void {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  } catch (err) {
    throw new CertfleetError(ErrorCode.CsrInvalid, 'CSR public key is unreadable', { cause: err });
  }
  const details = key.asymmetricKeyDetails ?? {};
  const ok =
    (key.asymmetricKeyType === 'ec' && ['prime256v1', 'secp384r1'].includes(details.namedCurve ?? '')) ||
    (key.asymmetricKeyType === 'rsa' && (details.modulusLength ?? 0) >= 2048);
  if (!ok) {
    throw new CertfleetError(ErrorCode.CsrInvalid, 'CSR key must be ECDSA P-256/P-384 or RSA >= 2048 bits', {
      details: { keyType: key.asymmetricKeyType, curve: details.namedCurve, bits: details.modulusLength },
    });
  }
}

interface LeafParams {
  commonName: string;
  organizationalUnit?: string;
  publicKey: x509.PublicKey | webcrypto.CryptoKey;
  sans: x509.JsonGeneralNames;
  eku: string;
  now: number;
  validityMs: number;
  /** How far notBefore lies before `now`; default 5 minutes. */
  backdateMs?: number;
}

async function signLeaf(ca: CaMaterial, p: LeafParams): Promise<x509.X509Certificate> {
  const { cert: caCert, key: caKey } = await loadCa(ca);
  return x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [p.commonName] }, ...(p.organizationalUnit === undefined ? [] : [{ OU: [p.organizationalUnit] }])],
    issuer: caCert.subjectName,
    notBefore: new Date(p.now - (p.backdateMs ?? BACKDATE_MS)),
    notAfter: new Date(p.now + p.validityMs),
    publicKey: p.publicKey,
    signingKey: caKey,
    signingAlgorithm: EC_SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([p.eku], false),
      new x509.SubjectAlternativeNameExtension(p.sans, false),
      await x509.SubjectKeyIdentifierExtension.create(p.publicKey),
      await authorityKeyIdentifier(caCert),
    ],
  });
}

// The AKI must equal the CA's SKI byte for byte (TLS stacks and Node's checkIssued match
// on it), so copy it rather than recompute it.
async function authorityKeyIdentifier(caCert: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  return ski === null
    ? x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey)
    : new x509.AuthorityKeyIdentifierExtension(ski.keyId);
}

async function loadCa(ca: CaMaterial): Promise<{ cert: x509.X509Certificate; key: webcrypto.CryptoKey }> {
  try {
    const cert = new x509.X509Certificate(ca.certPem);
    const key = await webcrypto.subtle.importKey(
      'pkcs8',
      x509.PemConverter.decodeFirst(ca.keyPem),
      EC_KEY_ALGORITHM,
      false,
      ['sign'],
    );
    return { cert, key };
  } catch (err) {
    // Never include the PEM in the message: it is key material.
    throw new CertfleetError(ErrorCode.Internal, 'controller CA material is unreadable', { cause: err });
  }
}

/** A new ECDSA P-256 key pair and its PKCS#8 PEM. */
async function generateEcKeyPair(): Promise<{ keyPem: string; keys: webcrypto.CryptoKeyPair }> {
  const keys = await webcrypto.subtle.generateKey(EC_KEY_ALGORITHM, true, ['sign', 'verify']);
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), keys };
}

/**
 * 16 random bytes, top bit clear (serials are positive) and second bit set (so the DER
 * integer never needs a leading zero byte and the hex form is always 32 digits).
 */
function randomSerial(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString('hex');
}

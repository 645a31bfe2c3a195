/**
 * Throwaway certificate authorities, leaf certificates and complete bundles for tests.
 * Everything is generated in memory with @peculiar/x509 on node's WebCrypto; nothing is
 * written to disk and nothing here is fit for production.
 *
 * Typical use:
 *   const root = await makeTestCa();
 *   const inter = await makeTestCa({ issuer: root, commonName: 'Test Intermediate' });
 *   const leaf = await makeLeaf(inter, { names: ['a.example.test'] });
 *   const bundle = await makeBundle({ name: 'web', version: 1, names: ['a.example.test'], ca: inter });
 */
// @peculiar/x509 2.x resolves its services through tsyringe, which needs a Reflect
// metadata polyfill loaded first (it throws at import time otherwise).
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import * as x509 from '@peculiar/x509';
import type { Bundle, KeyType, VersionMeta } from '../../shared/model/index.js';
import { parseCertificate } from '../../shared/pki/index.js';

// Node's WebCrypto is what @peculiar/x509 expects; the lib.dom type is not in this build.
x509.cryptoProvider.set(webcrypto as never);

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A test CA: its certificate, key and the chain a leaf it issues should carry. */
export interface TestCa {
  commonName: string;
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  /**
   * This CA's certificate followed by its issuers' up to and including the root: what a
   * leaf issued by this CA carries as chain.pem (a root-issued leaf carries the root, so
   * chain checks always have something to check).
   */
  chainPem: string;
  keyType: KeyType;
  /** @internal signing material for makeLeaf / makeTestCa({issuer}). */
  readonly keys: CryptoKeyPair;
  readonly cert: x509.X509Certificate;
}

export interface TestCaOptions {
  commonName?: string;
  /** Default 'ecdsa-p256' (fast). */
  keyType?: KeyType;
  /** Signs this CA (making it an intermediate); default self-signed root. */
  issuer?: TestCa;
  notBefore?: Date;
  notAfter?: Date;
}

export interface LeafOptions {
  /** DNS subjectAltNames; the first is also the subject CN. At least one. */
  names: string[];
  /** Default 'ecdsa-p256'. RSA-4096 takes seconds to generate; avoid it in loops. */
  keyType?: KeyType;
  /** Default one hour ago (real time). */
  notBefore?: Date;
  /** Default 90 days from now (real time). */
  notAfter?: Date;
}

export interface TestLeaf {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  /** The issuing CA's chain (see {@link TestCa.chainPem}). */
  chainPem: string;
  /** Leaf followed by chain. */
  fullchainPem: string;
  keyType: KeyType;
}

/** Generates a key pair of a certfleet key type on WebCrypto (extractable, for PEM export). */
export async function makeKeyPair(keyType: KeyType): Promise<CryptoKeyPair> {
  const algorithm = algorithmFor(keyType);
  return await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
}

/** Exports a private CryptoKey as PKCS#8 PEM. */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return `${x509.PemConverter.encode(der, 'PRIVATE KEY')}\n`;
}

/** A new CA: a self-signed root by default, an intermediate when `issuer` is given. */
export async function makeTestCa(opts: TestCaOptions = {}): Promise<TestCa> {
  const keyType = opts.keyType ?? 'ecdsa-p256';
  const commonName = opts.commonName ?? (opts.issuer ? 'certfleet Test Intermediate' : 'certfleet Test Root');
  const keys = await makeKeyPair(keyType);
  const now = Date.now();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const issuer = opts.issuer;
  if (issuer) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${commonName}`,
    issuer: issuer ? issuer.cert.subject : `CN=${commonName}`,
    notBefore: opts.notBefore ?? new Date(now - DAY),
    notAfter: opts.notAfter ?? new Date(now + 3650 * DAY),
    signingAlgorithm: algorithmFor(issuer?.keyType ?? keyType),
    publicKey: keys.publicKey,
    signingKey: issuer ? issuer.keys.privateKey : keys.privateKey,
    extensions,
  });
  const certPem = `${cert.toString('pem')}\n`;
  return {
    commonName,
    certPem,
    keyPem: await privateKeyPem(keys.privateKey),
    chainPem: certPem + (issuer?.chainPem ?? ''),
    keyType,
    keys,
    cert,
  };
}

/** A leaf (server) certificate for `names`, issued by `ca`, with a fresh key. */
export async function makeLeaf(ca: TestCa, opts: LeafOptions): Promise<TestLeaf> {
  const first = opts.names[0];
  if (first === undefined) throw new Error('makeLeaf needs at least one name');
  const keyType = opts.keyType ?? 'ecdsa-p256';
  const keys = await makeKeyPair(keyType);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${first}`,
    issuer: ca.cert.subject,
    notBefore: opts.notBefore ?? new Date(now - HOUR),
    notAfter: opts.notAfter ?? new Date(now + 90 * DAY),
    signingAlgorithm: algorithmFor(ca.keyType),
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(opts.names.map((value) => ({ type: 'dns' as const, value }))),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  });
  const certPem = `${cert.toString('pem')}\n`;
  return {
    certPem,
    keyPem: await privateKeyPem(keys.privateKey),
    chainPem: ca.chainPem,
    fullchainPem: certPem + ca.chainPem,
    keyType,
  };
}

export interface BundleOptions extends Partial<Omit<LeafOptions, 'names'>> {
  name: string;
  version: number;
  /** Default `[`${name}.example.test`]`. */
  names?: string[];
  /** Default: one shared intermediate under one shared root, made on first use. */
  ca?: TestCa;
  /** Default: notBefore of the certificate. */
  issuedAt?: string;
}

/** The VersionMeta that truly describes `leaf` (fingerprint, serial, names, dates from the certificate). */
export function metaFor(name: string, version: number, leaf: TestLeaf, issuedAt?: string): VersionMeta {
  const info = parseCertificate(leaf.certPem);
  return {
    name,
    version,
    serial: info.serial,
    fingerprint: info.fingerprint,
    names: info.names,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    issuedAt: issuedAt ?? info.notBefore.toISOString(),
    keyType: leaf.keyType,
  };
}

/** A complete, valid Bundle for `name` v`version` (tests break it on purpose as needed). */
export async function makeBundle(opts: BundleOptions): Promise<Bundle> {
  const ca = opts.ca ?? (await sharedCa());
  const leafOpts: LeafOptions = { names: opts.names ?? [`${opts.name}.example.test`] };
  if (opts.keyType !== undefined) leafOpts.keyType = opts.keyType;
  if (opts.notBefore !== undefined) leafOpts.notBefore = opts.notBefore;
  if (opts.notAfter !== undefined) leafOpts.notAfter = opts.notAfter;
  const leaf = await makeLeaf(ca, leafOpts);
  return {
    meta: metaFor(opts.name, opts.version, leaf, opts.issuedAt),
    certPem: leaf.certPem,
    chainPem: leaf.chainPem,
    keyPem: leaf.keyPem,
  };
}

let shared: Promise<TestCa> | undefined;

/** One intermediate CA (under one root) per test process, for tests that do not care which CA. */
export function sharedCa(): Promise<TestCa> {
  shared ??= makeTestCa().then((root) => makeTestCa({ issuer: root }));
  return shared;
}

function algorithmFor(keyType: KeyType): webcrypto.RsaHashedKeyGenParams | (webcrypto.EcKeyGenParams & { hash: string }) {
  switch (keyType) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    case 'ecdsa-p384':
      return { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    case 'rsa-2048':
    case 'rsa-3072':
    case 'rsa-4096':
      return {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: Number(keyType.slice(4)),
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      };
  }
}

/** A positive 128-bit serial whose first nibble is non-zero, so its hex form is stable. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x10;
  return bytes.toString('hex');
}

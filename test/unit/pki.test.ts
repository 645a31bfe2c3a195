import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chainProblems, fingerprintOf, keyMatchesCertificate, keyMatchesX509, keyTypeOf, namesCovered, parseCertificate, splitPemChain } from '../../shared/pki/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import { makeLeaf, makeTestCa } from '../harness/certs.js';
import type { KeyType } from '../../shared/model/index.js';

const root = await makeTestCa();
const inter = await makeTestCa({ issuer: root });
const leaf = await makeLeaf(inter, {
  names: ['WWW.Example.test', 'api.example.test'],
  notBefore: new Date('2026-01-01T00:00:00Z'),
  notAfter: new Date('2026-04-01T00:00:00Z'),
});

void test('splitPemChain returns each certificate block in order and ignores text between them', () => {
  const text = `junk\n${leaf.certPem}Bag Attributes: x\n${inter.certPem}\r\n${leaf.keyPem}${root.certPem}`;
  const blocks = splitPemChain(text);
  assert.equal(blocks.length, 3);
  assert.equal(blocks[0], leaf.certPem);
  assert.equal(blocks[1], inter.certPem);
  assert.equal(blocks[2], root.certPem);
  assert.deepEqual(splitPemChain(''), []);
  assert.deepEqual(splitPemChain(leaf.keyPem), []);
});

void test('parseCertificate reports the sha256 fingerprint of the DER, lower-case serial, lower-case DNS names and dates', () => {
  const info = parseCertificate(leaf.certPem);
  const der = new X509Certificate(leaf.certPem).raw;
  assert.equal(info.fingerprint, createHash('sha256').update(der).digest('hex'));
  assert.match(info.fingerprint, /^[0-9a-f]{64}$/);
  assert.match(info.serial, /^[0-9a-f]+$/);
  assert.equal(info.serial, new X509Certificate(leaf.certPem).serialNumber.toLowerCase());
  assert.deepEqual(info.names, ['www.example.test', 'api.example.test']);
  assert.equal(info.notBefore.toISOString(), '2026-01-01T00:00:00.000Z');
  assert.equal(info.notAfter.toISOString(), '2026-04-01T00:00:00.000Z');
  assert.match(info.subject, /CN=WWW\.Example\.test/);
  assert.match(info.issuer, /CN=certfleet Test Intermediate/);
});

void test('parseCertificate and fingerprintOf reject text without a parsable certificate as BUNDLE_INVALID', () => {
  assert.throws(() => parseCertificate('not a pem'), (err) => isCertfleetError(err, 'BUNDLE_INVALID'));
  const broken = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
  assert.throws(() => parseCertificate(broken), (err) => isCertfleetError(err, 'BUNDLE_INVALID'));
  assert.throws(() => fingerprintOf(broken), (err) => isCertfleetError(err, 'BUNDLE_INVALID'));
});

void test('fingerprintOf gives the same answer for PEM text, a PEM buffer and DER bytes', () => {
  const der = new X509Certificate(leaf.certPem).raw;
  const expected = parseCertificate(leaf.certPem).fingerprint;
  assert.equal(fingerprintOf(leaf.certPem), expected);
  assert.equal(fingerprintOf(Buffer.from(leaf.certPem)), expected);
  assert.equal(fingerprintOf(der), expected);
  assert.equal(fingerprintOf(new Uint8Array(der)), expected);
  assert.notEqual(fingerprintOf(inter.certPem), expected);
});

const keyTypes: KeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048'];
for (const keyType of keyTypes) {
  void test(`keyMatchesCertificate accepts the ${keyType} partner key and rejects another key of the same type`, async () => {
    const a = await makeLeaf(inter, { names: ['a.example.test'], keyType });
    const b = await makeLeaf(inter, { names: ['a.example.test'], keyType });
    assert.equal(keyMatchesCertificate(a.keyPem, a.certPem), true);
    assert.equal(keyMatchesCertificate(b.keyPem, a.certPem), false);
    assert.equal(keyTypeOf(a.keyPem), keyType);
  });
}

void test('keyMatchesCertificate says false for a key of another type and throws BUNDLE_INVALID for an unparsable key', async () => {
  const rsa = await makeLeaf(inter, { names: ['a.example.test'], keyType: 'rsa-2048' });
  assert.equal(keyMatchesCertificate(rsa.keyPem, leaf.certPem), false);
  assert.throws(() => keyMatchesCertificate('garbage', leaf.certPem), (err) => isCertfleetError(err, 'BUNDLE_INVALID'));
});

void test('keyMatchesX509 accepts the parsed partner key, rejects another, an Ed25519 or other-type key, and throws for a public key', async () => {
  const x509 = new X509Certificate(leaf.certPem);
  const own = createPrivateKey(leaf.keyPem);
  assert.equal(keyMatchesX509(own, x509), true);
  assert.throws(() => keyMatchesX509(createPublicKey(own), x509));
  const other = await makeLeaf(inter, { names: ['a.example.test'] });
  assert.equal(keyMatchesX509(createPrivateKey(other.keyPem), x509), false);
  assert.equal(keyMatchesX509(generateKeyPairSync('ed25519').privateKey, x509), false);
  assert.equal(keyMatchesX509(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, x509), false);
});

const coverage: { what: string; required: string[]; have: string[]; missing: string[] }[] = [
  { what: 'exact names are covered', required: ['a.example.com', 'b.example.com'], have: ['b.example.com', 'a.example.com'], missing: [] },
  { what: 'comparison ignores case and a trailing dot', required: ['A.Example.COM.'], have: ['a.example.com'], missing: [] },
  { what: 'a wildcard covers one label', required: ['www.example.com'], have: ['*.example.com'], missing: [] },
  { what: 'a wildcard does not cover the apex', required: ['example.com'], have: ['*.example.com'], missing: ['example.com'] },
  { what: 'a wildcard does not cover two labels', required: ['a.b.example.com'], have: ['*.example.com'], missing: ['a.b.example.com'] },
  { what: 'a required wildcard needs the same wildcard', required: ['*.example.com'], have: ['www.example.com'], missing: ['*.example.com'] },
  { what: 'a required wildcard is covered by the same wildcard', required: ['*.example.com'], have: ['*.example.com'], missing: [] },
  { what: 'missing names are listed once, normalised, in order', required: ['c.example.com', 'B.example.com', 'c.example.com'], have: ['a.example.com'], missing: ['c.example.com', 'b.example.com'] },
  { what: 'nothing required means nothing missing', required: [], have: [], missing: [] },
];
for (const row of coverage) {
  void test(`namesCovered: ${row.what}`, () => {
    assert.deepEqual(namesCovered(row.required, row.have), row.missing);
  });
}

void test('chainProblems finds nothing wrong with leaf, intermediate, root in order, nor with an empty chain', () => {
  assert.deepEqual(chainProblems(leaf.certPem, leaf.chainPem), []);
  assert.deepEqual(chainProblems(leaf.certPem, inter.certPem), []);
  assert.deepEqual(chainProblems(leaf.certPem, ''), []);
});

void test('chainProblems reports a chain in the wrong order', () => {
  const problems = chainProblems(leaf.certPem, root.certPem + inter.certPem);
  assert.ok(problems.length > 0);
  assert.match(problems.join('\n'), /leaf .* is not issued by chain certificate 1/);
});

void test('chainProblems reports an intermediate that has the right name but is not the one that signed the leaf', async () => {
  const otherRoot = await makeTestCa();
  const impostor = await makeTestCa({ issuer: otherRoot });
  const problems = chainProblems(leaf.certPem, impostor.certPem);
  assert.equal(problems.length, 1);
});

void test('chainProblems reports the leaf repeated in the chain as a non-CA, wrongly issued certificate', () => {
  const problems = chainProblems(leaf.certPem, leaf.certPem + inter.certPem);
  assert.ok(problems.some((p) => /chain certificate 1 .* is not a CA/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /leaf .* is not issued by chain certificate 1/.test(p)), problems.join('\n'));
});

/**
 * The CSRs the controller finalizes orders with (controller/acme createCsr over
 * shared/pki-csr createOrderCsr, encoded without an ASN.1 library): checked with OpenSSL
 * (signature, subject, SANs, signature algorithm) and with @peculiar/x509, for every key
 * type certfleet issues, IP literals and a first name too long for a commonName.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { webcrypto } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createCsr, generateKey, generateKeyObject } from '../../controller/acme/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import type { KeyType } from '../../shared/model/index.js';

x509.cryptoProvider.set(webcrypto);

/** `openssl req -verify -text`; openssl 3.0 exits 0 even on failure, so its words count. */
function openssl(input: string | Buffer, ...args: string[]): string {
  const r = spawnSync('openssl', ['req', '-noout', '-verify', '-text', ...args], { input, encoding: 'utf8' });
  assert.equal(r.error, undefined);
  return `${r.stdout}${r.stderr}`;
}

const CASES: Array<[KeyType, RegExp]> = [
  ['ecdsa-p256', /Signature Algorithm: ecdsa-with-SHA256/],
  ['ecdsa-p384', /Signature Algorithm: ecdsa-with-SHA384/],
  ['rsa-2048', /Signature Algorithm: sha256WithRSAEncryption/],
];

void describe('order CSRs', () => {
  for (const [keyType, algorithm] of CASES) {
    void it(`${keyType}: OpenSSL verifies it, the key is the order key, every name is a SAN and the first the CN`, async () => {
      const keyPem = await generateKey(keyType);
      const names = ['www.example.test', 'example.test', '*.w.example.test'];
      const csrPem = await createCsr(keyPem, names);
      const out = openssl(csrPem, '-pubkey');
      assert.match(out, /self-signature verify OK/);
      assert.match(out, algorithm);
      assert.match(out, /Subject: CN ?= ?www\.example\.test/);
      assert.match(out, /DNS:www\.example\.test, DNS:example\.test, DNS:\*\.w\.example\.test/);
      const pub = crypto.createPublicKey(out.slice(out.indexOf('-----BEGIN PUBLIC KEY-----')));
      assert.ok(pub.equals(crypto.createPublicKey(keyPem)), 'the CSR carries the order key');
      const parsed = new x509.Pkcs10CertificateRequest(csrPem);
      assert.equal(await parsed.verify(), true);
      const raw = parsed.getExtension('2.5.29.17');
      assert.ok(raw, 'a subjectAltName extension');
      const san = new x509.SubjectAlternativeNameExtension(raw.rawData);
      assert.deepEqual(san.names.items.map((n) => [n.type, n.value]), names.map((n) => ['dns', n]));
      // A changed byte fails OpenSSL's check, so the checks above mean something.
      const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
      der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
      assert.match(openssl(der, '-inform', 'DER'), /verify failure/);
    });
  }

  void it('IP literals become iPAddress SANs and no CN; a first name over 64 characters is no CN', async () => {
    const key = crypto.createPrivateKey(await generateKey('ecdsa-p256'));
    const ips = ['192.0.2.7', '2001:db8::1', '::1', '::ffff:192.0.2.9', 'fe80:0:0:0:1:2:3:4'];
    const out = openssl(await createCsr(key, ips));
    assert.match(out, /self-signature verify OK/);
    assert.match(out, /IP Address:192\.0\.2\.7, IP Address:2001:DB8:0:0:0:0:0:1, IP Address:0:0:0:0:0:0:0:1, IP Address:0:0:0:0:0:FFFF:C000:209, IP Address:FE80:0:0:0:1:2:3:4/);
    assert.doesNotMatch(out, /CN ?=/);
    const long = `${'a'.repeat(60)}.example.test`;
    const outLong = openssl(await createCsr(key, [long, 'b.example.test']));
    assert.match(outLong, /self-signature verify OK/);
    assert.doesNotMatch(outLong, /CN ?=/);
    assert.match(outLong, new RegExp(`DNS:${long.replace(/\./g, '\\.')}, DNS:b\\.example\\.test`));
  });

  void it('a new order key comes parsed with its PKCS#8 PEM (0600 in the store), the same key, of the asked type', async () => {
    for (const [keyType] of CASES) {
      const { key, keyPem } = await generateKeyObject(keyType);
      assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
      const reparsed = crypto.createPrivateKey(keyPem);
      assert.equal(reparsed.type, 'private');
      assert.ok(crypto.createPublicKey(reparsed).equals(crypto.createPublicKey(key)), keyType);
      const details = key.asymmetricKeyDetails;
      if (keyType.startsWith('rsa-')) assert.equal(details?.modulusLength, Number(keyType.slice(4)));
      else assert.equal(details?.namedCurve, keyType === 'ecdsa-p256' ? 'prime256v1' : 'secp384r1');
      // The CSR from the parsed key is the one from its PEM (same key, same names).
      assert.match(openssl(await createCsr(key, ['a.example.test'])), /self-signature verify OK/);
    }
    await assert.rejects(generateKeyObject('dsa-1024' as KeyType), (err: unknown) => isCertfleetError(err, ErrorCode.ConfigInvalid));
  });

  void it('refuses no names, a non-ASCII name and an unusable key with CSR_INVALID', async () => {
    const keyPem = await generateKey('ecdsa-p256');
    for (const [key, names] of [
      [keyPem, []],
      [keyPem, ['bücher.example.test']],
      ['not a key', ['a.example.test']],
    ] as Array<[string, string[]]>) {
      await assert.rejects(createCsr(key, names), (err: unknown) => isCertfleetError(err, ErrorCode.CsrInvalid));
    }
  });
});

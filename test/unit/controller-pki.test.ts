/**
 * The controller's own CA: what it issues, and what verifyClientCertificate lets through.
 * Certificates are checked with node:crypto (OpenSSL) where possible, not with the
 * library that made them, and one test runs a real mutual-TLS handshake on loopback.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { webcrypto } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import {
  checkAgentCsr,
  createControllerCa,
  issueOperatorCertificate,
  issueServerCertificate,
  loadOrCreateControllerCa,
  signAgentCsr,
  verifyClientCertificate,
  type CaMaterial,
} from '../../controller/pki/index.js';
import { FileStore } from '../../controller/store/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

x509.cryptoProvider.set(webcrypto);

const NOW = Date.UTC(2026, 2, 1, 12, 0, 0);
const DAY = 24 * 3600 * 1000;

function rejectedBecause(reason: string | RegExp) {
  return (err: unknown): boolean => {
    assert.ok(isCertfleetError(err, ErrorCode.Unauthenticated), String(err));
    const got = String(err.details['reason']);
    if (typeof reason === 'string') assert.equal(got, reason);
    else assert.match(got, reason);
    return true;
  };
}

function hasCode(code: string) {
  return (err: unknown): boolean => {
    assert.ok(isCertfleetError(err), String(err));
    assert.equal(err.code, code, err.message);
    return true;
  };
}

/** Signs an arbitrary client certificate with `ca`'s key: for shapes our API never issues. */
async function craftClientCert(ca: CaMaterial, sans: x509.JsonGeneralNames, eku = x509.ExtendedKeyUsage.clientAuth) {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(ca.keyPem),
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '4a01',
    subject: 'CN=crafted',
    issuer: caCert.subjectName,
    notBefore: new Date(NOW - DAY),
    notAfter: new Date(NOW + DAY),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.ExtendedKeyUsageExtension([eku]),
      new x509.SubjectAlternativeNameExtension(sans),
      new x509.AuthorityKeyIdentifierExtension(ski?.keyId ?? ''),
    ],
  });
  return cert.toString('pem');
}

void describe('controller CA', () => {
  let ca: CaMaterial;
  before(async () => {
    ca = await createControllerCa({ now: NOW });
  });

  void it('is a self-signed ten-year CA with path length 0 that may only sign certificates and CRLs', () => {
    const cert = new crypto.X509Certificate(ca.certPem);
    assert.equal(cert.ca, true);
    assert.ok(cert.checkIssued(cert) && cert.verify(cert.publicKey));
    assert.equal(cert.subject, 'CN=certfleet controller CA');
    const notAfter = new Date(cert.validTo).getTime();
    assert.ok(notAfter >= NOW + 3650 * DAY && notAfter <= NOW + 3654 * DAY, cert.validTo);
    assert.ok(new Date(cert.validFrom).getTime() <= NOW);
    const parsed = new x509.X509Certificate(ca.certPem);
    const bc = parsed.getExtension(x509.BasicConstraintsExtension);
    assert.equal(bc?.ca, true);
    assert.equal(bc?.pathLength, 0);
    assert.equal(bc?.critical, true);
    const ku = parsed.getExtension(x509.KeyUsagesExtension);
    assert.equal(ku?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(crypto.createPrivateKey(ca.keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----/);
  });

  void it('takes a custom common name', async () => {
    const other = await createControllerCa({ now: NOW, commonName: 'fleet-a CA' });
    assert.equal(new crypto.X509Certificate(other.certPem).subject, 'CN=fleet-a CA');
  });

  void it("creates the agent's P-256 key and a PKCS#10 CSR that OpenSSL verifies, with CN=<agent>", async () => {
    const { keyPem, csrPem } = await createAgentKeyAndCsr('edge-1');
    const key = crypto.createPrivateKey(keyPem);
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    // openssl 3.0 `req -verify` exits 0 even on failure: read what it says.
    const openssl = (input: string | Buffer, ...args: string[]): string => {
      const r = spawnSync('openssl', ['req', '-noout', '-verify', ...args], { input, encoding: 'utf8' });
      assert.equal(r.error, undefined);
      return `${r.stdout}${r.stderr}`;
    };
    const out = openssl(csrPem, '-subject', '-pubkey');
    assert.match(out, /self-signature verify OK/);
    assert.match(out, /subject=CN ?= ?edge-1/);
    const pub = crypto.createPublicKey(out.slice(out.indexOf('-----BEGIN PUBLIC KEY-----')));
    assert.ok(pub.equals(crypto.createPublicKey(key)), 'CSR carries the generated key');
    // A tampered CSR fails OpenSSL's check, so the check above means something.
    const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    assert.match(openssl(der, '-inform', 'DER'), /verify failure/);
  });

  void it('signs an agent CSR into a 90-day clientAuth certificate that verifies as that agent', async () => {
    const { keyPem, csrPem } = await createAgentKeyAndCsr('edge-1');
    const { certPem, serial } = await signAgentCsr(ca, csrPem, { agent: 'edge-1', now: NOW });
    const cert = new crypto.X509Certificate(certPem);
    assert.equal(cert.subject, 'CN=edge-1');
    assert.equal(cert.subjectAltName, 'URI:urn:certfleet:agent:edge-1');
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']); // node lists the EKU OIDs here
    assert.equal(cert.ca, false);
    assert.equal(new Date(cert.validTo).getTime(), NOW + 90 * DAY);
    assert.equal(serial, cert.serialNumber.toLowerCase());
    assert.match(serial, /^[0-9a-f]{32}$/);
    // The certificate carries the agent's own key, which never left the agent.
    assert.ok(cert.checkPrivateKey(crypto.createPrivateKey(keyPem)));

    assert.deepEqual(verifyClientCertificate(ca, certPem, NOW), { role: 'agent', name: 'edge-1', serial });
    // The TLS layer hands over DER; that works too.
    assert.deepEqual(verifyClientCertificate(ca, new Uint8Array(cert.raw), NOW + 89 * DAY), {
      role: 'agent',
      name: 'edge-1',
      serial,
    });
  });

  void it('honours validityDays and gives every certificate a different serial', async () => {
    const { csrPem } = await createAgentKeyAndCsr('edge-1');
    const a = await signAgentCsr(ca, csrPem, { agent: 'edge-1', now: NOW, validityDays: 7 });
    const b = await signAgentCsr(ca, csrPem, { agent: 'edge-1', now: NOW, validityDays: 7 });
    assert.equal(new Date(new crypto.X509Certificate(a.certPem).validTo).getTime(), NOW + 7 * DAY);
    assert.notEqual(a.serial, b.serial);
    await assert.rejects(signAgentCsr(ca, csrPem, { agent: 'edge-1', now: NOW, validityDays: 0 }), hasCode(ErrorCode.UsageInvalid));
  });

  void it('ignores the subject and extensions a CSR asks for and sets the identity itself', async () => {
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const forged = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=admin, O=certfleet operators',
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'url', value: 'urn:certfleet:operator:admin' },
          { type: 'dns', value: 'controller.example.test' },
        ]),
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      ],
    });
    const { certPem, serial } = await signAgentCsr(ca, forged.toString('pem'), { agent: 'edge-2', now: NOW });
    const cert = new crypto.X509Certificate(certPem);
    assert.equal(cert.subject, 'CN=edge-2');
    assert.equal(cert.subjectAltName, 'URI:urn:certfleet:agent:edge-2');
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']);
    assert.equal(cert.ca, false);
    assert.deepEqual(verifyClientCertificate(ca, certPem, NOW), { role: 'agent', name: 'edge-2', serial });
  });

  void it('refuses a CSR whose signature does not verify, or that is not a CSR, with CSR_INVALID', async () => {
    const { csrPem } = await createAgentKeyAndCsr('edge-1');
    const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01; // flip a bit of the signature's s
    const tampered = x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
    await assert.rejects(signAgentCsr(ca, tampered, { agent: 'edge-1', now: NOW }), hasCode(ErrorCode.CsrInvalid));
    // checkAgentCsr gives the same verdict without signing, so the API can check before burning a token.
    await assert.rejects(checkAgentCsr(tampered), hasCode(ErrorCode.CsrInvalid));
    await checkAgentCsr(csrPem);
    await assert.rejects(signAgentCsr(ca, 'not a csr', { agent: 'edge-1', now: NOW }), hasCode(ErrorCode.CsrInvalid));
    await assert.rejects(signAgentCsr(ca, ca.certPem, { agent: 'edge-1', now: NOW }), hasCode(ErrorCode.CsrInvalid));
  });

  void it('refuses an RSA key shorter than 2048 bits in a CSR', async () => {
    const keys = await webcrypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    );
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=weak',
      keys,
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' },
    });
    await assert.rejects(signAgentCsr(ca, csr.toString('pem'), { agent: 'weak', now: NOW }), hasCode(ErrorCode.CsrInvalid));
  });

  void it('refuses agent and operator names outside AGENT_NAME_PATTERN', async () => {
    const { csrPem } = await createAgentKeyAndCsr('x');
    for (const bad of ['Edge', 'edge_1', '', '-edge', 'a'.repeat(64), 'edge:1']) {
      await assert.rejects(signAgentCsr(ca, csrPem, { agent: bad, now: NOW }), hasCode(ErrorCode.UsageInvalid), bad);
      await assert.rejects(issueOperatorCertificate(ca, { operator: bad, now: NOW }), hasCode(ErrorCode.UsageInvalid), bad);
    }
  });

  void it('issues operator certificates that verify as operators', async () => {
    const op = await issueOperatorCertificate(ca, { operator: 'alice', now: NOW });
    const cert = new crypto.X509Certificate(op.certPem);
    assert.equal(cert.subjectAltName, 'URI:urn:certfleet:operator:alice');
    assert.ok(cert.checkPrivateKey(crypto.createPrivateKey(op.keyPem)));
    assert.ok(new Date(cert.validTo).getTime() >= NOW + 365 * DAY);
    assert.deepEqual(verifyClientCertificate(ca, op.certPem, NOW), { role: 'operator', name: 'alice', serial: op.serial });
  });

  void it('issues a serverAuth certificate naming DNS hosts and IP addresses', async () => {
    const server = await issueServerCertificate(ca, { hosts: ['controller.example.test', '127.0.0.1', '::1'], now: NOW });
    const cert = new crypto.X509Certificate(server.certPem);
    assert.equal(cert.subject, 'CN=controller.example.test');
    assert.equal(cert.subjectAltName, 'DNS:controller.example.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
    assert.equal(cert.checkHost('controller.example.test'), 'controller.example.test');
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
    assert.ok(cert.checkIssued(new crypto.X509Certificate(ca.certPem)));
    await assert.rejects(issueServerCertificate(ca, { hosts: [], now: NOW }), hasCode(ErrorCode.UsageInvalid));
  });

  void it('rejects a certificate from another CA, even one with the same name', async () => {
    const other = await createControllerCa({ now: NOW });
    const { csrPem } = await createAgentKeyAndCsr('edge-1');
    const foreign = await signAgentCsr(other, csrPem, { agent: 'edge-1', now: NOW });
    assert.throws(
      () => verifyClientCertificate(ca, foreign.certPem, NOW),
      rejectedBecause(/^(not issued by the controller CA|signature does not verify against the controller CA)$/),
    );
  });

  void it('rejects a forged certificate that copies our CA name and key identifier but not its key', async () => {
    // The strongest impostor: issuer name and AKI match ours, so only the signature check stops it.
    const impostorCa = await createControllerCa({ now: NOW });
    const ours = new x509.X509Certificate(ca.certPem);
    const keyId = ours.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? '';
    const impostorKey = await webcrypto.subtle.importKey(
      'pkcs8',
      x509.PemConverter.decodeFirst(impostorCa.keyPem),
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign'],
    );
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const forged = await x509.X509CertificateGenerator.create({
      serialNumber: '4a02',
      subject: 'CN=edge-1',
      issuer: ours.subjectName,
      notBefore: new Date(NOW - DAY),
      notAfter: new Date(NOW + DAY),
      publicKey: keys.publicKey,
      signingKey: impostorKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'urn:certfleet:agent:edge-1' }]),
        new x509.AuthorityKeyIdentifierExtension(keyId),
      ],
    });
    assert.throws(
      () => verifyClientCertificate(ca, forged.toString('pem'), NOW),
      rejectedBecause('signature does not verify against the controller CA'),
    );
  });

  void it('rejects an expired or not yet valid certificate', async () => {
    const { csrPem } = await createAgentKeyAndCsr('edge-1');
    const { certPem } = await signAgentCsr(ca, csrPem, { agent: 'edge-1', now: NOW, validityDays: 1 });
    assert.throws(() => verifyClientCertificate(ca, certPem, NOW + 2 * DAY), rejectedBecause('expired'));
    assert.throws(() => verifyClientCertificate(ca, certPem, NOW - DAY), rejectedBecause('not yet valid'));
    // Issued "now" is already valid a little earlier, for clocks slightly behind ours.
    assert.equal(verifyClientCertificate(ca, certPem, NOW - 60 * 1000).name, 'edge-1');
  });

  void it('a certificate verified once is still judged afresh on time and against the CA asked (the verdict is cached per CA)', async () => {
    const { csrPem } = await createAgentKeyAndCsr('edge-1');
    const { certPem } = await signAgentCsr(ca, csrPem, { agent: 'edge-1', now: NOW, validityDays: 1 });
    const der = new Uint8Array(new crypto.X509Certificate(certPem).raw);
    assert.equal(verifyClientCertificate(ca, der, NOW).name, 'edge-1');
    assert.equal(verifyClientCertificate(ca, der, NOW).name, 'edge-1');
    assert.throws(() => verifyClientCertificate(ca, der, NOW + 2 * DAY), rejectedBecause('expired'));
    assert.throws(() => verifyClientCertificate(ca, der, NOW - DAY), rejectedBecause('not yet valid'));
    const other = await createControllerCa({ now: NOW });
    assert.throws(
      () => verifyClientCertificate(other, der, NOW),
      rejectedBecause(/^(not issued by the controller CA|signature does not verify against the controller CA)$/),
    );
    // The identity handed out is a copy: a caller changing it does not change the next answer.
    const first = verifyClientCertificate(ca, der, NOW);
    first.name = 'changed';
    assert.equal(verifyClientCertificate(ca, der, NOW).name, 'edge-1');
  });

  void it('rejects the server certificate presented as a client certificate', async () => {
    const server = await issueServerCertificate(ca, { hosts: ['127.0.0.1'], now: NOW });
    assert.throws(() => verifyClientCertificate(ca, server.certPem, NOW), rejectedBecause('no clientAuth extended key usage'));
  });

  void it('rejects the CA certificate itself', () => {
    assert.throws(() => verifyClientCertificate(ca, ca.certPem, NOW), rejectedBecause('is a CA certificate'));
  });

  void it('rejects client certificates with no, two, or a malformed certfleet URI SAN', async () => {
    const none = await craftClientCert(ca, [{ type: 'dns', value: 'edge-1.example.test' }]);
    assert.throws(() => verifyClientCertificate(ca, none, NOW), rejectedBecause('expected one certfleet URI SAN, found 0'));
    const two = await craftClientCert(ca, [
      { type: 'url', value: 'urn:certfleet:agent:edge-1' },
      { type: 'url', value: 'urn:certfleet:operator:admin' },
    ]);
    assert.throws(() => verifyClientCertificate(ca, two, NOW), rejectedBecause('expected one certfleet URI SAN, found 2'));
    for (const uri of ['urn:certfleet:admin:root', 'urn:certfleet:agent:Bad_Name', 'urn:certfleet:agent:']) {
      const bad = await craftClientCert(ca, [{ type: 'url', value: uri }]);
      assert.throws(() => verifyClientCertificate(ca, bad, NOW), rejectedBecause('certfleet URI SAN is malformed'), uri);
    }
    // The crafting itself is sound: the same shape with one good URI passes.
    const good = await craftClientCert(ca, [{ type: 'url', value: 'urn:certfleet:agent:edge-1' }]);
    assert.equal(verifyClientCertificate(ca, good, NOW).name, 'edge-1');
  });

  void it('rejects bytes that are not a certificate', () => {
    assert.throws(() => verifyClientCertificate(ca, 'garbage', NOW), rejectedBecause('certificate unreadable'));
    assert.throws(() => verifyClientCertificate(ca, new Uint8Array([1, 2, 3]), NOW), rejectedBecause('certificate unreadable'));
  });

  void it('its certificates work in a real mutual-TLS handshake, where the client certificate is the gate', async () => {
    const now = Date.now(); // OpenSSL checks validity against the real clock here
    const liveCa = await createControllerCa({ now });
    const server = await issueServerCertificate(liveCa, { hosts: ['localhost', '127.0.0.1'], now });
    const { keyPem, csrPem } = await createAgentKeyAndCsr('edge-9');
    const agent = await signAgentCsr(liveCa, csrPem, { agent: 'edge-9', now });

    const seen: Array<{ authorized: boolean; identity: string }> = [];
    const srv = tls.createServer(
      { key: server.keyPem, cert: server.certPem, ca: liveCa.certPem, requestCert: true, rejectUnauthorized: false },
      (socket) => {
        const peer = socket.getPeerCertificate();
        let identity: string;
        try {
          const id = verifyClientCertificate(liveCa, new Uint8Array(peer.raw ?? []), Date.now());
          identity = `${id.role}:${id.name}`;
        } catch (err) {
          identity = `refused:${isCertfleetError(err) ? String(err.details['reason']) : String(err)}`;
        }
        seen.push({ authorized: socket.authorized, identity });
        socket.end(identity);
      },
    );
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as { port: number }).port;
    const talk = async (opts: tls.ConnectionOptions): Promise<string> => {
      const sock = tls.connect({ host: '127.0.0.1', port, ca: liveCa.certPem, ...opts });
      await once(sock, 'secureConnect');
      let out = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => (out += d));
      await once(sock, 'end');
      sock.destroy();
      return out;
    };
    try {
      assert.equal(await talk({ key: keyPem, cert: agent.certPem }), 'agent:edge-9');
      assert.equal(await talk({}), 'refused:certificate unreadable');
      assert.deepEqual(
        seen.map((s) => s.authorized),
        [true, false],
      );
    } finally {
      srv.close();
    }
  });

  void it('keeps its CA in the store: created once, then loaded unchanged', async () => {
    const dir = path.join(tempDir('certfleet-pki-'), 'store');
    const store = await FileStore.open({ dir, log: silentLogger() });
    const first = await loadOrCreateControllerCa(store, NOW);
    const second = await loadOrCreateControllerCa(store, NOW + DAY);
    assert.deepEqual(second, first);
    const file = path.join(dir, 'objects', 'pki', 'ca.json');
    assert.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
    await store.putObject('pki/ca', { certPem: 42 });
    await assert.rejects(loadOrCreateControllerCa(store, NOW), hasCode(ErrorCode.StoreCorrupt));
    await store.close();
  });

  void it('verifies a client certificate once per CA and still checks its validity on every call (issue #13)', async () => {
    const { csrPem } = await createAgentKeyAndCsr('edge-7');
    const { certPem, serial } = await signAgentCsr(ca, csrPem, { agent: 'edge-7', now: NOW, validityDays: 7 });
    const der = new Uint8Array(new crypto.X509Certificate(certPem).raw);
    assert.deepEqual(verifyClientCertificate(ca, der, NOW), { role: 'agent', name: 'edge-7', serial });
    // Parsing is what costs: with the parser gone, the known certificate still verifies...
    const real = crypto.X509Certificate;
    (crypto as { X509Certificate: unknown }).X509Certificate = class {
      constructor() {
        throw new Error('parsed again');
      }
    };
    try {
      assert.deepEqual(verifyClientCertificate(ca, der, NOW + DAY), { role: 'agent', name: 'edge-7', serial });
      // ...its validity is still checked against the time of the call...
      assert.throws(() => verifyClientCertificate(ca, der, NOW + 8 * DAY), hasCode(ErrorCode.Unauthenticated));
      // ...and another CA (a new object, even with the same certificate) verifies for itself.
      const other = await createControllerCa({ now: NOW });
      assert.throws(() => verifyClientCertificate(other, der, NOW), hasCode(ErrorCode.Unauthenticated));
      assert.throws(() => verifyClientCertificate({ ...ca }, der, NOW), hasCode(ErrorCode.Unauthenticated));
    } finally {
      (crypto as { X509Certificate: unknown }).X509Certificate = real;
    }
    // Once parsing works again, a fresh CA object verifies the certificate like the first.
    assert.deepEqual(verifyClientCertificate({ ...ca }, der, NOW), { role: 'agent', name: 'edge-7', serial });
    const other = await createControllerCa({ now: NOW });
    assert.throws(() => verifyClientCertificate(other, der, NOW), hasCode(ErrorCode.Unauthenticated));
  });
});

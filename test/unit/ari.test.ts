/**
 * ACME Renewal Information (RFC 9773), the pure parts: the certificate identifier, the
 * RenewalInfo object and when to ask again.
 */
import 'reflect-metadata';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import {
  ARI_ERROR_RETRY_MS,
  ARI_MAX_RETRY_MS,
  ARI_MIN_RETRY_MS,
  ariCertId,
  ariCertIdFromParts,
  ariRetryAfterMs,
  isAriCertId,
  parseRenewalInfo,
} from '../../controller/acme/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';

x509.cryptoProvider.set(webcrypto as never);

/**
 * RFC 9773, Appendix A ("Example Certificate"). §4.1 works its identifier out: the AKI
 * keyIdentifier is 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
 * ("aYhba4dGQEHhs3uEe6CuLN4ByNQ"), the serial's DER content is 00:87:65:43:21 — with the
 * leading zero byte, because 0x87 has its high bit set — ("AIdlQyE"), so the identifier
 * is "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".
 */
const RFC9773_APPENDIX_A_CERT = `-----BEGIN CERTIFICATE-----
MIIBQzCB66ADAgECAgUAh2VDITAKBggqhkjOPQQDAjAVMRMwEQYDVQQDEwpFeGFt
cGxlIENBMCIYDzAwMDEwMTAxMDAwMDAwWhgPMDAwMTAxMDEwMDAwMDBaMBYxFDAS
BgNVBAMTC2V4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeBZu
7cbpAYNXZLbbh8rNIzuOoqOOtmxA1v7cRm//AwyMwWxyHz4zfwmBhcSrf47NUAFf
qzLQ2PPQxdTXREYEnKMjMCEwHwYDVR0jBBgwFoAUaYhba4dGQEHhs3uEe6CuLN4B
yNQwCgYIKoZIzj0EAwIDRwAwRAIge09+S5TZAlw5tgtiVvuERV6cT4mfutXIlwTb
+FYN/8oCIClDsqBklhB9KAelFiYt9+6FDj3z4KGVelYM5MdsO3pK
-----END CERTIFICATE-----
`;
const RFC9773_EXAMPLE_ID = 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/:/g, ''), 'hex'));

/** A self-signed certificate with the given serial (hex) and, unless null, an AKI keyIdentifier (hex). */
async function certWith(serialHex: string, akiKeyIdHex: string | null): Promise<string> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(false, undefined, true)];
  if (akiKeyIdHex !== null) extensions.push(new x509.AuthorityKeyIdentifierExtension(akiKeyIdHex));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    subject: 'CN=ari.certfleet.test',
    issuer: 'CN=certfleet ARI test CA',
    notBefore: new Date(Date.UTC(2026, 0, 1)),
    notAfter: new Date(Date.UTC(2026, 3, 1)),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions,
  });
  return cert.toString('pem');
}

void describe('ariCertId (RFC 9773 §4.1)', () => {
  void it('computes the RFC’s own example identifier from the RFC’s Appendix A certificate', () => {
    assert.equal(ariCertId(RFC9773_APPENDIX_A_CERT), RFC9773_EXAMPLE_ID);
    // Also from DER, and from the two byte strings the RFC lists.
    assert.equal(ariCertId(new X509Certificate(RFC9773_APPENDIX_A_CERT).raw), RFC9773_EXAMPLE_ID);
    assert.equal(ariCertIdFromParts(hex('69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4'), hex('00:87:65:43:21')), RFC9773_EXAMPLE_ID);
  });

  void it('keeps the serial’s leading zero byte that node:crypto’s serialNumber drops', () => {
    // The trap the RFC warns about: Node prints the serial as the number, without the 00.
    assert.equal(new X509Certificate(RFC9773_APPENDIX_A_CERT).serialNumber, '87654321');
    assert.notEqual(ariCertId(RFC9773_APPENDIX_A_CERT).split('.')[1], Buffer.from('87654321', 'hex').toString('base64url'));
  });

  void it('reads serials with and without the high bit exactly as the certificate encodes them', async () => {
    const cases: Array<{ serial: string; content: string }> = [
      // High bit set: DER needs a leading 00 to stay positive.
      { serial: 'ff0102030405', content: '00ff0102030405' },
      { serial: '80', content: '0080' },
      // High bit clear: no padding byte.
      { serial: '0102030405', content: '0102030405' },
      { serial: '7fffffffffffffffffffffffffffffff', content: '7fffffffffffffffffffffffffffffff' },
    ];
    const aki = '0a0b0c0d0e0f101112131415161718191a1b1c1d';
    for (const c of cases) {
      const id = ariCertId(await certWith(c.serial, aki));
      assert.equal(id, `${Buffer.from(aki, 'hex').toString('base64url')}.${Buffer.from(c.content, 'hex').toString('base64url')}`, `serial ${c.serial}`);
      assert.ok(!id.includes('='), 'no padding');
    }
  });

  void it('uses the URL-safe alphabet without padding', () => {
    // 0xfb 0xff 0xbf is "+/+/" in standard base64.
    assert.equal(ariCertIdFromParts(hex('fbffbf'), hex('fbffbf')), '-_-_.-_-_');
    assert.equal(ariCertIdFromParts(hex('01'), hex('0102')), 'AQ.AQI');
  });

  void it('refuses a certificate without an Authority Key Identifier, and text that is no certificate, with BUNDLE_INVALID', async () => {
    const noAki = await certWith('0102', null);
    assert.throws(() => ariCertId(noAki), (e) => isCertfleetError(e, ErrorCode.BundleInvalid) && e.details['reason'] === 'noAuthorityKeyIdentifier');
    assert.throws(() => ariCertId('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), (e) => isCertfleetError(e, ErrorCode.BundleInvalid));
  });

  void it('recognises identifiers by shape', () => {
    assert.equal(isAriCertId(RFC9773_EXAMPLE_ID), true);
    for (const bad of ['', 'nodot', '.AIdlQyE', 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.', 'a.b.c', 'aY+b.AI', 'aY=.AI', 'a/b.c']) {
      assert.equal(isAriCertId(bad), false, bad);
    }
  });
});

void describe('ariRetryAfterMs (RFC 9773 §4.3)', () => {
  const now = Date.UTC(2026, 0, 1);
  const H = 3_600_000;
  const D = 24 * H;
  const table: Array<{ what: string; header: unknown; random: number; want: number }> = [
    { what: 'delay-seconds inside the bounds, no jitter drawn', header: '21600', random: 0, want: 6 * H },
    { what: 'delay-seconds inside the bounds, jittered later by up to 10%', header: '21600', random: 0.5, want: 6 * H + 0.05 * 6 * H },
    { what: 'an HTTP-date two hours ahead', header: new Date(now + 2 * H).toUTCString(), random: 0, want: 2 * H },
    { what: 'under an hour: clamped up to one hour', header: '60', random: 0, want: ARI_MIN_RETRY_MS },
    { what: 'zero: clamped up to one hour', header: '0', random: 0.2, want: H + 0.02 * H },
    { what: 'a month: clamped down to seven days', header: String(30 * 24 * 3600), random: 0, want: ARI_MAX_RETRY_MS },
    { what: 'at the ceiling the jitter goes earlier, never past seven days', header: String(30 * 24 * 3600), random: 0.5, want: 7 * D - 0.05 * 7 * D },
    { what: 'absent: six hours (a long-term error)', header: undefined, random: 0, want: ARI_ERROR_RETRY_MS },
    { what: 'unreadable: six hours', header: 'soon', random: 0, want: ARI_ERROR_RETRY_MS },
    { what: 'an HTTP-date in the past: one hour', header: new Date(now - D).toUTCString(), random: 0, want: H },
  ];
  for (const row of table) {
    void it(row.what, () => {
      assert.equal(ariRetryAfterMs(row.header, now, () => row.random), Math.floor(row.want));
    });
  }

  void it('always stays within one hour and seven days whatever the header and the random draw', () => {
    for (const header of ['0', '1', '3599', '3600', '86400', '604800', '604801', '99999999', undefined, 'x']) {
      for (const r of [0, 0.25, 0.5, 0.999999]) {
        const ms = ariRetryAfterMs(header, now, () => r);
        assert.ok(ms >= ARI_MIN_RETRY_MS && ms <= ARI_MAX_RETRY_MS, `${String(header)} r=${r} → ${ms}`);
      }
    }
  });
});

void describe('parseRenewalInfo (RFC 9773 §4.2)', () => {
  void it('reads the suggested window as epoch ms and the explanation URL', () => {
    const info = parseRenewalInfo(
      {
        suggestedWindow: { start: '2025-01-02T04:00:00Z', end: '2025-01-03T04:00:00Z' },
        explanationURL: 'https://acme.example.com/docs/ari',
      },
      21_600_000,
      ARI_ERROR_RETRY_MS,
    );
    assert.deepEqual(info, {
      window: { start: Date.UTC(2025, 0, 2, 4), end: Date.UTC(2025, 0, 3, 4) },
      explanationUrl: 'https://acme.example.com/docs/ari',
      retryAfterMs: 21_600_000,
    });
  });

  void it('accepts fractional seconds and offsets, and omits an empty explanation URL', () => {
    const info = parseRenewalInfo(
      { suggestedWindow: { start: '2025-01-02T04:00:00.5+02:00', end: '2025-01-02T05:00:00.123Z' }, explanationURL: '' },
      1,
      2,
    );
    assert.equal(info.window.start, Date.UTC(2025, 0, 2, 2, 0, 0, 500));
    assert.equal(info.window.end, Date.UTC(2025, 0, 2, 5, 0, 0, 123));
    assert.equal('explanationUrl' in info, false);
  });

  const invalid: Array<{ what: string; data: unknown }> = [
    { what: 'end equal to start', data: { suggestedWindow: { start: '2025-01-02T04:00:00Z', end: '2025-01-02T04:00:00Z' } } },
    { what: 'end before start', data: { suggestedWindow: { start: '2025-01-03T04:00:00Z', end: '2025-01-02T04:00:00Z' } } },
    { what: 'no suggestedWindow', data: { explanationURL: 'https://x' } },
    { what: 'not an object', data: 'OK' },
    { what: 'a date without a time', data: { suggestedWindow: { start: '2025-01-02', end: '2025-01-03' } } },
    { what: 'a number for a timestamp', data: { suggestedWindow: { start: 1, end: 2 } } },
  ];
  for (const row of invalid) {
    void it(`treats ${row.what} as no answer: retryable ACME_PROBLEM to retry after the long-term delay`, () => {
      assert.throws(
        () => parseRenewalInfo(row.data, 1000, 12_345, 'https://ca/renewal-info/x.y'),
        (e) =>
          isCertfleetError(e, ErrorCode.AcmeProblem) &&
          e.retryable &&
          e.retryAfterMs === 12_345 &&
          e.details['reason'] === 'invalidRenewalInfo' &&
          e.details['url'] === 'https://ca/renewal-info/x.y',
      );
    });
  }
});

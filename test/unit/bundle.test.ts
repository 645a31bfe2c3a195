import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateBundle, isValidCertName } from '../../shared/bundle/index.js';
import { isCertfleetError, type ErrorCode } from '../../shared/errors/index.js';
import type { Bundle } from '../../shared/model/index.js';
import { makeBundle, makeTestCa, sharedCa } from '../harness/certs.js';

const NOW = Date.parse('2026-03-01T00:00:00Z');
const DAY = 86_400_000;
const ca = await sharedCa();
const valid = await makeBundle({
  name: 'web',
  version: 3,
  names: ['www.example.test', 'example.test'],
  notBefore: new Date(NOW - DAY),
  notAfter: new Date(NOW + 60 * DAY),
});
const other = await makeBundle({ name: 'web', version: 3, names: ['www.example.test'] });
const rsa = await makeBundle({ name: 'web', version: 3, keyType: 'rsa-2048', notBefore: new Date(NOW - DAY), notAfter: new Date(NOW + DAY) });
const wildcard = await makeBundle({ name: 'wild', version: 1, names: ['*.example.test'], notBefore: new Date(NOW - DAY), notAfter: new Date(NOW + DAY) });
const expired = await makeBundle({ name: 'web', version: 1, notBefore: new Date(NOW - 90 * DAY), notAfter: new Date(NOW) });
const future = await makeBundle({ name: 'web', version: 1, notBefore: new Date(NOW + DAY), notAfter: new Date(NOW + 90 * DAY) });
const slightlyFuture = await makeBundle({ name: 'web', version: 1, notBefore: new Date(NOW + 60_000), notAfter: new Date(NOW + 90 * DAY) });
const otherRoot = await makeTestCa();

function edit(base: Bundle, change: (b: Bundle) => void): Bundle {
  const copy: Bundle = { ...base, meta: { ...base.meta, names: [...base.meta.names] } };
  change(copy);
  return copy;
}

const rows: { what: string; bundle: Bundle; opts?: Partial<Parameters<typeof validateBundle>[1]>; code: ErrorCode | null; message?: RegExp }[] = [
  { what: 'a complete, current ECDSA bundle is accepted', bundle: valid, code: null },
  { what: 'an RSA bundle is accepted', bundle: rsa, code: null },
  { what: 'a bundle whose chain is empty is accepted', bundle: edit(valid, (b) => (b.chainPem = '')), code: null },
  { what: 'a wildcard certificate covers a required single-label name', bundle: wildcard, opts: { requiredNames: ['a.example.test'] }, code: null },
  { what: 'a notBefore within the clock skew allowance is accepted', bundle: slightlyFuture, code: null },
  { what: 'an unparsable leaf is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.certPem = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n')), code: 'BUNDLE_INVALID', message: /cannot be parsed/ },
  { what: 'a certPem holding the full chain is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.certPem += b.chainPem)), code: 'BUNDLE_INVALID', message: /exactly one certificate/ },
  { what: 'an empty certPem is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.certPem = '')), code: 'BUNDLE_INVALID' },
  { what: 'a fingerprint different from meta is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.meta.fingerprint = other.meta.fingerprint)), code: 'BUNDLE_INVALID', message: /fingerprint/ },
  { what: 'a version other than the one asked for is BUNDLE_INVALID', bundle: valid, opts: { expectedVersion: 4 }, code: 'BUNDLE_INVALID', message: /version mismatch/ },
  { what: 'a non-positive version is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.meta.version = 0)), code: 'BUNDLE_INVALID', message: /positive integer/ },
  { what: 'a name that could escape the state directory is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.meta.name = '../etc')), code: 'BUNDLE_INVALID', message: /name/ },
  { what: 'a chain in the wrong order is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.chainPem = ca.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/).reverse().join(''))), code: 'BUNDLE_INVALID', message: /bad chain/ },
  { what: 'a chain from another CA is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.chainPem = otherRoot.chainPem)), code: 'BUNDLE_INVALID', message: /bad chain/ },
  { what: 'a chainPem with no certificate in it is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.chainPem = 'garbage')), code: 'BUNDLE_INVALID' },
  { what: 'an unparsable private key is BUNDLE_INVALID, not a mismatch', bundle: edit(valid, (b) => (b.keyPem = 'garbage')), code: 'BUNDLE_INVALID', message: /private key/ },
  { what: 'a key type different from meta.keyType is BUNDLE_INVALID', bundle: edit(valid, (b) => (b.meta.keyType = 'rsa-2048')), code: 'BUNDLE_INVALID', message: /key type/ },
  { what: 'another certificate\'s ECDSA key is BUNDLE_KEY_MISMATCH', bundle: edit(valid, (b) => (b.keyPem = other.keyPem)), code: 'BUNDLE_KEY_MISMATCH' },
  { what: 'an RSA key on an ECDSA certificate is BUNDLE_KEY_MISMATCH', bundle: edit(valid, (b) => (b.keyPem = rsa.keyPem)), code: 'BUNDLE_KEY_MISMATCH' },
  { what: 'required names the certificate lacks are BUNDLE_NAMES_MISSING, listed in the message', bundle: valid, opts: { requiredNames: ['www.example.test', 'api.example.test', 'x.example.test'] }, code: 'BUNDLE_NAMES_MISSING', message: /api\.example\.test, x\.example\.test/ },
  { what: 'meta.names are required by default', bundle: edit(valid, (b) => b.meta.names.push('extra.example.test')), code: 'BUNDLE_NAMES_MISSING', message: /extra\.example\.test/ },
  { what: 'a wildcard does not cover the apex', bundle: wildcard, opts: { requiredNames: ['example.test'] }, code: 'BUNDLE_NAMES_MISSING' },
  { what: 'a certificate whose notAfter is now is BUNDLE_EXPIRED', bundle: expired, code: 'BUNDLE_EXPIRED', message: /expired/ },
  { what: 'a valid bundle validated after its notAfter is BUNDLE_EXPIRED', bundle: valid, opts: { now: NOW + 61 * DAY }, code: 'BUNDLE_EXPIRED' },
  { what: 'a certificate not yet valid is BUNDLE_EXPIRED', bundle: future, code: 'BUNDLE_EXPIRED', message: /not valid before/ },
  { what: 'a notBefore just in the future is rejected when no skew is allowed', bundle: slightlyFuture, opts: { clockSkewMs: 0 }, code: 'BUNDLE_EXPIRED' },
];

for (const row of rows) {
  void test(`validateBundle: ${row.what}`, () => {
    const opts = { now: NOW, ...row.opts };
    if (row.code === null) {
      validateBundle(row.bundle, opts);
      return;
    }
    assert.throws(
      () => validateBundle(row.bundle, opts),
      (err) => {
        assert.ok(isCertfleetError(err), String(err));
        assert.equal(err.code, row.code, err.message);
        if (row.message) assert.match(err.message, row.message);
        assert.equal(JSON.stringify(err.details).includes('PRIVATE KEY'), false);
        return true;
      },
    );
  });
}

void test('isValidCertName accepts ordinary identifiers and refuses path tricks', () => {
  for (const good of ['web', 'api-1', 'x'.repeat(63)]) assert.equal(isValidCertName(good), true, good);
  for (const bad of ['', '.', '..', '.hidden', 'a/b', 'a..b', '*.example.com', 'a b', 'A-b', 'www.example.com', 'api_1', 'x'.repeat(64)]) assert.equal(isValidCertName(bad), false, bad);
});

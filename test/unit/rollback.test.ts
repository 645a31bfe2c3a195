import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkRollbackBundle, rollbackTarget } from '../../controller/rollback/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import type { Bundle, VersionMeta } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';

const NOW = Date.UTC(2026, 5, 1);
const DAY = 86_400_000;
function v(version: number, expiresInDays: number): VersionMeta {
  return {
    name: 'web',
    version,
    serial: `0${version}`,
    fingerprint: `f${version}`,
    names: ['a.test'],
    notBefore: new Date(NOW - 30 * DAY).toISOString(),
    notAfter: new Date(NOW + expiresInDays * DAY).toISOString(),
    issuedAt: new Date(NOW - 30 * DAY).toISOString(),
    keyType: 'ecdsa-p256',
  };
}
const versions = [v(1, -1), v(2, 30), v(3, 60), v(4, 80)];

test('without --to, rollback goes to the version just before the desired one', () => {
  assert.equal(rollbackTarget('web', versions, 4, 0, NOW).version, 3);
  assert.equal(rollbackTarget('web', versions, 3, 0, NOW).version, 2);
});

test('--to picks an explicit older or newer version', () => {
  assert.equal(rollbackTarget('web', versions, 4, 2, NOW).version, 2);
  assert.equal(rollbackTarget('web', versions, 2, 4, NOW).version, 4);
});

const REFUSED: Array<[string, number, number, string, RegExp]> = [
  ['an expired version', 4, 1, ErrorCode.UsageInvalid, /expired/],
  ['an unknown version', 4, 9, ErrorCode.NotFound, /no version 9/],
  ['the current version', 4, 4, ErrorCode.UsageInvalid, /already at version 4/],
  ['nothing before the first version', 1, 0, ErrorCode.NotFound, /no version before v1/],
];
for (const [what, desired, to, code, msg] of REFUSED) {
  test(`rollback refuses ${what} with a clear error`, () => {
    assert.throws(() => rollbackTarget('web', versions, desired, to, NOW), (err: unknown) => isCertfleetError(err) && err.code === code && msg.test(err.message));
  });
}

test('rollback of a certificate without versions is NOT_FOUND', () => {
  assert.throws(() => rollbackTarget('web', [], 0, 0, NOW), (err: unknown) => isCertfleetError(err, ErrorCode.NotFound));
});

// ---- the stored bundle is checked before a rollback pins it ----

test('a stored version whose files are intact passes the rollback check', async () => {
  const b = await makeBundle({ name: 'web', version: 2, names: ['a.test'] });
  assert.doesNotThrow(() => checkRollbackBundle(b.meta, b, ['a.test'], Date.now()));
});

const TAMPERED: Array<[string, (good: Bundle, other: Bundle) => Bundle | null, string, RegExp]> = [
  ['its certificate overwritten with another one', (g, o) => ({ ...g, certPem: o.certPem }), ErrorCode.BundleInvalid, /leaf fingerprint differs from meta\.fingerprint/],
  ['its key replaced', (g, o) => ({ ...g, keyPem: o.keyPem }), ErrorCode.BundleKeyMismatch, /private key does not match/],
  ['its meta rewritten to another fingerprint', (g) => ({ ...g, meta: { ...g.meta, fingerprint: 'ab'.repeat(32) } }), ErrorCode.BundleInvalid, /stored meta's fingerprint changed/],
  ['its material missing', () => null, ErrorCode.StoreCorrupt, /holds no material/],
];
for (const [what, tamper, code, message] of TAMPERED) {
  test(`rollback to a stored version with ${what} is refused before anything is pinned`, async () => {
    const good = await makeBundle({ name: 'web', version: 2, names: ['a.test'] });
    const other = await makeBundle({ name: 'web', version: 3, names: ['a.test'] });
    assert.throws(
      () => checkRollbackBundle(good.meta, tamper(good, other), ['a.test'], Date.now()),
      (err) => isCertfleetError(err) && err.code === code && /^refusing to roll back web to version 2: /.test(err.message) && message.test(err.message) && /nothing was changed$/.test(err.message),
    );
  });
}

test('a stored version that no longer covers the configured names is refused', async () => {
  const b = await makeBundle({ name: 'web', version: 2, names: ['a.test'] });
  assert.throws(
    () => checkRollbackBundle(b.meta, b, ['a.test', 'b.test'], Date.now()),
    (err) => isCertfleetError(err, ErrorCode.BundleNamesMissing) && /does not cover b\.test/.test(err.message),
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rollbackTarget } from '../../controller/rollback/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import type { VersionMeta } from '../../shared/model/index.js';

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

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultServerName } from '../../agent/sync/index.js';

const CASES: Array<[string[], string]> = [
  [['www.example.com', 'example.com'], 'www.example.com'],
  [['*.example.com', 'example.com'], 'example.com'],
  [['*.example.com'], 'certfleet-verify.example.com'],
  [[], ''],
];
for (const [names, want] of CASES) {
  test(`the served-certificate check of ${JSON.stringify(names)} asks for ${JSON.stringify(want)}`, () => {
    assert.equal(defaultServerName(names), want);
  });
}

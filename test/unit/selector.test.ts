import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matches, parseSelector } from '../../shared/selector/index.js';

const edge = { role: 'lb', site: 'ams', edge: '' };
const core = { role: 'web', site: 'fra' };

const CASES: Array<[string, Record<string, string>, boolean]> = [
  ['*', core, true],
  ['role=lb', edge, true],
  ['role==lb', core, false],
  ['role!=lb', core, true],
  ['role!=lb', {}, true],
  ['site in (ams, fra)', core, true],
  ['site in (ams)', core, false],
  ['site in (ams)', {}, false],
  ['site notin (ams)', core, true],
  ['site notin (ams)', {}, true],
  ['edge', edge, true],
  ['edge', core, false],
  ['!edge', core, true],
  ['role=lb,site in (ams,fra),edge', edge, true],
  ['role=lb,site in (ams,fra),!edge', edge, false],
];
for (const [text, labels, want] of CASES) {
  test(`selector "${text}" ${want ? 'selects' : 'does not select'} ${JSON.stringify(labels)}`, () => {
    assert.equal(matches(parseSelector(text), labels), want);
  });
}

const BAD: Array<[string, RegExp]> = [
  ['', /empty selector/],
  ['role=lb,', /empty requirement/],
  // An unclosed set used to be reported as a bad label key: the message must say what is missing.
  ['role in (a', /unterminated set in "role in \(a": expected "\)"/],
  ['role in (a,', /unterminated set in "role in \(a,": expected "\)"/],
  ['role in (a,)', /empty value in "role in \(a,\)"/],
  ['role in a, b)', /"\)" without "\("/],
  ['role in ((a))', /nested "\("/],
  ['role (a)', /bad set "role \(a\)": expected KEY in \(V1, V2\)/],
  ['ro le=x', /bad label key/],
  ['role=a b', /bad label key|bad value/],
];
for (const [text, why] of BAD) {
  test(`selector ${JSON.stringify(text)} is refused with a reason`, () => {
    assert.throws(() => parseSelector(text), why);
  });
}

/**
 * One rule for "the same certificate names" (controller/names): DNS names compare
 * case-insensitively and without the root's trailing dot; order and repetition do not
 * matter. Before it, the issuer compared sorted lists case-sensitively and the certbot
 * YAML merge compared sets case-sensitively, so each module could answer differently.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sameNameSet } from '../../controller/names/index.js';

const CASES: Array<[string, string[], string[], boolean]> = [
  ['the same names in the same order', ['a.example', 'b.example'], ['a.example', 'b.example'], true],
  ['the same names in another order', ['b.example', 'a.example'], ['a.example', 'b.example'], true],
  ['names differing only in case (RFC 4343)', ['WWW.Example.COM'], ['www.example.com'], true],
  ['a fully qualified name with its trailing dot', ['www.example.com.'], ['www.example.com'], true],
  ['a name listed twice', ['a.example', 'a.example', 'b.example'], ['b.example', 'a.example'], true],
  ['a name more', ['a.example'], ['a.example', 'b.example'], false],
  ['a name less', ['a.example', 'b.example'], ['a.example'], false],
  ['another name, same count', ['a.example', 'b.example'], ['a.example', 'c.example'], false],
  ['a wildcard and its base name', ['*.example.com'], ['example.com'], false],
  ['two empty lists', [], [], true],
];

void describe('sameNameSet', () => {
  for (const [what, a, b, want] of CASES) {
    void it(`${want ? 'same' : 'different'}: ${what}`, () => {
      assert.equal(sameNameSet(a, b), want);
      assert.equal(sameNameSet(b, a), want, 'symmetric');
    });
  }
});

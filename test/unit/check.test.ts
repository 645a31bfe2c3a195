/**
 * shared/check against zod 4: the agent validates its configuration and the NATS records
 * with shared/check instead of zod (issue #13, agent memory), and must accept and refuse
 * exactly what the zod schemas did, with the same paths and messages. Each row runs one
 * input through the same schema written with both libraries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { c } from '../../shared/check/index.js';

interface Parsed {
  success: boolean;
  data?: unknown;
  issues?: Array<{ code: string; path: PropertyKey[]; message: string; keys?: string[] }>;
}
interface Parser {
  safeParse(v: unknown): { success: true; data: unknown } | { success: false; error: { issues: ReadonlyArray<{ code: string; path: PropertyKey[]; message: string }> } };
}
const outcome = (s: Parser, v: unknown): Parsed => {
  const r = s.safeParse(v);
  if (r.success) return { success: true, data: r.data };
  return {
    success: false,
    issues: r.error.issues.map((i) => ({ code: i.code, path: [...i.path], message: i.message, ...('keys' in i ? { keys: [...(i.keys as string[])] } : {}) })),
  };
};

const PAIRS: Array<[string, Parser, Parser, unknown[]]> = [
  ['string().min(1)', z.string().min(1), c.string().min(1), ['a', '', 5, null, undefined, [], {}]],
  ['string().max(3)', z.string().max(3), c.string().max(3), ['abc', 'abcd']],
  ['string().regex() with and without a message', z.object({ a: z.string().regex(/^x+$/, 'only x'), b: z.string().regex(/^y$/) }), c.strictObject({ a: c.string().regex(/^x+$/, 'only x'), b: c.string().regex(/^y$/) }), [{ a: 'xx', b: 'y' }, { a: 'xy', b: 'z' }]],
  ['int().min(1).max(9)', z.int().min(1).max(9), c.int().min(1).max(9), [1, 9, 0, 10, 1.5, '3', Number.NaN, Infinity, 2 ** 60]],
  ['number().min(0)', z.number().min(0), c.number().min(0), [0, 0.5, -1, Number.NaN, 'x']],
  ['boolean()', z.boolean(), c.boolean(), [true, false, 'yes', 0]],
  ['enum()', z.enum(['a', 'b']), c.enum(['a', 'b']), ['a', 'c', 1, undefined]],
  ["literal('')", z.literal(''), c.literal(''), ['', 'x']],
  ['array().min(1).max(2)', z.array(z.string()).min(1).max(2), c.array(c.string()).min(1).max(2), [['a'], [], ['a', 'b', 'c'], [1], 'a']],
  ['array().min(1, message)', z.array(z.string()).min(1, 'give one'), c.array(c.string()).min(1, 'give one'), [[]]],
  [
    'strictObject with optional, default and nested fields',
    z.strictObject({ a: z.string(), b: z.int().optional(), d: z.boolean().default(false), n: z.strictObject({ x: z.string() }).optional() }),
    c.strictObject({ a: c.string(), b: c.int().optional(), d: c.boolean().default(false), n: c.strictObject({ x: c.string() }).optional() }),
    [{ a: 'x' }, { a: 'x', b: 2, d: true }, {}, { a: 1, extra: 1, more: 2 }, { a: 'x', n: { x: 1, y: 2 } }, [], null, 'x'],
  ],
  ['prefault({}) parses the default', z.strictObject({ l: z.enum(['i', 'w']).default('i') }).prefault({}), c.strictObject({ l: c.enum(['i', 'w']).default('i') }).prefault({}), [undefined, { l: 'w' }, { l: 'x' }]],
  ['record()', z.record(z.string(), z.int()), c.record(c.string(), c.int()), [{ a: 1 }, { a: 'x' }, [], null]],
  ['union([string, array])', z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]), c.union([c.string().min(1), c.array(c.string().min(1)).min(1)]), ['a', ['a'], [], '', 5]],
  ['nullable()', z.strictObject({ h: z.strictObject({ a: z.int() }).nullable() }), c.strictObject({ h: c.strictObject({ a: c.int() }).nullable() }), [{ h: null }, { h: { a: 1 } }, { h: undefined }]],
  [
    'refine() runs only on a value without other problems, at its path',
    z.strictObject({ t: z.string(), k: z.string() }).refine((v) => v.k.startsWith(v.t), { message: 'k is not for t', path: ['k'] }),
    c.strictObject({ t: c.string(), k: c.string() }).refine((v) => v.k.startsWith(v.t), { message: 'k is not for t', path: ['k'] }),
    [{ t: 'a', k: 'ab' }, { t: 'a', k: 'b' }, { t: 1, k: 'b' }],
  ],
  [
    'superRefine() adds issues at relative paths',
    z.strictObject({ a: z.array(z.string()) }).superRefine((v, ctx) => {
      if (v.a.length > 1) ctx.addIssue({ code: 'custom', path: ['a', 1], message: 'one only' });
    }),
    c.strictObject({ a: c.array(c.string()) }).superRefine((v, ctx) => {
      if (v.a.length > 1) ctx.addIssue({ code: 'custom', path: ['a', 1], message: 'one only' });
    }),
    [{ a: ['x'] }, { a: ['x', 'y'] }, { a: [1, 'y'] }],
  ],
  [
    'superRefine() still runs after a failed length or pattern, not after a wrong type',
    z.strictObject({ a: z.string().min(3), b: z.string().regex(/^b$/) }).superRefine((v, ctx) => {
      if (v.a === v.b) ctx.addIssue({ code: 'custom', path: ['b'], message: 'same' });
    }),
    c.strictObject({ a: c.string().min(3), b: c.string().regex(/^b$/) }).superRefine((v, ctx) => {
      if (v.a === v.b) ctx.addIssue({ code: 'custom', path: ['b'], message: 'same' });
    }),
    [{ a: 'x', b: 'x' }, { a: 1, b: 1 }, { a: 'bbb', b: 'bbb' }],
  ],
];

/**
 * What must agree: acceptance and the value produced, the first problem (code, path,
 * message) and the set of paths with a problem. Not compared: zod's extra problems for
 * a value of the wrong type (it also checks the length of an array given for a string)
 * or twice for one bound (an int beyond the safe range and beyond max).
 */
const comparable = (p: Parsed): unknown => (p.success ? p : { success: false, first: p.issues?.[0], paths: [...new Set(p.issues?.map((i) => JSON.stringify(i.path)))].sort() });

for (const [what, zod, check, inputs] of PAIRS) {
  test(`shared/check's ${what} accepts, refuses and says what zod 4 does`, () => {
    for (const input of inputs) {
      assert.deepEqual(comparable(outcome(check, input)), comparable(outcome(zod, input)), `input ${JSON.stringify(input)}`);
    }
  });
}

test('a refinement added to an object schema keeps its shape visible (the unknown-field hint and the docs test walk it)', () => {
  const s = c.strictObject({ a: c.string(), b: c.int() }).superRefine(() => undefined);
  assert.deepEqual(Object.keys(s.shape), ['a', 'b']);
  assert.equal(s.def.type, 'object');
});

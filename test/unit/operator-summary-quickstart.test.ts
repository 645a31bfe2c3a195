/**
 * The quick start runs against Pebble, which has no rate limits: its controller template
 * must not mirror Let's Encrypt's budgets. With the default preset, the third
 * `certfleet renew web` of a new user was deferred for 31 hours (issue #14).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { parse } from 'yaml';
import { Budget, BudgetConfigSchema } from '../../controller/budget/index.js';

const TEMPLATE = new URL('../../../deploy/examples/quickstart-controller.yaml', import.meta.url);

test('the quick start template uses budgets preset none, and says why', () => {
  const text = fs.readFileSync(TEMPLATE, 'utf8');
  const doc = parse(text.replace(/@[A-Z_]+@/g, '1')) as { budgets?: unknown };
  const cfg = BudgetConfigSchema.parse(doc.budgets ?? {});
  assert.equal(cfg.preset, 'none');
  assert.match(text, /Pebble enforces no rate limits/);
});

test("with the quick start's budgets, twenty renewals of the same names in a row are each allowed", () => {
  const text = fs.readFileSync(TEMPLATE, 'utf8');
  const doc = parse(text.replace(/@[A-Z_]+@/g, '1')) as { budgets?: unknown };
  const budget = Budget.fromConfig(BudgetConfigSchema.parse(doc.budgets ?? {}));
  const now = Date.parse('2026-03-01T12:00:00Z');
  for (let i = 0; i < 20; i++) {
    const verdict = budget.check({ names: ['www.example.test', 'example.test'], emergency: false, renewal: true }, now + i * 1000);
    assert.ok(verdict.ok, `renewal ${i + 1} deferred: ${verdict.ok ? '' : verdict.reason}`);
    budget.commit(verdict.spend, now + i * 1000);
  }
});

test('uncommenting the quick start template’s issuers block is the one change that adds a fallback CA for every certificate', async () => {
  const { parseControllerConfig, issuerChain, issuersOf } = await import('../../controller/config/index.js');
  const text = fs.readFileSync(TEMPLATE, 'utf8');
  const render = (t: string): string => t.replace(/@QS@/g, '/qs').replace(/@PEBBLE_BACKUP_PORT@/g, '14001').replace(/@[A-Z_]+@/g, '1');
  const as = parseControllerConfig(render(text), '/qs/controller.yaml');
  assert.deepEqual(issuersOf(as).map((i) => i.name), ['default'], 'shipped with one CA');
  const block = /^#issuers:\n(?:#  .*\n)+/m.exec(text)?.[0];
  assert.ok(block, 'the template carries a commented issuers block');
  const changed = text.replace(block, block.replace(/^#/gm, ''));
  assert.ok(/^[^#]*@PEBBLE_BACKUP_PORT@/m.test(changed), 'deploy/quickstart.sh starts the second Pebble when a line outside comments names its port');
  const cfg = parseControllerConfig(render(changed), '/qs/controller.yaml');
  assert.deepEqual(issuersOf(cfg).map((i) => [i.name, i.directoryUrl]), [['default', 'https://127.0.0.1:1/dir'], ['backup', 'https://127.0.0.1:14001/dir']]);
  for (const c of cfg.certificates) assert.deepEqual(issuerChain(cfg, c), ['default', 'backup']);
});

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

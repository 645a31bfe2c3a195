/**
 * Budget read-back for fault tests: what `certfleet budgets --json` says, and how many
 * tokens a certificate's exact-set bucket has spent — the number to compare with the
 * versions issued, to catch an order charged twice.
 */
import type { Fleet } from './fleet.js';

/** One row of `certfleet budgets --json`. */
export interface BudgetRow {
  /** "New Certificates per Exact Set of Identifiers (a.example.test,b.example.test)". */
  name: string;
  limit: string;
  available: number;
  capacity: number;
  reserved: number;
  nextTokenAt: string;
}

/** Runs `certfleet budgets --json` (the operator's view). Throws when the CLI fails. */
export async function readBudgets(fleet: Pick<Fleet, 'cliJson'>): Promise<BudgetRow[]> {
  const res = await fleet.cliJson<{ preset: string; budgets: BudgetRow[] }>(['budgets']);
  return res.budgets;
}

/** The bucket name the controller gives the exact-set limit of `names`. */
export function exactSetBucket(names: readonly string[]): string {
  const key = [...new Set(names.map((n) => n.toLowerCase()))].sort().join(',');
  return `New Certificates per Exact Set of Identifiers (${key})`;
}

/**
 * Whole tokens spent from the exact-set bucket of `names`: capacity minus what is
 * available (a bucket at capacity is not listed: 0). The bucket refills one token per
 * period/count (33.6 h with Let's Encrypt's 5 per week), so within a test run this
 * counts exactly the certificates the controller charged.
 */
export function exactSetSpent(rows: readonly BudgetRow[], names: readonly string[]): number {
  const row = rows.find((r) => r.name === exactSetBucket(names));
  return row === undefined ? 0 : Math.round(row.capacity - row.available);
}

/** Whether an authorization-failure bucket of any of `names` has been spent from. */
export function authzFailuresSpent(rows: readonly BudgetRow[], names: readonly string[]): string[] {
  const wanted = new Set(names.map((n) => `Authorization Failures per Identifier per Account (${n.toLowerCase()})`));
  return rows.filter((r) => wanted.has(r.name) && r.available < r.capacity).map((r) => r.name);
}

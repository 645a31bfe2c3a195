/**
 * Rate-limit budgets: the pure token buckets and presets (./budget.ts) and their
 * persistence in NATS (./keeper.ts). This file is the folder's surface only; keeping the
 * pure part in its own file lets the keeper import it without an import cycle.
 */
export * from './budget.js';
export { BudgetKeeper } from './keeper.js';

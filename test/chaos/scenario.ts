/**
 * Shared pieces of the fault-matrix suites (test/chaos/*.test.ts): operator actions the
 * scenarios take, where a killed controller stopped, and how a row is reported. The
 * measuring itself is test/harness/fault-matrix.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { Fleet } from '../harness/fleet.js';
import { describeResult, type ScenarioResult } from '../harness/fault-matrix.js';
import type { LogRecord } from '../harness/kill-at.js';

/**
 * `certfleet renew NAME`, as an operator types it; throws when refused. `renew` waits a
 * few seconds for the work loop's answer, so a scenario that kills the controller early in
 * the issuance can cut that answer off (CONTROLLER_UNAVAILABLE): that is fine when the
 * request itself was stored (the durable `renewals/NAME` object the loop acts on) or
 * already carried out (a new version stored), which is what an operator relies on.
 */
export async function renew(fleet: Fleet, name: string): Promise<void> {
  const before = fileStoreFacts(fleet, name).versions;
  const res = await fleet.cli(['renew', name]);
  if (res.code === 0) return;
  // Stored and still outstanding, or already carried out (a loaded machine can deliver the
  // answer after the issuance reached the step the scenario kills at).
  const recorded = fs.existsSync(path.join(fleet.controllerState, 'store', 'objects', 'renewals', `${name}.json`)) || fileStoreFacts(fleet, name).versions > before;
  if (res.code === 4 && /CONTROLLER_UNAVAILABLE/.test(res.stderr) && recorded) return;
  throw new Error(`certfleet renew ${name} exited ${res.code}: ${res.stderr}`);
}

/** A matcher for the controller's log line `msg` about certificate `cert` from `component`. */
export function controllerLine(msg: string, component: string, cert: string): (rec: LogRecord) => boolean {
  return (rec) => rec['msg'] === msg && rec['component'] === component && rec['cert'] === cert;
}

/**
 * What the file store held for `cert` right after a kill: whether a pending order was
 * saved, and how many versions are stored — so a row says where the kill really landed.
 */
export function fileStoreFacts(fleet: Fleet, cert: string): { pendingOrder: boolean; versions: number } {
  const store = path.join(fleet.controllerState, 'store');
  const pendingOrder = fs.existsSync(path.join(store, 'objects', 'orders', `${cert}.json`));
  const dir = path.join(store, 'certs', cert);
  const versions = fs.existsSync(dir) ? fs.readdirSync(dir).filter((d) => /^\d+$/.test(d)).length : 0;
  return { pendingOrder, versions };
}

/**
 * Reports a row in the test output and fails the test when the row failed, with every
 * violation (and the fleet's logs when `withLogs`). A failing row is expected on a branch
 * without the fix it names; the matrix file keeps it either way.
 */
export function reportRow(t: TestContext, fleet: Fleet, r: ScenarioResult, withLogs = process.env['CERTFLEET_CHAOS_LOGS'] === '1'): void {
  t.diagnostic(describeResult(r));
  assert.ok(r.pass, `${describeResult(r)}${withLogs ? `\n${fleet.logs()}` : ''}`);
}

/** Sleeps `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

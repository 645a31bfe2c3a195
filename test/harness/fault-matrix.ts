/**
 * The fault matrix's yardstick (test/chaos/): after a fault, measure how long the fleet
 * takes to converge again and check that nothing was lost, served wrong, ordered twice
 * or charged twice. Each scenario ends as one {@link ScenarioResult}; the suite writes
 * them to `$CERTFLEET_CHAOS_RESULTS/<suite>.json` (default `dist/test/chaos/results/`)
 * and prints them, which is where docs/reliability.md takes its numbers from.
 *
 * "Converged" for a certificate means all of:
 *   - the controller's desired version is at least the version the scenario waits for;
 *   - `certfleet certs` says `ready`, every assigned agent reporting it installed;
 *   - every nginx that serves the certificate presents the desired fingerprint (TLS
 *     handshake with SNI: what clients get, not what anyone reports).
 *
 * The invariants, checked once converged (or once the bound has passed):
 *   - 0 lost: every certificate the CA handed out for the certificate's names (downloads
 *     seen by the ACME proxy) is a stored version;
 *   - 0 wrong served: as above, at the end;
 *   - no duplicate order: orders the CA accepted for the certificate's names ≤ stored
 *     versions + an unfinished order the controller holds (+ what the scenario allows,
 *     e.g. after the CA itself forgot an order);
 *   - no budget double spend: tokens spent from the exact-set bucket = stored versions
 *     (+ the unfinished order's); fewer is reported too (a refund of an issued one);
 *   - no HTTP-01 challenge record left in NATS for the certificate.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCredentials } from '../../cli/credentials.js';
import { operatorClient, type OperatorClient } from '../../cli/client.js';
import { connectNats, openKv } from '../../shared/nats/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { Bucket } from '../../shared/wire/index.js';
import type { ChallengeRecord } from '../../shared/model/index.js';
import { parseChallengeRecord } from '../../shared/records/index.js';
import { exactSetSpent, readBudgets } from './budgets.js';
import type { Fleet, FleetAgentSpec, FleetCertificate } from './fleet.js';
import { wrongServed, type WrongServed } from './served.js';

/** Where a suite's results go unless CERTFLEET_CHAOS_RESULTS says otherwise. */
const DEFAULT_RESULTS_DIR = fileURLToPath(new URL('../chaos/results/', import.meta.url));

/** The fleet as the matrix sees it. */
export interface MatrixFleet {
  fleet: Fleet;
  certificates: readonly FleetCertificate[];
  agents: readonly FleetAgentSpec[];
  /**
   * Whether the controller holds an unfinished order for the certificate (its store's
   * `orders/<name>` record). That order and its budget token are accounted for, not
   * counted as duplicates; a scenario that ends with one has not converged anyway.
   */
  pendingOrder?: (cert: string) => boolean | Promise<boolean>;
}

/** One row of the matrix. */
export interface ScenarioResult {
  id: string;
  fault: string;
  /** The bound convergence is held to, ms. */
  boundMs: number;
  /** Fault end → converged, ms; null when not converged within the bound. */
  convergenceMs: number | null;
  /** Fault end → every node served the desired version (the operator's view aside), ms; null: never within the bound. */
  servedMs: number | null;
  /** Every invariant that did not hold (empty: pass). */
  failures: string[];
  /** Facts worth knowing (where a kill landed, what was observed). */
  notes: string[];
  pass: boolean;
}

/** Runs `fn` with an operator client on a fresh channel (a restarted controller is dialled afresh). */
export async function withOperator<T>(fleet: Pick<Fleet, 'credentials'>, fn: (c: OperatorClient) => Promise<T>, timeoutMs = 5000): Promise<T> {
  const client = operatorClient(loadCredentials(fleet.credentials), timeoutMs);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** What the controller says about one certificate now. */
interface CertView {
  desiredVersion: number;
  desiredFingerprint: string;
  latestVersion: number;
  fingerprints: string[];
  state: string;
  agentsCurrent: number;
  agentsAssigned: number;
  lastError: string;
}

async function certView(fleet: Fleet, name: string): Promise<CertView> {
  return withOperator(fleet, async (c) => {
    const history = await c.getHistory({ name });
    const certs = await c.listCertificates();
    const summary = certs.certificates.find((s) => s.name === name);
    const desired = history.versions.find((v) => v.desired)?.version;
    const versions = history.versions.map((v) => v.version).filter((v): v is NonNullable<typeof v> => v !== null && v !== undefined);
    return {
      desiredVersion: desired?.version ?? 0,
      desiredFingerprint: desired?.fingerprint ?? '',
      latestVersion: Math.max(0, ...versions.map((v) => v.version)),
      fingerprints: versions.map((v) => v.fingerprint),
      state: summary?.state ?? '(unknown)',
      agentsCurrent: summary?.agentsCurrent ?? 0,
      agentsAssigned: summary?.agentsAssigned ?? 0,
      lastError: summary?.lastError ?? '',
    };
  });
}

/** Why `cert` is not converged now: on the nodes (`served`) and in the operator's view (`view`); '' when fine. */
async function notConverged(m: MatrixFleet, cert: FleetCertificate, minVersion: number): Promise<{ served: string; view: string }> {
  let v: CertView;
  try {
    v = await certView(m.fleet, cert.name);
  } catch (err) {
    const why = `${cert.name}: controller unreachable (${(err as Error).message})`;
    return { served: why, view: why };
  }
  let served = '';
  if (v.desiredVersion < minVersion) {
    served = `${cert.name}: desired v${v.desiredVersion}, waiting for v${minVersion} (state ${v.state}${v.lastError ? `: ${v.lastError}` : ''})`;
  } else {
    const wrong = await wrongServed({ agents: m.agents, tlsPort: m.fleet.tlsPort, cert: cert.name, names: cert.names, want: v.desiredFingerprint });
    if (wrong.length > 0) served = `${cert.name}: ${describeWrong(wrong)} (desired v${v.desiredVersion})`;
  }
  const view =
    v.state !== 'ready' || v.agentsCurrent !== v.agentsAssigned || v.agentsAssigned === 0
      ? `${cert.name}: certs says ${v.state}, ${v.agentsCurrent}/${v.agentsAssigned} agents current${v.lastError ? ` (${v.lastError})` : ''}`
      : '';
  return { served, view };
}

function describeWrong(wrong: readonly WrongServed[]): string {
  return wrong.map((w) => `${w.agent} serves ${w.got.slice(0, 16)} instead of ${w.want.slice(0, 16)}`).join('; ');
}

/**
 * Polls until every certificate in `certs` is converged (desired version ≥ its entry in
 * `minVersion`, default 1) or `boundMs` has passed since `from`. Resolves with the time
 * from `from` to convergence (or null and the last reason), and separately the time from
 * `from` until every node served the desired version (`servedMs`), whatever the
 * operator's view said then.
 */
export async function waitConverged(
  m: MatrixFleet,
  certs: readonly string[],
  opts: { from: number; boundMs: number; minVersion?: Record<string, number>; intervalMs?: number },
): Promise<{ ms: number | null; servedMs: number | null; why: string }> {
  const list = certs.map((n) => {
    const c = m.certificates.find((x) => x.name === n);
    if (!c) throw new Error(`no certificate ${n} in the fleet`);
    return c;
  });
  let why = '';
  let servedMs: number | null = null;
  for (;;) {
    const served: string[] = [];
    const view: string[] = [];
    for (const c of list) {
      const r = await notConverged(m, c, opts.minVersion?.[c.name] ?? 1);
      if (r.served !== '') served.push(r.served);
      if (r.view !== '') view.push(r.view);
    }
    const now = Date.now();
    if (served.length === 0) servedMs ??= now - opts.from;
    if (served.length === 0 && view.length === 0) return { ms: now - opts.from, servedMs, why: '' };
    why = [...new Set([...served, ...view])].join('; ');
    if (now - opts.from > opts.boundMs) return { ms: null, servedMs, why };
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 500));
  }
}

/** Names as a set key: lower case, sorted, comma-joined. */
function setKey(names: readonly string[]): string {
  return [...new Set(names.map((n) => n.toLowerCase()))].sort().join(',');
}

/**
 * Checks the invariants for `certs`. Returns one line
 * per violation. `extraOrders` allows orders beyond the stored versions per certificate
 * (default 0), for scenarios where the CA itself forgot an order.
 */
export async function checkInvariants(m: MatrixFleet, certs: readonly string[], opts: { extraOrders?: Record<string, number> } = {}): Promise<string[]> {
  const failures: string[] = [];
  const proxy = m.fleet.proxy;
  if (!proxy) throw new Error('the fault matrix needs the ACME proxy (startFleet({ proxy: {} }))');
  const views = new Map<string, CertView>();
  for (const c of m.certificates) {
    try {
      views.set(c.name, await certView(m.fleet, c.name));
    } catch (err) {
      failures.push(`cannot read ${c.name} from the controller: ${(err as Error).message}`);
    }
  }
  // 0 lost: every certificate the CA handed out for these certificates' names is stored.
  const stored = new Set([...views.values()].flatMap((v) => v.fingerprints));
  const keys = new Set(certs.map((n) => setKey(m.certificates.find((c) => c.name === n)?.names ?? [])));
  const lost = proxy.downloadedCertificates().filter((d) => keys.has(setKey(d.names)) && !stored.has(d.fingerprint));
  if (lost.length > 0) failures.push(`LOST: ${lost.length} issued certificate(s) not in the store: ${lost.map((d) => `${d.names.join(',')} ${d.fingerprint.slice(0, 16)}`).join('; ')}`);

  let budgets: Awaited<ReturnType<typeof readBudgets>> | undefined;
  try {
    budgets = await readBudgets(m.fleet);
  } catch (err) {
    failures.push(`cannot read budgets: ${(err as Error).message}`);
  }
  const orders = proxy.createdOrders();
  for (const name of certs) {
    const c = m.certificates.find((x) => x.name === name);
    const v = views.get(name);
    if (!c || !v) continue;
    const versions = v.fingerprints.length;
    const pending = (await m.pendingOrder?.(name)) === true ? 1 : 0;
    // 0 wrong served.
    const wrong = await wrongServed({ agents: m.agents, tlsPort: m.fleet.tlsPort, cert: name, names: c.names, want: v.desiredFingerprint });
    if (wrong.length > 0) failures.push(`WRONG SERVED: ${describeWrong(wrong)} (desired v${v.desiredVersion})`);
    // No duplicate order.
    const placed = orders.filter((o) => setKey(o.identifiers.map((i) => i.value)) === setKey(c.names)).length;
    const allowed = versions + pending + (opts.extraOrders?.[name] ?? 0);
    const pendingNote = pending ? ' and 1 unfinished order' : '';
    if (placed > allowed) failures.push(`DUPLICATE ORDER: ${name}: the CA accepted ${placed} orders for ${versions} stored version(s)${pendingNote}${allowed > versions + pending ? ` (+${allowed - versions - pending} allowed)` : ''}`);
    // No budget double spend (nor a refund of a certificate that was issued).
    if (budgets) {
      const spent = exactSetSpent(budgets, c.names);
      if (spent > versions + pending) failures.push(`BUDGET DOUBLE SPEND: ${name}: ${spent} exact-set token(s) spent for ${versions} stored version(s)${pendingNote}`);
      if (spent < versions) failures.push(`BUDGET UNDER-COUNT: ${name}: ${spent} exact-set token(s) spent for ${versions} stored version(s)`);
    }
  }
  // No HTTP-01 challenge record left behind.
  try {
    const left = await challengeRecords(m.fleet);
    const mine = left.filter((r) => certs.includes(r.cert));
    if (mine.length > 0) failures.push(`CHALLENGE LEFT: ${mine.length} HTTP-01 record(s) still in NATS for ${[...new Set(mine.map((r) => r.cert))].join(', ')}`);
  } catch (err) {
    failures.push(`cannot read the challenges bucket: ${(err as Error).message}`);
  }
  return failures;
}

/** Every HTTP-01 challenge record in the fleet's NATS now. */
export async function challengeRecords(fleet: Pick<Fleet, 'nats' | 'natsCreds'>): Promise<ChallengeRecord[]> {
  const nats = await connectNats({ servers: [fleet.nats.url], name: 'certfleet-fault-matrix', log: silentLogger(), ...(fleet.natsCreds === undefined ? {} : { credentials: fleet.natsCreds }) });
  try {
    const kv = await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false, parse: parseChallengeRecord });
    return (await kv.entries()).map((e) => e.value);
  } finally {
    await nats.close();
  }
}

/** Collects a suite's rows, prints them and writes them to the results file. */
export class FaultMatrix {
  readonly results: ScenarioResult[] = [];

  constructor(private readonly suite: string) {}

  /**
   * Measures convergence of `certs` from `faultEnd`, checks the invariants, records the
   * row and returns it. `extraFailures` are scenario-specific checks that failed.
   */
  async conclude(
    m: MatrixFleet,
    row: { id: string; fault: string; certs: readonly string[]; faultEnd: number; boundMs: number; minVersion?: Record<string, number>; extraOrders?: Record<string, number>; notes?: string[]; extraFailures?: string[] },
  ): Promise<ScenarioResult> {
    const conv = await waitConverged(m, row.certs, { from: row.faultEnd, boundMs: row.boundMs, ...(row.minVersion ? { minVersion: row.minVersion } : {}) });
    const failures = [...(row.extraFailures ?? [])];
    if (conv.ms === null) failures.push(`NOT CONVERGED within ${Math.round(row.boundMs / 1000)} s: ${conv.why}`);
    failures.push(...(await checkInvariants(m, row.certs, row.extraOrders ? { extraOrders: row.extraOrders } : {})));
    const result: ScenarioResult = { id: row.id, fault: row.fault, boundMs: row.boundMs, convergenceMs: conv.ms, servedMs: conv.servedMs, failures, notes: row.notes ?? [], pass: failures.length === 0 };
    this.results.push(result);
    this.write();
    return result;
  }

  /** Records a row computed elsewhere. */
  add(result: ScenarioResult): void {
    this.results.push(result);
    this.write();
  }

  private write(): void {
    const dir = process.env['CERTFLEET_CHAOS_RESULTS'] ?? DEFAULT_RESULTS_DIR;
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${this.suite}.json`), `${JSON.stringify(this.results, null, 2)}\n`);
  }
}

/** One line for the test report: "PASS k-order 4.2 s" or "FAIL ... : reasons". */
export function describeResult(r: ScenarioResult): string {
  const served = r.convergenceMs === null && r.servedMs !== null ? ` (though served by every node after ${(r.servedMs / 1000).toFixed(1)} s)` : '';
  const conv = r.convergenceMs === null ? `not converged within ${Math.round(r.boundMs / 1000)} s${served}` : `converged in ${(r.convergenceMs / 1000).toFixed(1)} s`;
  const notes = r.notes.length > 0 ? ` [${r.notes.join('; ')}]` : '';
  return `${r.pass ? 'PASS' : 'FAIL'} ${r.id}: ${r.fault}: ${conv}${notes}${r.pass ? '' : `\n  - ${r.failures.join('\n  - ')}`}`;
}

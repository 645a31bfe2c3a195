/**
 * Fault matrix, agent side: an agent SIGKILLed at each step of an install, a reload hook
 * that exits 0 without reloading, and a tampered stored version.
 *
 * One fleet: edge-a (the real nginx reload as its hook) and edge-b, whose hook is a test
 * wrapper around the same reload that, when a marker file says so, kills its own agent
 * (SIGKILL, exactly at that point of the install) or exits 0 without reloading. Each
 * scenario has its own certificate, renewed with `certfleet renew`; the killed agent is
 * started again at once, as systemd's Restart= would.
 */
import { after, before, describe, test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { makeBundle } from '../harness/certs.js';
import { startFleet, type Fleet, type FleetAgent, type FleetAgentSpec, type FleetCertificate } from '../harness/fleet.js';
import { FaultMatrix, waitConverged, withOperator, type MatrixFleet } from '../harness/fault-matrix.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { killWhenEntryAppears } from '../harness/kill-at.js';
import { wrongServed } from '../harness/served.js';
import { servedCertificate } from '../harness/tls.js';
import { fileStoreFacts, renew, reportRow, sleep } from './scenario.js';

const ONLY_B = 'node=b';
const CERTS: FleetCertificate[] = [
  { name: 'a-fetch', names: ['a-fetch.example.test'], agents: ONLY_B },
  { name: 'a-swap', names: ['a-swap.example.test'], agents: ONLY_B },
  { name: 'a-hook', names: ['a-hook.example.test'], agents: ONLY_B },
  { name: 'h-noreload', names: ['h-noreload.example.test'], agents: ONLY_B },
  { name: 't-tamper', names: ['t-tamper.example.test'], agents: 'role=web' },
];

/**
 * edge-b's hook. Marker files in its directory, each naming a certificate:
 *   kill-before-<cert>  kill the agent (from agent.pid) before reloading: the agent dies
 *                       after the `current` swap and before its hook did anything; once.
 *   kill-after-<cert>   reload, then kill the agent: dies after the hook, before verify; once.
 *   skip-<cert>         holds a version: for it, exit 0 without reloading (until removed).
 */
function chaosHook({ dir, reload }: { dir: string; reload: string }): string {
  const script = path.join(dir, 'hook.sh');
  fs.writeFileSync(
    script,
    [
      '#!/bin/sh',
      `d='${dir}'`,
      'echo "$CERTFLEET_CERTS $CERTFLEET_VERSION rollback=$CERTFLEET_ROLLBACK" >> "$d/hook-runs"',
      'for c in $CERTFLEET_CERTS; do',
      '  if [ -e "$d/kill-before-$c" ]; then rm -f "$d/kill-before-$c"; kill -9 "$(cat "$d/agent.pid")"; exit 0; fi',
      '  if [ "$(cat "$d/skip-$c" 2>/dev/null)" = "$CERTFLEET_VERSION" ]; then exit 0; fi',
      'done',
      `${reload} || exit $?`,
      'for c in $CERTFLEET_CERTS; do',
      '  if [ -e "$d/kill-after-$c" ]; then rm -f "$d/kill-after-$c"; kill -9 "$(cat "$d/agent.pid")"; fi',
      'done',
      'exit 0',
      '',
    ].join('\n'),
    { mode: 0o700 },
  );
  return `/bin/sh ${script}`;
}

const AGENTS: FleetAgentSpec[] = [
  { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web', node: 'a' }, serves: ['t-tamper'] },
  { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web', node: 'b' }, serves: CERTS.map((c) => c.name), hook: chaosHook },
];
/** After an agent restart: it resyncs at start, fetches or activates, reloads, verifies, reports. */
const AGENT_BOUND_MS = 30_000;

describe('fault matrix: the agents', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let m: MatrixFleet;
  const matrix = new FaultMatrix('agent');

  before(async () => {
    fleet = await startFleet({
      certificates: CERTS,
      agents: AGENTS,
      dns: Object.fromEntries(CERTS.map((c) => [c.names[0] ?? '', c.agents === ONLY_B ? '127.0.0.3' : '127.0.0.2'])),
      proxy: {},
    });
    m = { fleet, certificates: CERTS, agents: AGENTS, pendingOrder: (c) => fileStoreFacts(fleet, c).pendingOrder };
    await fleet.waitUntilReady(CERTS.length, 180_000);
  });

  after(async () => {
    await fleet?.stop();
  });

  function edgeB(): FleetAgent {
    const b = fleet.agents.get('edge-b');
    if (!b) throw new Error('no edge-b');
    fs.writeFileSync(path.join(b.dir, 'agent.pid'), String(b.process.child.pid ?? ''));
    return b;
  }

  /** Where edge-b's `current` of `cert` points now ("versions/N"). */
  function currentOf(b: FleetAgent, cert: string): string {
    return fs.readlinkSync(path.join(b.stateDir, 'certs', cert, 'current'));
  }

  test('agent SIGKILL after fetching a new version, while writing it (before the `current` swap)', async (t) => {
    const cert = 'a-fetch';
    const b = edgeB();
    const versions = path.join(b.stateDir, 'certs', cert, 'versions');
    // The bundle is fetched and validated; the kill lands while versions/.tmp-2-* is written.
    const killed = killWhenEntryAppears(versions, (n) => n.startsWith('.tmp-2-'), () => b.process.child.pid);
    await renew(fleet, cert);
    await killed;
    await b.process.exited;
    const landed = `current -> ${currentOf(b, cert)}, versions/2 ${fs.existsSync(path.join(versions, '2')) ? 'complete' : 'absent'}`;
    b.restart();
    const r = await matrix.conclude(m, { id: cert, fault: 'agent SIGKILL after fetch, during the write of the new version', certs: [cert], faultEnd: Date.now(), boundMs: AGENT_BOUND_MS, minVersion: { [cert]: 2 }, notes: [`at the kill: ${landed}`] });
    reportRow(t, fleet, r);
  });

  test('agent SIGKILL after the `current` swap, before its reload hook ran (the hook kills it first thing)', async (t) => {
    const cert = 'a-swap';
    const b = edgeB();
    fs.writeFileSync(path.join(b.dir, `kill-before-${cert}`), '');
    await renew(fleet, cert);
    await b.process.exited;
    const landed = `current -> ${currentOf(b, cert)}`;
    b.restart();
    const r = await matrix.conclude(m, { id: cert, fault: 'agent SIGKILL after the current swap, before the reload hook', certs: [cert], faultEnd: Date.now(), boundMs: AGENT_BOUND_MS, minVersion: { [cert]: 2 }, notes: [`at the kill: ${landed}, nginx not reloaded`] });
    reportRow(t, fleet, r);
  });

  test('agent SIGKILL after its reload hook succeeded, before it verified what is served', async (t) => {
    const cert = 'a-hook';
    const b = edgeB();
    fs.writeFileSync(path.join(b.dir, `kill-after-${cert}`), '');
    await renew(fleet, cert);
    await b.process.exited;
    const landed = `current -> ${currentOf(b, cert)}`;
    b.restart();
    const r = await matrix.conclude(m, { id: cert, fault: 'agent SIGKILL after the reload hook, before verification', certs: [cert], faultEnd: Date.now(), boundMs: AGENT_BOUND_MS, minVersion: { [cert]: 2 }, notes: [`at the kill: ${landed}, nginx reloaded`] });
    reportRow(t, fleet, r);
  });

  test('a reload hook that exits 0 without reloading: caught, rolled back, shown, and installed once the hook is fixed', async (t) => {
    const cert = 'h-noreload';
    const b = edgeB();
    const v1 = await desiredFingerprint(cert);
    fs.writeFileSync(path.join(b.dir, `skip-${cert}`), '2');
    await renew(fleet, cert);
    const extra: string[] = [];
    // The agent must notice (NOT_SERVED) and restore v1; nginx must never be left on a
    // version nobody can tell it serves.
    const reported = await waitFor(60_000, async () => {
      const agents = await fleet.cliJson<{ agents: Array<{ name: string; certificates: Array<{ name: string; state: string; errorCode: string; failedVersion: number; rollback: string }> }> }>(['agents']);
      const st = agents.agents.find((a) => a.name === 'edge-b')?.certificates.find((c) => c.name === cert);
      return st?.state === 'failed' && st.failedVersion === 2 ? st : undefined;
    });
    if (!reported) extra.push('edge-b never reported v2 failed');
    else if (reported.errorCode !== ErrorCode.NotServed || reported.rollback !== 'restored') extra.push(`edge-b reported ${reported.errorCode} rollback=${reported.rollback}, expected NOT_SERVED restored`);
    const served = (await servedCertificate({ host: b.ip, port: fleet.tlsPort, servername: `${cert}.example.test` })).fingerprint;
    if (served !== v1) extra.push(`edge-b serves ${served.slice(0, 16)} after the rollback, not v1`);
    // The operator's view must say what is wrong and where.
    const certs = await fleet.cliJson<{ certificates: Array<{ name: string; state: string; lastError: string }> }>(['certs']);
    const row = certs.certificates.find((c) => c.name === cert);
    if (!row || row.state === 'ready' || !/edge-b/.test(row.lastError)) extra.push(`certs shows ${row?.state ?? '?'} "${row?.lastError ?? ''}" for a failed reload on edge-b (no node named)`);
    // The hook is fixed; the agent retries at its next resynchronisation.
    fs.rmSync(path.join(b.dir, `skip-${cert}`));
    const r = await matrix.conclude(m, {
      id: cert,
      fault: 'reload hook exits 0 without reloading (then fixed)',
      certs: [cert],
      faultEnd: Date.now(),
      boundMs: AGENT_BOUND_MS,
      minVersion: { [cert]: 2 },
      notes: ['convergence measured from the hook fix'],
      extraFailures: extra,
    });
    reportRow(t, fleet, r);
  });

  test('a tampered stored version: the rollback to it is refused and no node serves it', async (t) => {
    const cert = 't-tamper';
    await renew(fleet, cert);
    const ready = await waitConverged(m, [cert], { from: Date.now(), boundMs: 60_000, minVersion: { [cert]: 2 } });
    if (ready.ms === null) throw new Error(`v2 of ${cert} never converged before the fault: ${ready.why}\n${fleet.logs()}`);
    // Someone replaces v1's certificate in the controller's file store with another one
    // for the same names (a valid certificate from another CA, another key).
    const forged = await makeBundle({ name: cert, version: 1, names: [`${cert}.example.test`] });
    fs.writeFileSync(path.join(fleet.controllerState, 'store', 'certs', cert, '1', 'cert.pem'), forged.certPem);
    // edge-a no longer holds v1 locally (pruned, or a rebuilt node): it would have to fetch it.
    const a = fleet.agents.get('edge-a');
    if (!a) throw new Error('no edge-a');
    fs.rmSync(path.join(a.stateDir, 'certs', cert, 'versions', '1'), { recursive: true, force: true });
    const faultAt = Date.now();
    const res = await fleet.cli(['rollback', cert, '--to', '1']);
    const extra: string[] = [];
    const notes: string[] = [];
    if (res.code === 0) extra.push('the controller accepted a rollback to a version whose stored certificate was tampered with');
    else notes.push(`rollback refused (exit ${res.code}): ${res.stderr.trim().split('\n')[0] ?? ''}`);
    // No node may serve the forged certificate, now or while agents react.
    for (let i = 0; i < 8; i++) {
      for (const spec of AGENTS) {
        const wrong = await wrongServed({ agents: [spec], tlsPort: fleet.tlsPort, cert, names: [`${cert}.example.test`], want: forged.meta.fingerprint });
        if (wrong.length === 0) extra.push(`${spec.name} serves the tampered certificate`);
      }
      await sleep(1000);
    }
    const r = await matrix.conclude(m, {
      id: cert,
      fault: 'stored v1 certificate replaced (file store), then `rollback --to 1`',
      certs: [cert],
      faultEnd: faultAt,
      boundMs: AGENT_BOUND_MS,
      minVersion: { [cert]: 2 },
      notes,
      extraFailures: [...new Set(extra)],
    });
    // Leave the fleet as it was for the final check: no pin on a forged version.
    if (res.code === 0) await fleet.cli(['release', cert]);
    reportRow(t, fleet, r);
  });

  test('after every fault: every certificate converged, nothing lost, served wrong, ordered or charged twice', async (t) => {
    const r = await matrix.conclude(m, { id: 'agent-final', fault: 'the whole fleet after the agent faults', certs: CERTS.map((c) => c.name), faultEnd: Date.now(), boundMs: 30_000 });
    reportRow(t, fleet, r);
  });

  async function desiredFingerprint(cert: string): Promise<string> {
    return withOperator(fleet, async (c) => (await c.getHistory({ name: cert })).versions.find((v) => v.desired)?.version?.fingerprint ?? '');
  }
});

/** Polls `check` every 500 ms until it returns a value, or undefined after `ms`. */
async function waitFor<T>(ms: number, check: () => Promise<T | undefined>): Promise<T | undefined> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch {
      // the controller may be restarting: ask again
    }
    await sleep(500);
  }
  return undefined;
}

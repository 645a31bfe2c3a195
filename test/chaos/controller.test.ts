/**
 * Fault matrix, controller side: the controller SIGKILLed at each step of an issuance,
 * stopped for a while during a rollout, and NATS stopped while a new version goes out.
 *
 * One fleet for every scenario (real Pebble behind the counting ACME proxy, nats-server,
 * the controller, two agents each fronting its own nginx): each scenario has its own
 * certificate, issued once at start, and renews it with `certfleet renew` — the
 * operator's request — while the fault happens. A row passes when the renewal gets done
 * within the bound after the fault ends, and nothing is lost, served wrong, ordered or
 * charged twice (test/harness/fault-matrix.ts).
 *
 * The kill follows the controller's own log line for the step (test/harness/kill-at.ts);
 * each row notes where it landed (pending order saved, versions stored).
 */
import { after, before, describe, test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { startFleet, type Fleet, type FleetAgentSpec, type FleetCertificate } from '../harness/fleet.js';
import { FaultMatrix, type MatrixFleet } from '../harness/fault-matrix.js';
import { killAtLogLine, onLogLine, waitForLogLine } from '../harness/kill-at.js';
import { wrongServed } from '../harness/served.js';
import type { Started } from '../harness/process.js';
import { controllerLine, fileStoreFacts, renew, reportRow, sleep } from './scenario.js';

/** Kill steps: the log line that marks each (component, message). */
const STEPS = [
  { id: 'k-order', step: 'order placed (order and key persisted)', component: 'issuer', msg: 'order placed' },
  { id: 'k-challenge', step: 'HTTP-01 challenge published and served by every agent', component: 'http01', msg: 'challenge served by every agent' },
  { id: 'k-authz', step: 'authorization valid', component: 'issuer', msg: 'authorization valid' },
  { id: 'k-final', step: 'order finalised, certificate downloaded', component: 'acme', msg: 'certificate downloaded' },
  { id: 'k-stored', step: 'version stored', component: 'issuer', msg: 'certificate issued' },
  { id: 'k-published', step: 'desired version published', component: 'publish', msg: 'desired version published' },
] as const;

const CERTS: FleetCertificate[] = [...STEPS.map((s) => s.id), 'c-down', 'n-nats'].map((name) => ({ name, names: [`${name}.example.test`], agents: 'role=web' }));
const AGENTS: FleetAgentSpec[] = [
  { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: CERTS.map((c) => c.name) },
  { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web' }, serves: CERTS.map((c) => c.name) },
];
/** Convergence bound after a controller restart: a resumed order, a publish, two installs. */
const KILL_BOUND_MS = 40_000;
/** Stand-ins for "minutes" (controller) and "a minute" (NATS): long enough for every timer that matters here to fire at least once. */
const CONTROLLER_DOWN_MS = 25_000;
const NATS_DOWN_MS = 20_000;

function natsServerProcess(fleet: Fleet): Started {
  const p = fleet.nats.current();
  if (!p) throw new Error('nats-server is not running');
  return p;
}

describe('fault matrix: the controller', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  let m: MatrixFleet;
  const matrix = new FaultMatrix('controller');

  before(async () => {
    fleet = await startFleet({
      certificates: CERTS,
      agents: AGENTS,
      // Pebble's VA reaches each name on one of the agents; both answer every challenge.
      dns: Object.fromEntries(CERTS.map((c, i) => [c.names[0] ?? '', i % 2 === 0 ? '127.0.0.2' : '127.0.0.3'])),
      proxy: {},
    });
    m = { fleet, certificates: CERTS, agents: AGENTS, pendingOrder: (c) => fileStoreFacts(fleet, c).pendingOrder };
    await fleet.waitUntilReady(CERTS.length, 240_000);
  });

  after(async () => {
    await fleet?.stop();
  });

  for (const s of STEPS) {
    test(`controller SIGKILL at "${s.step}" during an operator renewal`, async (t) => {
      const cert = s.id;
      const proc = fleet.controller;
      // The download line names the order, not the certificate: learn the order first.
      let orderUrl = '';
      const stopWatching = onLogLine(proc, (rec) => {
        if (controllerLine('order placed', 'issuer', cert)(rec) || controllerLine('order resumed', 'issuer', cert)(rec)) orderUrl = String(rec['order']);
      });
      const match =
        s.component === 'acme'
          ? (rec: Record<string, unknown>) => rec['msg'] === s.msg && rec['component'] === 'acme' && orderUrl !== '' && rec['order'] === orderUrl
          : controllerLine(s.msg, s.component, cert);
      const killed = killAtLogLine(proc, match, { timeoutMs: 60_000, what: `"${s.msg}" for ${cert}` });
      await renew(fleet, cert);
      await killed;
      stopWatching();
      const facts = fileStoreFacts(fleet, cert);
      await fleet.stopController({ kill: true }); // bookkeeping only: it is gone already
      await fleet.startController();
      const r = await matrix.conclude(m, {
        id: cert,
        fault: `controller SIGKILL at: ${s.step}`,
        certs: [cert],
        faultEnd: Date.now(),
        boundMs: KILL_BOUND_MS,
        minVersion: { [cert]: 2 },
        notes: [`at the kill: pending order ${facts.pendingOrder ? 'saved' : 'absent'}, ${facts.versions} version(s) stored`],
      });
      reportRow(t, fleet, r);
    });
  }

  test(`controller down ${CONTROLLER_DOWN_MS / 1000} s right after publishing a new version, an agent restarting meanwhile`, async (t) => {
    const cert = 'c-down';
    const published = waitForLogLine(fleet.controller, controllerLine('desired version published', 'publish', cert), 60_000, `v2 of ${cert} published`);
    await renew(fleet, cert);
    await published;
    await fleet.stopController();
    const downAt = Date.now();
    // A node reboots while the controller is away: its agent starts from its own state.
    const b = fleet.agents.get('edge-b');
    if (!b) throw new Error('no edge-b');
    await b.process.stop();
    b.restart();
    const extra: string[] = [];
    const notes: string[] = [];
    // Meanwhile every nginx keeps serving a genuine version (v1 or v2), read from the
    // agents' archives since the controller is down.
    const genuine = new Set<string>();
    for (const a of fleet.agents.values()) {
      const dir = path.join(a.stateDir, 'certs', cert, 'versions');
      for (const v of fs.readdirSync(dir).filter((d) => /^\d+$/.test(d))) {
        genuine.add((JSON.parse(fs.readFileSync(path.join(dir, v, 'meta.json'), 'utf8')) as { fingerprint: string }).fingerprint);
      }
    }
    while (Date.now() - downAt < CONTROLLER_DOWN_MS) {
      for (const a of AGENTS) {
        const wrong = await wrongServed({ agents: [a], tlsPort: fleet.tlsPort, cert, names: [`${cert}.example.test`], want: '' });
        const got = wrong[0]?.got ?? '';
        if (!genuine.has(got)) extra.push(`during the outage ${a.name} served ${got.slice(0, 40)}, not a version of ${cert}`);
      }
      await sleep(2000);
    }
    await fleet.startController();
    notes.push(`down ${Math.round((Date.now() - downAt) / 1000)} s (stand-in for minutes)`);
    const r = await matrix.conclude(m, {
      id: cert,
      fault: `controller stopped for ${CONTROLLER_DOWN_MS / 1000} s during a rollout (agent restarted meanwhile)`,
      certs: [cert],
      faultEnd: Date.now(),
      boundMs: 60_000,
      minVersion: { [cert]: 2 },
      notes,
      extraFailures: [...new Set(extra)],
    });
    reportRow(t, fleet, r);
  });

  test(`NATS down ${NATS_DOWN_MS / 1000} s from the moment a renewed certificate is downloaded`, async (t) => {
    const cert = 'n-nats';
    // nats-server is SIGKILLed the moment the controller has the certificate: it is then
    // stored (file store) but its desired pointer cannot be published.
    let orderUrl = '';
    const stopWatching = onLogLine(fleet.controller, (rec) => {
      if (controllerLine('order placed', 'issuer', cert)(rec)) orderUrl = String(rec['order']);
    });
    const natsKilled = killAtLogLine(fleet.controller, (rec) => rec['msg'] === 'certificate downloaded' && orderUrl !== '' && rec['order'] === orderUrl, {
      target: natsServerProcess(fleet),
      what: `the download of ${cert} v2`,
    });
    await renew(fleet, cert);
    await natsKilled;
    stopWatching();
    await fleet.nats.stop(); // bookkeeping: it is gone already
    const downAt = Date.now();
    const extra: string[] = [];
    while (Date.now() - downAt < NATS_DOWN_MS) {
      // Clients keep getting a certificate from every nginx.
      for (const a of AGENTS) {
        const wrong = await wrongServed({ agents: [a], tlsPort: fleet.tlsPort, cert, names: [`${cert}.example.test`], want: '' });
        if ((wrong[0]?.got ?? '').startsWith('(')) extra.push(`during the outage ${a.name}: ${wrong[0]?.got ?? ''}`);
      }
      await sleep(2000);
    }
    await fleet.nats.restart();
    const r = await matrix.conclude(m, {
      id: cert,
      fault: `nats-server SIGKILLed when a renewed certificate is downloaded, down ${NATS_DOWN_MS / 1000} s`,
      certs: [cert],
      faultEnd: Date.now(),
      boundMs: 60_000,
      minVersion: { [cert]: 2 },
      notes: [`down ${NATS_DOWN_MS / 1000} s (stand-in for a minute)`],
      extraFailures: [...new Set(extra)],
    });
    reportRow(t, fleet, r);
  });

  test('after every fault: every certificate converged, nothing lost, served wrong, ordered or charged twice', async (t) => {
    const r = await matrix.conclude(m, {
      id: 'controller-final',
      fault: 'the whole fleet after the controller faults',
      certs: CERTS.map((c) => c.name),
      faultEnd: Date.now(),
      boundMs: 30_000,
    });
    reportRow(t, fleet, r);
  });
});

/**
 * The agent's apply step (agent/apply) on a manual clock: install, grouped reload hooks,
 * verify, rollback, loaded marker and report, with a real Installer in a temp directory
 * and in-memory stand-ins for the hook runner, the served-certificate probe, the bundle
 * source and the reporter. Runs in milliseconds: the verifier's settle time passes on
 * the manual clock.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { Applier, type ApplyOptions, type StatusReport } from '../../agent/apply/index.js';
import { parseAgentConfig } from '../../agent/config/index.js';
import type { HookRunner } from '../../agent/hooks/index.js';
import { Installer } from '../../agent/install/index.js';
import { Trust } from '../../agent/trust/index.js';
import { PROBE_INTERVAL_MS, SETTLE_MS, tlsVerifier } from '../../agent/verify/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, DesiredRecord, HookOutcome } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';
import { tempDir } from '../harness/tmp.js';

const START = Date.UTC(2026, 5, 1);
const DAY = 86_400_000;

/** What the fake hook runner saw: the certificates of one run and its environment. */
interface HookCall {
  certs: string[];
  version: string;
  rollback: string;
}

/**
 * One agent's apply step. `web` and `api` share the `once` reload hook; `solo` has its own
 * per-certificate hook. `web` has a verify endpoint; the fake probe answers with what
 * `served` says the listener has loaded (the fake hook loads `current`, as nginx would).
 */
function world(opts: { hookExit?: (call: HookCall) => number; report?: (r: StatusReport) => Promise<void> } = {}) {
  const dir = tempDir('certfleet-apply-');
  const clock = new ManualClock(START);
  const log = silentLogger();
  const config = parseAgentConfig(
    `stateDir: ${dir}
controller: { address: "127.0.0.1:7443", caFile: ca.pem }
hooks: { reload: { command: "reload-all" } }
certificates:
  web: { verify: [{ address: "127.0.0.1:8443" }] }
  solo: { reload: { command: "reload-solo", mode: per-certificate } }
`,
    `${dir}/agent.yaml`,
  );
  const installer = new Installer({ stateDir: dir, clock, log });
  const bundles = new Map<string, Bundle>();
  const bundle = async (name: string, version: number): Promise<Bundle> => {
    const b = await makeBundle({ name, version, notBefore: new Date(START - DAY), notAfter: new Date(START + 90 * DAY) });
    bundles.set(`${name}/${version}`, b);
    return b;
  };
  /** Fingerprint the listener serves; the hook sets it to `current` unless `frozen`. */
  const served = { fingerprint: '', frozen: false, probes: 0 };
  const calls: HookCall[] = [];
  const hooks: HookRunner = {
    async run(_spec, certs, env): Promise<HookOutcome> {
      const call = { certs: [...certs], version: env['CERTFLEET_VERSION'] ?? '', rollback: env['CERTFLEET_ROLLBACK'] ?? '' };
      calls.push(call);
      const exitCode = opts.hookExit?.(call) ?? 0;
      if (exitCode === 0 && !served.frozen && certs.includes('web')) served.fingerprint = (await installer.current('web'))?.fingerprint ?? '';
      return { ran: true, exitCode, signal: '', timedOut: false, durationMs: 0, outputTail: '' };
    },
  };
  const verifier = tlsVerifier(clock, () => {
    served.probes++;
    return Promise.resolve({ fingerprint: served.fingerprint, error: served.fingerprint === '' ? 'connection refused' : '' });
  });
  const reports: StatusReport[] = [];
  const trust = Trust.open(dir, clock, log);
  const options: ApplyOptions = {
    config,
    installer,
    bundles: {
      fetchBundle(name, version) {
        const b = bundles.get(`${name}/${version}`);
        return b ? Promise.resolve(b) : Promise.reject(new Error(`no bundle ${name} v${version}`));
      },
    },
    reporter: { reportStatus: (r) => (opts.report ? opts.report(r) : Promise.resolve()).then(() => void reports.push(r)) },
    hooks,
    verifier,
    trust,
    clock,
    log,
  };
  const applier = new Applier(options);
  /** A restarted agent: a new Applier (no statuses in memory) and a new Installer over the same disk. */
  const restart = (): Applier => new Applier({ ...options, installer: new Installer({ stateDir: dir, clock, log }) });
  const desired = new Map<string, DesiredRecord>();
  /** Makes `b` the desired version of its certificate. */
  const want = (b: Bundle): void => {
    desired.set(b.meta.name, { name: b.meta.name, version: b.meta.version, fingerprint: b.meta.fingerprint, names: b.meta.names, notAfter: b.meta.notAfter, selector: '', updatedAt: '' });
  };
  const status = (name: string): CertStatus | undefined => applier.statuses().find((s) => s.name === name);
  return { dir, clock, installer, applier, restart, bundle, want, desired, calls, served, reports, status };
}

/**
 * Runs `work` to its end, moving the manual clock to each next timer whenever the work
 * waits on one; real file I/O runs in between. Returns the clock time it took.
 */
async function onClock(clock: ManualClock, work: Promise<unknown>, limitMs = 600_000): Promise<number> {
  const t0 = clock.now();
  let done = false;
  void work.finally(() => (done = true));
  while (!done) {
    // Let I/O and promise continuations run until the work ends or waits on the clock.
    // (Bounded in real time only so a hang fails the test instead of the runner's timeout.)
    const giveUp = performance.now() + 30_000;
    while (!done && clock.pendingTimers === 0 && performance.now() < giveUp) await new Promise<void>((r) => setImmediate(r));
    if (done) break;
    const due = clock.nextDue();
    assert.ok(due !== undefined, 'the work neither ends nor waits on the clock');
    assert.ok(due - t0 <= limitMs, `still waiting after ${limitMs} ms of clock time`);
    await clock.tick(due - clock.now());
  }
  await work;
  return clock.now() - t0;
}

test('a new version installs, runs each hook once for its group, verifies, records the load and reports', async () => {
  const w = world();
  for (const name of ['web', 'api', 'solo']) w.want(await w.bundle(name, 1));
  await onClock(w.clock, w.applier.converge(w.desired, false));

  assert.deepEqual(
    w.calls.map((c) => [c.certs, c.version, c.rollback]),
    [
      [['web', 'api'], '1', '0'],
      [['solo'], '1', '0'],
    ],
    'one run of the shared hook for web and api, one of the per-certificate hook',
  );
  for (const name of ['web', 'api', 'solo']) {
    const st = w.status(name);
    assert.equal(st?.state, 'installed', name);
    assert.equal(st?.version, 1, name);
    assert.equal(st?.servedVerified, name === 'web', `${name}: verified only where an endpoint is configured`);
    assert.equal((await w.installer.loaded(name))?.version, 1, `${name}: loaded marker written`);
  }
  assert.equal(w.reports.length, 1, 'one report after the pass');
  assert.deepEqual(
    w.reports[0]?.certificates.map((s) => [s.name, s.state, s.version]),
    [
      ['api', 'installed', 1],
      ['solo', 'installed', 1],
      ['web', 'installed', 1],
    ],
  );

  // Nothing new desired: a second pass installs nothing, runs no hook and sends no report.
  await onClock(w.clock, w.applier.converge(w.desired, true));
  assert.equal(w.calls.length, 2);
  assert.equal(w.reports.length, 1);
});

test('a failed hook rolls back to the previous version, reruns the hook for it, and reports both', async () => {
  const w = world({ hookExit: (c) => (c.version === '2' && c.rollback === '0' ? 1 : 0) });
  w.want(await w.bundle('api', 1));
  await onClock(w.clock, w.applier.converge(w.desired, false));
  assert.equal(w.status('api')?.state, 'installed');

  w.want(await w.bundle('api', 2));
  await onClock(w.clock, w.applier.converge(w.desired, false));

  assert.deepEqual(
    w.calls.map((c) => [c.certs, c.version, c.rollback]),
    [
      [['api'], '1', '0'],
      [['api'], '2', '0'],
      [['api'], '1', '1'],
    ],
    'the hook ran for v2, then once more for the restored v1 with CERTFLEET_ROLLBACK=1',
  );
  const st = w.status('api');
  assert.equal(st?.state, 'failed');
  assert.equal(st?.errorCode, ErrorCode.HookFailed);
  assert.equal(st?.failedVersion, 2);
  assert.equal(st?.version, 1, 'reports what is installed now');
  assert.equal(st?.rollback, 'restored');
  assert.match(st?.error ?? '', /reload hook exited with 1; rolled back to v1/);
  assert.equal((await w.installer.current('api'))?.version, 1, 'current points at v1 again');
  assert.equal((await w.installer.loaded('api'))?.version, 1, 'the restored version is recorded as loaded');
  assert.equal(w.reports.at(-1)?.certificates.find((s) => s.name === 'api')?.failedVersion, 2, 'the report says it');

  // Without a resynchronisation the failed version waits; with one it is retried (and fails again).
  await onClock(w.clock, w.applier.converge(w.desired, false));
  assert.equal(w.calls.length, 3, 'no retry outside a resynchronisation');
  await onClock(w.clock, w.applier.converge(w.desired, true));
  assert.deepEqual(w.calls.slice(3).map((c) => [c.version, c.rollback]), [['2', '0'], ['1', '1']], 'retried from the archive, rolled back again');
});

test('a verify that never sees the new fingerprint fails after its settle time on clock time, and rolls back', async () => {
  const w = world();
  w.want(await w.bundle('web', 1));
  await onClock(w.clock, w.applier.converge(w.desired, false));
  assert.equal(w.status('web')?.servedVerified, true);
  const v1 = w.served.fingerprint;

  // The hook exits 0 but the server keeps serving v1 (a reload that did not happen).
  w.served.frozen = true;
  w.served.probes = 0;
  w.want(await w.bundle('web', 2));
  const took = await onClock(w.clock, w.applier.converge(w.desired, false));

  assert.ok(took >= SETTLE_MS, `gave up after ${took} ms of clock time, before the settle time`);
  assert.ok(took < SETTLE_MS + 2 * PROBE_INTERVAL_MS, `kept probing for ${took} ms of clock time`);
  assert.equal(w.served.probes, 1 + SETTLE_MS / PROBE_INTERVAL_MS + 1, 'probed v2 every interval until the settle time, then v1 once');
  const st = w.status('web');
  assert.equal(st?.state, 'failed');
  assert.equal(st?.errorCode, ErrorCode.NotServed);
  assert.equal(st?.failedVersion, 2);
  assert.equal(st?.version, 1);
  assert.equal(st?.fingerprint, v1);
  assert.equal(st?.rollback, 'restored', 'v1 is served again after the rollback');
  assert.equal(st?.servedVerified, true);
});

test('after a restart, a loaded marker is not enough when the endpoint does not serve current: the hook runs again', async () => {
  const w = world();
  w.want(await w.bundle('web', 1));
  await onClock(w.clock, w.applier.converge(w.desired, false));
  const v1 = w.served.fingerprint;

  // The previous process installed v2 and recorded it as loaded, but the server still serves v1
  // (say it was restarted from an old configuration since).
  const v2 = await w.bundle('web', 2);
  await w.installer.install(v2);
  await w.installer.markLoaded('web', v2.meta, new Date(START).toISOString());
  assert.equal(w.served.fingerprint, v1);

  w.calls.length = 0;
  const reports = w.reports.length;
  const applier = w.restart();
  await onClock(w.clock, applier.recheckInstalled());

  assert.deepEqual(w.calls.map((c) => [c.certs, c.version, c.rollback]), [[['web'], '2', '0']], 'the hook ran once, for the current version');
  const st = applier.statuses().find((s) => s.name === 'web');
  assert.equal(st?.state, 'installed');
  assert.equal(st?.version, 2);
  assert.equal(st?.servedVerified, true);
  assert.equal(st?.desiredVersion, 0, 'the controller has not spoken yet');
  assert.equal(w.served.fingerprint, v2.meta.fingerprint, 'the hook loaded v2');
  assert.equal(w.reports.length, reports, 'nothing is reported before the controller is heard from');
});

test('after a restart without endpoints, the loaded marker decides whether the hook runs again', async () => {
  const w = world();
  w.want(await w.bundle('api', 1));
  w.want(await w.bundle('solo', 1));
  await onClock(w.clock, w.applier.converge(w.desired, false));
  // solo's v2 was switched to, but the process died before its hook: no marker names v2.
  await w.installer.install(await w.bundle('solo', 2));
  w.calls.length = 0;

  const again = w.restart();
  await onClock(w.clock, again.recheckInstalled());

  assert.deepEqual(w.calls.map((c) => [c.certs, c.version]), [[['solo'], '2']], 'only solo, whose v2 was never recorded as loaded');
  assert.equal(again.statuses().find((s) => s.name === 'api')?.state, 'installed');
  assert.equal(again.statuses().find((s) => s.name === 'solo')?.version, 2);
  assert.equal((await w.installer.loaded('solo'))?.version, 2);
});

test('a status report that fails is sent again after a short backoff, not at the next heartbeat', async () => {
  let failing = 1;
  const w = world({ report: () => (failing-- > 0 ? Promise.reject(new Error('deadline exceeded')) : Promise.resolve()) });
  w.want(await w.bundle('api', 1));
  await onClock(w.clock, w.applier.converge(w.desired, false));
  assert.equal(w.status('api')?.state, 'installed');
  assert.equal(w.reports.length, 0, 'the report after the install failed');

  // The heartbeat is 30 s (reportInterval); the retry comes well before it.
  const t0 = w.clock.now();
  assert.ok(await w.clock.runUntil(() => w.reports.length > 0, 5_000), 'the failed report is sent again within 5 s');
  assert.ok(w.clock.now() - t0 <= 5_000);
  assert.deepEqual(w.reports[0]?.certificates.map((c) => [c.name, c.state, c.version]), [['api', 'installed', 1]]);
  // Delivered: nothing more is retried.
  await w.clock.tick(60_000);
  assert.equal(w.reports.length, 1);

  // A report that keeps failing backs off: fewer tries than one per first delay.
  let tries = 0;
  failing = Infinity;
  const w2 = world({
    report: () => {
      tries++;
      return Promise.reject(new Error('unavailable'));
    },
  });
  await w2.applier.report();
  await w2.clock.tick(20_000);
  assert.ok(tries >= 3 && tries <= 8, `backoff: ${tries} tries in 20 s`);
  w2.applier.stop();
  const after = tries;
  await w2.clock.tick(60_000);
  assert.equal(tries, after, 'no retry after stop');
});

test('status reports go one at a time: a heartbeat in flight during an install is followed by the installed state', async () => {
  // The first send (a heartbeat taken before the install) hangs until released.
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  let inFlight = 0;
  let maxInFlight = 0;
  let calls = 0;
  const w = world({
    report: async () => {
      calls++;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        if (calls === 1) await held;
      } finally {
        inFlight--;
      }
    },
  });
  w.want(await w.bundle('api', 1));
  // Counts the calls of report(), the pass's own included.
  let asked = 0;
  const report = w.applier.report.bind(w.applier);
  w.applier.report = () => {
    asked++;
    return report();
  };
  const heartbeat = w.applier.report();
  const pass = w.applier.converge(w.desired, false);
  // Until the pass has installed, run the hook and asked for its report.
  for (let i = 0; i < 100_000 && asked < 2; i++) await new Promise<void>((r) => setImmediate(r));
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
  assert.equal(asked, 2);
  assert.equal(w.status('api')?.state, 'installed');
  assert.equal(calls, 1, 'the pass report waits for the heartbeat in flight');
  // Later calls while one is queued join it: one more send, not one per call.
  const third = w.applier.report();
  release();
  await Promise.all([heartbeat, pass, third]);
  assert.equal(maxInFlight, 1);
  assert.equal(calls, 2, 'the queued reports went as one');
  const last = w.reports[w.reports.length - 1];
  assert.deepEqual(last?.certificates.map((c) => [c.name, c.state, c.version]), [['api', 'installed', 1]], 'the last report delivered shows the install');
});

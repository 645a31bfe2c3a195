/**
 * The agent's desired side (agent/desired) and its wiring to the apply step (agent/sync)
 * on a manual clock, with an in-memory controller: a signed record newer than what is
 * installed leads to exactly one apply; unsigned and stale (older generation) records are
 * refused and change nothing; resynchronisation runs on the clock's schedule.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { parseAgentConfig } from '../../agent/config/index.js';
import { DesiredFeed, type AssignmentSource } from '../../agent/desired/index.js';
import type { HookRunner } from '../../agent/hooks/index.js';
import { Installer } from '../../agent/install/index.js';
import { Sync } from '../../agent/sync/index.js';
import { saveSigningKeys, Trust } from '../../agent/trust/index.js';
import type { Verifier } from '../../agent/verify/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, DesiredRecord } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';
import { testSigner, type TestSigner } from '../harness/signing.js';
import { tempDir } from '../harness/tmp.js';

const START = Date.UTC(2026, 5, 1);
const DAY = 86_400_000;

function recordOf(b: Bundle, selector = '*'): DesiredRecord {
  return { name: b.meta.name, version: b.meta.version, fingerprint: b.meta.fingerprint, names: b.meta.names, notAfter: b.meta.notAfter, selector, updatedAt: new Date(START).toISOString() };
}

/** Lets real I/O and promise continuations run until `done` holds (or fails the test). */
async function until(what: string, done: () => boolean): Promise<void> {
  // Bounded in real time only so a hang fails the test instead of the runner's timeout.
  const giveUp = performance.now() + 30_000;
  while (performance.now() < giveUp) {
    if (done()) return;
    await new Promise<void>((r) => setImmediate(r));
  }
  assert.fail(`never: ${what}`);
}

/** A controller in memory: GetAssignments answers with `desired` (as sent, unchecked). */
function controller(signer: TestSigner) {
  const state = { desired: [] as unknown[], calls: 0 };
  const source: AssignmentSource = {
    assignments() {
      state.calls++;
      return Promise.resolve({ desired: state.desired, signingKeys: signer.publicKeys, assigned: [] });
    },
  };
  return { state, source };
}

async function trustIn(dir: string, signer: TestSigner, clock: ManualClock): Promise<Trust> {
  await saveSigningKeys(dir, signer.publicKeys);
  return Trust.open(dir, clock, silentLogger());
}

test('a signed record becomes the pointer; unsigned, stale and unassigned records leave it as it was', async () => {
  const dir = tempDir('certfleet-desired-');
  const clock = new ManualClock(START);
  const signer = testSigner();
  const trust = await trustIn(dir, signer, clock);
  const { state, source } = controller(signer);
  const changes: boolean[] = [];
  const feed = new DesiredFeed({ labels: { role: 'web' }, resyncInterval: 300_000, source, nats: null, http01: null, trust, clock, log: silentLogger(), onChange: (r) => changes.push(r) });
  const v1 = recordOf(await makeBundle({ name: 'web', version: 1 }), 'role=web');
  const v2 = recordOf(await makeBundle({ name: 'web', version: 2 }), 'role=web');

  state.desired = [signer.desired(v1, 3)];
  await feed.start();
  try {
    assert.equal(state.calls, 1, 'keys were known: one resynchronisation at start');
    assert.deepEqual(changes, [true]);
    assert.equal(feed.records().get('web')?.version, 1);

    // Unsigned (a generation, no signature) and stale (signed, but an older generation): refused.
    state.desired = [{ ...v2, generation: 9 }];
    await feed.resync();
    state.desired = [signer.desired(v2, 2)];
    await feed.resync();
    assert.equal(feed.records().get('web')?.version, 1, 'still v1');
    assert.deepEqual(trust.refusals().byReason, { unsigned: 1, replay: 1 });

    // Signed and newer: accepted.
    state.desired = [signer.desired(v2, 4)];
    await feed.resync();
    assert.equal(feed.records().get('web')?.version, 2);

    // Signed, newer, but for other agents: this agent stops tracking the certificate.
    state.desired = [signer.desired({ ...v2, selector: 'role=db' }, 5)];
    await feed.resync();
    assert.equal(feed.records().has('web'), false);

    // Resynchronisation runs on the clock. Without a NATS connection (NATS unreachable
    // when the agent started: no watch tells it of a new version) every 30 s, not every
    // resyncInterval (5 minutes here).
    const before = state.calls;
    await clock.tick(25_000);
    assert.equal(state.calls, before, 'not before 30 s');
    await clock.tick(10_000);
    assert.equal(state.calls, before + 1, 'after 30 s without NATS');
  } finally {
    await feed.stop();
  }
  assert.equal(clock.pendingTimers, 0, 'stop() leaves no timer behind');
});

test('through the sync loop, a record newer than what is installed is applied exactly once; an unsigned one is not applied', async () => {
  const dir = tempDir('certfleet-desired-');
  const clock = new ManualClock(START);
  const log = silentLogger();
  const signer = testSigner();
  const trust = await trustIn(dir, signer, clock);
  const { state, source } = controller(signer);
  const bundles = new Map<number, Bundle>();
  for (const v of [1, 2]) bundles.set(v, await makeBundle({ name: 'web', version: v, notBefore: new Date(START - DAY), notAfter: new Date(START + 90 * DAY) }));
  const reports: CertStatus[][] = [];
  const runs: string[] = [];
  const hooks: HookRunner = {
    run: (_spec, _certs, env) => {
      runs.push(env['CERTFLEET_VERSION'] ?? '');
      return Promise.resolve({ ran: true, exitCode: 0, signal: '', timedOut: false, durationMs: 0, outputTail: '' });
    },
  };
  const verifier: Verifier = { verify: () => Promise.reject(new Error('no endpoint is configured')) };
  const config = parseAgentConfig(`stateDir: ${dir}\ncontroller: { address: "127.0.0.1:7443", caFile: ca.pem }\nhooks: { reload: { command: reload } }\n`, `${dir}/agent.yaml`);
  const link = {
    ...source,
    fetchBundle: (_name: string, version: number) => Promise.resolve(bundles.get(version) ?? assert.fail(`no v${version}`)),
    reportStatus: (r: { certificates: CertStatus[] }) => Promise.resolve(void reports.push(r.certificates)),
  };
  const installer = new Installer({ stateDir: dir, clock, log });
  const sync = new Sync({ config, labels: {}, link, installer, nats: null, http01: null, trust, clock, log, hooks, verifier });
  const web = (): CertStatus | undefined => sync.statuses().find((s) => s.name === 'web');

  state.desired = [signer.desired(recordOf(bundles.get(1)!))];
  await sync.start();
  try {
    await until('v1 installed', () => web()?.state === 'installed' && web()?.version === 1);
    assert.deepEqual(runs, ['1'], 'one hook run');

    // The same record again at the next resynchronisation: nothing to do (the hook runs
    // below would show a second '1').
    await sync.resync();

    // An unsigned record for v2: refused, nothing installed.
    state.desired = [{ ...recordOf(bundles.get(2)!), generation: 9 }];
    await sync.resync();
    await until('the refusal is counted', () => trust.refusals().total === 1);
    assert.deepEqual(runs, ['1']);
    assert.equal((await installer.current('web'))?.version, 1);

    // A signed record for v2: applied once.
    state.desired = [signer.desired(recordOf(bundles.get(2)!))];
    await sync.resync();
    await until('v2 installed', () => web()?.state === 'installed' && web()?.version === 2);
    await sync.resync();
    await until('v2 reported', () => reports.at(-1)?.find((s) => s.name === 'web')?.version === 2);
    assert.deepEqual(runs, ['1', '2'], 'one hook run per new version');
  } finally {
    await sync.stop();
  }
});

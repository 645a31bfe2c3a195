/**
 * A restarted agent proves what it installed before it reports (issue #8, item 1), for a
 * certificate with no verify endpoints: a restart cannot see what the server loaded, so
 * the hook runs again unless `loaded.json` records the current version as completed.
 *
 * The agent's loop is driven directly with a scripted controller in place of the gRPC
 * link (real installer, real disk, real hook processes). "Killed between the `current`
 * swap and the hook" is reproduced by making the swap with the installer alone, as the
 * killed process did, and starting a new loop on that state directory. The e2e test
 * test/e2e/agent-restart.test.ts kills a real agent process at that point, with nginx.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseAgentConfig } from '../../agent/config/index.js';
import { Installer } from '../../agent/install/index.js';
import type { ControllerLink } from '../../agent/link/index.js';
import { Sync } from '../../agent/sync/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, DesiredRecord } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { testSigner, trustFor } from '../harness/signing.js';

test('without verify endpoints, a version swapped in but never hooked is hooked at start before it is reported; a completed one is not hooked again', { timeout: 60_000 }, async () => {
  const dir = tempDir('certfleet-restart-');
  const runs = path.join(dir, 'runs');
  const hook = path.join(dir, 'hook.sh');
  fs.writeFileSync(hook, ['#!/bin/sh', `echo "$CERTFLEET_VERSION" >> '${runs}'`, 'exit 0', ''].join('\n'), { mode: 0o700 });
  const stateDir = path.join(dir, 'state');
  const config = parseAgentConfig(
    [`stateDir: ${stateDir}`, 'controller: { address: "127.0.0.1:1", caFile: /nonexistent }', 'nats: { servers: ["nats://127.0.0.1:1"] }', `hooks: { reload: { command: "/bin/sh ${hook}", timeout: 10s } }`, ''].join('\n'),
    'agent.yaml',
  );
  const bundles = new Map<number, Bundle>();
  for (const version of [1, 2]) bundles.set(version, await makeBundle({ name: 'web', version, names: ['web.example.test'] }));
  let desiredVersion = 1;
  const signer = testSigner();
  const desired = (): DesiredRecord[] => {
    const meta = bundles.get(desiredVersion)?.meta;
    assert.ok(meta);
    return [signer.desired({ name: 'web', version: meta.version, fingerprint: meta.fingerprint, names: meta.names, notAfter: meta.notAfter, selector: '*', updatedAt: new Date().toISOString() }, desiredVersion)];
  };
  const lines = (): string[] => (fs.existsSync(runs) ? fs.readFileSync(runs, 'utf8').split('\n').filter((l) => l !== '') : []);
  /** Every report, with the hook runs seen when it was sent. */
  const reports: Array<{ certificates: CertStatus[]; hookRuns: string[] }> = [];
  const link = {
    assignments: () => Promise.resolve({ desired: desired(), signingKeys: signer.publicKeys, assigned: [{ name: 'web', names: ['web.example.test'] }] }),
    fetchBundle: (_name: string, version: number) => {
      const b = bundles.get(version);
      return b ? Promise.resolve(b) : Promise.reject(new Error(`no v${version}`));
    },
    reportStatus: (r: { certificates: CertStatus[] }) => {
      reports.push({ certificates: r.certificates, hookRuns: lines() });
      return Promise.resolve();
    },
  } as unknown as ControllerLink;
  const log = silentLogger();
  const trust = await trustFor(stateDir, signer);
  const newSync = (): Sync => new Sync({ config, labels: {}, link, installer: new Installer({ stateDir, clock: systemClock, log }), nats: null, http01: null, trust, clock: systemClock, log });
  const installedV = (v: number) => (): boolean => reports.some((r) => r.certificates.some((s) => s.state === 'installed' && s.version === v));
  const certDir = path.join(stateDir, 'certs', 'web');

  // 1. A normal install of v1: the hook runs once, and the completion is recorded.
  let sync = newSync();
  await sync.start();
  await eventually('v1 installed', installedV(1), 20_000);
  await sync.stop();
  assert.deepEqual(lines(), ['1']);

  // 2. The killed agent's state: v2 is `current`, its hook never ran.
  desiredVersion = 2;
  const v2 = bundles.get(2);
  assert.ok(v2);
  await new Installer({ stateDir, clock: systemClock, log }).install(v2);
  assert.equal(fs.readlinkSync(path.join(certDir, 'current')), path.join('versions', '2'));
  reports.length = 0;

  // 3. Restart: the hook runs for v2 before any report says v2 is installed.
  sync = newSync();
  await sync.start();
  await eventually('v2 installed', installedV(2), 20_000);
  await sync.stop();
  assert.deepEqual(lines(), ['1', '2'], 'the hook ran once more, for v2');
  for (const r of reports) {
    if (r.certificates.some((s) => s.state === 'installed' && s.version === 2)) assert.ok(r.hookRuns.includes('2'), 'v2 reported installed before its hook ran');
  }

  // 4. Another restart: v2 is recorded as loaded, so no hook runs and v2 is reported at once.
  reports.length = 0;
  sync = newSync();
  await sync.start();
  await eventually('v2 reported', installedV(2), 20_000);
  await sync.stop();
  assert.deepEqual(lines(), ['1', '2'], 'no hook run for a version recorded as loaded');
  assert.equal((JSON.parse(fs.readFileSync(path.join(certDir, 'loaded.json'), 'utf8')) as { version: number }).version, 2);
});

test('while a failed version is retried, the agent keeps reporting the failure until the retry ends (no flip to pending)', { timeout: 60_000 }, async () => {
  const dir = tempDir('certfleet-retry-');
  const runs = path.join(dir, 'runs');
  const go = path.join(dir, 'go');
  const hook = path.join(dir, 'hook.sh');
  // v2's hook fails; its second run (the retry) waits for `go` first, so the test can
  // look at the status in the middle of the retry.
  fs.writeFileSync(
    hook,
    [
      '#!/bin/sh',
      `echo "$CERTFLEET_VERSION $CERTFLEET_ROLLBACK" >> '${runs}'`,
      '[ "$CERTFLEET_ROLLBACK" = 1 ] && exit 0',
      '[ "$CERTFLEET_VERSION" = 2 ] || exit 0',
      `if [ "$(grep -c '^2 0' '${runs}')" -ge 2 ]; then while [ ! -e '${go}' ]; do sleep 0.1; done; fi`,
      'exit 1',
      '',
    ].join('\n'),
    { mode: 0o700 },
  );
  const stateDir = path.join(dir, 'state');
  const config = parseAgentConfig(
    [`stateDir: ${stateDir}`, 'controller: { address: "127.0.0.1:1", caFile: /nonexistent }', 'nats: { servers: ["nats://127.0.0.1:1"] }', `hooks: { reload: { command: "/bin/sh ${hook}", timeout: 30s } }`, ''].join('\n'),
    'agent.yaml',
  );
  const bundles = new Map<number, Bundle>();
  for (const version of [1, 2]) bundles.set(version, await makeBundle({ name: 'web', version, names: ['web.example.test'] }));
  let desiredVersion = 1;
  const signer = testSigner();
  const link = {
    assignments: () => {
      const meta = bundles.get(desiredVersion)?.meta;
      assert.ok(meta);
      const desired = signer.desired({ name: 'web', version: meta.version, fingerprint: meta.fingerprint, names: meta.names, notAfter: meta.notAfter, selector: '*', updatedAt: new Date().toISOString() }, desiredVersion);
      return Promise.resolve({ desired: [desired], signingKeys: signer.publicKeys, assigned: [{ name: 'web', names: ['web.example.test'] }] });
    },
    fetchBundle: (_name: string, version: number) => {
      const b = bundles.get(version);
      return b ? Promise.resolve(b) : Promise.reject(new Error(`no v${version}`));
    },
    reportStatus: () => Promise.resolve(),
  } as unknown as ControllerLink;
  const log = silentLogger();
  const trust = await trustFor(stateDir, signer);
  const sync = new Sync({ config, labels: {}, link, installer: new Installer({ stateDir, clock: systemClock, log }), nats: null, http01: null, trust, clock: systemClock, log });
  const web = (): CertStatus | undefined => sync.statuses().find((s) => s.name === 'web');
  const v2Runs = (): number => (fs.existsSync(runs) ? fs.readFileSync(runs, 'utf8').split('\n').filter((l) => l === '2 0').length : 0);
  try {
    await sync.start();
    await eventually('v1 installed', () => web()?.state === 'installed' && web()?.version === 1, 20_000);

    desiredVersion = 2;
    await sync.resync();
    await eventually('v2 failed and rolled back', () => web()?.state === 'failed' && web()?.failedVersion === 2 && web()?.rollback === 'restored', 20_000);

    // The retry (next resync) reinstalls v2 from the archive and runs the hook, which waits.
    await sync.resync();
    await eventually('the retry is in its hook', () => v2Runs() === 2, 20_000);
    const during = web();
    assert.equal(during?.state, 'failed', `mid-retry status: ${JSON.stringify(during)}`);
    assert.equal(during?.failedVersion, 2);
    assert.equal(during?.errorCode, 'HOOK_FAILED');

    fs.writeFileSync(go, '');
    await eventually('the retry failed and rolled back again', () => web()?.state === 'failed' && web()?.rollback === 'restored' && v2Runs() === 2 && fs.readFileSync(runs, 'utf8').split('\n').filter((l) => l === '2 1' || l === '1 1').length >= 2, 20_000);
  } finally {
    fs.writeFileSync(go, '');
    await sync.stop();
  }
});

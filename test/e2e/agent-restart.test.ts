/**
 * An agent killed between the `current` swap and its reload hook (issue #8, item 1) —
 * end to end with real Pebble, NATS, controller, agent processes and nginx.
 *
 * The agent's hook is a wrapper around the real nginx reload. Armed with a file naming a
 * version and the agent's PID, the first run for that version SIGKILLs the agent and
 * exits without reloading: exactly the moment after `current` moved to v2 and before
 * nginx was told. The agent is then started again. It must end with nginx serving v2
 * and report v2 installed with servedVerified — and at no moment report v2 installed
 * while nginx still serves v1 (what it did before: `certs` said ready, nginx served the
 * old certificate through every later resync).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FileStore } from '../../controller/store/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';
import { startFleet, type Fleet, type FleetAgent } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';

interface StatusJson {
  name: string;
  version: number;
  state: string;
  servedVerified: boolean;
}
interface AgentJson {
  name: string;
  certificates: StatusJson[];
}

const CERT = { name: 'kappa', names: ['kappa.example.test'], agents: 'node=k' };

/** Logs each run; when `kill-once` names this version, removes it, SIGKILLs the agent and exits unreloaded. */
function killingHook({ dir, reload }: { dir: string; reload: string }): string {
  const script = path.join(dir, 'hook.sh');
  fs.writeFileSync(
    script,
    [
      '#!/bin/sh',
      `d='${dir}'`,
      'echo "$CERTFLEET_VERSION" >> "$d/hook-runs"',
      'if [ -f "$d/kill-once" ]; then',
      '  set -- $(cat "$d/kill-once")',
      '  if [ "$1" = "$CERTFLEET_VERSION" ]; then rm -f "$d/kill-once"; kill -9 "$2"; exit 1; fi',
      'fi',
      `exec ${reload}`,
      '',
    ].join('\n'),
    { mode: 0o700 },
  );
  return `/bin/sh ${script}`;
}

describe('an agent killed after the current swap and before its reload hook', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let store: FileStore;
  let agent: FleetAgent;
  let v1: VersionMeta;

  before(async () => {
    fleet = await startFleet({
      certificates: [CERT],
      // An hourly resync: nothing but the restart itself can repair what the kill left.
      agents: [{ name: 'edge-k', ip: '127.0.0.2', labels: { node: 'k' }, serves: [CERT.name], hook: killingHook, resyncInterval: '1h' }],
      dns: { 'kappa.example.test': '127.0.0.2' },
    });
    store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
    await fleet.waitUntilReady(1);
    const latest = await store.latest(CERT.name);
    assert.ok(latest);
    v1 = latest;
    const a = fleet.agents.get('edge-k');
    assert.ok(a);
    agent = a;
  });

  after(async () => {
    await store?.close();
    await fleet?.stop();
  });

  async function served(): Promise<string> {
    return (await servedCertificate({ host: agent.ip, port: fleet.tlsPort, servername: CERT.names[0] ?? '' })).fingerprint;
  }

  async function reported(): Promise<StatusJson | undefined> {
    const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    return res.agents.find((a) => a.name === 'edge-k')?.certificates.find((c) => c.name === CERT.name);
  }

  test('comes back, reruns the hook, and reports v2 installed only once nginx serves it', async () => {
    assert.equal(await served(), v1.fingerprint);
    const pid = agent.process.child.pid;
    assert.ok(pid);
    fs.writeFileSync(path.join(agent.dir, 'kill-once'), `${v1.version + 1} ${pid}\n`);

    // v2: a valid certificate for the same names from a test CA, published by the controller.
    const bundle = await makeBundle({ name: CERT.name, version: v1.version + 1, names: CERT.names });
    const { version, ...meta } = bundle.meta;
    assert.equal(version, v1.version + 1);
    const v2 = await store.putVersion(CERT.name, { certPem: bundle.certPem, chainPem: bundle.chainPem, keyPem: bundle.keyPem, meta }, v1.version);

    const code = await Promise.race([agent.process.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 60_000))]);
    assert.equal(code, -1, `the hook killed the agent\n${fleet.logs()}`);
    // The state the kill left: current names v2, nginx serves v1.
    const certDir = path.join(agent.stateDir, 'certs', CERT.name);
    assert.equal(fs.readlinkSync(path.join(certDir, 'current')), path.join('versions', String(v2.version)));
    assert.equal(await served(), v1.fingerprint, 'nginx was not reloaded');

    agent.restart();
    // From now on, every report of v2 installed must coincide with nginx serving v2.
    let seen: { st: StatusJson; servedNow: string };
    try {
      seen = await eventually(
        'edge-k reports v2 installed',
        async () => {
          const st = await reported();
          if (st?.state !== 'installed' || st.version !== v2.version) return undefined;
          return { st, servedNow: await served() };
        },
        90_000,
        250,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
    assert.equal(seen.servedNow, v2.fingerprint, `reported v2 installed while nginx serves another certificate\n${fleet.logs()}`);
    assert.equal(seen.st.servedVerified, true);
    assert.equal(await served(), v2.fingerprint);
    const runs = fs.readFileSync(path.join(agent.dir, 'hook-runs'), 'utf8').split('\n').filter((l) => l !== '');
    assert.deepEqual(runs.slice(-2), [String(v2.version), String(v2.version)], 'the killed run, then the rerun after the restart');
    assert.match(agent.process.output(), /current version not served after a restart; running the reload hook again/);
    await fleet.waitUntilReady(1);
  });
});

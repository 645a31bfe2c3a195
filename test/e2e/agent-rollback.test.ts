/**
 * The agent proves what it installed, and undoes what it cannot prove — end to end with
 * real Pebble, NATS, controller, agent processes and nginx.
 *
 * Two agents, each with its own nginx and certificate, both issued v1 by Pebble. Their
 * reload hook is a test wrapper around the real nginx reload: it records every run
 * (the CERTFLEET_VERSION it got) and, for the version named in a marker file, either
 * exits 1 (`refuse-version`) or exits 0 without reloading (`skip-version`). A v2 is
 * then written to the controller's store (a valid bundle from a test CA: a different
 * certificate for the same names, so every fingerprint check can tell v1 from v2);
 * the controller publishes it like any new version.
 *
 * The agents resync only hourly, so no retry of the failed version runs while the tests
 * look at disk and nginx; the last test restarts an agent, which resyncs at start.
 *
 * The controller sends notifications to a webhook receiver on loopback (issue #14): a
 * failed install is one delivery, however often the agent reports it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { FileStore } from '../../controller/store/index.js';
import { parseAgentConfig } from '../../agent/config/index.js';
import { Installer } from '../../agent/install/index.js';
import type { ControllerLink } from '../../agent/link/index.js';
import { Sync } from '../../agent/sync/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, DesiredRecord, VersionMeta } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';
import { startFleet, type Fleet, type FleetAgent } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';
import { testSigner, trustFor } from '../harness/signing.js';
import { tempDir } from '../harness/tmp.js';

const execFileAsync = promisify(execFile);

interface StatusJson {
  name: string;
  version: number;
  fingerprint: string;
  desiredVersion: number;
  state: string;
  errorCode: string;
  error: string;
  servedVerified: boolean;
  failedVersion: number;
  rollback: string;
}
interface AgentJson {
  name: string;
  certificates: StatusJson[];
}
const CERTS = [
  { name: 'alpha', names: ['alpha.example.test'], agents: 'node=h' },
  { name: 'beta', names: ['beta.example.test'], agents: 'node=v' },
];

/**
 * The hook wrapper: logs the version, then refuses or skips the version named in the
 * marker files, else runs the real reload (so a rollback's rerun really reloads nginx).
 */
function wrappedHook({ dir, reload }: { dir: string; reload: string }): string {
  const script = path.join(dir, 'hook.sh');
  fs.writeFileSync(
    script,
    [
      '#!/bin/sh',
      `d='${dir}'`,
      'echo "$CERTFLEET_VERSION" >> "$d/hook-runs"',
      'if [ "$(cat "$d/refuse-version" 2>/dev/null)" = "$CERTFLEET_VERSION" ]; then echo "test hook refuses v$CERTFLEET_VERSION" >&2; exit 1; fi',
      'if [ "$(cat "$d/skip-version" 2>/dev/null)" = "$CERTFLEET_VERSION" ]; then exit 0; fi',
      `exec ${reload}`,
      '',
    ].join('\n'),
    { mode: 0o700 },
  );
  return `/bin/sh ${script}`;
}

describe('an agent rolls back a version its hook or its server does not take', { timeout: 420_000 }, () => {
  let fleet: Fleet;
  let store: FileStore;
  const v1 = new Map<string, VersionMeta>();
  let receiver: http.Server;
  const deliveries: Array<{ kind: string; cert?: string; agent?: string; version?: number; summary: string }> = [];

  before(async () => {
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        deliveries.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as (typeof deliveries)[number]);
        res.writeHead(204).end();
      });
    });
    receiver.listen(0, '127.0.0.1');
    await once(receiver, 'listening');
    const hookUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`;
    fleet = await startFleet({
      controllerYaml: [`notifications: { webhooks: [{ name: ops, url: "${hookUrl}", format: json }] }`],
      certificates: CERTS,
      agents: [
        { name: 'edge-h', ip: '127.0.0.2', labels: { node: 'h' }, serves: ['alpha'], hook: wrappedHook, resyncInterval: '1h' },
        { name: 'edge-v', ip: '127.0.0.3', labels: { node: 'v' }, serves: ['beta'], hook: wrappedHook, resyncInterval: '1h' },
      ],
      dns: { 'alpha.example.test': '127.0.0.2', 'beta.example.test': '127.0.0.3' },
    });
    store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
    await fleet.waitUntilReady(2);
    for (const c of CERTS) {
      const latest = await store.latest(c.name);
      assert.ok(latest);
      v1.set(c.name, latest);
    }
  });

  after(async () => {
    await store?.close();
    await fleet?.stop();
    receiver?.closeAllConnections();
    receiver?.close();
  });

  function agent(name: string): FleetAgent {
    const a = fleet.agents.get(name);
    assert.ok(a, `agent ${name}`);
    return a;
  }

  /** Writes a valid v2 (a new certificate for the same names) to the store; the controller publishes it. */
  async function publishV2(cert: string): Promise<VersionMeta> {
    const base = v1.get(cert);
    assert.ok(base);
    const spec = CERTS.find((c) => c.name === cert);
    const bundle = await makeBundle({ name: cert, version: base.version + 1, names: spec?.names ?? [] });
    const { version, ...meta } = bundle.meta;
    assert.equal(version, base.version + 1);
    const stored = await store.putVersion(cert, { certPem: bundle.certPem, chainPem: bundle.chainPem, keyPem: bundle.keyPem, meta }, base.version);
    assert.notEqual(stored.fingerprint, base.fingerprint);
    return stored;
  }

  /** The status `agentName` reports for `cert` once it reports `failedVersion`. */
  async function reportedFailure(agentName: string, cert: string, failedVersion: number): Promise<StatusJson> {
    try {
      return await eventually(
        `${agentName} reports ${cert} v${failedVersion} failed`,
        async () => {
          const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
          const st = res.agents.find((a) => a.name === agentName)?.certificates.find((c) => c.name === cert);
          return st?.state === 'failed' && st.failedVersion === failedVersion ? st : undefined;
        },
        90_000,
        300,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  }

  function hookRuns(a: FleetAgent): string[] {
    return fs.readFileSync(path.join(a.dir, 'hook-runs'), 'utf8').split('\n').filter((l) => l !== '');
  }

  /** nginx reloaded outside the agent (an operator, a reboot): it serves what `current` holds. */
  async function reloadNginxDirectly(a: FleetAgent): Promise<void> {
    await execFileAsync('/bin/sh', ['-c', a.reloadCommand]);
  }

  async function served(a: FleetAgent, servername: string): Promise<string> {
    return (await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername })).fingerprint;
  }

  test('a hook that exits non-zero for v2: v1 is restored, the hook rerun, nginx serves v1, and the report says both', async () => {
    const h = agent('edge-h');
    const good = v1.get('alpha');
    assert.ok(good);
    fs.writeFileSync(path.join(h.dir, 'refuse-version'), String(good.version + 1));
    const runsBefore = hookRuns(h).length;

    const v2 = await publishV2('alpha');
    const st = await reportedFailure('edge-h', 'alpha', v2.version);

    assert.equal(st.errorCode, ErrorCode.HookFailed);
    assert.equal(st.rollback, 'restored');
    assert.equal(st.version, good.version, 'the installed version is v1 again');
    assert.equal(st.fingerprint, good.fingerprint);
    assert.equal(st.desiredVersion, v2.version);
    assert.equal(st.servedVerified, true, 'the restored version was verified by handshake');
    // The hook ran for v2 (and failed), then once more for the restored v1.
    assert.deepEqual(hookRuns(h).slice(runsBefore), [String(v2.version), String(good.version)]);
    // On disk: current is v1 again, v2 stays in the archive for a later retry.
    const certDir = path.join(h.stateDir, 'certs', 'alpha');
    assert.equal(fs.realpathSync(path.join(certDir, 'current')), fs.realpathSync(path.join(certDir, 'versions', String(good.version))));
    assert.ok(fs.existsSync(path.join(certDir, 'versions', String(v2.version), 'meta.json')));

    assert.equal(await served(h, 'alpha.example.test'), good.fingerprint, 'nginx serves v1');
    // The files behind `current` are v1's: a reload by anyone else keeps serving v1.
    await reloadNginxDirectly(h);
    assert.equal(await served(h, 'alpha.example.test'), good.fingerprint, 'nginx still serves v1 after a reload');

    // One webhook delivery for the failure, though the agent reports it every second, and
    // the failure is in the event log.
    await eventually('the install-failed notification', () => deliveries.some((d) => d.kind === 'install-failed' && d.cert === 'alpha'), 30_000, 200);
    await new Promise((r) => setTimeout(r, 3000));
    const alpha = deliveries.filter((d) => d.kind === 'install-failed' && d.cert === 'alpha');
    assert.equal(alpha.length, 1, JSON.stringify(deliveries));
    assert.equal(alpha[0]!.agent, 'edge-h');
    assert.equal(alpha[0]!.version, v2.version);
    assert.match(alpha[0]!.summary, /edge-h could not install alpha v\d+: .*serves again/);
    const events = await fleet.cliJson<{ events: Array<{ type: string; cert?: string; agent?: string }> }>(['events', '--cert', 'alpha']);
    assert.ok(events.events.some((e) => e.type === 'install-failed' && e.agent === 'edge-h'), 'install-failed event');
  });

  test('a hook that exits 0 without reloading for v2: verification catches it (NOT_SERVED) and v1 is restored', async () => {
    const v = agent('edge-v');
    const good = v1.get('beta');
    assert.ok(good);
    fs.writeFileSync(path.join(v.dir, 'skip-version'), String(good.version + 1));
    const runsBefore = hookRuns(v).length;

    const v2 = await publishV2('beta');
    const st = await reportedFailure('edge-v', 'beta', v2.version);

    assert.equal(st.errorCode, ErrorCode.NotServed);
    assert.equal(st.rollback, 'restored');
    assert.equal(st.version, good.version);
    assert.equal(st.fingerprint, good.fingerprint);
    assert.equal(st.desiredVersion, v2.version);
    assert.equal(st.servedVerified, true);
    assert.match(st.error, /not served/);
    assert.deepEqual(hookRuns(v).slice(runsBefore), [String(v2.version), String(good.version)]);
    const certDir = path.join(v.stateDir, 'certs', 'beta');
    assert.equal(fs.realpathSync(path.join(certDir, 'current')), fs.realpathSync(path.join(certDir, 'versions', String(good.version))));

    assert.equal(await served(v, 'beta.example.test'), good.fingerprint, 'nginx serves v1');
    // Without the rollback, `current` would hold v2 and this reload would serve it.
    await reloadNginxDirectly(v);
    assert.equal(await served(v, 'beta.example.test'), good.fingerprint, 'nginx still serves v1 after a reload');
  });

  test('once the hook is fixed, the failed version is installed at the next resync (here: the agent restarting) from its local archive, with the controller down', async () => {
    const h = agent('edge-h');
    const v2 = await store.latest('alpha');
    const good = v1.get('alpha');
    assert.ok(v2 && good && v2.version > good.version);
    assert.equal(await served(h, 'alpha.example.test'), good.fingerprint, 'still on v1 before the fix');

    fs.rmSync(path.join(h.dir, 'refuse-version'));
    // No controller: a fetch would fail, so v2 can only come from versions/<2>. The
    // desired pointer still arrives over NATS. A restart resynchronises at once.
    await fleet.controller.stop();
    await h.process.stop();
    h.restart();

    try {
      await eventually('edge-h nginx serves v2', async () => (await served(h, 'alpha.example.test')) === v2.fingerprint, 60_000, 300);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
    const certDir = path.join(h.stateDir, 'certs', 'alpha');
    assert.equal(fs.realpathSync(path.join(certDir, 'current')), fs.realpathSync(path.join(certDir, 'versions', String(v2.version))));
    assert.equal(hookRuns(h).at(-1), String(v2.version));
    assert.match(h.process.output(), /certificate activated from the local archive/);
  });
});

/**
 * The grouped-hook case, with the agent's loop driven directly (a scripted controller in
 * place of the gRPC link; real installer, real disk, real hook processes): two
 * certificates sharing one reload hook change in the same pass and the hook fails.
 */
describe('a hook shared by two certificates that fails rolls both back and reruns once', { timeout: 60_000 }, () => {
  test('both previous versions are reactivated, the hook runs once to fail and once to restore, both report restored', async () => {
    const dir = tempDir('certfleet-group-');
    const runs = path.join(dir, 'runs');
    const hook = path.join(dir, 'hook.sh');
    // Records one line per run; fails for any new version while `refuse` exists.
    fs.writeFileSync(
      hook,
      ['#!/bin/sh', `echo "$CERTFLEET_CERTS|$CERTFLEET_ROLLBACK" >> '${runs}'`, `if [ -e '${dir}/refuse' ] && [ "$CERTFLEET_ROLLBACK" = 0 ]; then exit 3; fi`, 'exit 0', ''].join('\n'),
      { mode: 0o700 },
    );
    const stateDir = path.join(dir, 'state');
    const config = parseAgentConfig(
      [`stateDir: ${stateDir}`, 'controller: { address: "127.0.0.1:1", caFile: /nonexistent }', 'nats: { servers: ["nats://127.0.0.1:1"] }', `hooks: { reload: { command: "/bin/sh ${hook}", timeout: 10s } }`, ''].join('\n'),
      'agent.yaml',
    );
    const bundles = new Map<string, Bundle>();
    for (const name of ['one', 'two']) {
      for (const version of [1, 2]) bundles.set(`${name}/${version}`, await makeBundle({ name, version, names: [`${name}.example.test`] }));
    }
    let desiredVersion = 1;
    const signer = testSigner();
    const desired = (): DesiredRecord[] =>
      ['one', 'two'].map((name) => {
        const meta = bundles.get(`${name}/${desiredVersion}`)?.meta;
        assert.ok(meta);
        return signer.desired({ name, version: meta.version, fingerprint: meta.fingerprint, names: meta.names, notAfter: meta.notAfter, selector: '*', updatedAt: new Date().toISOString() }, desiredVersion);
      });
    let reported: CertStatus[] = [];
    const link = {
      assignments: () => Promise.resolve({ desired: desired(), signingKeys: signer.publicKeys, assigned: [] }),
      fetchBundle: (name: string, version: number) => {
        const b = bundles.get(`${name}/${version}`);
        return b ? Promise.resolve(b) : Promise.reject(new Error(`no ${name} v${version}`));
      },
      reportStatus: (r: { certificates: CertStatus[] }) => {
        reported = r.certificates;
        return Promise.resolve();
      },
    } as unknown as ControllerLink;
    const log = silentLogger();
    const installer = new Installer({ stateDir, clock: systemClock, log });
    const sync = new Sync({ config, labels: {}, link, installer, nats: null, http01: null, trust: await trustFor(stateDir, signer), clock: systemClock, log });
    const lines = (): string[] => (fs.existsSync(runs) ? fs.readFileSync(runs, 'utf8').split('\n').filter((l) => l !== '') : []);
    try {
      await sync.start();
      await eventually('v1 installed', () => reported.length === 2 && reported.every((s) => s.state === 'installed' && s.version === 1), 20_000);
      assert.deepEqual(lines(), ['one two|0'], 'one hook run for both certificates');

      fs.writeFileSync(path.join(dir, 'refuse'), '');
      desiredVersion = 2;
      await sync.resync();
      const after = await eventually('both report the rollback', () => (reported.every((s) => s.failedVersion === 2) ? reported : undefined), 20_000);
      for (const st of after) {
        assert.equal(st.state, 'failed', st.name);
        assert.equal(st.errorCode, ErrorCode.HookFailed);
        assert.equal(st.rollback, 'restored');
        assert.equal(st.version, 1);
        assert.equal(st.fingerprint, bundles.get(`${st.name}/1`)?.meta.fingerprint);
        assert.equal(fs.readlinkSync(path.join(stateDir, 'certs', st.name, 'current')), path.join('versions', '1'));
      }
      assert.deepEqual(lines(), ['one two|0', 'one two|0', 'one two|1'], 'the failing run and one restoring run, each for both');

      // The failed version is retried at the next resync: here the hook is fixed first.
      fs.rmSync(path.join(dir, 'refuse'));
      await sync.resync();
      await eventually('v2 installed on retry', () => reported.every((s) => s.state === 'installed' && s.version === 2 && s.failedVersion === 0 && s.rollback === ''), 20_000);
      assert.deepEqual(lines().slice(3), ['one two|0']);
    } finally {
      await sync.stop();
    }
  });
});

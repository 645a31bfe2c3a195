/**
 * History and rollback, end to end with real nginx: issue v1, renew to v2 (`renew --wait`
 * answers what the controller did and follows it until served), roll back — every nginx
 * serves v1 again (checked by handshake) and `history`/`agents`/`certs` agree (certs shows
 * newest 2, desired and pinned 1) — then release, and v2 is served again. Refusals: an unknown version, releasing a
 * certificate that is not pinned, and a stored version whose files were tampered with
 * (checked by the controller before anything is pinned).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';

interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string; fingerprint: string }>;
}
interface CertJson {
  name: string;
  newestVersion: number;
  desiredVersion: number;
  pinnedVersion: number;
  agentsCurrent: number;
  agentsAssigned: number;
}
interface HistoryJson {
  name: string;
  pinnedVersion: number;
  versions: Array<{ version: { version: number; fingerprint: string }; agents: string[]; desired: boolean; expired: boolean }>;
}

const NAMES = ['www.example.test', 'example.test'];
const AGENTS = [
  { name: 'edge-a', ip: '127.0.0.2' },
  { name: 'edge-b', ip: '127.0.0.3' },
];

describe('rollback moves every node back to an older version, release moves it forward', { timeout: 300_000 }, () => {
  let fleet: Fleet;

  /** Waits until both agents report `version` installed and both nginx serve `fingerprint` for every name. */
  async function fleetServes(version: number, fingerprint: string): Promise<void> {
    await eventually(
      `both agents at version ${version}`,
      async () => {
        const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
        return AGENTS.every((a) => {
          const s = res.agents.find((x) => x.name === a.name)?.certificates.find((c) => c.name === 'web');
          return s?.state === 'installed' && s.version === version;
        });
      },
      90_000,
      300,
    );
    for (const a of AGENTS) {
      for (const name of NAMES) {
        const served = await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername: name });
        assert.equal(served.fingerprint, fingerprint, `${a.name} serves version ${version} for ${name}`);
      }
    }
  }

  async function history(): Promise<HistoryJson> {
    return fleet.cliJson<HistoryJson>(['history', 'web']);
  }

  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: NAMES, agents: 'role=web' }],
      agents: AGENTS.map((a) => ({ ...a, labels: { role: 'web' }, serves: ['web'] })),
      dns: { 'www.example.test': '127.0.0.2', 'example.test': '127.0.0.3' },
    });
  });

  after(async () => {
    await fleet?.stop();
  });

  test('v1, renew to v2, rollback to v1, release to v2: nginx, history and agents agree at every step', async () => {
    try {
      await eventually('version 1 issued', async () => (await history()).versions.length === 1, 120_000, 500);
      const v1 = (await history()).versions[0]?.version;
      assert.ok(v1);
      await fleetServes(1, v1.fingerprint);

      // renew answers what the controller did, and --wait follows it until both agents serve v2.
      const renew = await fleet.cli(['renew', 'web', '--wait']);
      assert.equal(renew.code, 0, renew.stderr);
      assert.match(renew.stderr, /^web: renewal (ordered; it will be version 2|version 2 issued);/);
      assert.equal(renew.stdout, 'web: version 2 served by 2/2 agents\n');
      assert.equal((await history()).versions.length, 2);
      const v2 = (await history()).versions[1]?.version;
      assert.ok(v2);
      assert.notEqual(v2.fingerprint, v1.fingerprint);
      await fleetServes(2, v2.fingerprint);

      const rb = await fleet.cli(['rollback', 'web', '--wait']);
      assert.equal(rb.code, 0, rb.stderr);
      assert.match(rb.stderr, /^web: rolled back from v2 to v1/);
      assert.equal(rb.stdout, 'web: version 1 served by 2/2 agents\n');
      await fleetServes(1, v1.fingerprint);
      // The summary tells the truth after a rollback: newest 2, desired and pinned 1, both
      // agents on 1 (it used to read "web  2  ready  2/2", issue #14).
      const summary = (await fleet.cliJson<{ certificates: CertJson[] }>(['certs'])).certificates.find((c) => c.name === 'web');
      assert.deepEqual(
        { newest: summary?.newestVersion, desired: summary?.desiredVersion, pinned: summary?.pinnedVersion, serving: `${summary?.agentsCurrent}/${summary?.agentsAssigned}` },
        { newest: 2, desired: 1, pinned: 1, serving: '2/2' },
      );
      const table = await fleet.cli(['certs']);
      assert.match(table.stdout, /^web +2 +1 +1 +2\/2 +pinned /m);
      assert.match(table.stdout, /^web: pinned to v1 by a rollback; `certfleet release web` serves v2 again$/m);
      const pinned = await history();
      assert.equal(pinned.pinnedVersion, 1);
      const row1 = pinned.versions.find((v) => v.version.version === 1);
      assert.equal(row1?.desired, true);
      assert.deepEqual([...(row1?.agents ?? [])].sort(), ['edge-a', 'edge-b']);
      assert.deepEqual(pinned.versions.find((v) => v.version.version === 2)?.agents, []);
      const show = await fleet.cliJson<{ pinnedVersion: number; desiredVersion: number }>(['show', 'web']);
      assert.equal(show.pinnedVersion, 1);
      assert.equal(show.desiredVersion, 1);

      // While pinned, the newer version is not pushed back (several reconcile passes run meanwhile).
      await new Promise((r) => setTimeout(r, 3000));
      await fleetServes(1, v1.fingerprint);

      const rel = await fleet.cli(['release', 'web', '--wait']);
      assert.equal(rel.code, 0, rel.stderr);
      assert.equal(rel.stdout, 'web: version 2 served by 2/2 agents\n');
      await fleetServes(2, v2.fingerprint);
      const releasedSummary = (await fleet.cliJson<{ certificates: CertJson[] }>(['certs'])).certificates.find((c) => c.name === 'web');
      assert.deepEqual([releasedSummary?.newestVersion, releasedSummary?.desiredVersion, releasedSummary?.pinnedVersion], [2, 2, 0]);
      const released = await history();
      assert.equal(released.pinnedVersion, 0);
      assert.equal(released.versions.find((v) => v.version.version === 2)?.desired, true);

      const events = await fleet.cliJson<{ events: Array<{ type: string }> }>(['events', '--cert', 'web']);
      const types = events.events.map((e) => e.type);
      for (const t of ['issued', 'renew-requested', 'rolled-back', 'released']) assert.ok(types.includes(t), `event ${t} recorded (${types.join(', ')})`);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });

  test('rollback to an unknown version and release without a pin are refused with NOT_FOUND', async () => {
    const unknown = await fleet.cli(['rollback', 'web', '--to', '99']);
    assert.equal(unknown.code, 6, unknown.stderr);
    assert.match(unknown.stderr, /no version 99/);
    const notPinned = await fleet.cli(['release', 'web']);
    assert.equal(notPinned.code, 6, notPinned.stderr);
    assert.match(notPinned.stderr, /not pinned/);
    const unknownCert = await fleet.cli(['rollback', 'nope']);
    assert.equal(unknownCert.code, 6, unknownCert.stderr);
  });

  test('rollback to a stored version whose certificate was overwritten is refused and changes nothing', async () => {
    const before = await history();
    assert.equal(before.pinnedVersion, 0, 'the first test released its pin');
    const desired = before.versions.find((v) => v.desired)?.version.version;
    assert.equal(desired, 2);
    const dir = path.join(fleet.controllerState, 'store', 'certs', 'web');
    const v1Cert = path.join(dir, '1', 'cert.pem');
    const original = fs.readFileSync(v1Cert, 'utf8');
    // Another real certificate in v1's place: its key no longer matches, its fingerprint is not v1's meta.
    fs.writeFileSync(v1Cert, fs.readFileSync(path.join(dir, '2', 'cert.pem')));
    try {
      // The certificate's versions and its pin; other store objects (agent records, budgets) move on their own.
      const pinFile = path.join(fleet.controllerState, 'store', 'objects', 'pins', 'web.json');
      const storeBefore = snapshotTree(dir);
      const rb = await fleet.cli(['rollback', 'web', '--to', '1']);
      assert.equal(rb.code, 1, `exit 1 (documented for BUNDLE_* codes): ${rb.stderr}`);
      assert.match(rb.stderr, /^certfleet: refusing to roll back web to version 1: the stored bundle fails validation: web v1: leaf fingerprint differs from meta\.fingerprint; nothing was changed\n/);
      assert.match(rb.stderr, /\ncode: BUNDLE_INVALID\n/);
      assert.doesNotMatch(rb.stderr, /\n\s+at /, 'no stack trace');
      const afterRb = await history();
      assert.equal(afterRb.pinnedVersion, 0, 'nothing pinned');
      assert.equal(afterRb.versions.find((v) => v.desired)?.version.version, 2, 'desired version unchanged');
      assert.deepEqual(snapshotTree(dir), storeBefore, 'the stored versions are unchanged');
      assert.equal(fs.existsSync(pinFile), false, 'no pin was written');
      await fleetServes(2, before.versions.find((v) => v.desired)?.version.fingerprint ?? '');
      const events = await fleet.cliJson<{ events: Array<{ type: string; version: number }> }>(['events', '--cert', 'web']);
      assert.equal(events.events.filter((e) => e.type === 'rolled-back' && e.version === 1).length, 1, 'no second rolled-back event');
    } finally {
      fs.writeFileSync(v1Cert, original);
    }
  });
});

/** Every file under `root` with its content, for "nothing changed" assertions. */
function snapshotTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(root, p)] = fs.readFileSync(p, 'utf8');
    }
  };
  walk(root);
  return out;
}

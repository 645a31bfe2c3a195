/**
 * Revocation end to end (issue #15, part 3), with real Pebble, NATS, controller, agent and
 * nginx: issue v1, renew to v2, revoke v2 — the served one — for keyCompromise. Pebble's
 * management API reports v2 revoked with reason 1; the fleet leaves v2 at once (moved to
 * v1, pinned), a v3 is issued on the durable renewal request and nginx serves it; history
 * marks v2 revoked; rollback to v2 is refused with VERSION_REVOKED; revoking v2 again
 * answers "already revoked" and changes nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';

interface HistoryJson {
  name: string;
  pinnedVersion: number;
  versions: Array<{
    version: { version: number; fingerprint: string; serial: string };
    agents: string[];
    desired: boolean;
    revoked: boolean;
    revocationReason: string;
    revokedBy: string;
  }>;
}
interface RevokeJson {
  version: number;
  serial: string;
  reason: string;
  reasonCode: number;
  alreadyRevoked: boolean;
  revokedBy: string;
  served: boolean;
  servingVersion: number;
  servingPinned: boolean;
  renewalRequested: boolean;
  message: string;
}
interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string }>;
}

const NAME = 'www.example.test';
const AGENT = { name: 'edge-a', ip: '127.0.0.2' };

describe('revoking the served version at the CA moves the fleet to a new version', { timeout: 300_000 }, () => {
  let fleet: Fleet;

  const history = (): Promise<HistoryJson> => fleet.cliJson<HistoryJson>(['history', 'web']);

  /** Waits until the agent reports `version` installed, then checks nginx serves `fingerprint`. */
  async function serves(version: number, fingerprint: string): Promise<void> {
    await eventually(
      `edge-a at version ${version}`,
      async () => {
        const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
        const s = res.agents.find((a) => a.name === AGENT.name)?.certificates.find((c) => c.name === 'web');
        return s?.state === 'installed' && s.version === version;
      },
      90_000,
      300,
    );
    const served = await servedCertificate({ host: AGENT.ip, port: fleet.tlsPort, servername: NAME });
    assert.equal(served.fingerprint, fingerprint, `nginx serves version ${version}`);
  }

  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: [NAME], agents: 'role=web' }],
      agents: [{ ...AGENT, labels: { role: 'web' }, serves: ['web'] }],
      dns: { [NAME]: AGENT.ip },
    });
  });

  after(async () => {
    await fleet?.stop();
  });

  test('v1, v2, revoke v2 (keyCompromise): Pebble says revoked, v3 is issued and served, history marks v2, rollback to v2 is refused', async () => {
    try {
      await eventually('version 1 issued', async () => (await history()).versions.length === 1, 120_000, 500);
      const v1 = (await history()).versions[0]?.version;
      assert.ok(v1);
      await serves(1, v1.fingerprint);
      const renew = await fleet.cli(['renew', 'web', '--wait']);
      assert.equal(renew.code, 0, renew.stderr);
      const v2 = (await history()).versions.find((h) => h.version.version === 2)?.version;
      assert.ok(v2);
      await serves(2, v2.fingerprint);
      assert.equal((await fleet.pebble.certStatus(v2.serial)).Status, 'Valid');

      const revoke = await fleet.cliJson<RevokeJson>(['revoke', 'web', '--version', '2', '--reason', 'keyCompromise']);
      assert.deepEqual(
        { version: revoke.version, serial: revoke.serial, reason: revoke.reason, code: revoke.reasonCode, already: revoke.alreadyRevoked, by: revoke.revokedBy, served: revoke.served, renew: revoke.renewalRequested },
        { version: 2, serial: v2.serial, reason: 'keyCompromise', code: 1, already: false, by: 'admin', served: true, renew: true },
      );
      // The fleet left v2 at once: to v1 (still valid), pinned until the renewal lands.
      assert.deepEqual([revoke.servingVersion, revoke.servingPinned], [1, true], revoke.message);

      // The CA: revoked, with the reason given.
      const status = await fleet.pebble.certStatus(v2.serial);
      assert.equal(status.Status, 'Revoked');
      assert.equal(status.Reason, 1);

      // A v3 is issued on the renewal request and nginx serves it; the interim pin is gone.
      await eventually('version 3 issued', async () => (await history()).versions.length === 3, 120_000, 500);
      const h = await history();
      const v3 = h.versions.find((x) => x.version.version === 3)?.version;
      assert.ok(v3);
      await serves(3, v3.fingerprint);
      const after3 = await history();
      assert.equal(after3.pinnedVersion, 0);
      assert.equal(after3.versions.find((x) => x.version.version === 3)?.desired, true);
      const row2 = after3.versions.find((x) => x.version.version === 2);
      assert.deepEqual([row2?.revoked, row2?.revocationReason, row2?.revokedBy], [true, 'keyCompromise', 'admin']);
      assert.equal(after3.versions.find((x) => x.version.version === 1)?.revoked, false);
      const table = await fleet.cli(['history', 'web']);
      assert.match(table.stdout, /^2 .*revoked\(keyCompromise\)/m);

      // rollback to the revoked version is refused, and nothing moves.
      const rb = await fleet.cli(['rollback', 'web', '--to', '2']);
      assert.equal(rb.code, 1, rb.stderr);
      assert.match(rb.stderr, /version 2 of web was revoked at the CA/);
      assert.match(rb.stderr, /code: VERSION_REVOKED/);
      await serves(3, v3.fingerprint);

      // Idempotent: asking again answers so.
      const again = await fleet.cliJson<RevokeJson>(['revoke', 'web', '--version', '2', '--reason', 'keyCompromise']);
      assert.equal(again.alreadyRevoked, true);
      assert.equal(again.served, false);
      assert.match(again.message, /was already revoked \(keyCompromise, by admin/);
      const text = await fleet.cli(['revoke', 'web', '--version', '2']);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^web: version 2 was already revoked/);

      const events = await fleet.cliJson<{ events: Array<{ type: string; version: number; actor: string }> }>(['events', '--cert', 'web']);
      const revoked = events.events.filter((e) => e.type === 'revoked');
      assert.deepEqual(
        revoked.map((e) => [e.version, e.actor]),
        [[2, 'admin']],
        'one revoked event, for the first revocation only',
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });
});

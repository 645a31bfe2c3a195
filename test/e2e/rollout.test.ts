/**
 * Staged rollout with real nginx: a certificate with two waves. A new version reaches
 * the first wave, and the second only once the first runs it; when the first wave fails
 * the new version (its reload hook fails and the agent rolls back), the rollout halts and
 * the second wave keeps serving the old version.
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
  certificates: Array<{ name: string; version: number; state: string; failedVersion: number; rollback: string }>;
}
interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string } }>;
}
interface EventJson {
  type: string;
  version: number;
  message: string;
}

const NAMES = ['www.example.test'];

describe('a two-wave rollout', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let marker: string;

  async function status(agent: string): Promise<AgentJson['certificates'][number] | undefined> {
    const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    return res.agents.find((a) => a.name === agent)?.certificates.find((c) => c.name === 'web');
  }
  async function fingerprintOf(version: number): Promise<string> {
    const h = await fleet.cliJson<HistoryJson>(['history', 'web']);
    const v = h.versions.find((x) => x.version.version === version);
    assert.ok(v, `version ${version} exists`);
    return v.version.fingerprint;
  }
  async function events(): Promise<EventJson[]> {
    return (await fleet.cliJson<{ events: EventJson[] }>(['events', '--cert', 'web', '--limit', '500'])).events;
  }

  before(async () => {
    const root = fs.mkdtempSync('/tmp/certfleet-rollout-');
    marker = path.join(root, 'fail-reload');
    fleet = await startFleet({
      certificates: [{ name: 'web', names: NAMES, agents: 'role=web', extra: 'rollout: { waves: ["wave=one", "wave=two"] }' }],
      agents: [
        {
          name: 'edge-a',
          ip: '127.0.0.2',
          labels: { role: 'web', wave: 'one' },
          serves: ['web'],
          // The first wave's reload fails while the marker exists and the new version is being loaded.
          hook: ({ reload }) => `if [ -e ${marker} ] && [ "$CERTFLEET_ROLLBACK" != 1 ]; then echo 'reload refused (test marker)'; exit 1; fi; ${reload}`,
        },
        { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web', wave: 'two' }, serves: ['web'] },
      ],
      dns: { 'www.example.test': '127.0.0.2' },
    });
    try {
      await eventually('version 1 on both agents', async () => (await status('edge-a'))?.version === 1 && (await status('edge-b'))?.version === 1, 150_000, 500);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });

  after(async () => {
    await fleet?.stop();
  });

  test('a new version goes to wave one first, then to wave two', async () => {
    try {
      const renew = await fleet.cli(['renew', 'web']);
      assert.equal(renew.code, 0, renew.stderr);
      await eventually('version 2 on both agents', async () => (await status('edge-a'))?.version === 2 && (await status('edge-b'))?.version === 2, 120_000, 300);
      const v2 = await fingerprintOf(2);
      for (const ip of ['127.0.0.2', '127.0.0.3']) {
        assert.equal((await servedCertificate({ host: ip, port: fleet.tlsPort, servername: NAMES[0] ?? '' })).fingerprint, v2);
      }
      // The completion is noted by the controller's pass after both reports: wait for it.
      await eventually('the rollout of version 2 complete', async () => (await events()).some((e) => e.type === 'rollout-advanced' && e.version === 2 && /complete/.test(e.message)), 30_000, 300);
      const ev = await events();
      const published = ev.find((e) => e.type === 'published' && e.version === 2);
      assert.match(published?.message ?? '', /wave 1 of 3/);
      const advanced = ev.filter((e) => e.type === 'rollout-advanced' && e.version === 2).map((e) => e.message);
      assert.ok(advanced.some((m) => /wave 2 of 3 released/.test(m)), advanced.join(' | '));
      assert.ok(advanced.some((m) => /complete/.test(m)), advanced.join(' | '));
      // Wave two was released only after wave one had the version: the events are ordered.
      const iWave2 = ev.findIndex((e) => e.type === 'rollout-advanced' && /wave 2 of 3/.test(e.message));
      const iPublished = ev.findIndex((e) => e === published);
      assert.ok(iPublished < iWave2);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });

  test('when wave one fails the new version, the rollout halts and wave two keeps the old one', async () => {
    try {
      const v2 = await fingerprintOf(2);
      fs.writeFileSync(marker, '');
      const renew = await fleet.cli(['renew', 'web']);
      assert.equal(renew.code, 0, renew.stderr);
      await eventually(
        'the rollout of version 3 halted',
        async () => (await events()).some((e) => e.type === 'rollout-halted' && e.version === 3),
        120_000,
        300,
      );
      const a = await status('edge-a');
      assert.equal(a?.failedVersion, 3);
      assert.equal(a?.rollback, 'restored');
      assert.equal(a?.version, 2);
      // Several reconcile passes later, wave two still has not been given version 3.
      await new Promise((r) => setTimeout(r, 4000));
      const b = await status('edge-b');
      assert.equal(b?.version, 2);
      for (const ip of ['127.0.0.2', '127.0.0.3']) {
        assert.equal((await servedCertificate({ host: ip, port: fleet.tlsPort, servername: NAMES[0] ?? '' })).fingerprint, v2, `${ip} serves version 2`);
      }
      const certs = await fleet.cliJson<{ certificates: Array<{ name: string; state: string; lastError: string }> }>(['certs']);
      const web = certs.certificates.find((c) => c.name === 'web');
      assert.equal(web?.state, 'halted');
      assert.match(web?.lastError ?? '', /edge-a/);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });
});

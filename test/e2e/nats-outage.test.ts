/**
 * NATS down during a renewal (issue #8, item 6) — end to end with real Pebble,
 * nats-server, controller, agent process and nginx.
 *
 * An operator asks for a renewal; as soon as the controller has seen the HTTP-01
 * challenge served by the agent (the last step that needs NATS), nats-server is
 * stopped. The CA validates through the agent, the new version is issued and stored,
 * and its publish to NATS fails. Before: no agent got it (gRPC GetAssignments answered
 * the old pointer), agents showed offline (status reports were refused when the NATS
 * write failed), and `certs` kept `failed` for good. Now, while NATS is still down, the
 * agent learns the new version from its offline gRPC resync (every 30 s; its normal
 * resync is hourly here), installs it, nginx serves it, and its reports keep it online;
 * after NATS is back the pointer is written there too and the certificate is `ready`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { FileStore } from '../../controller/store/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { DesiredRecord, VersionMeta } from '../../shared/model/index.js';
import { connectNats, openKv } from '../../shared/nats/index.js';
import { parseDesiredRecord } from '../../shared/records/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { startFleet, type Fleet, type FleetAgent } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';

interface AgentJson {
  name: string;
  online: boolean;
  certificates: Array<{ name: string; version: number; state: string; servedVerified: boolean }>;
}
interface CertJson {
  name: string;
  state: string;
  agentsCurrent: number;
  agentsAssigned: number;
}

const CERT = { name: 'omega', names: ['omega.example.test'], agents: 'node=o' };

describe('NATS down during a renewal', { timeout: 420_000 }, () => {
  let fleet: Fleet;
  let store: FileStore;
  let agent: FleetAgent;
  let v1: VersionMeta;

  before(async () => {
    fleet = await startFleet({
      certificates: [CERT],
      agents: [{ name: 'edge-o', ip: '127.0.0.2', labels: { node: 'o' }, serves: [CERT.name], resyncInterval: '1h' }],
      dns: { 'omega.example.test': '127.0.0.2' },
      // The proxy holds the renewal's finalize until NATS is down (see the test).
      proxy: {},
    });
    store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
    await fleet.waitUntilReady(1);
    const latest = await store.latest(CERT.name);
    assert.ok(latest);
    v1 = latest;
    const a = fleet.agents.get('edge-o');
    assert.ok(a);
    agent = a;
  });

  after(async () => {
    await store?.close();
    await fleet?.stop();
  });

  const served = async (): Promise<string> => (await servedCertificate({ host: agent.ip, port: fleet.tlsPort, servername: CERT.names[0] ?? '' })).fingerprint;
  const fail = (err: unknown): never => {
    throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
  };

  test('the agent installs the new version over gRPC while NATS is down, stays online, and the certificate ends ready', async () => {
    const mark = fleet.controller.output().length;
    // The last NATS step of an HTTP-01 issuance is the challenge reaching the agents; the
    // finalize after it is held at the proxy until NATS is down, so v2 is stored, and
    // published, only while NATS is away (without the hold a fast CA could finish first).
    const proxy = fleet.proxy;
    assert.ok(proxy);
    proxy.setHold((req) => req.method === 'POST' && req.path.includes('finalize'));
    // Not awaited before watching: `renew` waits a moment for the loop's answer.
    const renewing = fleet.cli(['renew', CERT.name]);
    await eventually('the challenge is served', () => fleet.controller.output().slice(mark).includes('challenge served by every agent'), 60_000, 20).catch(fail);
    await fleet.nats.stop();
    await eventually('the finalize is held', () => proxy.heldCount() > 0, 60_000, 20).catch(fail);
    proxy.setHold(undefined);
    const renew = await renewing;
    assert.equal(renew.code, 0, renew.stderr);
    // NATS stays down until restarted below, so a v2 stored after this point was
    // necessarily published (or not) while NATS was unreachable.
    assert.equal((await store.latest(CERT.name))?.version, v1.version, 'v2 not stored before NATS went down');

    const v2 = await eventually(
      'v2 issued and stored',
      async () => {
        const latest = await store.latest(CERT.name);
        return latest && latest.version > v1.version ? latest : undefined;
      },
      90_000,
      200,
    ).catch(fail);

    // Still without NATS: learned over gRPC, installed, served, reported, online.
    await eventually('nginx serves v2 while NATS is down', async () => (await served()) === v2.fingerprint, 90_000, 500).catch(fail);
    const seen = await eventually(
      'edge-o reports v2 installed, online',
      async () => {
        const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
        const a = res.agents.find((x) => x.name === 'edge-o');
        const st = a?.certificates.find((c) => c.name === CERT.name);
        return a?.online && st?.state === 'installed' && st.version === v2.version ? st : undefined;
      },
      60_000,
      500,
    ).catch(fail);
    assert.equal(seen.servedVerified, true);
    const certs = await fleet.cliJson<{ certificates: CertJson[] }>(['certs']);
    assert.notEqual(certs.certificates.find((c) => c.name === CERT.name)?.state, 'failed', 'an issued version is not a failed renewal');

    // NATS back: the pointer reaches the bucket, and the certificate is ready.
    await fleet.nats.restart();
    await fleet.waitUntilReady(1);
    const check = await connectNats({ servers: [fleet.nats.url], name: 'test-check', log: silentLogger(), ...(fleet.natsCreds === undefined ? {} : { credentials: fleet.natsCreds }) });
    try {
      const kv = await openKv<DesiredRecord>(check, Bucket.desired, { create: false, parse: parseDesiredRecord });
      await eventually('desired v2 in NATS', async () => (await kv.get(CERT.name))?.value.version === v2.version, 60_000, 500).catch(fail);
    } finally {
      await check.close();
    }
    const final = await fleet.cliJson<{ certificates: CertJson[] }>(['certs']);
    const omega = final.certificates.find((c) => c.name === CERT.name);
    assert.equal(omega?.state, 'ready');
    assert.equal(omega?.agentsCurrent, 1);
    assert.equal(await served(), v2.fingerprint);
  });
});

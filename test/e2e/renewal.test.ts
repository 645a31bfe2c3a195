/**
 * Renewal, end to end against Pebble: short certificates renew by themselves and the
 * agents install the new version; a controller killed with SIGKILL in the middle of an
 * order resumes that order instead of placing another (the ACME proxy in front of Pebble
 * counts new orders); and with an ARI window offered by the CA, the renewal order carries
 * `replaces` with the old certificate's identifier.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ariCertId } from '../../controller/acme/index.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';

interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string; fingerprint: string }>;
}
interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string; notBefore: string; notAfter: string } }>;
}

const CERT = { name: 'web', names: ['www.example.test'], agents: 'role=web' };
const AGENT = { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] };
const DNS = { 'www.example.test': '127.0.0.2' };

async function withLogs<T>(fleet: Fleet | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${fleet?.logs() ?? ''}`);
  }
}

async function agentVersion(fleet: Fleet): Promise<number> {
  const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
  const s = res.agents.find((a) => a.name === AGENT.name)?.certificates.find((c) => c.name === CERT.name);
  return s?.state === 'installed' ? s.version : 0;
}

describe('renewal against Pebble', { timeout: 300_000 }, () => {
  test('a short-lived certificate renews by itself before it expires, and the agent serves the new version', async () => {
    // 60 s certificates: under 10 days, so renewal is due at half the lifetime (minus jitter).
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, validityPeriodSeconds: 60 });
    try {
      await withLogs(fleet, async () => {
        await eventually('version 1 installed', async () => (await agentVersion(fleet)) >= 1, 120_000, 500);
        const history = await fleet.cliJson<HistoryJson>(['history', CERT.name]);
        const v1 = history.versions.find((v) => v.version.version === 1)?.version;
        assert.ok(v1);
        await eventually('version 2 installed by itself', async () => (await agentVersion(fleet)) >= 2, 90_000, 500);
        const after = await fleet.cliJson<HistoryJson>(['history', CERT.name]);
        const v2 = after.versions.find((v) => v.version.version === 2)?.version;
        assert.ok(v2);
        assert.ok(Date.parse(v2.notBefore) < Date.parse(v1.notAfter), 'version 2 was issued before version 1 expired');
        const served = await servedCertificate({ host: AGENT.ip, port: fleet.tlsPort, servername: CERT.names[0] ?? '' });
        const newest = (await fleet.cliJson<HistoryJson>(['history', CERT.name])).versions.map((v) => v.version).sort((a, b) => b.version - a.version)[0];
        // A third renewal may have landed meanwhile: what is served is a renewed version, never version 1.
        assert.notEqual(served.fingerprint, v1.fingerprint);
        assert.ok(newest && newest.version >= 2);
      });
    } finally {
      await fleet.stop();
    }
  });

  test('a controller killed with SIGKILL mid-order resumes the same order: the CA sees one new order', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, proxy: {}, deferAgents: true });
    try {
      await withLogs(fleet, async () => {
        const proxy = fleet.proxy;
        assert.ok(proxy);
        // No agent is enrolled yet, so the order is placed but cannot be validated.
        await eventually('the first order placed', () => proxy.newOrders().length === 1, 60_000, 100);
        const pendingOrder = path.join(fleet.controllerState, 'store', 'objects', 'orders', `${CERT.name}.json`);
        await eventually('the pending order persisted', () => fs.existsSync(pendingOrder), 10_000, 100);
        await fleet.restartController({ kill: true });
        await fleet.addAgents();
        await eventually('version 1 installed', async () => (await agentVersion(fleet)) === 1, 120_000, 500);
        assert.equal(proxy.newOrders().length, 1, 'no second new order was sent to the CA');
        const events = await fleet.cliJson<{ events: Array<{ type: string; message: string }> }>(['events', '--cert', CERT.name]);
        assert.ok(events.events.some((e) => e.type === 'ordered' && e.message === 'order resumed'), 'the resumed order is recorded');
        assert.equal(fs.existsSync(pendingOrder), false, 'the pending order is gone once the certificate is stored');
      });
    } finally {
      await fleet.stop();
    }
  });

  test('when the CA offers an ARI window, the renewal order carries replaces with the old certificate identifier', async () => {
    // The first certificate the CA is asked about gets a window that is already open;
    // every later one a window a year away, so exactly one ARI renewal happens.
    let first: string | undefined;
    const now = Date.now();
    const fleet = await startFleet({
      certificates: [CERT],
      agents: [AGENT],
      dns: DNS,
      proxy: {
        defaultWindow: (certId) => {
          first ??= certId;
          return certId === first ? { start: now - 3_600_000, end: now - 60_000 } : { start: now + 365 * 86_400_000, end: now + 366 * 86_400_000 };
        },
      },
    });
    try {
      await withLogs(fleet, async () => {
        const proxy = fleet.proxy;
        assert.ok(proxy);
        await eventually('version 2 installed after the ARI window', async () => (await agentVersion(fleet)) >= 2, 120_000, 500);
        const orders = proxy.newOrders();
        assert.equal(orders.length, 2, `two orders: the first and the ARI renewal (${JSON.stringify(orders.map((o) => o.replaces))})`);
        assert.equal(orders[0]?.replaces, undefined);
        const v1 = JSON.parse(fs.readFileSync(path.join(fleet.controllerState, 'store', 'certs', CERT.name, '1', 'meta.json'), 'utf8')) as { serial: string };
        assert.ok(v1.serial);
        const v1Pem = fs.readFileSync(path.join(fleet.controllerState, 'store', 'certs', CERT.name, '1', 'cert.pem'), 'utf8');
        assert.equal(orders[1]?.replaces, ariCertId(v1Pem), 'replaces names version 1');
        const show = await fleet.cliJson<{ ariWindowStart: string; reason: string }>(['show', CERT.name]);
        assert.notEqual(show.ariWindowStart, '', 'the ARI window of the served version is shown');
      });
    } finally {
      await fleet.stop();
    }
  });
});

/**
 * Renewal, end to end against Pebble: short certificates (the "shortlived" ACME profile,
 * advertised by the proxy, Pebble's validity a few minutes) renew by themselves at half
 * life and nginx serves a valid certificate at every look, without a gap; a profile the
 * CA does not offer stops the controller at start; a controller killed with SIGKILL in the middle of an
 * order resumes that order instead of placing another (the ACME proxy in front of Pebble
 * counts new orders); and with an ARI window offered by the CA, the renewal order carries
 * `replaces` with the old certificate's identifier.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ariCertId } from '../../controller/acme/index.js';
import { X509Certificate } from 'node:crypto';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';

interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string; fingerprint: string }>;
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

/** One look at what nginx serves for the certificate's name. */
interface Observation {
  startedAt: number;
  endedAt: number;
  fingerprint?: string;
  notBefore?: number;
  notAfter?: number;
  error?: string;
}

async function observe(tlsPort: number): Promise<Observation> {
  const startedAt = Date.now();
  try {
    const served = await servedCertificate({ host: AGENT.ip, port: tlsPort, servername: CERT.names[0] ?? '', timeoutMs: 5_000 });
    const x = new X509Certificate(served.pem);
    return { startedAt, endedAt: Date.now(), fingerprint: served.fingerprint, notBefore: Date.parse(x.validFrom), notAfter: Date.parse(x.validTo) };
  } catch (err) {
    return { startedAt, endedAt: Date.now(), error: (err as Error).message };
  }
}

/** The stored metadata of version `n` (file store layout). */
function storedMeta(fleet: Fleet, n: number): { fingerprint: string; notBefore: string; notAfter: string; profile?: string } {
  return JSON.parse(fs.readFileSync(path.join(fleet.controllerState, 'store', 'certs', CERT.name, String(n), 'meta.json'), 'utf8')) as {
    fingerprint: string;
    notBefore: string;
    notAfter: string;
    profile?: string;
  };
}

async function agentVersion(fleet: Fleet): Promise<number> {
  const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
  const s = res.agents.find((a) => a.name === AGENT.name)?.certificates.find((c) => c.name === CERT.name);
  return s?.state === 'installed' ? s.version : 0;
}

describe('renewal against Pebble', { timeout: 420_000 }, () => {
  test('a short-lived certificate under the "shortlived" profile renews at half life, twice, and nginx serves a valid certificate throughout', async () => {
    // Pebble 2.4 has no profiles: the proxy advertises them and records what each newOrder
    // asked for, and Pebble's validity (one for every order) plays the profile's: 150 s,
    // under 10 days, so each version renews at half its lifetime (minus jitter).
    const lifetimeMs = 150_000;
    const fleet = await startFleet({
      certificates: [{ ...CERT, extra: 'profile: shortlived' }],
      agents: [AGENT],
      dns: DNS,
      validityPeriodSeconds: lifetimeMs / 1000,
      proxy: { profiles: { classic: 'the default', shortlived: 'valid for minutes here' } },
    });
    const observations: Observation[] = [];
    let watching = true;
    let watcher: Promise<void> = Promise.resolve();
    try {
      await withLogs(fleet, async () => {
        await eventually('version 1 installed', async () => (await agentVersion(fleet)) >= 1, 120_000, 500);
        // From the first install on, every look at the listener (one every 500 ms) must
        // find a certificate that is valid at that moment: no gap, no expired version.
        watcher = (async () => {
          while (watching) {
            observations.push(await observe(fleet.tlsPort));
            await new Promise((r) => setTimeout(r, 500));
          }
        })();
        const v1 = storedMeta(fleet, 1);
        assert.equal(v1.profile, 'shortlived', 'version 1 records the profile its order had');
        const lifetime = Date.parse(v1.notAfter) - Date.parse(v1.notBefore);
        const show = await fleet.cliJson<{ summary: { current: { version: number }; nextRenewal: string } }>(['show', CERT.name]);
        if (show.summary.current.version === 1) {
          // Half life, less at most the default 5 % jitter: not 2/3 as for long lifetimes.
          const due = Date.parse(show.summary.nextRenewal) - Date.parse(v1.notBefore);
          assert.ok(due <= lifetime / 2 && due >= lifetime * 0.45, `version 1 renews ${due} ms into its ${lifetime} ms life`);
        }
        await eventually('version 3 installed: two renewals by themselves', async () => (await agentVersion(fleet)) >= 3, 2.2 * lifetimeMs, 500);
        // One more look after the last install, then stop watching.
        await new Promise((r) => setTimeout(r, 1_000));
        watching = false;
        await watcher;

        const versions = [1, 2, 3].map((n) => storedMeta(fleet, n));
        for (const [i, v] of versions.entries()) {
          assert.equal(v.profile, 'shortlived', `version ${i + 1} records the profile`);
          if (i > 0) assert.ok(Date.parse(v.notBefore) < Date.parse(versions[i - 1]!.notAfter), `version ${i + 1} was issued before version ${i} expired`);
        }
        const orders = fleet.proxy?.newOrders() ?? [];
        assert.ok(orders.length >= 3, `${orders.length} orders`);
        assert.deepEqual([...new Set(orders.map((o) => o.profile))], ['shortlived'], 'every newOrder asked for the shortlived profile');

        const failed = observations.filter((o) => o.error !== undefined);
        assert.deepEqual(failed, [], 'the listener answered every look with a certificate');
        const invalid = observations.filter((o) => !(o.notBefore! <= o.startedAt && o.endedAt < o.notAfter!));
        assert.deepEqual(invalid, [], 'every certificate served was valid when it was served');
        const served = observations.map((o) => versions.findIndex((v) => v.fingerprint === o.fingerprint) + 1);
        assert.ok(!served.includes(0), 'only stored versions were served');
        assert.ok(served.every((v, i) => i === 0 || v >= served[i - 1]!), `the served version never went back: ${served.join(',')}`);
        assert.ok(served.includes(2) && served.includes(3), `versions 2 and 3 were served in turn: ${served.join(',')}`);
        assert.ok(observations.length >= lifetimeMs / 1000, `${observations.length} looks`);
      });
    } finally {
      watching = false;
      await watcher.catch(() => undefined);
      await fleet.stop();
    }
  });

  test('a profile the CA does not advertise stops the controller at start, naming the certificate and the profiles offered', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, proxy: { profiles: { classic: 'the default', shortlived: 'six days' } }, deferAgents: true });
    try {
      await withLogs(fleet, async () => {
        await fleet.stopController();
        const yaml = fs.readFileSync(fleet.controllerConfig, 'utf8');
        fs.writeFileSync(fleet.controllerConfig, yaml.replace('agents: "role=web" }', 'agents: "role=web", profile: short-lived }'));
        const orders = fleet.proxy?.newOrders().length;
        // Without the check the controller would start and listen: startController resolves.
        await assert.rejects(fleet.startController(), (err: Error) => {
          assert.match(err.message, /process exited before listening/);
          assert.match(err.message, /certificate web: profile "short-lived" is not offered by the CA \(it offers: classic, shortlived\)/);
          assert.match(err.message, /code: CONFIG_INVALID/);
          return true;
        });
        assert.equal(fleet.controller.child.exitCode, 3, 'exit code 3 (CONFIG_INVALID)');
        assert.equal(fleet.proxy?.newOrders().length, orders, 'no order was sent');
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

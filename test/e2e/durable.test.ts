/**
 * Durable intent, end to end against Pebble (issue #8, items 3, 4, 5, 7 and 8): what a
 * controller was asked or owes survives failures and SIGKILLs, and is acted on.
 *
 *  - a renewal that fails while the CA is down is retried at its retryAt, not never;
 *  - an operator renew whose order could not be validated (agent offline) is finished
 *    after a SIGKILL and restart, with the same order and no new command;
 *  - two SIGKILLs mid-order (at finalize, held by the ACME proxy) cost one order at the
 *    CA and one charge to the budgets;
 *  - a CA that forgets the account while the controller runs costs nothing: the next
 *    renewal registers again and succeeds;
 *  - a controller without acme.email restarts (twice), and each start sweeps HTTP-01
 *    records a killed controller left on NATS.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, openKv } from '../../shared/nats/index.js';
import { Bucket } from '../../shared/wire/index.js';
import type { ChallengeRecord } from '../../shared/model/index.js';
import { parseChallengeRecord } from '../../shared/records/index.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';

interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string }>;
}
interface HistoryJson {
  versions: Array<{ version: { version: number; issuedAt: string } }>;
}
interface ShowJson {
  backoffUntil: string;
  failures: number;
  reason: string;
}
interface EventsJson {
  events: Array<{ type: string; message: string; at: string }>;
}
interface BudgetsJson {
  budgets: Array<{ name: string; available: number; capacity: number }>;
}

const CERT = { name: 'web', names: ['www.example.test'], agents: 'role=web' };
const AGENT = { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] };
const DNS = { 'www.example.test': '127.0.0.2' };

async function withLogs<T>(fleet: Fleet, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
  }
}

async function installedVersion(fleet: Fleet): Promise<number> {
  const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
  const s = res.agents.find((a) => a.name === AGENT.name)?.certificates.find((c) => c.name === CERT.name);
  return s?.state === 'installed' ? s.version : 0;
}

async function versions(fleet: Fleet): Promise<HistoryJson['versions']> {
  return (await fleet.cliJson<HistoryJson>(['history', CERT.name])).versions;
}

async function events(fleet: Fleet, type: string): Promise<EventsJson['events']> {
  return (await fleet.cliJson<EventsJson>(['events', '--cert', CERT.name, '--limit', '200'])).events.filter((e) => e.type === type);
}

describe('durable renewals against Pebble', { timeout: 400_000 }, () => {
  test('a renewal that fails while the CA is down is retried at its retryAt, without a second renew command', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, proxy: {} });
    try {
      await withLogs(fleet, async () => {
        const proxy = fleet.proxy;
        assert.ok(proxy);
        await eventually('version 1 installed', async () => (await installedVersion(fleet)) === 1, 120_000, 500);
        proxy.setDown(true);
        const renew = await fleet.cli(['renew', CERT.name]);
        assert.equal(renew.code, 0, renew.stderr);
        await eventually('the renewal failed', async () => (await events(fleet, 'failed')).length >= 1, 60_000, 500);
        const show = await eventually(
          'show: one failure, the request backing off until its retryAt',
          async () => {
            const s = await fleet.cliJson<ShowJson>(['show', CERT.name]);
            return s.failures === 1 && s.backoffUntil !== '' && /renewal requested by .*backing off after a failure/.test(s.reason) ? s : undefined;
          },
          10_000,
          200,
        );
        const retryAt = Date.parse(show.backoffUntil);
        proxy.setDown(false);
        // Nothing happens before retryAt (the certificate is years from due) ...
        assert.equal((await versions(fleet)).length, 1);
        // ... and at retryAt the request is tried again and succeeds.
        await eventually('version 2 installed after the retry', async () => (await installedVersion(fleet)) === 2, 150_000, 500);
        const v2 = (await versions(fleet)).find((v) => v.version.version === 2)?.version;
        assert.ok(v2);
        assert.ok(Date.parse(v2.issuedAt) >= retryAt, `issued at ${v2.issuedAt}, not before retryAt ${show.backoffUntil}`);
        assert.equal((await events(fleet, 'renew-requested')).length, 1, 'one operator command');
        const after = await fleet.cliJson<ShowJson>(['show', CERT.name]);
        assert.equal(after.failures, 0);
        assert.equal(after.backoffUntil, '');
        assert.equal(fs.existsSync(path.join(fleet.controllerState, 'store', 'objects', 'renewals', `${CERT.name}.json`)), false, 'nothing owed any more');
      });
    } finally {
      await fleet.stop();
    }
  });

  test('an operator renew that failed with the agent offline is finished after a SIGKILL and restart: same order, no new command', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, proxy: {} });
    try {
      await withLogs(fleet, async () => {
        const proxy = fleet.proxy;
        const agent = fleet.agents.get(AGENT.name);
        assert.ok(proxy && agent);
        await eventually('version 1 installed', async () => (await installedVersion(fleet)) === 1, 120_000, 500);
        const ordersBefore = proxy.newOrders().length;
        await agent.process.stop();
        const renew = await fleet.cli(['renew', CERT.name]);
        assert.equal(renew.code, 0, renew.stderr);
        // The order is placed and saved; HTTP-01 is not served, so the attempt fails.
        await eventually('the renewal failed', async () => (await events(fleet, 'failed')).length >= 1, 90_000, 500);
        assert.equal(proxy.newOrders().length, ordersBefore + 1);
        const saved = path.join(fleet.controllerState, 'store', 'objects', 'orders', `${CERT.name}.json`);
        assert.ok(fs.existsSync(saved), 'the order is saved');
        assert.ok(fs.existsSync(path.join(fleet.controllerState, 'store', 'objects', 'renewals', `${CERT.name}.json`)), 'the request is saved');

        await fleet.restartController({ kill: true });
        agent.restart();
        await eventually('version 2 installed', async () => (await installedVersion(fleet)) === 2, 150_000, 500);
        assert.equal(proxy.newOrders().length, ordersBefore + 1, 'the saved order was resumed, not placed again');
        assert.equal((await events(fleet, 'renew-requested')).length, 1, 'one operator command');
        assert.ok((await events(fleet, 'ordered')).some((e) => e.message === 'order resumed'));
        assert.equal(fs.existsSync(saved), false);
      });
    } finally {
      await fleet.stop();
    }
  });

  test('two SIGKILLs mid-order (at finalize) cost one order at the CA and one charge to the budgets', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, proxy: {} });
    try {
      await withLogs(fleet, async () => {
        const proxy = fleet.proxy;
        assert.ok(proxy);
        // Finalize requests wait in the proxy: each one is a moment the order is in flight.
        proxy.setHold((r) => r.method === 'POST' && r.path.includes('finalize'));
        await eventually('first finalize held', () => proxy.heldCount() === 1, 120_000, 100);
        await fleet.restartController({ kill: true });
        await eventually('second finalize held', () => proxy.heldCount() === 2, 60_000, 100);
        await fleet.restartController({ kill: true });
        await eventually('third finalize held', () => proxy.heldCount() === 3, 60_000, 100);
        proxy.setHold(undefined);
        await eventually('version 1 installed', async () => (await installedVersion(fleet)) === 1, 120_000, 500);

        assert.equal(proxy.newOrders().length, 1, 'one order at the CA');
        const budgets = (await fleet.cliJson<BudgetsJson>(['budgets'])).budgets;
        const exact = budgets.find((b) => b.name.startsWith('New Certificates per Exact Set of Identifiers') && b.name.includes('www.example.test'));
        const domain = budgets.find((b) => b.name.startsWith('New Certificates per Registered Domain') && b.name.includes('example.test'));
        assert.ok(exact && domain, JSON.stringify(budgets));
        assert.equal(exact.available, exact.capacity - 1, `charged once per exact set: ${JSON.stringify(exact)}`);
        assert.equal(domain.available, domain.capacity - 1, `charged once per domain: ${JSON.stringify(domain)}`);
      });
    } finally {
      await fleet.stop();
    }
  });

  test('a CA that forgets the account while the controller runs: the next renewal registers again and succeeds, no restart', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS });
    try {
      await withLogs(fleet, async () => {
        await eventually('version 1 installed', async () => (await installedVersion(fleet)) === 1, 120_000, 500);
        const pid = fleet.controller.child.pid;
        // (The first order failed once before the agent was enrolled.)
        const failedBefore = (await events(fleet, 'failed')).length;
        // Pebble keeps accounts in memory: restarted, it answers accountDoesNotExist.
        await fleet.pebble.restart();
        const renew = await fleet.cli(['renew', CERT.name]);
        assert.equal(renew.code, 0, renew.stderr);
        await eventually('version 2 installed', async () => (await installedVersion(fleet)) === 2, 90_000, 500);
        assert.equal(fleet.controller.child.pid, pid, 'the same controller process');
        assert.equal((await events(fleet, 'failed')).length, failedBefore, 'the renewal did not fail');
      });
    } finally {
      await fleet.stop();
    }
  });

  test('a controller without acme.email restarts twice, and each start sweeps HTTP-01 records left on NATS', async () => {
    const fleet = await startFleet({ certificates: [CERT], agents: [AGENT], dns: DNS, acmeEmail: null });
    const nats = await connectNats({ servers: [fleet.nats.url], name: 'test', log: silentLogger(), ...(fleet.natsCreds === undefined ? {} : { credentials: fleet.natsCreds }) });
    try {
      await withLogs(fleet, async () => {
        await eventually('version 1 installed', async () => (await installedVersion(fleet)) === 1, 120_000, 500);
        const board = await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false, parse: parseChallengeRecord });
        const leftover = (token: string, cert: string): ChallengeRecord => ({
          token,
          keyAuthorization: `${token}.thumbprint`,
          identifier: 'www.example.test',
          cert,
          selector: CERT.agents,
          createdAt: new Date(Date.now() - 3_600_000).toISOString(),
        });
        for (const round of [1, 2]) {
          // What a controller killed between presenting and cleaning up leaves behind.
          await board.put(`leftover-web-${round}`, leftover(`leftover-web-${round}`, CERT.name));
          await board.put(`leftover-gone-${round}`, leftover(`leftover-gone-${round}`, 'gone'));
          assert.equal((await board.keys()).length, 2);
          await fleet.restartController({ kill: true });
          await eventually(`restart ${round}: leftover challenges swept`, async () => (await board.keys()).length === 0, 30_000, 200);
          const status = await fleet.cli(['status']);
          assert.equal(status.code, 0, `restart ${round}: the controller answers: ${status.stderr}`);
        }
        assert.equal(fleet.controller.child.exitCode, null, 'the controller still runs');
        const cfg = fs.readFileSync(fleet.controllerConfig, 'utf8');
        assert.doesNotMatch(cfg, /email/, 'no acme.email configured');
      });
    } finally {
      await nats.close();
      await fleet.stop();
    }
  });
});

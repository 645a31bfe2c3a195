/**
 * High availability, end to end (issue #12, docs/high-availability.md): two controller
 * processes on one Vault store (the KV v2 double) and a three-node nats-server cluster,
 * two agents each in front of a real nginx, Pebble behind the counting ACME proxy
 * (test/harness/ha-fleet.ts).
 *
 * What each test proves:
 *  1. The leader SIGKILLed between placing an order and finalising it: the other controller
 *     leads at the next epoch, finishes that same order (exactly one new order at the CA)
 *     and every nginx serves the new version.
 *  2. A leader SIGSTOPped past its lease and then continued finds itself deposed and writes
 *     nothing: no second order, no desired pointer from its old epoch.
 *  3. One of three NATS servers killed during a rollout: the rollout completes; restarted,
 *     the server catches up (a client that only knows it reads the new pointer and events).
 *  4. `rollback` sent to a follower takes effect (the leader carries it out), and `status`
 *     asked of the follower names the leader.
 *  5. Budgets across a failover: the new leader spends from the levels the old one left
 *     in NATS; renewals beyond the configured limit are deferred, never ordered.
 *  6. Agents keep serving through a failover (every handshake during it succeeds), converge
 *     on the version the new leader issues, and no install fails.
 *
 * No assertion here is about speed: the failover bound below is a correctness bound (the
 * lease time plus NATS electing stream leaders); bench/failover.ts measures the times.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startHaFleet, type HaController, type HaFleet } from '../harness/ha-fleet.js';
import { wrongServed } from '../harness/served.js';
import { servedCertificate } from '../harness/tls.js';
import { sniFor } from '../harness/served.js';
import { eventually } from '../harness/process.js';
import type { FleetAgentSpec, FleetCertificate } from '../harness/fleet.js';
import { connectNats, openKv, readEvents, type NatsHandle } from '../../shared/nats/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { DesiredRecord } from '../../shared/model/index.js';

const CERT_NAMES = ['mid', 'pause', 'roll', 'back', 'budget', 'serve'] as const;
type CertName = (typeof CERT_NAMES)[number];
const CERTS: FleetCertificate[] = CERT_NAMES.map((name) => ({ name, names: [`${name}.example.test`], agents: 'role=web' }));
const AGENTS: FleetAgentSpec[] = [
  { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: [...CERT_NAMES] },
  { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web' }, serves: [...CERT_NAMES] },
];
/** Certificates per exact set of names per hour: the budget test's limit (and more than any other test spends). */
const EXACT_SET_LIMIT = 4;

interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string } }>;
}
interface CertsJson {
  certificates: Array<{ name: string; state: string; newestVersion: number; desiredVersion: number; agentsCurrent: number; agentsAssigned: number }>;
}
interface RenewJson {
  outcome: string;
  version: number;
  deferredUntil?: string;
  budget?: string;
}

describe('several controllers, one leader', { timeout: 1_500_000 }, () => {
  let fleet: HaFleet;
  let observer: NatsHandle;
  /** The failover bound: a correctness bound (the lease, then NATS electing stream leaders), not a speed claim. */
  let failoverBoundMs: number;

  before(async () => {
    fleet = await startHaFleet({
      certificates: CERTS,
      agents: AGENTS,
      dns: Object.fromEntries(CERT_NAMES.map((n) => [`${n}.example.test`, '127.0.0.2'])),
      leaseTtl: '6s',
      controllerYaml: [`budgets: { preset: custom, emergencyReserve: 0, limits: { certificatesPerExactSet: { count: ${EXACT_SET_LIMIT}, period: 1h } } }`],
    });
    failoverBoundMs = fleet.leaseTtlMs + 20_000;
    await fleet.waitUntilReady(CERTS.length);
    observer = await connectNats({ servers: fleet.nats.urls, name: 'ha-test-observer', credentials: fleet.natsCreds, log: silentLogger(), requestTimeoutMs: 5000 });
  });

  after(async () => {
    await observer?.close().catch(() => undefined);
    await fleet?.stop();
  });

  const other = (c: HaController): HaController => {
    const o = fleet.controllers.find((x) => x !== c);
    if (!o) throw new Error('one controller only');
    return o;
  };

  async function newest(name: CertName): Promise<{ version: number; fingerprint: string }> {
    const h = await fleet.cliJson<HistoryJson>(['history', name]);
    const top = h.versions.map((v) => v.version).sort((a, b) => b.version - a.version)[0];
    if (!top) throw new Error(`${name} has no version`);
    return top;
  }

  /** Both agents report `version` of `name` current and both nginx serve `fingerprint`. */
  async function servedEverywhere(name: CertName, version: number, fingerprint: string, timeoutMs = 120_000): Promise<void> {
    try {
      await eventually(
        `${name} v${version} current on every agent and served by every nginx`,
        async () => {
          const certs = await fleet.cliJson<CertsJson>(['certs']);
          const c = certs.certificates.find((x) => x.name === name);
          if (!c || c.desiredVersion !== version || c.agentsCurrent !== c.agentsAssigned) return false;
          return (await wrongServed({ agents: AGENTS, tlsPort: fleet.tlsPort, cert: name, names: [`${name}.example.test`], want: fingerprint })).length === 0;
        },
        timeoutMs,
        500,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  }

  /** Waits for a version of `name` newer than `than`; returns it. */
  async function newerVersion(name: CertName, than: number, timeoutMs = 120_000): Promise<{ version: number; fingerprint: string }> {
    try {
      return await eventually(`${name} newer than v${than}`, async () => {
        const n = await newest(name);
        return n.version > than ? n : undefined;
      }, timeoutMs, 500);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  }

  /**
   * readEvents, tried again while the cluster settles: right after a node (re)starts, a
   * consumer on the event stream can stall once ("stream stopped delivering").
   */
  const eventsOf = (handle: NatsHandle, opts: Parameters<typeof readEvents>[1]): ReturnType<typeof readEvents> =>
    eventually('the event stream', () => readEvents(handle, opts), 60_000, 500);

  /**
   * Runs the CLI until it succeeds; tries again only while it fails with NATS_UNAVAILABLE
   * (retryable): right after a NATS node restarts, the cluster can answer "jetstream is
   * not enabled" for a moment, and the controller keeps the request and retries by itself.
   */
  async function cliOk(args: string[], opts: { via?: HaController } = {}): Promise<string> {
    let last = '';
    try {
      return await eventually(`certfleet ${args.join(' ')}`, async () => {
        const r = await fleet.cli(args, opts);
        if (r.code === 0) return r.stdout;
        last = r.stderr;
        if (/NATS_UNAVAILABLE/.test(r.stderr)) return undefined;
        throw new Error(`certfleet ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      }, 90_000, 1000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nlast: ${last}\n${fleet.logs()}`);
    }
  }

  const finalizeOf = (req: { method: string; path: string }): boolean => req.method === 'POST' && /finali[sz]e/.test(req.path);
  const ordersFor = (name: CertName): number => fleet.proxy.createdOrders().filter((o) => o.identifiers.some((i) => i.value === `${name}.example.test`)).length;

  /**
   * `certs` asked of each running controller tells the same newest and desired version
   * and state of every certificate, all ready: a follower answers operators' reads
   * itself, from the shared store and NATS, not from a loop that only the leader runs.
   */
  async function readsAgree(): Promise<void> {
    let last = '';
    try {
      await eventually(
        'every controller answers certs alike, every certificate ready',
        async () => {
          const live = fleet.controllers.filter((c) => c.running() && !c.paused());
          const views = await Promise.all(live.map(async (c) => ({ c, certs: await fleet.cliJson<CertsJson>(['certs'], { via: c }) })));
          const rows = (x: CertsJson): string[] => x.certificates.map((c) => `${c.name} newest ${c.newestVersion} desired ${c.desiredVersion} ${c.state}`).sort();
          last = views.map((v) => `${v.c.name}: ${rows(v.certs).join(', ')}`).join('\n');
          const first = JSON.stringify(rows(views[0]!.certs));
          return views.every((v) => JSON.stringify(rows(v.certs)) === first && v.certs.certificates.every((c) => c.state === 'ready' && c.newestVersion >= 1));
        },
        30_000,
        1000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${last}`);
    }
  }

  /** Every controller runs again (a test that took one down starts it as a follower). */
  async function bothUp(): Promise<void> {
    for (const c of fleet.controllers) {
      c.resume();
      await c.start();
    }
    await fleet.waitForLeader();
  }

  test('admin credentials name every controller; status names the leader, its epoch and each controller', async () => {
    const creds = JSON.parse(fs.readFileSync(fleet.credentials, 'utf8')) as { server: string; servers?: string[] };
    assert.deepEqual([...(creds.servers ?? [])].sort(), fleet.controllers.map((c) => c.address).sort(), 'servers lists every controller');
    const { leader, epoch } = await fleet.waitForLeader();
    assert.ok(epoch >= 1);
    for (const c of fleet.controllers) {
      const s = await fleet.status(c);
      assert.equal(s.leader?.address, leader.address, `${c.name} names the leader`);
      assert.equal(s.role, c === leader ? 'leader' : 'follower');
      assert.deepEqual(s.controllers.map((x) => x.name).sort(), fleet.controllers.map((x) => x.name).sort());
      assert.ok(s.controllers.every((x) => x.health === 'ok'), JSON.stringify(s.controllers));
    }
    // The follower has never led: it still answers reads as the leader does.
    await readsAgree();
    const human = await fleet.cli(['status'], { via: other(leader) });
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`leader:\\s+${leader.name} \\(epoch ${epoch}\\) at ${leader.address.replace(/\./g, '\\.')}`));
  });

  test('failover mid-order: the new leader finishes the same order (one order at the CA), every nginx serves it', async () => {
    const { leader, epoch } = await fleet.waitForLeader();
    const before = await newest('mid');
    const orders = ordersFor('mid');
    const held = fleet.proxy.heldCount();
    fleet.proxy.setHold(finalizeOf);
    try {
      const renewing = fleet.cli(['renew', 'mid'], { via: leader });
      await eventually('the finalize of the new order is held', () => fleet.proxy.heldCount() > held, 120_000, 50);
      assert.equal(ordersFor('mid'), orders + 1, 'the order was placed before the kill');
      await leader.kill();
      await renewing;
    } finally {
      // The killed leader's finalize is gone with its connection: never forwarded.
      fleet.proxy.setHold(undefined);
    }
    const next = await fleet.waitForLeader({ not: leader, epochAbove: epoch, timeoutMs: failoverBoundMs });
    assert.equal(next.leader, other(leader));
    const v = await newerVersion('mid', before.version);
    await servedEverywhere('mid', v.version, v.fingerprint);
    assert.equal(ordersFor('mid'), orders + 1, 'exactly one new order at the CA');
    await bothUp();
  });

  test('a paused leader (SIGSTOP past its lease, then SIGCONT) is deposed and writes nothing', async () => {
    const { leader, epoch } = await fleet.waitForLeader();
    const follower = other(leader);
    const before = await newest('pause');
    const orders = ordersFor('pause');
    // Every desired pointer written from here on, in order.
    const desired = await openKv<DesiredRecord & { epoch?: number }>(observer, Bucket.desired, { create: false, parse: (v) => v as DesiredRecord & { epoch?: number } });
    const writes: Array<{ key: string; epoch: number; version: number; at: 'paused' | 'resumed' }> = [];
    let phase: 'paused' | 'resumed' = 'paused';
    const watch = await desired.watch((key, value) => {
      if (value) writes.push({ key, epoch: value.epoch ?? 0, version: value.version, at: phase });
    });
    await watch.initialDone;
    writes.length = 0;

    const held = fleet.proxy.heldCount();
    fleet.proxy.setHold(finalizeOf);
    let newLeader: { leader: HaController; epoch: number };
    try {
      const renewing = fleet.cli(['renew', 'pause'], { via: leader, timeoutMs: 10_000 });
      await eventually('the finalize is held', () => fleet.proxy.heldCount() > held, 120_000, 50);
      leader.pause();
      await renewing;
      // The frozen process's finalize must not reach the CA when the hold lifts.
      assert.ok(fleet.proxy.dropHeld() >= 1, 'the frozen leader\'s finalize was held');
      fleet.proxy.setHold(undefined);
      newLeader = await fleet.waitForLeader({ not: leader, epochAbove: epoch, timeoutMs: failoverBoundMs });
      assert.equal(newLeader.leader, follower);
      const v = await newerVersion('pause', before.version);
      await servedEverywhere('pause', v.version, v.fingerprint);
      // Past the old lease by far: the frozen leader's timers all fire on waking.
      await new Promise((r) => setTimeout(r, fleet.leaseTtlMs));
    } finally {
      fleet.proxy.setHold(undefined);
      phase = 'resumed';
      leader.resume();
    }
    // It wakes, finds it lost the lease, and follows.
    await eventually('the woken controller follows', async () => {
      const s = await fleet.status(leader);
      return s.role === 'follower' && s.leader?.address === follower.address;
    }, 60_000, 500);
    // Give it every chance to write: a few of its loop passes and lease steps.
    await new Promise((r) => setTimeout(r, 2 * fleet.leaseTtlMs));
    await watch.stop();
    const stale = writes.filter((w) => w.epoch < newLeader.epoch && w.at === 'resumed');
    assert.deepEqual(stale, [], 'no desired pointer from the old epoch after it woke');
    assert.ok(writes.some((w) => w.key === 'pause' && w.epoch >= newLeader.epoch), 'the new leader published pause at its epoch');
    assert.equal(ordersFor('pause'), orders + 1, 'no second order');
    const after = await newest('pause');
    assert.equal(after.version, before.version + 1, 'one new version');
    const current = await desired.get('pause');
    assert.ok((current?.value.epoch ?? 0) >= newLeader.epoch, `desired pause carries epoch ${String(current?.value.epoch)}`);
    await bothUp();
  });

  test('one of three NATS servers killed during a rollout: the rollout completes, and the server catches up', async (t) => {
    const { leader } = await fleet.waitForLeader();
    const before = await newest('roll');
    const [n1] = fleet.nats.nodes;
    assert.ok(n1);
    const held = fleet.proxy.heldCount();
    fleet.proxy.setHold(finalizeOf);
    try {
      const renewing = fleet.cli(['renew', 'roll'], { via: leader });
      await eventually('the finalize is held', () => fleet.proxy.heldCount() > held, 120_000, 50);
      // The first server every controller and agent lists: their connections move.
      await n1.kill();
      fleet.proxy.setHold(undefined);
      await renewing;
    } finally {
      fleet.proxy.setHold(undefined);
    }
    const v = await newerVersion('roll', before.version);
    await servedEverywhere('roll', v.version, v.fingerprint);

    await n1.start();
    const only1 = await eventually('connected to the restarted server', () => connectNats({ servers: [n1.url], name: 'ha-test-n1', credentials: fleet.natsCreds, log: silentLogger(), requestTimeoutMs: 5000 }), 60_000, 500);
    try {
      // The restarted node answers JetStream once it has caught up with the meta leader.
      const fromN1 = await eventually('the desired bucket through the restarted server', () => openKv<DesiredRecord>(only1, Bucket.desired, { create: false, parse: (x) => x as DesiredRecord }), 60_000, 500);
      await eventually('the restarted server has the new pointer', async () => (await fromN1.get('roll'))?.value.version === v.version, 60_000, 250);
      // Every event of the rollout the cluster holds, the restarted server serves too.
      // (Events are best effort: one published while a controller's connection moved
      // off the killed server can be missing everywhere; the pointer above cannot.)
      const expected = (await eventsOf(observer, { cert: 'roll' })).map((e) => `${e.type} ${e.at}`);
      assert.ok(expected.length > 0);
      let missing: string[] = [];
      try {
        await eventually('the restarted server has every event of the rollout', async () => {
          const fromN1 = new Set((await readEvents(only1, { cert: 'roll' })).map((e) => `${e.type} ${e.at}`));
          missing = expected.filter((e) => !fromN1.has(e));
          return missing.length === 0;
        }, 60_000, 250);
      } catch (err) {
        throw new Error(`${(err as Error).message}: missing ${missing.join(', ')}`);
      }
      t.diagnostic(`events of roll: ${expected.join(', ')}`);
    } finally {
      await only1.close();
    }
  });

  test('rollback sent to a follower takes effect, and status asked of the follower names the leader', async () => {
    const { leader } = await fleet.waitForLeader();
    const follower = other(leader);
    const v1 = await newest('back');
    await cliOk(['renew', 'back', '--wait'], { via: follower });
    const v2 = await newerVersion('back', v1.version);
    await servedEverywhere('back', v2.version, v2.fingerprint);

    await cliOk(['rollback', 'back', '--to', String(v1.version), '--wait'], { via: follower });
    await servedEverywhere('back', v1.version, v1.fingerprint);
    const events = await eventsOf(observer, { cert: 'back' });
    assert.ok(events.some((e) => e.type === 'rolled-back' && e.version === v1.version), 'rolled-back event');

    const s = await fleet.status(follower);
    assert.equal(s.role, 'follower');
    assert.equal(s.leader?.address, leader.address);

    await cliOk(['release', 'back', '--wait'], { via: follower });
    await servedEverywhere('back', v2.version, v2.fingerprint);
  });

  test('budgets: the new leader spends from what the old one left, and never beyond the limit', async () => {
    const { leader, epoch } = await fleet.waitForLeader();
    const start = await newest('budget');
    assert.equal(start.version, 1, 'budget was issued once so far');
    // Tokens 2 and 3 of 4, spent by the first leader.
    for (let i = 0; i < 2; i++) {
      await cliOk(['renew', 'budget', '--wait'], { via: leader });
      await newerVersion('budget', start.version + i);
    }
    await newerVersion('budget', start.version + 1);
    await leader.kill();
    await fleet.waitForLeader({ not: leader, epochAbove: epoch, timeoutMs: failoverBoundMs });
    // Token 4, spent by the new leader; then the bucket is empty.
    await cliOk(['renew', 'budget', '--wait']);
    await newerVersion('budget', start.version + 2);
    // The fifth: deferred (a transient failure answers 'failed' and is asked again).
    const answer = await eventually('an answer other than a transient failure', async () => {
      const a = JSON.parse(await cliOk(['renew', 'budget', '--json'])) as RenewJson;
      return a.outcome === 'failed' ? undefined : a;
    }, 90_000, 1000);
    assert.equal(answer.outcome, 'deferred', `the fifth certificate for one exact set is deferred: ${JSON.stringify(answer)}`);
    // Let the loop see the request a few times: it must not order.
    await new Promise((r) => setTimeout(r, 5000));
    // What the limit counts: certificates the CA issued for this exact set of names.
    const issuedByCa = new Set(fleet.proxy.downloadedCertificates().filter((d) => d.names.includes('budget.example.test')).map((d) => d.fingerprint));
    assert.equal(issuedByCa.size, EXACT_SET_LIMIT, 'certificates the CA issued for budget');
    assert.equal((await newest('budget')).version, EXACT_SET_LIMIT);
    const cancelled = await fleet.cli(['renew', 'budget', '--cancel']);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    await bothUp();
  });

  test('agents keep serving through a failover, converge on the new leader\'s version, and no install fails', async () => {
    const startedAt = new Date();
    const { leader, epoch } = await fleet.waitForLeader();
    const before = await newest('serve');
    const failures: string[] = [];
    let probes = 0;
    let probing = true;
    // Every nginx, every certificate, over and over during the failover.
    const prober = (async () => {
      while (probing) {
        for (const a of AGENTS) {
          for (const name of CERT_NAMES) {
            try {
              await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername: sniFor([`${name}.example.test`]), timeoutMs: 5000 });
              probes += 1;
            } catch (err) {
              failures.push(`${a.name} ${name}: ${(err as Error).message}`);
            }
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      await leader.kill();
      await fleet.waitForLeader({ not: leader, epochAbove: epoch, timeoutMs: failoverBoundMs });
      const r = await fleet.cli(['renew', 'serve', '--wait']);
      assert.equal(r.code, 0, `renew after the failover: ${r.stderr}\n${fleet.logs()}`);
      const v = await newerVersion('serve', before.version);
      await servedEverywhere('serve', v.version, v.fingerprint);
    } finally {
      probing = false;
      await prober;
    }
    assert.ok(probes > 0);
    assert.deepEqual(failures, [], 'every handshake during the failover succeeded');
    const events = await eventsOf(observer, { since: startedAt });
    assert.deepEqual(events.filter((e) => e.type === 'install-failed'), [], 'no failed install');
    await fleet.waitUntilReady(CERTS.length);
    await bothUp();
    // The controller started again follows, and answers reads as the leader does.
    await readsAgree();
  });
});

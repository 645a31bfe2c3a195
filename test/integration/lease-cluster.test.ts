/**
 * The leader lease on a real three-node nats-server cluster (R3 bucket): one leader at a
 * time; a leader whose server dies is replaced at the next epoch within a ttl and a bit; a
 * controller that cannot reach a quorum does not lead; a paused leader (SIGSTOP-like: its
 * timers stop while time goes on) is refused by fence() and follows when it wakes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaderLease, type LeaseRecord } from '../../controller/lease/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, ensureFleetNats, openKv, publishEvent, readEvents, type NatsHandle } from '../../shared/nats/index.js';
import { Bucket, eventSubject, EventType } from '../../shared/wire/index.js';
import { startNatsCluster, type NatsCluster } from '../harness/nats-cluster.js';
import { eventually } from '../harness/process.js';

const TTL = 3000;

describe('leader lease on a three-node NATS cluster', () => {
  let cluster: NatsCluster;
  const handles: NatsHandle[] = [];
  const leases: LeaderLease[] = [];

  before(async () => {
    cluster = await startNatsCluster(3);
  });
  after(async () => {
    for (const l of leases) await l.stop().catch(() => undefined);
    for (const h of handles) await h.close().catch(() => undefined);
    await cluster.stop();
  });

  async function contender(name: string, servers: string[]): Promise<{ lease: LeaderLease; elected: number[] }> {
    const nats = await connectNats({ servers, name: `lease-${name}`, credentials: cluster.creds, log: silentLogger(), requestTimeoutMs: 1000 });
    handles.push(nats);
    // Three copies: a write needs two servers.
    const kv = await eventually('the R3 bucket', () => openKv<LeaseRecord>(nats, Bucket.leader, { create: true, replicas: 3, parse: (v) => v as LeaseRecord }), 30_000, 250);
    const elected: number[] = [];
    const lease = new LeaderLease({ kv, clock: systemClock, log: silentLogger(), name, address: `${name}:7443`, ttlMs: TTL, onElected: (e) => elected.push(e) });
    leases.push(lease);
    await lease.start();
    return { lease, elected };
  }

  test('one leader; when its machine dies the other controller leads at the next epoch; without a quorum nobody leads', async (t) => {
    const [n1, n2, n3] = cluster.nodes as [NatsCluster['nodes'][0], NatsCluster['nodes'][0], NatsCluster['nodes'][0]];
    // a runs beside n1, b beside n2 (each lists its own server first).
    const a = await contender('a', [n1.url]);
    await eventually('a leads', () => a.lease.isLeader(), 10_000);
    const b = await contender('b', [n2.url, n3.url]);
    await new Promise((r) => setTimeout(r, TTL));
    assert.equal(a.lease.isLeader(), true);
    assert.equal(b.lease.isLeader(), false);
    assert.equal(b.lease.view().leader?.holder, a.lease.self);
    const epochA = a.lease.fence();

    // a's machine dies: its NATS node and the controller process (SIGKILL: no release).
    const killedAt = Date.now();
    await n1.kill();
    (a.lease as unknown as { timer: { stop(): void } }).timer.stop();
    await handles[0]!.close().catch(() => undefined);
    await eventually('b leads', () => b.lease.isLeader(), 4 * TTL, 50);
    const failoverMs = Date.now() - killedAt;
    assert.equal(b.lease.fence(), epochA + 1);
    // A correctness bound, not a speed claim (bench/ measures failover): the lease time
    // plus NATS electing a new leader for the bucket's stream.
    assert.ok(failoverMs <= TTL + 20_000, `failover took ${failoverMs} ms`);
    t.diagnostic(`failover ${failoverMs} ms (ttl ${TTL} ms)`);

    // Only n3 left of three: no quorum, so b cannot renew and must stop leading.
    await n2.kill();
    await eventually('b stops leading without a quorum', () => !b.lease.isLeader(), 3 * TTL, 50);
    assert.throws(() => b.lease.fence(), (e: { code?: string }) => e.code === ErrorCode.NotLeader);

    // Quorum back: b leads again, at a new epoch (it stepped down, so it is a new term).
    await n2.start();
    await eventually('b leads again', () => b.lease.isLeader(), 30_000, 100);
    assert.ok(b.lease.fence() >= epochA + 2, `epoch ${b.lease.fence()} after a new term`);

    // A new controller beside the restarted n1 follows b.
    await n1.start();
    const c = await eventually('c connects', () => contender('c', [n1.url]), 30_000, 500);
    await new Promise((r) => setTimeout(r, TTL));
    assert.equal(c.lease.isLeader(), false);
    assert.equal(c.lease.view().leader?.holder, b.lease.self);
    assert.equal(b.lease.isLeader(), true);
  });

  test('fleet buckets and the event stream keep three copies: writes go on with a node down, and the node catches up', async () => {
    const [n1, n2, n3] = cluster.nodes as [NatsCluster['nodes'][0], NatsCluster['nodes'][0], NatsCluster['nodes'][0]];
    await eventually('every node up', async () => {
      for (const n of [n1, n2, n3]) if (n.current()?.child.exitCode !== null) await n.start();
      return true;
    });
    const nats = await eventually('connected', () => connectNats({ servers: [n2.url, n3.url], name: 'fleet-r3', credentials: cluster.creds, log: silentLogger(), requestTimeoutMs: 2000 }), 30_000, 500);
    handles.push(nats);
    await eventually('fleet resources at three replicas', async () => {
      await ensureFleetNats(nats, { replicas: 3 });
      return true;
    }, 30_000, 500);
    const desired = await openKv<{ version: number }>(nats, Bucket.desired, { create: false, parse: (v) => v as { version: number } });
    await desired.put('web', { version: 1 });
    assert.equal((await desired.info()).replicas, 3);

    // One of three down during a rollout: the pointer moves and the event is stored.
    await n1.kill();
    await eventually('write with n1 down', async () => (await desired.put('web', { version: 2 })) > 0, 30_000, 250);
    await eventually('event with n1 down', async () => (await publishEvent(nats, eventSubject(EventType.published, 'web'), { type: 'published', at: new Date().toISOString(), cert: 'web', version: 2, message: 'v2' })) > 0, 30_000, 250);

    // Restarted, n1 catches up: a client that only knows n1 reads version 2 and the event.
    await n1.start();
    const only1 = await eventually('connected to n1', () => connectNats({ servers: [n1.url], name: 'fleet-r3-n1', credentials: cluster.creds, log: silentLogger(), requestTimeoutMs: 2000 }), 30_000, 500);
    handles.push(only1);
    const fromN1 = await openKv<{ version: number }>(only1, Bucket.desired, { create: false, parse: (v) => v as { version: number } });
    await eventually('n1 has version 2', async () => (await fromN1.get('web'))?.value.version === 2, 30_000, 250);
    await eventually('n1 has the event', async () => (await readEvents(only1, { cert: 'web' })).some((e) => e.type === 'published' && e.version === 2), 30_000, 250);
  });
});

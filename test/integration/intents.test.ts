/**
 * Intents on a real nats-server (operator mode, the controller's NATS user) with two real
 * leader leases (controller/lease) on it, each controller running startIntents over a
 * recording backend: the board, the signing, the lease and NATS are real; the backend is
 * tested elsewhere. A follower's rollback runs once on the leader and answers with its
 * result; the leader's error arrives with its code; forged intents written straight to the
 * bucket are refused and reported; an intent taken by a leader that then loses its lease
 * is not run twice; with no leader the call fails NOT_LEADER after its deadline.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startIntents, type Intents, type IntentRecord } from '../../controller/intents/index.js';
import { LeaderLease, type LeaseRecord } from '../../controller/lease/index.js';
import { RecordSigner } from '../../controller/signing/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, ensureFleetNats, openKv, type JsonKv, type NatsHandle } from '../../shared/nats/index.js';
import { generateSigningKey, signRecord } from '../../shared/signing/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { memoryStore, startNats, type NatsServer } from '../harness/nats.js';
import { eventually } from '../harness/process.js';
import { notFound, recordingBackend, type RecordingBackend } from '../harness/recording-backend.js';

const TTL = 3000;
const TIMEOUT = 6000;

interface Controller {
  name: string;
  nats: NatsHandle;
  lease: LeaderLease;
  backend: RecordingBackend;
  intents: Intents;
}

void describe('intents between two controllers on a real nats-server', () => {
  let server: NatsServer;
  let signer: RecordSigner;
  let raw: JsonKv<unknown>;
  let admin: NatsHandle;
  const controllers: Controller[] = [];

  async function controller(name: string): Promise<Controller> {
    const nats = await connectNats({ servers: [server.url], name: `certfleet-controller ${name}`, credentials: server.creds, log: silentLogger(), requestTimeoutMs: 2000 });
    const leaseKv = await openKv<LeaseRecord>(nats, Bucket.leader, { create: false, parse: (v) => v as LeaseRecord });
    const lease = new LeaderLease({ kv: leaseKv, clock: systemClock, log: silentLogger(), name, address: `${name}:7443`, ttlMs: TTL });
    await lease.start();
    const backend = recordingBackend(name);
    const intents = await startIntents({ nats, signer, backend, leader: lease, clock: systemClock, log: silentLogger(), timeoutMs: TIMEOUT, tickMs: 200 });
    const c = { name, nats, lease, backend, intents };
    controllers.push(c);
    return c;
  }

  let a: Controller;
  let b: Controller;

  before(async () => {
    server = await startNats();
    admin = await connectNats({ servers: [server.url], name: 'test', credentials: server.creds, log: silentLogger() });
    await ensureFleetNats(admin);
    raw = await openKv<unknown>(admin, Bucket.intents, { create: false, parse: (v) => v });
    // Both controllers share one store, so one signing ring: one signer stands for both.
    signer = await RecordSigner.open(memoryStore(), systemClock, silentLogger());
    a = await controller('c1');
    await eventually('c1 leads', () => a.lease.isLeader(), 10_000);
    b = await controller('c2');
  });

  after(async () => {
    for (const c of controllers) {
      await c.intents.stop().catch(() => undefined);
      await c.lease.stop().catch(() => undefined);
      await c.nats.close().catch(() => undefined);
    }
    await admin?.close();
    await server?.stop();
  });

  void test("a rollback made on the follower runs once on the leader and the follower answers with the leader's result", async () => {
    assert.equal(b.lease.isLeader(), false);
    const res = await b.intents.backend.rollback('web', 2, 'alice');
    assert.deepEqual(res, { fromVersion: 3, toVersion: 2 });
    assert.deepEqual(a.backend.calls, [{ method: 'rollback', args: ['web', 2, 'alice'] }]);
    assert.deepEqual(b.backend.calls, [], 'the follower ran nothing itself');
    await eventually('the key deleted', async () => (await raw.keys()).length === 0, 5000);
    // On the leader the same call goes straight to its backend.
    assert.deepEqual(await a.intents.backend.rollback('web', 1, 'alice'), { fromVersion: 3, toVersion: 1 });
    assert.equal(a.backend.calls.length, 2);
  });

  void test("an error from the leader's backend arrives on the follower with its code, message and details", async () => {
    a.backend.script('rollback', () => Promise.reject(notFound('web')));
    await assert.rejects(b.intents.backend.rollback('web', 9, 'alice'), (err: unknown) => {
      assert.ok(isCertfleetError(err, ErrorCode.NotFound), String(err));
      assert.equal(err.message, 'certificate web has no version 9');
      assert.deepEqual(err.details, { cert: 'web', version: 9 });
      assert.equal(err.retryable, false);
      return true;
    });
  });

  void test('forged intents written straight to the bucket are refused, reported and never run', async () => {
    const before = a.backend.calls.length;
    const refusedBefore = a.intents.stats().refused;
    const now = new Date().toISOString();
    const forged = (id: string) => ({ id, method: 'rollback', args: ['web', 1, 'mallory'], operator: 'mallory', role: 'operator', createdAt: now, from: 'evil#00000000', replyKey: 'A'.repeat(43), state: 'pending', generation: 1 });
    const foreign = generateSigningKey();
    await raw.put('a'.repeat(32), forged('a'.repeat(32)));
    await raw.put('b'.repeat(32), signRecord('intent', forged('b'.repeat(32)), { keyId: foreign.publicKey.keyId, privateKeyPem: foreign.privateKeyPem }));
    const tampered = { ...signer.signAsIs('intent', forged('c'.repeat(32))), args: ['web', 2, 'mallory'] };
    await raw.put('c'.repeat(32), tampered);
    const kv = raw as JsonKv<IntentRecord>;
    for (const [id, why] of [
      ['a', /unsigned/],
      ['b', /unknown-key/],
      ['c', /bad-signature/],
    ] as const) {
      await eventually(`intent ${id} answered`, async () => (await kv.get(id.repeat(32)))?.value.state === 'done', 5000);
      const done = (await kv.get(id.repeat(32)))!.value;
      assert.equal(done.error?.code, ErrorCode.RecordRefused);
      assert.match(done.error?.message ?? '', why);
    }
    assert.equal(a.intents.stats().refused - refusedBefore, 3);
    assert.equal(a.backend.calls.length, before, 'nothing forged ran');
    for (const id of ['a', 'b', 'c']) await raw.delete(id.repeat(32));
  });

  void test('an intent taken by a leader that then loses its lease is not run twice: the follower hears INTENT_UNANSWERED', async () => {
    let started = false;
    let finish: () => void = () => undefined;
    a.backend.script('rollback', () => {
      started = true;
      return new Promise((resolve) => (finish = () => resolve({ fromVersion: 3, toVersion: 2 })));
    });
    const callsBefore = a.backend.calls.length;
    const call = b.intents.backend.rollback('web', 2, 'alice').then(
      (v) => ({ v }),
      (e: unknown) => ({ e }),
    );
    await eventually('c1 runs it', () => started, 5000);
    // c1 loses its lease mid-call (stopped: c2 takes over at its next step) ...
    await a.lease.stop();
    await eventually('c2 leads', () => b.lease.isLeader(), 4 * TTL);
    // ... and only then does its call return: it must not answer, c2 must not run it.
    finish();
    const out = await call;
    assert.ok('e' in out && isCertfleetError(out.e, ErrorCode.IntentUnanswered), JSON.stringify(out));
    assert.match((out.e as Error).message, /lost the lease before it answered/);
    assert.equal(a.backend.calls.length - callsBefore, 1, 'run once, on c1');
    assert.deepEqual(b.backend.calls, [], 'never on c2');
    assert.equal(b.intents.stats().interrupted, 1);
  });

  void test('with no leader the call fails NOT_LEADER (retryable) after its deadline and nothing runs later', async () => {
    await b.lease.stop();
    assert.equal(b.lease.isLeader(), false);
    const t0 = Date.now();
    await assert.rejects(b.intents.backend.release('web', 'alice'), (err: unknown) => {
      assert.ok(isCertfleetError(err, ErrorCode.NotLeader), String(err));
      assert.equal(err.retryable, true);
      assert.match(err.message, /no leader took the request within 6 s/);
      return true;
    });
    assert.ok(Date.now() - t0 >= TIMEOUT - 100, 'it waited for its deadline');
    assert.deepEqual(await raw.keys(), [], 'the intent was withdrawn');
    assert.equal(a.backend.calls.filter((c) => c.method === 'release').length + b.backend.calls.filter((c) => c.method === 'release').length, 0);
  });
});

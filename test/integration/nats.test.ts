/**
 * The NATS adapter against a real nats-server (Debian's, JetStream on, file store):
 * typed KV with CAS, watches that survive a server restart, the events stream, and the
 * errors callers rely on (NATS_UNAVAILABLE, STORE_CONFLICT, STORE_CORRUPT).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { ErrorCode, isCertfleetError, type CertfleetError } from '../../shared/errors/index.js';
import { createRootLogger, type Logger } from '../../shared/log/index.js';
import type { FleetEvent } from '../../shared/model/index.js';
import {
  connectNats,
  ensureFleetNats,
  followEvents,
  malformedRecords,
  openKv,
  publishEvent,
  readEvents,
  type NatsHandle,
} from '../../shared/nats/index.js';
import { Bucket, EventType, eventSubject } from '../../shared/wire/index.js';
import { eventually, freePort } from '../harness/process.js';
import { startNats, type NatsServer } from '../harness/nats.js';

/** A logger whose lines the test can read back. */
function capturingLogger(): { log: Logger; lines: () => Array<Record<string, unknown>> } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  return {
    log: createRootLogger({ name: 'nats-test', level: 'debug', destination: sink }),
    lines: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<CertfleetError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isCertfleetError(err, code), `expected ${code}, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** No validation: for tests that only write or look at bucket settings. */
const raw = (v: unknown): unknown => v;
/** Test records are trusted here: what a bucket stores is what the test wrote. */
const asRec = (v: unknown): Rec => v as Rec;
interface Rec {
  n: number;
  note?: string;
}

function event(type: string, cert: string | undefined, message: string): FleetEvent {
  return { type, at: new Date().toISOString(), ...(cert === undefined ? {} : { cert }), message };
}

void describe('NATS adapter against a real nats-server', () => {
  let server: NatsServer;
  let nc: NatsHandle;
  const captured = capturingLogger();

  before(async () => {
    server = await startNats();
    nc = await connectNats({ servers: [server.url], name: 'nats-test', credentials: server.creds, log: captured.log, requestTimeoutMs: 1500 });
  });

  after(async () => {
    await nc?.close();
    await server?.stop();
  });

  void test('connecting when no server listens fails at once with NATS_UNAVAILABLE, retryable', async () => {
    const port = await freePort();
    const err = await rejectsWith(
      connectNats({ servers: [`nats://127.0.0.1:${port}`], name: 'nobody', log: captured.log }),
      ErrorCode.NatsUnavailable,
    );
    assert.equal(err.retryable, true);
  });

  void test('a server token is sent; a wrong token fails with UNAUTHENTICATED, not retryable', async () => {
    // Token authorization instead of operator mode: what a deployment with nats.authority: external may run.
    const guarded = await startNats({ auth: 'none', extraArgs: ['--auth', 'tok-3f9a'] });
    try {
      const err = await rejectsWith(
        connectNats({ servers: [guarded.url], name: 'bad-token', token: 'wrong', log: captured.log }),
        ErrorCode.Unauthenticated,
      );
      assert.equal(err.retryable, false);
      const ok = await connectNats({ servers: [guarded.url], name: 'good-token', token: 'tok-3f9a', log: captured.log });
      assert.equal(ok.isConnected(), true);
      await ok.close();
    } finally {
      await guarded.stop();
    }
  });

  void test('a logger already bound to component "nats" (as the daemons pass it) is not bound again: one component key per line', async () => {
    const raw: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        raw.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
        cb();
      },
    });
    const root = createRootLogger({ name: 'nats-test', level: 'debug', destination: sink });
    const other = await connectNats({ servers: [server.url], name: 'nats-test-keys', credentials: server.creds, log: root.child({ component: 'nats' }) });
    await other.close();
    const connected = raw.find((l) => l.includes('"nats connected"'));
    assert.ok(connected !== undefined, raw.join('\n'));
    // JSON.parse keeps the last of two equal keys, so count them in the raw line.
    assert.equal(connected.split('"component":').length - 1, 1, connected);
    const bare = await connectNats({ servers: [server.url], name: 'nats-test-bare', credentials: server.creds, log: root });
    await bare.close();
    const line = raw.filter((l) => l.includes('"nats connected"'))[1] ?? '';
    assert.equal((JSON.parse(line) as Record<string, unknown>)['component'], 'nats', 'a logger without a component gets "nats"');
  });

  void test('opening a bucket that does not exist with create:false gives NATS_UNAVAILABLE, retryable', async () => {
    const err = await rejectsWith(openKv(nc, 'certfleet_missing', { create: false, parse: raw }), ErrorCode.NatsUnavailable);
    assert.equal(err.retryable, true);
    assert.match(err.message, /does not exist/);
  });

  void test('reading events before the stream exists gives NATS_UNAVAILABLE, retryable', async () => {
    const err = await rejectsWith(readEvents(nc, {}), ErrorCode.NatsUnavailable);
    assert.equal(err.retryable, true);
  });

  void test('ensureFleetNats creates every bucket and the stream, and running it twice is fine', async () => {
    await ensureFleetNats(nc);
    await ensureFleetNats(nc);
    const desired = await openKv(nc, Bucket.desired, { create: false, parse: raw });
    assert.equal((await desired.info()).history, 10);
    assert.equal((await (await openKv(nc, Bucket.challenges, { create: false, parse: raw })).info()).history, 1);
    assert.equal((await (await openKv(nc, Bucket.agents, { create: false, parse: raw })).info()).history, 1);
    assert.deepEqual(await readEvents(nc, {}), []);
  });

  void test('creating a bucket that exists with another history brings it to the requested history and keeps its values', async () => {
    const v1 = await openKv<Rec>(nc, 'test_history', { create: true, history: 1, parse: asRec });
    await v1.put('k', { n: 1 });
    const v3 = await openKv<Rec>(nc, 'test_history', { create: true, history: 3, parse: asRec });
    assert.equal((await v3.info()).history, 3);
    assert.deepEqual((await v3.get('k'))?.value, { n: 1 });
  });

  void test('KV stores JSON values; update with a stale revision is refused with STORE_CONFLICT', async () => {
    const kv = await openKv<Rec>(nc, 'test_cas', { create: true, parse: asRec });
    assert.equal(await kv.get('a'), null);
    const r1 = await kv.put('a', { n: 1 });
    assert.deepEqual(await kv.get('a'), { value: { n: 1 }, revision: r1 });

    const r2 = await kv.update('a', { n: 2 }, r1);
    assert.ok(r2 > r1);
    const conflict = await rejectsWith(kv.update('a', { n: 3 }, r1), ErrorCode.StoreConflict);
    assert.equal(conflict.retryable, false);
    assert.deepEqual(await kv.get('a'), { value: { n: 2 }, revision: r2 });

    // Revision 0 means "only if absent".
    await rejectsWith(kv.update('a', { n: 4 }, 0), ErrorCode.StoreConflict);
    const rb = await kv.update('b', { n: 10 }, 0);
    assert.deepEqual(await kv.get('b'), { value: { n: 10 }, revision: rb });

    await rejectsWith(kv.delete('b', rb - 1), ErrorCode.StoreConflict);
    await kv.delete('b', rb);
    assert.equal(await kv.get('b'), null);
    // A deleted key can be created again with revision 0.
    await kv.update('b', { n: 11 }, 0);

    assert.deepEqual((await kv.keys()).sort(), ['a', 'b']);
    const entries = await kv.entries();
    assert.deepEqual(
      entries.map((e) => [e.key, e.value.n]).sort(),
      [
        ['a', 2],
        ['b', 11],
      ],
    );
  });

  void test('a value that fails validation is STORE_CORRUPT for get, and skipped with a warning by entries and watch', async () => {
    const parse = (v: unknown): Rec => {
      if (typeof v !== 'object' || v === null || typeof (v as Rec).n !== 'number') throw Object.assign(new Error('n: must be a number'), { name: 'RecordError' });
      return v as Rec;
    };
    const writer = await openKv(nc, 'test_malformed', { create: true, parse: raw });
    const kv = await openKv<Rec>(nc, 'test_malformed', { create: false, parse });
    await writer.put('good', { n: 1 });
    await writer.put('bad', { n: 'SECRET-VALUE' });

    await rejectsWith(kv.get('bad'), ErrorCode.StoreCorrupt);
    assert.deepEqual(
      (await kv.entries()).map((e) => e.key),
      ['good'],
    );

    const seen: string[] = [];
    const w = await kv.watch((key) => seen.push(key));
    try {
      await w.initialDone;
      await writer.put('bad2', 'not an object');
      await writer.put('good2', { n: 2 });
      await eventually('good2 delivered', () => seen.includes('good2'), 10000);
      assert.deepEqual(seen, ['good', 'good2']);
    } finally {
      await w.stop();
    }
    const warned = captured.lines().filter((l) => l['msg'] === 'malformed kv value skipped' && l['bucket'] === 'test_malformed');
    // Once per bad revision, however often it is read (get, then entries), saying what is
    // wrong and never the value.
    assert.deepEqual(warned.map((l) => l['kvKey']).sort(), ['bad', 'bad2']);
    assert.deepEqual(warned.map((l) => l['reason']).sort(), ['n: must be a number', 'n: must be a number']);
    assert.ok(!JSON.stringify(warned).includes('SECRET-VALUE'), 'the bad value is not logged');
    assert.equal(malformedRecords()['test_malformed'], 2);
  });

  void test('a watch delivers current values first, then updates and deletes as they happen', async () => {
    const kv = await openKv<Rec>(nc, 'test_watch', { create: true, history: 5, parse: asRec });
    await kv.put('x', { n: 1 });
    await kv.put('x', { n: 2 });
    await kv.put('y', { n: 1 });
    await kv.put('gone', { n: 1 });
    await kv.delete('gone');

    const changes: Array<[string, number | null]> = [];
    let initialCount = -1;
    const w = await kv.watch((key, value) => changes.push([key, value === null ? null : value.n]));
    try {
      await w.initialDone;
      initialCount = changes.length;
      // Only the latest value of each live key; the deleted key is not reported.
      assert.deepEqual(
        [...changes].sort(),
        [
          ['x', 2],
          ['y', 1],
        ],
      );

      await kv.put('z', { n: 1 });
      await kv.put('x', { n: 3 });
      await kv.delete('y');
      await eventually('three live changes', () => changes.length === initialCount + 3, 10000);
      assert.deepEqual(changes.slice(initialCount), [
        ['z', 1],
        ['x', 3],
        ['y', null],
      ]);
    } finally {
      await w.stop();
    }
    // After stop, nothing more is delivered.
    const before = changes.length;
    await kv.put('x', { n: 4 });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(changes.length, before);
  });

  void test('a watch on an empty bucket finishes its initial phase at once and then sees the first put', async () => {
    const kv = await openKv<Rec>(nc, 'test_empty', { create: true, parse: asRec });
    const changes: string[] = [];
    const w = await kv.watch((key) => changes.push(key));
    try {
      await w.initialDone;
      assert.deepEqual(changes, []);
      await kv.put('first', { n: 1 });
      await eventually('first delivered', () => changes.length === 1, 10000);
    } finally {
      await w.stop();
    }
  });

  void test('closing a connection stops its watchers: no callback afterwards, and stop() still resolves', async () => {
    const other = await connectNats({ servers: [server.url], name: 'nats-test-2', credentials: server.creds, log: captured.log });
    const kv = await openKv<Rec>(nc, 'test_close', { create: true, parse: asRec });
    const theirs = await openKv<Rec>(other, 'test_close', { create: false, parse: asRec });
    const changes: string[] = [];
    const w = await theirs.watch((key) => changes.push(key));
    await w.initialDone;
    await kv.put('seen', { n: 1 });
    await eventually('first change delivered', () => changes.length === 1, 10000);
    await other.close();
    assert.equal(other.isConnected(), false);
    await kv.put('unseen', { n: 2 });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(changes, ['seen']);
    await w.stop();
  });

  void test('events published are read back in order, filtered by certificate, since a time, and limited to the most recent', async () => {
    const t0 = new Date();
    await publishEvent(nc, eventSubject(EventType.ordered, 'web'), event(EventType.ordered, 'web', 'web 1'));
    await publishEvent(nc, eventSubject(EventType.ordered, 'api'), event(EventType.ordered, 'api', 'api 1'));
    await publishEvent(nc, eventSubject(EventType.issued, 'web'), event(EventType.issued, 'web', 'web 2'));
    await publishEvent(nc, eventSubject(EventType.enrolled), event(EventType.enrolled, undefined, 'agent joined'));
    await publishEvent(nc, eventSubject(EventType.published, 'web'), event(EventType.published, 'web', 'web 3'));

    const all = await readEvents(nc, {});
    assert.deepEqual(
      all.map((e) => e.message),
      ['web 1', 'api 1', 'web 2', 'agent joined', 'web 3'],
    );
    assert.deepEqual(
      (await readEvents(nc, { cert: 'web' })).map((e) => e.message),
      ['web 1', 'web 2', 'web 3'],
    );
    assert.deepEqual(
      (await readEvents(nc, { cert: 'web', limit: 2 })).map((e) => e.message),
      ['web 2', 'web 3'],
    );
    assert.deepEqual(
      (await readEvents(nc, { limit: 2 })).map((e) => e.message),
      ['agent joined', 'web 3'],
    );
    assert.deepEqual(
      (await readEvents(nc, { cert: 'api', since: t0 })).map((e) => e.message),
      ['api 1'],
    );
    assert.deepEqual(await readEvents(nc, { since: new Date(Date.now() + 60_000) }), []);
    assert.deepEqual(await readEvents(nc, { cert: 'nothing-here' }), []);

    // A retried publish with the same id is stored once.
    const before = (await readEvents(nc, { cert: 'dup' })).length;
    await publishEvent(nc, eventSubject(EventType.failed, 'dup'), event(EventType.failed, 'dup', 'once'), { msgId: 'dup-1' });
    await publishEvent(nc, eventSubject(EventType.failed, 'dup'), event(EventType.failed, 'dup', 'once'), { msgId: 'dup-1' });
    assert.equal((await readEvents(nc, { cert: 'dup' })).length, before + 1);
  });

  void test('followEvents delivers only events published after it started, for the chosen certificate', async () => {
    await publishEvent(nc, eventSubject(EventType.ordered, 'follow'), event(EventType.ordered, 'follow', 'old'));
    const got: string[] = [];
    const f = await followEvents(nc, (e) => got.push(e.message), { cert: 'follow' });
    try {
      await publishEvent(nc, eventSubject(EventType.ordered, 'other'), event(EventType.ordered, 'other', 'not mine'));
      await publishEvent(nc, eventSubject(EventType.issued, 'follow'), event(EventType.issued, 'follow', 'new 1'));
      await publishEvent(nc, eventSubject(EventType.published, 'follow'), event(EventType.published, 'follow', 'new 2'));
      await eventually('two new events', () => got.length >= 2, 10000);
      assert.deepEqual(got, ['new 1', 'new 2']);
    } finally {
      await f.stop();
    }
  });

  void test('a watch and an event follower keep working across a server restart', async () => {
    const kv = await openKv<Rec>(nc, Bucket.desired, { create: false, parse: asRec });
    await kv.put('before', { n: 1 });
    const changes: Array<[string, number | null]> = [];
    const w = await kv.watch((key, value) => changes.push([key, value === null ? null : value.n]));
    const events: string[] = [];
    const f = await followEvents(nc, (e) => events.push(e.message));
    try {
      await w.initialDone;
      assert.deepEqual(changes, [['before', 1]]);

      await server.stop();
      await eventually('client notices the outage', () => !nc.isConnected(), 10000);
      const down = await rejectsWith(kv.put('during', { n: 2 }), ErrorCode.NatsUnavailable);
      assert.equal(down.retryable, true);

      await server.restart();
      await eventually('client reconnects', () => nc.isConnected(), 15000);
      // The first writes after a restart may still time out while JetStream settles.
      await eventually('a put succeeds again', () => kv.put('after', { n: 3 }).then(() => true), 15000, 200);
      await eventually('publish succeeds again', () =>
        publishEvent(nc, eventSubject(EventType.issued, 'after'), event(EventType.issued, 'after', 'after restart')).then(() => true),
      15000, 200);

      await eventually('the same watcher sees the write made after the restart', () => changes.some(([k]) => k === 'after'), 15000);
      // The put that timed out during the outage may still land: nats.js buffers it and
      // sends it on reconnect. If it does, it comes before "after", never after it.
      const withoutDuring = changes.filter(([k]) => k !== 'during');
      assert.deepEqual(withoutDuring, [
        ['before', 1],
        ['after', 3],
      ]);
      const during = changes.findIndex(([k]) => k === 'during');
      if (during !== -1) assert.deepEqual(changes[during], ['during', 2]);
      assert.equal(changes.filter(([k]) => k === 'during').length <= 1, true);
      await eventually('the same follower sees the event published after the restart', () => events.includes('after restart'), 15000);
      assert.deepEqual(events, ['after restart']);
    } finally {
      await w.stop();
      await f.stop();
    }
    const lines = captured.lines().map((l) => l['msg']);
    assert.ok(lines.includes('nats disconnected'), 'disconnect logged');
    assert.ok(lines.includes('nats reconnected'), 'reconnect logged');
  });
});

/**
 * Intents (controller/intents): the record and its pure decisions as tables, then a
 * follower's board and a leader's executor over an in-memory bucket on a ManualClock
 * (the same code on a real nats-server with real leases: test/integration/intents.test.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { REQUIRED_ROLE, type OperatorMethod } from '../../controller/access/index.js';
import {
  answered,
  claimed,
  decideIntent,
  errorFromWire,
  errorToWire,
  FORWARDED,
  forwardingBackend,
  IntentBoard,
  IntentExecutor,
  LOCAL_NON_VIEWER_CALLS,
  newReplyKey,
  parseIntentRecord,
  pendingIntent,
  seal,
  sweepable,
  unseal,
  type IntentRecord,
  type LeaderHandle,
} from '../../controller/intents/index.js';
import { RecordSigner } from '../../controller/signing/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { generateSigningKey, signRecord, trustedKeys, verifyRecord } from '../../shared/signing/index.js';
import { memoryStore } from '../harness/nats.js';
import { notFound, recordingBackend, type RecordingBackend } from '../harness/recording-backend.js';
import { MemoryKv } from './fakes/memory-kv.js';

const ID = '0123456789abcdef0123456789abcdef';
const LEADER = 'c1#0000000a';
const FOLLOWER = 'c2#0000000b';
const T0 = Date.UTC(2026, 0, 1);

function pending(extra: Partial<IntentRecord> = {}): IntentRecord {
  return { ...pendingIntent({ id: ID, method: 'rollback', args: ['web', 2, 'alice'], operator: 'alice', role: 'operator', from: FOLLOWER, replyKey: newReplyKey().publicKey, now: T0 }), ...extra };
}

async function signerOn(clock: ManualClock): Promise<RecordSigner> {
  return RecordSigner.open(memoryStore(), clock, silentLogger());
}

describe('intent records', () => {
  test('a pending, a taken and a done intent parse; the id must be the key', () => {
    const p = pending();
    assert.deepEqual(parseIntentRecord(p, ID), p);
    const t = claimed(p, LEADER, 4, T0 + 10);
    assert.equal(parseIntentRecord(t, ID).state, 'taken');
    assert.equal(parseIntentRecord(answered(t, { result: 'x' }, T0 + 20), ID).generation, 3);
    assert.throws(() => parseIntentRecord(p, 'ffffffffffffffffffffffffffffffff'), /id: does not match the key/);
  });

  const BAD: Array<[string, unknown, RegExp]> = [
    ['a generation that is not the step of its state', { ...pending(), generation: 2 }, /generation: not the step/],
    ['a pending intent with a taker', { ...pending(), by: LEADER, epoch: 1 }, /pending intent has no taker/],
    ['a done intent without an answer', { ...claimed(pending(), LEADER, 1, T0), state: 'done', generation: 3, doneAt: '2026-01-01T00:00:00Z' }, /exactly one of result and error/],
    ['arguments of the wrong type', { ...pending(), args: ['web', '2', 'alice'] }, /args\[1\]/],
    ['an operator that is not the actor argument', { ...pending(), operator: 'mallory' }, /does not match the actor/],
    ['a method a follower never forwards', { ...pending(), method: 'status' }, /method/],
    ['an unknown field', { ...pending(), extra: 1 }, /unknown field\(s\) extra/],
  ];
  for (const [what, value, message] of BAD) {
    test(`refused: ${what}`, () => assert.throws(() => parseIntentRecord(value, ID), message));
  }

  test("an intent signed as another record kind (or a desired pointer's signature) never verifies as an intent", () => {
    const key = generateSigningKey();
    const keys = trustedKeys([key.publicKey]);
    const asDesired = signRecord('desired', pending(), { keyId: key.publicKey.keyId, privateKeyPem: key.privateKeyPem });
    assert.equal(verifyRecord('desired', asDesired, keys).ok, true);
    assert.deepEqual(verifyRecord('intent', asDesired, keys), { ok: false, problem: 'bad-signature', message: `signature does not verify with key ${key.publicKey.keyId}` });
    const asIntent = signRecord('intent', pending(), { keyId: key.publicKey.keyId, privateKeyPem: key.privateKeyPem });
    assert.equal(verifyRecord('intent', asIntent, keys).ok, true);
    assert.equal(verifyRecord('challenge', asIntent, keys).ok, false);
  });
});

describe('decideIntent', () => {
  const ok = { ok: true as const, keyId: '0000000000000000' };
  const view = { now: T0 + 5000, epoch: 4, running: new Set<string>(), answered: new Set<string>() };
  const CASES: Array<[string, IntentRecord, Parameters<typeof decideIntent>[1], Partial<typeof view>, string]> = [
    ['a signed, fresh pending intent runs', pending(), ok, {}, 'run'],
    ['an unsigned pending intent is refused', pending(), { ok: false, problem: 'unsigned', message: 'record is not signed' }, {}, 'refuse'],
    ['a pending intent signed with another key is refused', pending(), { ok: false, problem: 'unknown-key', message: 'x' }, {}, 'refuse'],
    ['a pending intent older than 2 min is refused', pending(), ok, { now: T0 + 120_001 }, 'refuse'],
    ['a pending intent 2 min old exactly still runs', pending(), ok, { now: T0 + 120_000 }, 'run'],
    ['a pending intent dated more than 2 min ahead is refused', pending(), ok, { now: T0 - 120_001 }, 'refuse'],
    ['a pending intent answered here before is a replay', pending(), ok, { answered: new Set([ID]) }, 'refuse'],
    ['an intent this process is working on is left alone', pending(), ok, { running: new Set([ID]) }, 'ignore'],
    ['an intent taken at an older epoch lost its leader: answered, not run', claimed(pending(), LEADER, 3, T0), ok, {}, 'interrupted'],
    ['an intent taken at this epoch is in flight', claimed(pending(), LEADER, 4, T0), ok, {}, 'ignore'],
    ['a taken record that does not verify is left alone', claimed(pending(), LEADER, 3, T0), { ok: false, problem: 'unsigned', message: 'x' }, {}, 'ignore'],
    ['a done intent waits for its caller', answered(claimed(pending(), LEADER, 3, T0), { result: 'x' }, T0), ok, {}, 'ignore'],
  ];
  for (const [what, record, verdict, over, kind] of CASES) {
    test(what, () => assert.equal(decideIntent(record, verdict, { ...view, ...over }).kind, kind));
  }

  test('sweepable: older than the sweep age', () => {
    assert.equal(sweepable(pending(), T0 + 600_000), false);
    assert.equal(sweepable(pending(), T0 + 600_001), true);
  });
});

describe('errors and results on the wire', () => {
  test("the leader's error comes back with its code, message, details, retryable flag and Retry-After", () => {
    const err = new CertfleetError(ErrorCode.AcmeRateLimited, 'too many orders', { retryable: true, retryAfterMs: 1500, details: { cert: 'web', limit: 300, nested: { a: 1 }, ratio: 0.5 } });
    const back = errorFromWire(errorToWire(err));
    assert.equal(back.code, ErrorCode.AcmeRateLimited);
    assert.equal(back.message, 'too many orders');
    assert.equal(back.retryable, true);
    assert.equal(back.retryAfterMs, 1500);
    assert.deepEqual(back.details, { cert: 'web', limit: 300, nested: '{"a":1}', ratio: '0.5' });
  });

  test('anything else thrown is INTERNAL without its message (it may hold anything)', () => {
    const w = errorToWire(new Error('secret path /etc/x'));
    assert.equal(w.code, ErrorCode.Internal);
    assert.doesNotMatch(w.message, /secret/);
  });

  test('a sealed result opens only with its reply key and for its intent', () => {
    const reply = newReplyKey();
    const sealed = seal('{"token":"s3cret"}', reply.publicKey, ID);
    assert.doesNotMatch(Buffer.from(sealed, 'base64url').toString('latin1'), /s3cret/);
    assert.equal(unseal(sealed, reply, ID), '{"token":"s3cret"}');
    assert.throws(() => unseal(sealed, newReplyKey(), ID));
    assert.throws(() => unseal(sealed, reply, 'ffffffffffffffffffffffffffffffff'));
  });
});

describe('which calls are forwarded', () => {
  test('every OperatorService call a viewer may not make is forwarded (ListOperators, a read, excepted); no viewer call is', () => {
    const forwarded = new Set<string>(Object.values(FORWARDED).map((f) => f.rpc));
    for (const [rpc, role] of Object.entries(REQUIRED_ROLE) as Array<[OperatorMethod, string]>) {
      const expected = role !== 'viewer' && !LOCAL_NON_VIEWER_CALLS.includes(rpc);
      assert.equal(forwarded.has(rpc), expected, `${rpc} (${role})`);
    }
  });

  test('on a follower mutations go to the board with JSON arguments, reads stay local; on the leader everything is local', async () => {
    const backend = recordingBackend('local');
    const submitted: unknown[][] = [];
    let leading = false;
    const fwd = forwardingBackend(backend, { leader: { isLeader: () => leading }, board: { submit: (m, args, op) => Promise.resolve(void submitted.push([m, args, op])) } });
    await fwd.rollback('web', 2, 'alice');
    await fwd.renew('web', { cancel: false, operator: 'alice' });
    await fwd.createEnrollmentToken('edge-1', { role: 'lb' }, 3_600_000, 'admin');
    await fwd.checkChallenges('');
    await fwd.status();
    await fwd.listOperators();
    await fwd.events(10, '');
    assert.deepEqual(submitted, [
      ['rollback', ['web', 2, 'alice'], 'alice'],
      ['renew', ['web', { cancel: false, operator: 'alice' }], 'alice'],
      ['createEnrollmentToken', ['edge-1', { role: 'lb' }, 3_600_000, 'admin'], 'admin'],
      ['checkChallenges', [''], ''],
    ]);
    assert.deepEqual(
      backend.calls.map((c) => c.method),
      ['status', 'listOperators', 'events'],
    );
    for (const [method, args] of submitted as Array<[keyof typeof FORWARDED, unknown[]]>) {
      assert.equal(FORWARDED[method].args.safeParse(args).success, true, `${method} arguments fit their wire schema`);
    }
    leading = true;
    await fwd.rollback('web', 2, 'alice');
    assert.equal(submitted.length, 4);
    assert.deepEqual(backend.calls.at(-1), { method: 'rollback', args: ['web', 2, 'alice'] });
  });
});

/** One bucket, a follower's board and the executors of one or two controllers, on one ManualClock. */
async function world(opts: { leading?: boolean } = {}) {
  const clock = new ManualClock(T0);
  const signer = await signerOn(clock);
  const keys = trustedKeys(signer.publicKeys());
  const kv = new MemoryKv<IntentRecord>('certfleet_intents', parseIntentRecord);
  const log = silentLogger();
  const controllers: Array<{ executor: IntentExecutor; backend: RecordingBackend; state: { leading: boolean; epoch: number } }> = [];
  const addLeader = async (self: string, state: { leading: boolean; epoch: number }) => {
    const leader: LeaderHandle = {
      self,
      isLeader: () => state.leading,
      fence: () => {
        if (!state.leading) throw new CertfleetError(ErrorCode.NotLeader, 'not the leader', { retryable: true });
        return state.epoch;
      },
    };
    const backend = recordingBackend(self);
    const executor = new IntentExecutor({ kv, signer, keys, backend, leader, clock, log });
    // As its own watch would: every current record first.
    for (const e of await kv.entries()) executor.onChange(e.key, e.value, e.revision);
    controllers.push({ executor, backend, state });
    executor.start();
    return { executor, backend, state };
  };
  const board = new IntentBoard({ kv, signer, keys, self: FOLLOWER, clock, log, timeoutMs: 60_000 });
  await kv.watch((k, v, r) => {
    board.onChange(k, v, r);
    for (const c of controllers) c.executor.onChange(k, v, r);
  });
  const first = await addLeader(LEADER, { leading: opts.leading ?? true, epoch: 4 });
  return { clock, signer, keys, kv, board, addLeader, ...first };
}

/** Drives the clock until `p` settles (or `limitMs` passes). */
async function settled<T>(clock: ManualClock, p: Promise<T>, limitMs = 120_000): Promise<{ value?: T; error?: unknown }> {
  let out: { value?: T; error?: unknown } | undefined;
  p.then(
    (value) => (out = { value }),
    (error: unknown) => (out = { error }),
  );
  await clock.runUntil(() => out !== undefined, limitMs);
  assert.ok(out, 'the call settled');
  return out;
}

describe('board and executor on a ManualClock', () => {
  test("a follower's rollback runs once on the leader and answers with its result; the key is gone after", async () => {
    const w = await world();
    const out = await settled(w.clock, w.board.submit('rollback', ['web', 2, 'alice'], 'alice'));
    assert.deepEqual(out.value, { fromVersion: 3, toVersion: 2 });
    assert.deepEqual(w.backend.calls, [{ method: 'rollback', args: ['web', 2, 'alice'] }]);
    assert.deepEqual(await w.kv.keys(), []);
    assert.equal(w.executor.stats().ran, 1);
  });

  test("the leader's error arrives with its code, message, details and retryable flag", async () => {
    const w = await world();
    w.backend.script('rollback', () => Promise.reject(notFound('web')));
    const out = await settled(w.clock, w.board.submit('rollback', ['web', 9, 'alice'], 'alice'));
    assert.ok(isCertfleetError(out.error, ErrorCode.NotFound));
    assert.equal(out.error.message, 'certificate web has no version 9');
    assert.deepEqual(out.error.details, { cert: 'web', version: 9 });
    assert.equal(out.error.retryable, false);
  });

  test('an enrolment token travels sealed: it is nowhere in the bucket in clear', async () => {
    const w = await world();
    const seen: string[] = [];
    await w.kv.watch((_k, v) => seen.push(JSON.stringify(v)));
    const out = await settled(w.clock, w.board.submit('createEnrollmentToken', ['edge-1', {}, 3_600_000, 'admin'], 'admin'));
    assert.deepEqual(out.value, { token: `tok-edge-1-${LEADER}`, expiresAt: '2026-01-01T01:00:00.000Z' });
    assert.ok(seen.some((s) => s.includes('"done"')));
    assert.ok(seen.every((s) => !s.includes('tok-edge-1')), 'the token never appears in a record');
  });

  test('no leader: NOT_LEADER (retryable) after the deadline, the intent withdrawn, and a later leader does not run it', async () => {
    const w = await world({ leading: false });
    const out = await settled(w.clock, w.board.submit('rollback', ['web', 2, 'alice'], 'alice'));
    assert.ok(isCertfleetError(out.error, ErrorCode.NotLeader));
    assert.equal(out.error.retryable, true);
    assert.match(out.error.message, /no leader took the request within 8 s/);
    assert.deepEqual(await w.kv.keys(), []);
    w.state.leading = true;
    await w.clock.tick(5000);
    assert.deepEqual(w.backend.calls, []);
  });

  test('a controller that becomes leader takes the intents written while nobody led', async () => {
    const w = await world({ leading: false });
    const call = w.board.submit('release', ['web', 'alice'], 'alice');
    await w.clock.tick(5_000);
    assert.deepEqual(w.backend.calls, []);
    w.state.leading = true;
    const out = await settled(w.clock, call);
    assert.equal(out.value, 3);
    assert.equal(w.backend.calls.length, 1);
  });

  test('forged intents are refused and reported, never run: unsigned, signed with a foreign key, signed as a desired record, too old', async () => {
    const w = await world();
    const foreign = generateSigningKey();
    const foreignKey = { keyId: foreign.publicKey.keyId, privateKeyPem: foreign.privateKeyPem };
    const ids = ['a', 'b', 'c', 'd'].map((c) => c.repeat(32));
    const base = (id: string) => ({ ...pending({ id }), createdAt: new Date(w.clock.now()).toISOString() });
    w.kv.putRaw(ids[0]!, base(ids[0]!));
    w.kv.putRaw(ids[1]!, signRecord('intent', base(ids[1]!), foreignKey));
    w.kv.putRaw(ids[2]!, w.signer.signAsIs('desired', base(ids[2]!)));
    w.kv.putRaw(ids[3]!, w.signer.signAsIs('intent', { ...base(ids[3]!), createdAt: new Date(w.clock.now() - 180_000).toISOString() }));
    await w.clock.tick(2000);
    assert.deepEqual(w.backend.calls, []);
    assert.equal(w.executor.stats().refused, 4);
    for (const id of ids) {
      const r = await w.kv.get(id);
      assert.equal(r?.value.state, 'done');
      assert.equal(r?.value.error?.code, ErrorCode.RecordRefused, id);
      assert.equal(verifyRecord('intent', r.value, w.keys).ok, true, 'the refusal is signed by the leader');
    }
    assert.match((await w.kv.get(ids[0]!))?.value.error?.message ?? '', /unsigned/);
    assert.match((await w.kv.get(ids[3]!))?.value.error?.message ?? '', /180 s ago/);
  });

  test('an answer not signed by a controller is ignored by the follower: nobody led, so NOT_LEADER', async () => {
    const w = await world({ leading: false });
    const call = w.board.submit('rollback', ['web', 2, 'alice'], 'alice');
    await w.clock.tick(10);
    const [key] = await w.kv.keys();
    const sent = (await w.kv.get(key!))!.value;
    const foreign = generateSigningKey();
    const fake = answered(claimed(sent, LEADER, 9, w.clock.now()), { error: { code: ErrorCode.NotFound, message: 'forged', retryable: false, details: {} } }, w.clock.now());
    w.kv.putRaw(key!, signRecord('intent', fake, { keyId: foreign.publicKey.keyId, privateKeyPem: foreign.privateKeyPem }));
    const out = await settled(w.clock, call);
    assert.ok(isCertfleetError(out.error, ErrorCode.NotLeader), String(out.error));
    assert.doesNotMatch(out.error.message, /forged/);
    assert.deepEqual(await w.kv.keys(), [], 'withdrawn');
  });

  test('a leader deposed mid-call writes no answer; the next leader answers INTENT_UNANSWERED and never runs it again', async () => {
    const w = await world();
    let finish: () => void = () => undefined;
    w.backend.script('rollback', () => new Promise((resolve) => (finish = () => resolve({ fromVersion: 3, toVersion: 2 }))));
    const call = w.board.submit('rollback', ['web', 2, 'alice'], 'alice');
    await w.clock.tick(10);
    assert.equal(w.backend.calls.length, 1);
    w.state.leading = false; // lease ran out
    finish();
    await w.clock.tick(10);
    const [key] = await w.kv.keys();
    assert.equal((await w.kv.get(key!))?.value.state, 'taken', 'the deposed leader wrote no answer');
    const next = await w.addLeader('c3#0000000c', { leading: true, epoch: 5 });
    const out = await settled(w.clock, call);
    assert.ok(isCertfleetError(out.error, ErrorCode.IntentUnanswered));
    assert.equal(out.error.retryable, false);
    assert.match(out.error.message, /lost the lease before it answered/);
    assert.deepEqual(next.backend.calls, []);
    assert.equal(w.backend.calls.length, 1);
  });

  test('a call the leader took keeps waiting past the take deadline (8 s) for its answer', async () => {
    const w = await world();
    let finish: () => void = () => undefined;
    w.backend.script('rollback', () => new Promise((resolve) => (finish = () => resolve({ fromVersion: 3, toVersion: 2 }))));
    const call = w.board.submit('rollback', ['web', 2, 'alice'], 'alice');
    await w.clock.tick(30_000);
    assert.equal(w.backend.calls.length, 1);
    finish();
    const out = await settled(w.clock, call);
    assert.deepEqual(out.value, { fromVersion: 3, toVersion: 2 });
  });

  test('a follower whose intent was taken but not answered in time gets INTENT_UNANSWERED, not NOT_LEADER', async () => {
    const w = await world();
    w.backend.script('renew', () => new Promise(() => undefined));
    const out = await settled(w.clock, w.board.submit('renew', ['web', { cancel: false, operator: 'alice' }], 'alice'));
    assert.ok(isCertfleetError(out.error, ErrorCode.IntentUnanswered));
    assert.match(out.error.message, new RegExp(`leader ${LEADER} took the request but did not answer within 60 s`));
  });

  test("the leader's sweep deletes keys older than 10 minutes", async () => {
    const w = await world({ leading: false });
    w.kv.putRaw('e'.repeat(32), { broken: true });
    w.kv.putRaw('f'.repeat(32), w.signer.signAsIs('intent', answered(claimed(pending({ id: 'f'.repeat(32) }), LEADER, 1, T0), { result: 'x' }, T0)));
    w.state.leading = true;
    await w.clock.tick(9 * 60_000);
    assert.equal((await w.kv.keys()).includes('f'.repeat(32)), true);
    await w.clock.tick(2 * 60_000);
    assert.equal((await w.kv.keys()).includes('f'.repeat(32)), false);
    assert.equal(w.executor.stats().swept, 1);
  });
});

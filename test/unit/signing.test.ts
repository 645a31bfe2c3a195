/**
 * Signed desired state (issue #9): the signature scheme (shared/signing), the agent's
 * rules for desired records and HTTP-01 challenges (agent/trust), the controller's key
 * ring and generation counter (controller/signing), each as tables named by sentences.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { challengeVerdict, desiredVerdict, Trust, type RefusalReason } from '../../agent/trust/index.js';
import { GENERATION_BLOCK, RecordSigner, SIGNING_KEYS_OBJECT_KEY, listSigningKeys, rotateSigningKeys } from '../../controller/signing/index.js';
import { FileStore, ObjectKey } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { ChallengeRecord, DesiredRecord } from '../../shared/model/index.js';
import { parseChallengeRecord, parseDesiredRecord } from '../../shared/records/index.js';
import { canonicalJson, generateSigningKey, generationVerdict, keyIdOf, signRecord, trustedKeys, verifyRecord } from '../../shared/signing/index.js';
import { tempDir } from '../harness/tmp.js';

const NOW = Date.UTC(2026, 5, 1);
const key = generateSigningKey();
const signingKey = { keyId: key.publicKey.keyId, privateKeyPem: key.privateKeyPem };
const other = generateSigningKey();
const otherKey = { keyId: other.publicKey.keyId, privateKeyPem: other.privateKeyPem };
const KEYS = trustedKeys([key.publicKey]);

const DESIRED: DesiredRecord = {
  name: 'web',
  version: 3,
  fingerprint: 'ab'.repeat(32),
  names: ['www.example.test', 'example.test'],
  notAfter: '2026-09-01T00:00:00.000Z',
  selector: 'role=web',
  updatedAt: '2026-06-01T00:00:00.000Z',
};
const CHALLENGE: ChallengeRecord = {
  token: 'tok_1',
  keyAuthorization: 'tok_1.thumb',
  identifier: 'www.example.test',
  cert: 'web',
  selector: 'role=web',
  createdAt: '2026-06-01T00:00:00.000Z',
  expiresAt: new Date(NOW + 60_000).toISOString(),
};
const signedDesired = (g: number, k = signingKey, r: DesiredRecord = DESIRED): DesiredRecord => signRecord('desired', { ...r, generation: g }, k);
const signedChallenge = (g: number, r: ChallengeRecord = CHALLENGE, k = signingKey): ChallengeRecord => signRecord('challenge', { ...r, generation: g }, k);

test('canonical JSON sorts keys at every depth, drops undefined members and refuses what records never hold', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [true, null, 'x'], c: 'é"' }, u: undefined }), '{"a":{"c":"é\\"","d":[true,null,"x"]},"b":1}');
  assert.equal(canonicalJson({ a: 1, b: 2 }), canonicalJson({ b: 2, a: 1 }));
  assert.throws(() => canonicalJson({ x: 1.5 }), TypeError);
  assert.throws(() => canonicalJson({ x: 2 ** 60 }), TypeError);
  assert.throws(() => canonicalJson({ x: 1n }), TypeError);
});

test('a signed record survives the trip through JSON and the strict record schema, and still verifies', () => {
  const d = parseDesiredRecord(JSON.parse(JSON.stringify(signedDesired(7))), 'web');
  assert.deepEqual(verifyRecord('desired', d, KEYS), { ok: true, keyId: signingKey.keyId });
  const c = parseChallengeRecord(JSON.parse(JSON.stringify(signedChallenge(8))), 'tok_1');
  assert.deepEqual(verifyRecord('challenge', c, KEYS), { ok: true, keyId: signingKey.keyId });
});

const SIGNATURE_CASES: Array<[string, () => { kind: 'desired' | 'challenge'; record: object }, 'ok' | 'unsigned' | 'unknown-key' | 'bad-signature']> = [
  ['a record signed by the controller verifies', () => ({ kind: 'desired', record: signedDesired(1) }), 'ok'],
  ['a record without any signature field is unsigned', () => ({ kind: 'desired', record: DESIRED }), 'unsigned'],
  ['a record with a signature but no generation is unsigned', () => ({ kind: 'desired', record: { ...signedDesired(1), generation: undefined } }), 'unsigned'],
  ['a record signed with a key the controller never gave is from an unknown key', () => ({ kind: 'desired', record: signedDesired(1, otherKey) }), 'unknown-key'],
  ['a record signed with another key but claiming the controller key id does not verify', () => ({ kind: 'desired', record: { ...signedDesired(1, otherKey), keyId: signingKey.keyId } }), 'bad-signature'],
  ['a signed record whose version was changed does not verify', () => ({ kind: 'desired', record: { ...signedDesired(1), version: 2 } }), 'bad-signature'],
  ['a signed record whose fingerprint was changed does not verify', () => ({ kind: 'desired', record: { ...signedDesired(1), fingerprint: 'cd'.repeat(32) } }), 'bad-signature'],
  ['a signed record whose generation was raised does not verify', () => ({ kind: 'desired', record: { ...signedDesired(1), generation: 99 } }), 'bad-signature'],
  ['a signed record whose selector was widened does not verify', () => ({ kind: 'desired', record: { ...signedDesired(1), selector: '*' } }), 'bad-signature'],
  ['a signed record with a field added does not verify', () => ({ kind: 'desired', record: { ...signedDesired(1), pinned: true } }), 'bad-signature'],
  ['a desired signature presented as a challenge signature does not verify', () => ({ kind: 'challenge', record: signedDesired(1) }), 'bad-signature'],
  ['a challenge whose key authorization was swapped does not verify', () => ({ kind: 'challenge', record: { ...signedChallenge(1), keyAuthorization: 'tok_1.stranger' } }), 'bad-signature'],
  ['a challenge whose identifier was swapped does not verify', () => ({ kind: 'challenge', record: { ...signedChallenge(1), identifier: 'example.test' } }), 'bad-signature'],
  ['a challenge whose expiry was pushed out does not verify', () => ({ kind: 'challenge', record: { ...signedChallenge(1), expiresAt: '2099-01-01T00:00:00.000Z' } }), 'bad-signature'],
  ['a signature that is not base64url of 64 bytes does not verify (and does not throw)', () => ({ kind: 'desired', record: { ...signedDesired(1), signature: '!!' } }), 'bad-signature'],
];
for (const [name, make, want] of SIGNATURE_CASES) {
  test(name, () => {
    const { kind, record } = make();
    const got = verifyRecord(kind, record, KEYS);
    assert.equal(got.ok ? 'ok' : got.problem, want);
  });
}

const GENERATIONS: Array<[string, number, number, 'newer' | 'same' | 'older']> = [
  ['the first record of a certificate is newer than nothing', 1, 0, 'newer'],
  ['a rollback is a new, higher generation even though it points at an older version', 8, 7, 'newer'],
  ['the record already accepted, seen again over gRPC, is the same', 7, 7, 'same'],
  ['a captured older record replayed is older', 6, 7, 'older'],
];
for (const [name, g, highest, want] of GENERATIONS) {
  test(`generations: ${name}`, () => assert.equal(generationVerdict(g, highest), want));
}

const DESIRED_CASES: Array<[string, DesiredRecord, number, RefusalReason | 'ok']> = [
  ['an agent acts on a signed record newer than any it accepted', signedDesired(5), 4, 'ok'],
  ['an agent acts again on the record it accepted last (NATS and gRPC deliver the same one)', signedDesired(5), 5, 'ok'],
  ['an agent refuses a correctly signed but older generation as a replay', signedDesired(4), 5, 'replay'],
  ['an agent refuses an unsigned record whatever its generation', { ...DESIRED, generation: 99 }, 5, 'unsigned'],
  ['an agent refuses a record forged with a wrong key', signedDesired(9, otherKey), 5, 'unknown-key'],
];
for (const [name, record, highest, want] of DESIRED_CASES) {
  test(name, () => {
    const got = desiredVerdict(record, KEYS, highest);
    assert.equal(got.ok ? 'ok' : got.reason, want);
  });
}

const NAMES = ['www.example.test', 'example.test'];
const CHALLENGE_CASES: Array<[string, ChallengeRecord, readonly string[] | undefined, number, number, RefusalReason | 'ok']> = [
  ['a signed, unexpired challenge for a name of an assigned certificate is served', signedChallenge(3), NAMES, 0, NOW, 'ok'],
  ['an unsigned challenge is not served, even for an assigned name (the stranger writes one)', CHALLENGE, NAMES, 0, NOW, 'unsigned'],
  ['a challenge forged with another key is not served', signedChallenge(3, CHALLENGE, otherKey), NAMES, 0, NOW, 'unknown-key'],
  ['a signed challenge past its expiry is not served', signedChallenge(3), NAMES, 0, NOW + 60_000, 'expired'],
  ['a signed challenge without an expiry is not served', signedChallenge(3, { ...CHALLENGE, expiresAt: undefined }), NAMES, 0, NOW, 'expired'],
  ['a signed challenge for a certificate not assigned to the agent is not served', signedChallenge(3), undefined, 0, NOW, 'not-assigned'],
  ['a signed challenge for a name its certificate does not have is not served', signedChallenge(3, { ...CHALLENGE, identifier: 'stranger.example.test' }), NAMES, 0, NOW, 'not-assigned'],
  ['a signed challenge older than one accepted for the same name is a replay', signedChallenge(2), NAMES, 3, NOW, 'replay'],
];
for (const [name, record, names, highest, now, want] of CHALLENGE_CASES) {
  test(name, () => {
    const got = challengeVerdict(record, KEYS, now, names, highest);
    assert.equal(got.ok ? 'ok' : got.reason, want);
  });
}

test('a key set whose key id is not derived from its key, or whose key is not Ed25519-sized, is refused', () => {
  assert.equal(keyIdOf(key.publicKey.publicKey), key.publicKey.keyId);
  assert.throws(() => trustedKeys([{ keyId: other.publicKey.keyId, publicKey: key.publicKey.publicKey }]), /key id does not match/);
  assert.throws(() => trustedKeys([{ keyId: key.publicKey.keyId, publicKey: 'AAAA' }]), /not a base64url Ed25519/);
});

test('the agent keeps the highest generation per certificate on disk: a restarted agent still refuses the replay', async () => {
  const dir = tempDir('certfleet-trust-');
  const t1 = Trust.open(dir, new ManualClock(NOW), silentLogger());
  t1.accept('web', 7);
  t1.accept('web', 5); // lower: ignored
  t1.accept('api', 2);
  await t1.saved();
  assert.equal(fs.statSync(path.join(dir, 'trust', 'generations.json')).mode & 0o777, 0o600);
  const t2 = Trust.open(dir, new ManualClock(NOW), silentLogger());
  assert.deepEqual(t2.highestFor('web'), { epoch: 0, generation: 7 });
  assert.deepEqual(t2.highestFor('api'), { epoch: 0, generation: 2 });
  await t2.setKeys([key.publicKey]);
  const got = desiredVerdict(signedDesired(6), t2.keys(), t2.highestFor('web'));
  assert.equal(got.ok ? 'ok' : got.reason, 'replay');
});

// Several controllers (issue #12): records compare by (leader epoch, generation).
const EPOCHS: Array<[string, { epoch: number; generation: number }, { epoch: number; generation: number }, 'newer' | 'same' | 'older']> = [
  ['a record of a newer leader epoch is newer even with a lower generation', { epoch: 5, generation: 3 }, { epoch: 4, generation: 9 }, 'newer'],
  ['a deposed leader\'s record (older epoch) is older however high its generation', { epoch: 4, generation: 10 }, { epoch: 5, generation: 3 }, 'older'],
  ['within one epoch the generation decides', { epoch: 5, generation: 4 }, { epoch: 5, generation: 3 }, 'newer'],
  ['a record without an epoch (written before leases) is older than any leased one', { epoch: 0, generation: 50 }, { epoch: 1, generation: 1 }, 'older'],
];
for (const [name, r, highest, want] of EPOCHS) {
  test(`epochs: ${name}`, () => assert.equal(generationVerdict(r, highest), want));
}

test('an agent refuses a correctly signed record of an older leader epoch as a replay, and acts on the new leader\'s', () => {
  const at = (epoch: number, g: number): DesiredRecord => signRecord('desired', { ...DESIRED, epoch, generation: g }, signingKey);
  const stale = desiredVerdict(at(4, 12), KEYS, { epoch: 5, generation: 8 });
  assert.equal(stale.ok ? 'ok' : stale.reason, 'replay');
  assert.match(stale.ok ? '' : stale.message, /epoch 4 generation 12 is older than epoch 5 generation 8/);
  const fresh = desiredVerdict(at(6, 1), KEYS, { epoch: 5, generation: 8 });
  assert.deepEqual(fresh.ok ? fresh.stamp : fresh.reason, { epoch: 6, generation: 1 });
  const ch = challengeVerdict(signRecord('challenge', { ...CHALLENGE, epoch: 2, generation: 9 }, signingKey), KEYS, NOW, NAMES, { epoch: 3, generation: 1 });
  assert.equal(ch.ok ? 'ok' : ch.reason, 'replay');
  // The epoch is inside the signature: rewriting it breaks the record.
  const forged = { ...at(4, 12), epoch: 7 };
  const got = desiredVerdict(forged, KEYS, { epoch: 5, generation: 8 });
  assert.equal(got.ok ? 'ok' : got.reason, 'bad-signature');
  assert.equal(parseDesiredRecord(JSON.parse(JSON.stringify(at(4, 12))), 'web').epoch, 4);
});

test('the agent keeps (epoch, generation) on disk and reads a file written before epochs as epoch 0', async () => {
  const dir = tempDir('certfleet-trust-');
  fs.mkdirSync(path.join(dir, 'trust'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'trust', 'generations.json'), JSON.stringify({ web: 7 }));
  const t1 = Trust.open(dir, new ManualClock(NOW), silentLogger());
  assert.deepEqual(t1.highestFor('web'), { epoch: 0, generation: 7 });
  t1.accept('web', { epoch: 3, generation: 2 }); // a newer epoch wins with a lower generation
  t1.accept('web', { epoch: 2, generation: 90 }); // an older epoch: ignored
  await t1.saved();
  const t2 = Trust.open(dir, new ManualClock(NOW), silentLogger());
  assert.deepEqual(t2.highestFor('web'), { epoch: 3, generation: 2 });
});

test('accepting many generations at once writes the file a few times, not once per record (issue #13), and loses none', async () => {
  const dir = tempDir('certfleet-trust-');
  const writes: string[] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const t = Trust.open(dir, new ManualClock(NOW), silentLogger(), async (file, content, mode) => {
    writes.push(content);
    await gate; // the first write is slow: everything accepted meanwhile queues behind it
    fs.writeFileSync(file, content, { mode });
  });
  for (let i = 0; i < 5000; i++) t.accept(`cert-${i}`, i + 1);
  await Promise.resolve();
  t.accept('late', 1); // while the first write is in flight
  release();
  await t.saved();
  assert.ok(writes.length <= 2, `${writes.length} writes for 5001 accepts`);
  const t2 = Trust.open(dir, new ManualClock(NOW), silentLogger());
  assert.deepEqual(t2.highestFor('cert-0'), { epoch: 0, generation: 1 });
  assert.deepEqual(t2.highestFor('cert-4999'), { epoch: 0, generation: 5000 });
  assert.deepEqual(t2.highestFor('late'), { epoch: 0, generation: 1 });
});

test('refusals are counted per reason with the last one on a line that names no value', () => {
  const t = Trust.open(tempDir('certfleet-trust-'), new ManualClock(NOW), silentLogger());
  t.refuse('unsigned', { bucket: 'certfleet_challenges', key: 'tok_1' }, 'record is not signed');
  t.refuse('replay', { cert: 'web', generation: 4 }, 'generation 4 is older than 7, already accepted');
  t.refuse('replay', { cert: 'web', generation: 3 }, 'generation 3 is older than 7, already accepted');
  assert.deepEqual(t.refusals(), {
    total: 3,
    byReason: { unsigned: 1, replay: 2 },
    last: 'replay: generation 3 is older than 7, already accepted (cert=web generation=3)',
    lastAt: new Date(NOW).toISOString(),
  });
});

test('the controller creates one active key on first start, keeps it across restarts, and never writes it where logs go', async () => {
  const store = await FileStore.open({ dir: tempDir('certfleet-ring-'), log: silentLogger() });
  try {
    const a = await RecordSigner.open(store, new ManualClock(NOW), silentLogger());
    const b = await RecordSigner.open(store, new ManualClock(NOW), silentLogger());
    assert.equal(a.activeKeyId(), b.activeKeyId());
    assert.deepEqual(a.publicKeys().map((k) => k.keyId), [a.activeKeyId()]);
    const stored = await store.getObject<{ keys: Array<{ privateKeyPem: string }> }>(SIGNING_KEYS_OBJECT_KEY);
    assert.match(stored?.keys[0]?.privateKeyPem ?? '', /PRIVATE KEY/);
    assert.equal(JSON.stringify(a.publicKeys()).includes('PRIVATE'), false);
  } finally {
    await store.close();
  }
});

test('generations only grow per certificate, survive a controller restart, and start above the record being replaced', async () => {
  const store = await FileStore.open({ dir: tempDir('certfleet-gen-'), log: silentLogger() });
  try {
    const a = await RecordSigner.open(store, new ManualClock(NOW), silentLogger());
    assert.equal(await a.nextGeneration('web'), 1);
    assert.equal(await a.nextGeneration('web'), 2);
    assert.equal(await a.nextGeneration('api'), 1);
    const restarted = await RecordSigner.open(store, new ManualClock(NOW), silentLogger());
    // 3 and 4 were reserved with 1 and 2 (one block): a restart continues above the block.
    assert.equal(await restarted.nextGeneration('web'), GENERATION_BLOCK + 1, 'a restarted controller never reuses a generation');
    assert.equal(await restarted.nextGeneration('web', 10), 11, 'above a record another controller wrote');
    const signed = await restarted.sign('desired', 'web', DESIRED);
    assert.equal(signed.generation, 12);
    assert.deepEqual(verifyRecord('desired', signed, trustedKeys(restarted.publicKeys())), { ok: true, keyId: restarted.activeKeyId() });
  } finally {
    await store.close();
  }
});

test('generations are reserved a block per store write: an issuance (challenge, desired pointer) writes the counter once, concurrent callers never share one', async () => {
  const store = await FileStore.open({ dir: tempDir('certfleet-gen-'), log: silentLogger() });
  const writes: unknown[] = [];
  const counted = {
    getObject: <T>(key: string): Promise<T | null> => store.getObject<T>(key),
    putObject: async (key: string, value: unknown): Promise<void> => {
      if (key === ObjectKey.signingGeneration('web')) writes.push(value);
      await store.putObject(key, value);
    },
  };
  try {
    const a = await RecordSigner.open(counted, new ManualClock(NOW), silentLogger());
    const challenge = await a.sign('challenge', 'web', CHALLENGE);
    const desired = await a.sign('desired', 'web', DESIRED);
    assert.deepEqual([challenge.generation, desired.generation], [1, 2]);
    assert.equal(writes.length, 1, 'one durable write for both records');
    const stored = await store.getObject<{ generation: number }>(ObjectKey.signingGeneration('web'));
    assert.ok((stored?.generation ?? 0) >= desired.generation, 'the store holds every generation handed out before its record is published');

    const many = await Promise.all(Array.from({ length: 3 * GENERATION_BLOCK }, (_, i) => a.nextGeneration('web', i % 2 === 0 ? 0 : 20)));
    assert.equal(new Set(many).size, many.length, 'no generation handed out twice');
    const after = await store.getObject<{ generation: number }>(ObjectKey.signingGeneration('web'));
    assert.ok((after?.generation ?? 0) >= Math.max(...many), 'concurrent reservations never leave a lower value stored last');
    const restarted = await RecordSigner.open(store, new ManualClock(NOW), silentLogger());
    assert.ok((await restarted.nextGeneration('web')) > Math.max(...many));
  } finally {
    await store.close();
  }
});

const ROTATION: Array<[string, Array<'prepare' | 'activate' | 'retire'>, string[] | RegExp]> = [
  ['prepare adds a next key beside the active one', ['prepare'], ['active', 'next']],
  ['activate makes the next key active and the old one retiring', ['prepare', 'activate'], ['retiring', 'active']],
  ['retire drops the retiring key', ['prepare', 'activate', 'retire'], ['active']],
  ['a second prepare before activating is refused', ['prepare', 'prepare'], /already prepared/],
  ['activate without a prepared key is refused', ['activate'], /prepare one first/],
  ['activating again while an older key still retires is refused', ['prepare', 'activate', 'prepare', 'activate'], /retire it first/],
  ['retire with nothing retiring is refused', ['retire'], /no signing key is retiring/],
];
for (const [name, steps, want] of ROTATION) {
  test(`key rotation: ${name}`, async () => {
    const store = await FileStore.open({ dir: tempDir('certfleet-rot-'), log: silentLogger() });
    try {
      await listSigningKeys(store, NOW);
      let states: string[] = [];
      try {
        for (const step of steps) states = (await rotateSigningKeys(store, step, NOW)).map((k) => k.state);
      } catch (err) {
        assert.ok(want instanceof RegExp, `unexpected ${(err as Error).message}`);
        assert.ok(isCertfleetError(err, ErrorCode.UsageInvalid));
        assert.match((err as Error).message, want);
        return;
      }
      assert.deepEqual(states, want);
      // The signer reads the rotated ring: agents are given every key, records get the active one.
      const signer = await RecordSigner.open(store, new ManualClock(NOW), silentLogger());
      const ring = await listSigningKeys(store, NOW);
      assert.deepEqual(signer.publicKeys().map((k) => k.keyId), ring.map((k) => k.keyId));
      assert.equal(signer.activeKeyId(), ring.find((k) => k.state === 'active')?.keyId);
    } finally {
      await store.close();
    }
  });
}

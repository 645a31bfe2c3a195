/**
 * Enrolment tokens and the agent registry, on a real FileStore in a temp directory and a
 * manual clock. Proves: a token works exactly once; reused, expired, unknown and
 * malformed tokens get one indistinguishable refusal while the log tells them apart;
 * only the token's hash reaches the disk; re-enrolment retires the old certificate.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Writable } from 'node:stream';
import { Enrollment, DEFAULT_TOKEN_TTL_MS } from '../../controller/enroll/index.js';
import { FileStore } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError, type CertfleetError } from '../../shared/errors/index.js';
import { createRootLogger, silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

const START = Date.UTC(2026, 0, 10, 8, 0, 0);

async function setup() {
  const dir = path.join(tempDir('certfleet-enroll-'), 'store');
  const store = await FileStore.open({ dir, log: silentLogger() });
  const clock = new ManualClock(START);
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw.push(chunk.toString());
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const log = createRootLogger({ name: 'test', level: 'debug', destination: sink });
  const enrollment = new Enrollment(store, clock, log);
  return { dir, store, clock, enrollment, lines, raw };
}

function refusal(err: unknown): CertfleetError {
  assert.ok(isCertfleetError(err, ErrorCode.EnrollTokenInvalid), String(err));
  return err;
}

async function refused(p: Promise<unknown>): Promise<CertfleetError> {
  try {
    await p;
  } catch (err) {
    return refusal(err);
  }
  assert.fail('expected ENROLL_TOKEN_INVALID');
}

function allFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? allFiles(p) : [p];
  });
}

void describe('enrolment tokens', () => {
  void it('a token is cft_ plus 32 random bytes in base64url and expires after its ttl (one hour by default)', async () => {
    const { enrollment } = await setup();
    const a = await enrollment.createToken({ agent: 'edge-1', labels: {} });
    const b = await enrollment.createToken({ agent: 'edge-1', labels: {}, ttlMs: 5 * 60 * 1000 });
    assert.match(a.token, /^cft_[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(a.token.slice(4), 'base64url').length, 32);
    assert.notEqual(a.token, b.token);
    assert.equal(a.expiresAt, new Date(START + DEFAULT_TOKEN_TTL_MS).toISOString());
    assert.equal(b.expiresAt, new Date(START + 5 * 60 * 1000).toISOString());
  });

  void it('redeems once, returning the agent and labels the token was created for', async () => {
    const { enrollment } = await setup();
    const labels = { role: 'edge', 'topology.example.com/zone': 'eu-1a' };
    const { token } = await enrollment.createToken({ agent: 'edge-1', labels, ttlMs: 60_000 });
    assert.deepEqual(await enrollment.redeem(token), { agent: 'edge-1', labels });
    await refused(enrollment.redeem(token));
  });

  void it('refuses reused, expired, unknown and malformed tokens with one code and one message, and logs the real reason', async () => {
    const { enrollment, clock, lines } = await setup();
    const used = (await enrollment.createToken({ agent: 'edge-1', labels: {}, ttlMs: 60_000 })).token;
    await enrollment.redeem(used);
    const expiring = (await enrollment.createToken({ agent: 'edge-2', labels: {}, ttlMs: 60_000 })).token;
    clock.advance(60_000); // expiresAt is exclusive: at that instant the token is dead
    const unknown = 'cft_' + crypto.randomBytes(32).toString('base64url');

    const errors = [
      await refused(enrollment.redeem(used)),
      await refused(enrollment.redeem(expiring)),
      await refused(enrollment.redeem(unknown)),
      await refused(enrollment.redeem('cft_short')),
      await refused(enrollment.redeem('')),
    ];
    assert.equal(new Set(errors.map((e) => e.message)).size, 1, errors.map((e) => e.message).join(' | '));
    assert.ok(errors.every((e) => Object.keys(e.details).length === 0 && e.retryable === false));

    const reasons = lines.filter((l) => l['msg'] === 'enrolment token refused').map((l) => String(l['reason']));
    assert.equal(reasons.length, 5);
    assert.match(reasons[0] ?? '', /^already used at /);
    assert.match(reasons[1] ?? '', /^expired at /);
    assert.deepEqual(reasons.slice(2), ['unknown', 'malformed', 'malformed']);
    // And the expired token stays dead if the clock is set back.
    clock.set(START);
    await refused(enrollment.redeem(expiring));
  });

  void it('a token redeemed just before it expires still works', async () => {
    const { enrollment, clock } = await setup();
    const { token } = await enrollment.createToken({ agent: 'edge-1', labels: {}, ttlMs: 60_000 });
    clock.advance(59_999);
    assert.equal((await enrollment.redeem(token)).agent, 'edge-1');
  });

  void it('of concurrent redeems of one token exactly one succeeds', async () => {
    const { enrollment } = await setup();
    const { token } = await enrollment.createToken({ agent: 'edge-1', labels: {}, ttlMs: 60_000 });
    const results = await Promise.allSettled([1, 2, 3, 4].map(() => enrollment.redeem(token)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') refusal(r.reason);
  });

  void it('two Enrollment instances on one store cannot both redeem a token', async () => {
    const { enrollment, store, clock } = await setup();
    const other = new Enrollment(store, clock);
    const { token } = await enrollment.createToken({ agent: 'edge-1', labels: {}, ttlMs: 60_000 });
    const results = await Promise.allSettled([enrollment.redeem(token), other.redeem(token)]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  });

  void it('stores only the SHA-256 of a token: neither the token nor its random part is anywhere on disk or in the log', async () => {
    const { enrollment, dir, raw } = await setup();
    const { token } = await enrollment.createToken({ agent: 'edge-1', labels: { role: 'edge' }, ttlMs: 60_000 });
    const hash = crypto.createHash('sha256').update(token).digest('hex');
    const files = allFiles(dir);
    const names = files.map((f) => path.relative(dir, f));
    assert.ok(names.includes(path.join('objects', 'enroll', `${hash}.json`)), names.join(', '));
    const secret = token.slice(4);
    const secretBytes = Buffer.from(secret, 'base64url');
    for (const f of files) {
      const content = fs.readFileSync(f);
      assert.ok(!content.includes(secret), `${f} contains the token`);
      assert.ok(!content.includes(secretBytes), `${f} contains the token bytes`);
      assert.ok(!content.includes(secretBytes.toString('hex')), `${f} contains the token as hex`);
      assert.ok(!f.includes(secret));
    }
    await enrollment.redeem(token);
    await refused(enrollment.redeem(token));
    for (const f of allFiles(dir)) assert.ok(!fs.readFileSync(f).includes(secret), `${f} contains the token`);
    assert.ok(!raw.join('').includes(secret), 'the log contains the token');
  });

  void it('refuses to create tokens for invalid agent names, labels or lifetimes', async () => {
    const { enrollment } = await setup();
    const bad: Array<Parameters<Enrollment['createToken']>[0]> = [
      { agent: 'Edge-1', labels: {} },
      { agent: 'edge_1', labels: {} },
      { agent: '', labels: {} },
      { agent: 'edge-1', labels: { 'bad key': 'x' } },
      { agent: 'edge-1', labels: { ['k'.repeat(64)]: 'x' } },
      { agent: 'edge-1', labels: { role: 'v'.repeat(64) } },
      { agent: 'edge-1', labels: { role: 'a,b' } },
      { agent: 'edge-1', labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) },
      { agent: 'edge-1', labels: {}, ttlMs: -1 },
      { agent: 'edge-1', labels: {}, ttlMs: 31 * 24 * 3600 * 1000 },
      { agent: 'edge-1', labels: {}, ttlMs: 1.5 },
    ];
    for (const opts of bad) {
      await assert.rejects(enrollment.createToken(opts), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid), JSON.stringify(opts));
    }
    // Edge cases that are allowed: empty value, 63-char key, k8s-style prefixed key.
    await enrollment.createToken({ agent: 'e', labels: { ['k'.repeat(63)]: '', 'example.com/tier': 'gold' }, ttlMs: 1 });
  });

  void it('pruneExpired removes expired tokens and used markers but keeps live tokens', async () => {
    const { enrollment, store, clock } = await setup();
    const short = await enrollment.createToken({ agent: 'edge-1', labels: {}, ttlMs: 60_000 });
    const redeemed = await enrollment.createToken({ agent: 'edge-2', labels: {}, ttlMs: 60_000 });
    const long = await enrollment.createToken({ agent: 'edge-3', labels: {}, ttlMs: 3_600_000 });
    await enrollment.redeem(redeemed.token);
    assert.equal(await enrollment.pruneExpired(), 0);
    clock.advance(60_000);
    assert.equal(await enrollment.pruneExpired(), 2); // short's token, redeemed's marker
    assert.equal((await store.listObjects('enroll')).length, 1);
    await refused(enrollment.redeem(short.token));
    assert.equal((await enrollment.redeem(long.token)).agent, 'edge-3');
  });
});

void describe('agent registry', () => {
  void it('records, reads and lists agents sorted by name', async () => {
    const { enrollment } = await setup();
    assert.equal(await enrollment.getAgent('edge-1'), null);
    assert.deepEqual(await enrollment.listAgents(), []);
    const b = { name: 'edge-b', labels: { role: 'lb' }, certSerial: 'ab01', enrolledAt: '2026-01-10T08:00:00.000Z' };
    const a = { name: 'edge-a', labels: {}, certSerial: 'cd02', enrolledAt: '2026-01-10T08:01:00.000Z' };
    await enrollment.recordAgent(b);
    await enrollment.recordAgent(a);
    assert.deepEqual(await enrollment.getAgent('edge-b'), b);
    assert.deepEqual(
      (await enrollment.listAgents()).map((r) => r.name),
      ['edge-a', 'edge-b'],
    );
  });

  void it('re-enrolling a name replaces its serial, so the old certificate is refused and the new one accepted', async () => {
    const { enrollment } = await setup();
    await enrollment.recordAgent({ name: 'edge-1', labels: {}, certSerial: '4a01', enrolledAt: '2026-01-10T08:00:00.000Z' });
    assert.equal((await enrollment.authenticateAgent('edge-1', '4A01')).certSerial, '4a01');
    await enrollment.recordAgent({
      name: 'edge-1',
      labels: { role: 'edge' },
      certSerial: '4a02',
      enrolledAt: '2026-01-11T08:00:00.000Z',
    });
    await assert.rejects(enrollment.authenticateAgent('edge-1', '4a01'), (err: unknown) => {
      assert.ok(isCertfleetError(err, ErrorCode.Unauthenticated));
      assert.equal(err.details['reason'], 'certificate replaced by a later enrolment');
      return true;
    });
    assert.deepEqual((await enrollment.authenticateAgent('edge-1', '4a02')).labels, { role: 'edge' });
    assert.equal((await enrollment.listAgents()).length, 1);
  });

  void it('refuses an agent that never enrolled', async () => {
    const { enrollment } = await setup();
    await assert.rejects(enrollment.authenticateAgent('ghost', '4a01'), (err: unknown) =>
      isCertfleetError(err, ErrorCode.Unauthenticated),
    );
  });

  void it('refuses registrations with a bad name, labels, serial or date', async () => {
    const { enrollment } = await setup();
    const ok = { name: 'edge-1', labels: {}, certSerial: '4a01', enrolledAt: '2026-01-10T08:00:00.000Z' };
    for (const bad of [
      { ...ok, name: '../edge' },
      { ...ok, labels: { 'no spaces': 'x' } },
      { ...ok, certSerial: 'XYZ' },
      { ...ok, enrolledAt: 'yesterday' },
    ]) {
      await assert.rejects(enrollment.recordAgent(bad), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid), JSON.stringify(bad));
    }
    await assert.rejects(enrollment.getAgent('../pki/ca'), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid));
  });

  void it('reports a malformed registration in the store as STORE_CORRUPT', async () => {
    const { enrollment, store } = await setup();
    await store.putObject('agents/edge-1', { name: 'edge-1' });
    await assert.rejects(enrollment.getAgent('edge-1'), (err: unknown) => isCertfleetError(err, ErrorCode.StoreCorrupt));
  });
});

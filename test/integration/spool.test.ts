/**
 * Nothing issued is ever lost: a version the Vault store cannot take (the KV v2 double
 * switched off or sealed) goes to the durable spool, 0600 on disk, and reaches the store
 * once it is back — from the same process, from a new one after a restart, after another
 * controller moved the latest version on, and without a duplicate when an earlier write
 * had in fact arrived.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { VaultStore, FileStore } from '../../controller/store/index.js';
import { Spool, spoolRetryDelay, storeOrSpool, type Delivery } from '../../controller/spool/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { versionInput } from '../contract/cert-store.js';
import { startVaultDouble, type VaultDouble } from '../harness/vault-double.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

void describe('spool', () => {
  const doubles: VaultDouble[] = [];
  const stores: VaultStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    for (const d of doubles) await d.close();
  });

  async function vault(): Promise<{ double: VaultDouble; store: VaultStore }> {
    const double = await startVaultDouble();
    doubles.push(double);
    const store = await VaultStore.open({ address: double.addr, auth: { method: 'token', token: double.rootToken }, log: silentLogger() });
    stores.push(store);
    return { double, store };
  }

  function spoolDir(): string {
    return path.join(tempDir('certfleet-spool-'), 'spool');
  }

  void it('a version issued while Vault is unreachable is spooled 0600 in a 0700 directory and delivered when Vault is back', async () => {
    const { double, store } = await vault();
    const dir = spoolDir();
    const clock = new ManualClock(Date.now());
    const old = process.umask(0);
    let spool: Spool;
    try {
      spool = await Spool.open({ dir, log: silentLogger(), clock });
      await store.putVersion('web', versionInput('web', 'one'), 0);
      double.setMode('unreachable');
      const result = await storeOrSpool(store, spool, 'web', versionInput('web', 'two'), 1);
      assert.equal(result.status, 'spooled');
      assert.ok(result.status === 'spooled' && result.cause.retryable);
    } finally {
      process.umask(old);
    }
    assert.equal((fs.statSync(dir).mode & 0o777).toString(8), '700');
    const files = fs.readdirSync(dir);
    assert.equal(files.length, 1);
    const file = path.join(dir, files[0] ?? '');
    assert.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
    const pending = spool.pending();
    assert.equal(pending.length, 1);
    assert.equal(pending[0]?.serial, versionInput('web', 'two').meta.serial);
    assert.ok(!JSON.stringify(pending).includes('PRIVATE KEY'), 'pending() carries no key material');

    // Still down: the attempt fails, is recorded, and the entry waits for its backoff.
    assert.deepEqual(await spool.deliverAll(store), []);
    assert.equal(spool.pending()[0]?.attempts, 1);
    assert.match(spool.pending()[0]?.lastError ?? '', /STORE_UNAVAILABLE/);
    double.setMode('up');
    assert.deepEqual(await spool.deliverAll(store), [], 'not due before the backoff has passed');
    clock.advance(spoolRetryDelay(1));
    const delivered = await spool.deliverAll(store);
    assert.deepEqual(
      delivered.map((d) => [d.outcome, d.meta.version]),
      [['stored', 2]],
    );
    assert.equal((await store.getVersion('web', 2))?.keyPem, versionInput('web', 'two').keyPem);
    assert.deepEqual(spool.pending(), []);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  void it('after a restart a new Spool finds what the old process spooled and its delivery loop stores it', async () => {
    const { double, store } = await vault();
    const dir = spoolDir();
    double.setMode('sealed');
    const first = await Spool.open({ dir, log: silentLogger() });
    const r = await storeOrSpool(store, first, 'api', versionInput('api', 'one'), 0);
    assert.equal(r.status, 'spooled');
    // The process dies here; a new one starts with Vault back.
    double.setMode('up');
    const second = await Spool.open({ dir, log: silentLogger() });
    assert.deepEqual(
      second.pending().map((e) => [e.name, e.expectedLatest, e.attempts]),
      [['api', 0, 0]],
    );
    const seen: Delivery[] = [];
    const loop = second.startDelivery(store, { intervalMs: 50, onDelivered: (d) => void seen.push(d) });
    try {
      await eventually('delivered', () => seen.length === 1, 10_000);
    } finally {
      await loop.stop();
    }
    assert.equal(seen[0]?.outcome, 'stored');
    assert.equal((await store.latest('api'))?.serial, versionInput('api', 'one').meta.serial);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  void it('when another controller stored a version meanwhile, the spooled one is stored as the next version, not dropped', async () => {
    const { double, store } = await vault();
    const spool = await Spool.open({ dir: spoolDir(), log: silentLogger() });
    await store.putVersion('web', versionInput('web', 'one'), 0);
    double.setMode('unreachable');
    await storeOrSpool(store, spool, 'web', versionInput('web', 'ours'), 1);
    double.setMode('up');
    await store.putVersion('web', versionInput('web', 'theirs'), 1); // the other controller
    const [d] = await spool.deliverAll(store, { force: true });
    assert.equal(d?.outcome, 'stored-after-conflict');
    assert.equal(d?.meta.version, 3);
    assert.deepEqual(
      (await store.listVersions('web')).map((m) => m.serial),
      ['one', 'theirs', 'ours'].map((t) => versionInput('web', t).meta.serial),
    );
  });

  void it('a spooled version that had in fact been stored (its answer lost) is recognised and not stored twice', async () => {
    const { store } = await vault();
    const dir = spoolDir();
    const spool = await Spool.open({ dir, log: silentLogger() });
    // As if the write reached Vault but the response did not reach us.
    await store.putVersion('web', versionInput('web', 'one'), 0);
    await spool.put('web', versionInput('web', 'one'), 0);
    const [d] = await spool.deliverAll(store, { force: true });
    assert.equal(d?.outcome, 'already-stored');
    assert.equal(d?.meta.version, 1);
    assert.equal((await store.listVersions('web')).length, 1);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  void it('a conflict from the store is not spooled: the caller must re-read and decide', async () => {
    const dir = tempDir('certfleet-spool-');
    const store = await FileStore.open({ dir: path.join(dir, 'store'), log: silentLogger() });
    const spool = await Spool.open({ dir: path.join(dir, 'spool'), log: silentLogger() });
    await store.putVersion('web', versionInput('web', 'one'), 0);
    await assert.rejects(storeOrSpool(store, spool, 'web', versionInput('web', 'x'), 0), (err: unknown) => isCertfleetError(err, ErrorCode.StoreConflict));
    assert.deepEqual(spool.pending(), []);
  });

  void it('an unreadable spool file is left in place and reported, never deleted', async () => {
    const dir = spoolDir();
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const bad = path.join(dir, '01767225600000-web-0123456789ab.json');
    fs.writeFileSync(bad, '{"format": 1, "trunc');
    fs.writeFileSync(path.join(dir, '.01767225600000-web-0123456789ab.json.tmp-aaaaaaaaaaaa'), 'half');
    const spool = await Spool.open({ dir, log: silentLogger() });
    assert.deepEqual(spool.pending(), []);
    assert.ok(fs.existsSync(bad));
  });

  void it('retry delays double from the base and stop at the cap', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 10, 100].map((n) => spoolRetryDelay(n, 1000, 10_000)),
      [0, 1000, 2000, 4000, 8000, 10_000, 10_000],
    );
  });
});

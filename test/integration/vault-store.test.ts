/**
 * VaultStore: the shared CertStore contract, then what only the Vault backend promises —
 * its KV v2 layout, check-and-set between controllers, history beyond Vault's default
 * 10 versions, AppRole login and token renewal, soft-deleted versions, outages, TLS with
 * a private CA, and no token or key in logs.
 *
 * The contract runs against a real Vault when VAULT_ADDR and VAULT_TOKEN are set (each
 * store under a fresh random prefix in the `secret` mount, removed afterwards), otherwise
 * against the KV v2 double in test/harness/vault-double.ts, because Vault cannot be
 * installed on the build machines; the suite's name says which ran. The Vault-specific
 * tests always use the double: they need to seal it, cut it off and expire its tokens.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Writable } from 'node:stream';
import { VaultStore, openStore, type VaultStoreOptions } from '../../controller/store/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { createRootLogger, silentLogger } from '../../shared/log/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { certStoreContract, versionInput } from '../contract/cert-store.js';
import { startVaultDouble, type VaultDouble } from '../harness/vault-double.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { makeLeaf, makeTestCa } from '../harness/certs.js';

const REAL_ADDR = process.env['VAULT_ADDR'];
const REAL_TOKEN = process.env['VAULT_TOKEN'];
const real = REAL_ADDR !== undefined && REAL_ADDR !== '' && REAL_TOKEN !== undefined && REAL_TOKEN !== '';

/** Raw Vault HTTP, for setting up situations the store itself never creates. */
async function vaultHttp(addr: string, token: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${addr}/v1/${p}`, {
    method,
    headers: { 'x-vault-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? null : (JSON.parse(text) as unknown) };
}

/** Deletes every key under `mount/metadata/<folder>` on a real Vault (test clean-up). */
async function purge(addr: string, token: string, mount: string, folder: string): Promise<void> {
  const listed = await vaultHttp(addr, token, 'GET', `${mount}/metadata/${folder}?list=true`);
  if (listed.status !== 200) return;
  const keys = ((listed.body as { data?: { keys?: string[] } }).data?.keys ?? []);
  for (const k of keys) {
    if (k.endsWith('/')) await purge(addr, token, mount, folder + k);
    else await vaultHttp(addr, token, 'DELETE', `${mount}/metadata/${folder}${k}`);
  }
}

function hasCode(code: string, retryable?: boolean) {
  return (err: unknown): boolean => {
    assert.ok(isCertfleetError(err), `expected a CertfleetError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (retryable !== undefined) assert.equal(err.retryable, retryable, err.message);
    return true;
  };
}

if (real) {
  certStoreContract(`VaultStore against Vault at ${REAL_ADDR}`, async () => {
    const prefix = `certfleet-test-${crypto.randomBytes(6).toString('hex')}`;
    const store = await VaultStore.open({ address: REAL_ADDR, prefix, auth: { method: 'token', token: REAL_TOKEN }, log: silentLogger() });
    return {
      store,
      cleanup: async () => {
        await store.close();
        await purge(REAL_ADDR, REAL_TOKEN, 'secret', `${prefix}/`);
      },
    };
  });
} else {
  certStoreContract('VaultStore against the KV v2 double (VAULT_ADDR/VAULT_TOKEN not set)', async () => {
    const double = await startVaultDouble();
    const store = await VaultStore.open({ address: double.addr, auth: { method: 'token', token: double.rootToken }, log: silentLogger() });
    return {
      store,
      cleanup: async () => {
        await store.close();
        await double.close();
      },
    };
  });
}

void describe('VaultStore specifics (against the KV v2 double)', () => {
  const doubles: VaultDouble[] = [];
  const stores: VaultStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    for (const d of doubles) await d.close();
  });

  async function setup(
    opts: Partial<VaultStoreOptions> = {},
  ): Promise<{ double: VaultDouble; store: VaultStore; options: VaultStoreOptions }> {
    const double = await startVaultDouble({ mounts: ['secret', 'kv'] });
    doubles.push(double);
    const options: VaultStoreOptions = { address: double.addr, auth: { method: 'token', token: double.rootToken }, log: silentLogger(), ...opts };
    const store = await VaultStore.open(options);
    stores.push(store);
    return { double, store, options };
  }

  void it('keeps version N of a certificate as KV version N of <mount>/<prefix>/certs/<name>, with max_versions and cas_required set', async () => {
    const { double, store } = await setup({ mount: 'kv', prefix: 'fleet/prod' });
    await store.putVersion('web', versionInput('web', 'one'), 0);
    await store.putVersion('web', versionInput('web', 'two'), 1);
    await store.putObject('acme/account/pebble', { url: 'x' });
    const meta = double.keyMetadata('kv', 'fleet/prod/certs/web');
    assert.ok(meta);
    assert.equal(meta['current_version'], 2);
    assert.equal(meta['max_versions'], 10_000);
    assert.equal(meta['cas_required'], true);
    const v1 = await vaultHttp(double.addr, double.rootToken, 'GET', 'kv/data/fleet/prod/certs/web?version=1');
    const data = (v1.body as { data: { data: Record<string, unknown> } }).data.data;
    assert.equal(data['keyPem'], versionInput('web', 'one').keyPem);
    assert.deepEqual(data['meta'], { ...versionInput('web', 'one').meta, version: 1 });
    const obj = await vaultHttp(double.addr, double.rootToken, 'GET', 'kv/data/fleet/prod/objects/acme/account/pebble');
    assert.deepEqual((obj.body as { data: { data: unknown } }).data.data, { value: { url: 'x' } });
  });

  void it('two controllers on one Vault: of two writers of the same next version one wins, the other gets STORE_CONFLICT naming the actual latest', async () => {
    const { double, store: a, options } = await setup();
    const b = await VaultStore.open(options);
    stores.push(b);
    await a.putVersion('web', versionInput('web', 'one'), 0);
    const results = await Promise.allSettled([
      a.putVersion('web', versionInput('web', 'from-a'), 1),
      b.putVersion('web', versionInput('web', 'from-b'), 1),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    assert.equal(won.length, 1);
    const lost = results.find((r) => r.status === 'rejected');
    assert.ok(lost && lost.status === 'rejected');
    hasCode(ErrorCode.StoreConflict, false)(lost.reason);
    assert.equal((lost.reason as { details: Record<string, unknown> }).details['actualLatest'], 2);
    // Both see the same history, and a blind `vault kv put` (no cas) cannot overwrite it.
    assert.deepEqual(await a.listVersions('web'), await b.listVersions('web'));
    const blind = await vaultHttp(double.addr, double.rootToken, 'POST', 'secret/data/certfleet/certs/web', { data: { certPem: 'x' } });
    assert.equal(blind.status, 400);
    assert.equal((await a.latest('web'))?.version, 2);
  });

  void it('keeps every version, beyond KV v2 default of 10 per key', async () => {
    const { store } = await setup();
    for (let v = 0; v < 13; v++) await store.putVersion('short', versionInput('short', `v${v + 1}`), v);
    const versions = await store.listVersions('short');
    assert.deepEqual(
      versions.map((m) => m.version),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    );
    assert.equal((await store.getVersion('short', 1))?.certPem, versionInput('short', 'v1').certPem);
  });

  void it('a soft-deleted version reads as absent; a deleted latest version is STORE_CORRUPT with the undelete command, until undeleted', async () => {
    const { double, store } = await setup();
    for (let v = 0; v < 3; v++) await store.putVersion('web', versionInput('web', `v${v + 1}`), v);
    const root = double.rootToken;
    assert.equal((await vaultHttp(double.addr, root, 'POST', 'secret/delete/certfleet/certs/web', { versions: [2] })).status, 204);
    assert.equal(await store.getVersion('web', 2), null);
    assert.deepEqual(
      (await store.listVersions('web')).map((m) => m.version),
      [1, 3],
    );
    assert.equal((await store.latest('web'))?.version, 3);

    assert.equal((await vaultHttp(double.addr, root, 'DELETE', 'secret/data/certfleet/certs/web')).status, 204);
    await assert.rejects(store.latest('web'), (err: unknown) => {
      hasCode(ErrorCode.StoreCorrupt, false)(err);
      assert.match((err as Error).message, /vault kv undelete -mount=secret -versions=3 certfleet\/certs\/web/);
      return true;
    });
    // Vault's cas compares with current_version, deleted or not: no version 3 can be written again.
    await assert.rejects(store.putVersion('web', versionInput('web', 'again'), 2), hasCode(ErrorCode.StoreConflict));

    await vaultHttp(double.addr, root, 'POST', 'secret/undelete/certfleet/certs/web', { versions: [3] });
    assert.equal((await store.latest('web'))?.serial, versionInput('web', 'v3').meta.serial);
    assert.equal((await store.putVersion('web', versionInput('web', 'v4'), 3)).version, 4);
  });

  void it('an unreachable or sealed Vault is STORE_UNAVAILABLE, retryable, and the store works again when Vault is back', async () => {
    const { double, store } = await setup();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    double.setMode('unreachable');
    await assert.rejects(store.putVersion('web', versionInput('web', 'two'), 1), hasCode(ErrorCode.StoreUnavailable, true));
    await assert.rejects(store.latest('web'), hasCode(ErrorCode.StoreUnavailable, true));
    double.setMode('sealed');
    await assert.rejects(store.putVersion('web', versionInput('web', 'two'), 1), (err: unknown) => {
      hasCode(ErrorCode.StoreUnavailable, true)(err);
      assert.match((err as Error).message, /sealed/);
      return true;
    });
    double.setMode('up');
    assert.equal((await store.putVersion('web', versionInput('web', 'two'), 1)).version, 2);
  });

  void it('opening against an unreachable Vault fails with a retryable STORE_UNAVAILABLE', async () => {
    const double = await startVaultDouble();
    doubles.push(double);
    double.setMode('unreachable');
    await assert.rejects(
      VaultStore.open({ address: double.addr, auth: { method: 'token', token: double.rootToken }, log: silentLogger() }),
      hasCode(ErrorCode.StoreUnavailable, true),
    );
  });

  void it('logs in with AppRole from files, renews its token, and logs in again when the token reaches its max TTL', async () => {
    const double = await startVaultDouble();
    doubles.push(double);
    const ids = double.addAppRole({ ttl: 3, maxTtl: 5 });
    const dir = tempDir('certfleet-vault-');
    fs.writeFileSync(path.join(dir, 'role-id'), `${ids.roleId}\n`, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'secret-id'), `${ids.secretId}\n`, { mode: 0o600 });
    const store = await openStore(
      {
        type: 'vault',
        address: double.addr,
        auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') },
      },
      silentLogger(),
    );
    try {
      assert.equal(store.kind, 'vault');
      await store.putVersion('web', versionInput('web', 'one'), 0);
      assert.equal(double.callCounts()['POST auth/approle/login'], 1);
      await eventually('token renewed', () => (double.callCounts()['POST auth/token/renew-self'] ?? 0) >= 1, 15_000);
      // The max TTL (5 s) caps the renewal, so the store logs in again rather than let the token die.
      await eventually('logged in again', () => (double.callCounts()['POST auth/approle/login'] ?? 0) >= 2, 15_000);
      assert.equal((await store.latest('web'))?.version, 1);
    } finally {
      await store.close();
    }
  });

  void it('a renewable token is renewed with renew-self before it expires', async () => {
    const double = await startVaultDouble();
    doubles.push(double);
    const token = double.createToken({ ttl: 2 });
    const store = await VaultStore.open({ address: double.addr, auth: { method: 'token', token }, log: silentLogger() });
    stores.push(store);
    await eventually('token renewed twice', () => (double.callCounts()['POST auth/token/renew-self'] ?? 0) >= 2, 15_000);
    // Still valid after more than its original 2 s TTL.
    await store.putObject('pki/ca', { ok: true });
    assert.deepEqual(await store.getObject('pki/ca'), { ok: true });
  });

  void it('renews the token on the injected clock at 2/3 of its TTL, and after a failed renewal logs in again 30 s later', async () => {
    const double = await startVaultDouble();
    doubles.push(double);
    const ids = double.addAppRole({ ttl: 3600 });
    const dir = tempDir('certfleet-vault-clock-');
    fs.writeFileSync(path.join(dir, 'role-id'), ids.roleId);
    fs.writeFileSync(path.join(dir, 'secret-id'), ids.secretId);
    const clock = new ManualClock();
    const store = await VaultStore.open({
      address: double.addr,
      auth: { method: 'approle', roleIdFile: path.join(dir, 'role-id'), secretIdFile: path.join(dir, 'secret-id') },
      log: silentLogger(),
      clock,
    });
    stores.push(store);
    const count = (what: string): number => double.callCounts()[what] ?? 0;
    assert.equal(count('POST auth/approle/login'), 1);
    // 2/3 of 3600 s is 2400 s: nothing before, one renewal at it.
    await clock.tick(2_400_000 - 1);
    assert.equal(count('POST auth/token/renew-self'), 0, 'no renewal before 2/3 of the TTL');
    await clock.tick(1);
    await eventually('first renewal', () => count('POST auth/token/renew-self') === 1, 10_000);
    await eventually('next renewal scheduled', () => clock.pendingTimers === 1, 10_000);
    await clock.tick(2_400_000);
    await eventually('second renewal', () => count('POST auth/token/renew-self') === 2, 10_000);
    await eventually('next renewal scheduled', () => clock.pendingTimers === 1, 10_000);
    // Vault unreachable at the third renewal: the store tries a fresh login 30 s later.
    double.setMode('unreachable');
    await clock.tick(2_400_000);
    await eventually('retry scheduled', () => clock.pendingTimers === 1, 10_000);
    double.setMode('up');
    assert.equal(count('POST auth/approle/login'), 1);
    await clock.tick(30_000 - 1);
    assert.equal(count('POST auth/approle/login'), 1, 'no login before 30 s');
    await clock.tick(1);
    await eventually('logged in again', () => count('POST auth/approle/login') === 2, 10_000);
    assert.equal((await store.latest('web')), null);
  });

  void it('an AppRole token revoked behind its back is replaced by a fresh login on the next call', async () => {
    const double = await startVaultDouble();
    doubles.push(double);
    const ids = double.addAppRole({ ttl: 3600 });
    const dir = tempDir('certfleet-vault-');
    fs.writeFileSync(path.join(dir, 'r'), ids.roleId);
    fs.writeFileSync(path.join(dir, 's'), ids.secretId);
    const store = await VaultStore.open({
      address: double.addr,
      auth: { method: 'approle', roleIdFile: path.join(dir, 'r'), secretIdFile: path.join(dir, 's') },
      log: silentLogger(),
    });
    stores.push(store);
    await store.putObject('pki/ca', { v: 1 });
    for (const t of double.seenTokens) double.revokeToken(t);
    assert.deepEqual(await store.getObject('pki/ca'), { v: 1 });
    assert.equal(double.callCounts()['POST auth/approle/login'], 2);
  });

  void it('a wrong AppRole secret_id, or a token Vault refuses, fails with STORE_UNAVAILABLE that is not retryable', async () => {
    const double = await startVaultDouble();
    doubles.push(double);
    const ids = double.addAppRole({ ttl: 60 });
    const dir = tempDir('certfleet-vault-');
    fs.writeFileSync(path.join(dir, 'r'), ids.roleId);
    fs.writeFileSync(path.join(dir, 's'), 'not-the-secret');
    await assert.rejects(
      VaultStore.open({ address: double.addr, auth: { method: 'approle', roleIdFile: path.join(dir, 'r'), secretIdFile: path.join(dir, 's') }, log: silentLogger() }),
      hasCode(ErrorCode.StoreUnavailable, false),
    );
    await assert.rejects(
      VaultStore.open({ address: double.addr, auth: { method: 'token', token: 'hvs.wrong' }, log: silentLogger() }),
      hasCode(ErrorCode.StoreUnavailable, false),
    );
    // A token whose policy forbids the certificate paths: permission problems need an operator.
    const limited = double.createToken({ deny: ['secret/data/certfleet/certs/'] });
    const store = await VaultStore.open({ address: double.addr, auth: { method: 'token', token: limited }, log: silentLogger() });
    stores.push(store);
    await assert.rejects(store.putVersion('web', versionInput('web', 'one'), 0), (err: unknown) => {
      hasCode(ErrorCode.StoreUnavailable, false)(err);
      assert.match((err as Error).message, /denied/);
      return true;
    });
  });

  void it('reads a token from a file and trusts Vault over TLS through the configured CA only', async () => {
    const ca = await makeTestCa({ commonName: 'vault test CA' });
    const leaf = await makeLeaf(ca, { names: ['localhost'] });
    const double = await startVaultDouble({ tls: { certPem: leaf.certPem, keyPem: leaf.keyPem } });
    doubles.push(double);
    const dir = tempDir('certfleet-vault-');
    fs.writeFileSync(path.join(dir, 'ca.pem'), ca.certPem);
    fs.writeFileSync(path.join(dir, 'token'), `${double.rootToken}\n`, { mode: 0o600 });
    const address = double.addr.replace('127.0.0.1', 'localhost');
    const store = await openStore(
      { type: 'vault', address, caFile: path.join(dir, 'ca.pem'), auth: { method: 'token', tokenFile: path.join(dir, 'token') } },
      silentLogger(),
    );
    try {
      await store.putVersion('web', versionInput('web', 'one'), 0);
      assert.equal((await store.latest('web'))?.version, 1);
    } finally {
      await store.close();
    }
    await assert.rejects(
      VaultStore.open({ address, auth: { method: 'token', token: double.rootToken }, log: silentLogger() }),
      hasCode(ErrorCode.StoreUnavailable, false),
    );
  });

  void it('never writes the token, the AppRole secret_id or a private key to its log, even when calls fail', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    const log = createRootLogger({ name: 'controller', level: 'trace', destination: sink });
    const double = await startVaultDouble();
    doubles.push(double);
    const ids = double.addAppRole({ ttl: 2, maxTtl: 3 });
    const dir = tempDir('certfleet-vault-');
    fs.writeFileSync(path.join(dir, 'r'), ids.roleId);
    fs.writeFileSync(path.join(dir, 's'), ids.secretId);
    const store = await VaultStore.open({ address: double.addr, auth: { method: 'approle', roleIdFile: path.join(dir, 'r'), secretIdFile: path.join(dir, 's') }, log });
    stores.push(store);
    const errors: unknown[] = [];
    await store.putVersion('web', versionInput('web', 'secret-material'), 0);
    await store.putVersion('web', versionInput('web', 'x'), 0).catch((e: unknown) => errors.push(e));
    double.setMode('unreachable');
    await store.putVersion('web', versionInput('web', 'secret-material-2'), 1).catch((e: unknown) => errors.push(e));
    double.setMode('up');
    await eventually('renewed and logged in again', () => (double.callCounts()['POST auth/approle/login'] ?? 0) >= 2, 15_000);
    await store.close();
    assert.equal(errors.length, 2);
    const text = lines.join('') + errors.map((e) => JSON.stringify(e) + String(e) + String((e as Error).cause)).join('\n');
    assert.ok(lines.length > 3, 'the store logged something');
    for (const secret of [...double.seenTokens, ids.secretId, 'secret-material-key', 'PRIVATE KEY']) {
      assert.ok(!text.includes(secret), `log or error contains ${secret.slice(0, 12)}...`);
    }
  });
});

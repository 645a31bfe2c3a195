/**
 * FileStore on a real filesystem: the shared CertStore contract, plus what only the file
 * backend promises — its layout, 0600/0700 modes whatever the umask, corrupt files
 * reported by path, crash leftovers ignored, data surviving a reopen.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FileStore, openStore } from '../../controller/store/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';
import { certStoreContract, versionInput } from '../contract/cert-store.js';

certStoreContract('FileStore', async () => {
  const dir = path.join(tempDir('certfleet-filestore-'), 'store');
  const store = await FileStore.open({ dir, log: silentLogger() });
  return {
    store,
    cleanup: async () => {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

function newStore(): { dir: string; store: FileStore } {
  const dir = path.join(tempDir('certfleet-filestore-'), 'store');
  return { dir, store: new FileStore({ dir, log: silentLogger() }) };
}

function mode(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? [p, ...walk(p)] : [p];
  });
}

function corruptWith(file: string) {
  return (err: unknown): boolean => {
    assert.ok(isCertfleetError(err, ErrorCode.StoreCorrupt), String(err));
    assert.equal(err.details['file'], file);
    assert.ok(err.message.includes(file), err.message);
    return true;
  };
}

void describe('FileStore specifics', () => {
  void it('lays versions out as certs/<name>/<N>/{cert,chain,privkey}.pem + meta.json and objects as objects/<key>.json', async () => {
    const { dir, store } = newStore();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    await store.putObject('acme/account/pebble', { url: 'x' });
    const vdir = path.join(dir, 'certs', 'web', '1');
    assert.deepEqual(fs.readdirSync(vdir).sort(), ['cert.pem', 'chain.pem', 'meta.json', 'privkey.pem']);
    assert.equal(fs.readFileSync(path.join(vdir, 'privkey.pem'), 'utf8'), versionInput('web', 'one').keyPem);
    assert.equal((JSON.parse(fs.readFileSync(path.join(vdir, 'meta.json'), 'utf8')) as { version: number }).version, 1);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'objects', 'acme', 'account', 'pebble.json'), 'utf8')), {
      url: 'x',
    });
    await store.close();
  });

  void it('creates every directory 0700 and every file 0600 even with a permissive umask', async () => {
    const { dir, store } = newStore();
    const old = process.umask(0);
    try {
      await store.putVersion('web', versionInput('web', 'one'), 0);
      await store.putVersion('web', versionInput('web', 'two'), 1);
      await store.putObject('agents/edge-1', { name: 'edge-1' });
      await store.putObject('pki/ca', { certPem: 'c', keyPem: 'k' });
    } finally {
      process.umask(old);
    }
    const entries = [dir, ...walk(dir)];
    assert.ok(entries.length >= 15, `only ${entries.length} entries`);
    for (const p of entries) {
      const expected = fs.statSync(p).isDirectory() ? 0o700 : 0o600;
      assert.equal(mode(p).toString(8), expected.toString(8), p);
    }
    await store.close();
  });

  void it('tightens an existing store directory that others could enter to 0700', async () => {
    const { dir, store } = newStore();
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    await store.listNames();
    assert.equal(mode(dir).toString(8), '700');
    await store.close();
  });

  void it('reports a corrupt meta.json as STORE_CORRUPT naming the file', async () => {
    const { dir, store } = newStore();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    const meta = path.join(dir, 'certs', 'web', '1', 'meta.json');
    fs.writeFileSync(meta, '{"name": "web", "vers');
    await assert.rejects(store.latest('web'), corruptWith(meta));
    await assert.rejects(store.getVersion('web', 1), corruptWith(meta));
    await assert.rejects(store.listVersions('web'), corruptWith(meta));

    // Well-formed JSON that is not this version's metadata is corrupt too.
    fs.writeFileSync(meta, JSON.stringify({ ...versionInput('web', 'one').meta, version: 2 }));
    await assert.rejects(store.getVersion('web', 1), corruptWith(meta));
    fs.writeFileSync(meta, JSON.stringify({ ...versionInput('web', 'one').meta, version: 1, keyType: 'dsa' }));
    await assert.rejects(store.getVersion('web', 1), corruptWith(meta));
    await store.close();
  });

  void it('reports a version missing its private key or meta.json as STORE_CORRUPT naming the file', async () => {
    const { dir, store } = newStore();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    await store.putVersion('web', versionInput('web', 'two'), 1);
    const key = path.join(dir, 'certs', 'web', '1', 'privkey.pem');
    fs.rmSync(key);
    await assert.rejects(store.getVersion('web', 1), corruptWith(key));
    const meta = path.join(dir, 'certs', 'web', '2', 'meta.json');
    fs.rmSync(meta);
    await assert.rejects(store.latest('web'), corruptWith(meta));
    await store.close();
  });

  void it('reports an object file that is not JSON as STORE_CORRUPT naming the file', async () => {
    const { dir, store } = newStore();
    await store.putObject('pki/ca', { ok: true });
    const file = path.join(dir, 'objects', 'pki', 'ca.json');
    fs.writeFileSync(file, 'not json');
    await assert.rejects(store.getObject('pki/ca'), corruptWith(file));
    await store.close();
  });

  void it('ignores a temp directory left by a crash mid-write, and the next write succeeds', async () => {
    const { dir, store } = newStore();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    // What a crash after writing cert.pem of version 2 leaves behind.
    const leftover = path.join(dir, 'certs', 'web', '.tmp-2-deadbeef0000');
    fs.mkdirSync(leftover, { mode: 0o700 });
    fs.writeFileSync(path.join(leftover, 'cert.pem'), 'half');
    // A name whose first version never completed.
    const orphan = path.join(dir, 'certs', 'api', '.tmp-1-cafebabe0000');
    fs.mkdirSync(orphan, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(orphan, 'meta.json'), '{}');
    // An object write interrupted before its rename.
    fs.mkdirSync(path.join(dir, 'objects', 'agents'), { mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'objects', 'agents', '.edge-1.json.tmp-0123456789ab'), '{"trunc');

    assert.equal((await store.latest('web'))?.version, 1);
    assert.deepEqual(
      (await store.listVersions('web')).map((m) => m.version),
      [1],
    );
    assert.deepEqual(await store.listNames(), ['web']);
    assert.equal(await store.latest('api'), null);
    assert.deepEqual(await store.listObjects('agents/'), []);
    assert.equal(await store.getObject('agents/edge-1'), null);

    assert.equal((await store.putVersion('web', versionInput('web', 'two'), 1)).version, 2);
    assert.equal((await store.putVersion('api', versionInput('api', 'one'), 0)).version, 1);
    assert.equal((await store.getVersion('web', 2))?.certPem, versionInput('web', 'two').certPem);
    await store.close();
  });

  void it('leaves no temp directory behind when a writer loses the race', async () => {
    const { dir, store } = newStore();
    await Promise.allSettled(['a', 'b', 'c', 'd'].map((t) => store.putVersion('race', versionInput('race', t), 0)));
    assert.deepEqual(fs.readdirSync(path.join(dir, 'certs', 'race')), ['1']);
    await store.close();
  });

  void it('a second store opened on the same directory sees everything the first wrote', async () => {
    const { dir, store } = newStore();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    await store.putObject('pki/ca', { certPem: 'c' });
    await store.close();
    const reopened = await openStore({ type: 'file', path: dir }, silentLogger());
    assert.equal(reopened.kind, 'file');
    assert.equal((await reopened.latest('web'))?.serial, versionInput('web', 'one').meta.serial);
    assert.deepEqual(await reopened.getObject('pki/ca'), { certPem: 'c' });
    // Two handles on one directory still honour the compare-and-set.
    const other = await FileStore.open({ dir, log: silentLogger() });
    await other.putVersion('web', versionInput('web', 'two'), 1);
    await assert.rejects(reopened.putVersion('web', versionInput('web', 'late'), 1), (err: unknown) =>
      isCertfleetError(err, ErrorCode.StoreConflict),
    );
    await reopened.close();
    await other.close();
  });

  void it('latest() answers from memory while the certificate directory is unchanged, and sees a version another process stored', async () => {
    const { dir, store } = newStore();
    await store.putVersion('web', versionInput('web', 'one'), 0);
    const certDir = path.join(dir, 'certs', 'web');
    const metaFile = path.join(certDir, '1', 'meta.json');
    const rewriteSerial = (serial: string): void => {
      const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as Record<string, unknown>;
      fs.writeFileSync(metaFile, JSON.stringify({ ...meta, serial }));
    };
    const age = (): void => {
      // As if the directory had last changed a minute ago (past the racy window).
      const past = new Date(Date.now() - 60_000);
      fs.utimesSync(certDir, past, past);
    };
    // Just written: within the racy window every call reads the store.
    rewriteSerial('aa01');
    assert.equal((await store.latest('web'))?.serial, 'aa01');
    // Settled: the answer is kept; a change inside a version directory (versions are
    // immutable) is not looked for, which shows the answer came from memory.
    age();
    assert.equal((await store.latest('web'))?.serial, 'aa01');
    rewriteSerial('aa02');
    assert.equal((await store.latest('web'))?.serial, 'aa01');
    // The caller's copy is its own.
    const mine = await store.latest('web');
    assert.ok(mine);
    mine.names.push('changed.example');
    mine.serial = 'mutated';
    assert.equal((await store.latest('web'))?.serial, 'aa01');
    assert.deepEqual((await store.latest('web'))?.names, versionInput('web', 'one').meta.names);

    // Another process (a second handle: `certfleet certbot import` on a running
    // controller) stores version 2: seen at once, also with the directory's mtime put
    // back to what it was (a change within one timestamp tick: the ctime still moves).
    const other = await FileStore.open({ dir, log: silentLogger() });
    const before = fs.statSync(certDir);
    await other.putVersion('web', versionInput('web', 'two'), 1);
    fs.utimesSync(certDir, before.atime, before.mtime);
    assert.equal((await store.latest('web'))?.version, 2);
    assert.equal((await store.latest('web'))?.serial, versionInput('web', 'two').meta.serial);
    // And one it removes (by hand, with the controller stopped): gone at once too.
    age();
    assert.equal((await store.latest('web'))?.version, 2);
    fs.rmSync(path.join(certDir, '2'), { recursive: true });
    assert.equal((await store.latest('web'))?.version, 1);
    fs.rmSync(certDir, { recursive: true });
    assert.equal(await store.latest('web'), null);
    // Its own writes: the next latest() is the new version.
    await store.putVersion('web', versionInput('web', 'three'), 0);
    age();
    assert.equal((await store.latest('web'))?.serial, versionInput('web', 'three').meta.serial);
    await store.putVersion('web', versionInput('web', 'four'), 1);
    age();
    assert.equal((await store.latest('web'))?.serial, versionInput('web', 'four').meta.serial);
    await other.close();
    await store.close();
  });

  void it('pins and agent registrations kept in memory are still current: another controller sets, replaces and releases a pin, an agent record is edited by hand', async () => {
    const { dir, store } = newStore();
    const other = await FileStore.open({ dir, log: silentLogger() });
    const objects = path.join(dir, 'objects');
    const age = (...rel: string[]): void => {
      // As if last changed a minute ago (past the racy window), so answers are kept.
      const past = new Date(Date.now() - 60_000);
      for (const r of rel) if (fs.existsSync(path.join(objects, r))) fs.utimesSync(path.join(objects, r), past, past);
    };
    // No pins directory yet: absent, kept under the stat of objects/.
    age('.', 'pins');
    assert.equal(await store.getObject('pins/web'), null);
    assert.equal(await store.getObject('pins/web'), null);
    await other.putObject('pins/web', { version: 1 });
    assert.deepEqual(await store.getObject('pins/web'), { version: 1 }, 'a pin another controller set (creating pins/) is seen');
    age('.', 'pins', 'pins/web.json');
    assert.deepEqual(await store.getObject('pins/web'), { version: 1 });
    assert.equal(await store.getObject('pins/api'), null);
    age('pins');
    assert.equal(await store.getObject('pins/api'), null);
    await other.putObject('pins/web', { version: 2 });
    assert.deepEqual(await store.getObject('pins/web'), { version: 2 }, 'a replaced pin is seen');
    await other.putObject('pins/api', { version: 3 });
    assert.deepEqual(await store.getObject('pins/api'), { version: 3 }, 'a pin set where none was is seen');
    age('pins', 'pins/web.json', 'pins/api.json');
    assert.deepEqual(await store.getObject('pins/web'), { version: 2 });
    assert.equal(await other.deleteObject('pins/web'), true);
    assert.equal(await store.getObject('pins/web'), null, 'a released pin is seen');
    // Revocation marks live one directory deeper; the first for a certificate creates it.
    age('.');
    assert.equal(await store.getObject('revocations/web/1'), null);
    await other.putObject('revocations/web/1', { at: 'now' });
    assert.deepEqual(await store.getObject('revocations/web/1'), { at: 'now' });

    // The caller's value is its own.
    await store.putObject('agents/a1', { name: 'a1', labels: ['x'] });
    age('agents', 'agents/a1.json');
    const mine = await store.getObject<{ labels: string[] }>('agents/a1');
    mine?.labels.push('mutated');
    assert.deepEqual(await store.getObject('agents/a1'), { name: 'a1', labels: ['x'] });
    // Edited in place by hand, its mtime even put back: the file's ctime moves.
    const file = path.join(objects, 'agents', 'a1.json');
    const before = fs.statSync(file);
    fs.writeFileSync(file, JSON.stringify({ name: 'a1', labels: ['y'] }));
    fs.utimesSync(file, before.atime, before.mtime);
    assert.deepEqual(await store.getObject('agents/a1'), { name: 'a1', labels: ['y'] });
    // Its own writes and deletes.
    age('agents', 'agents/a1.json');
    await store.putObject('agents/a1', { name: 'a1', labels: ['z'] });
    assert.deepEqual(await store.getObject('agents/a1'), { name: 'a1', labels: ['z'] });
    age('agents', 'agents/a1.json');
    assert.equal(await store.deleteObject('agents/a1'), true);
    assert.equal(await store.getObject('agents/a1'), null);
    await other.close();
    await store.close();
  });

  void it('fails to open with a retryable STORE_UNAVAILABLE when the directory cannot be created', async () => {
    const parent = tempDir('certfleet-filestore-');
    const file = path.join(parent, 'a-file');
    fs.writeFileSync(file, '');
    await assert.rejects(openStore({ type: 'file', path: path.join(file, 'store') }, silentLogger()), (err: unknown) => {
      assert.ok(isCertfleetError(err, ErrorCode.StoreUnavailable), String(err));
      assert.equal(err.retryable, true);
      return true;
    });
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Installer, LINEAGE_FILES } from '../../agent/install/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle } from '../../shared/model/index.js';
import { fingerprintOf, keyMatchesCertificate } from '../../shared/pki/index.js';
import { makeBundle } from '../harness/certs.js';
import { eventually, startProcess } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

const DAY = 86_400_000;
const CRASH_CHILD_ENV = 'CERTFLEET_TEST_INSTALL_CRASH_CHILD';

function installer(stateDir: string, keepVersions?: number, clock = new ManualClock(Date.now())): Installer {
  return new Installer({ stateDir, clock, log: silentLogger(), ...(keepVersions === undefined ? {} : { keepVersions }) });
}

/** Every file under `dir` with its content hash and mode, and every symlink with its target. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      const rel = path.relative(dir, p);
      const st = fs.lstatSync(p);
      if (entry.isSymbolicLink()) out[rel] = `-> ${fs.readlinkSync(p)}`;
      else if (entry.isDirectory()) {
        out[rel] = `dir ${(st.mode & 0o777).toString(8)}`;
        walk(p);
      } else out[rel] = `${(st.mode & 0o777).toString(8)} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')} ${st.mtimeMs}`;
    }
  };
  walk(dir);
  return out;
}

/** Asserts `current` of `name` resolves to a complete, self-consistent version; returns its number. */
function assertCurrentComplete(stateDir: string, name: string): number {
  const nameDir = path.join(stateDir, 'certs', name);
  const target = fs.readlinkSync(path.join(nameDir, 'current'));
  const match = /^versions\/(\d+)$/.exec(target);
  assert.ok(match?.[1], `current points at ${target}`);
  const dir = path.join(nameDir, target);
  const read = (f: string): string => fs.readFileSync(path.join(dir, f), 'utf8');
  const meta = JSON.parse(read(LINEAGE_FILES.meta)) as Bundle['meta'];
  assert.equal(meta.version, Number(match[1]));
  assert.equal(fingerprintOf(read(LINEAGE_FILES.cert)), meta.fingerprint);
  assert.equal(keyMatchesCertificate(read(LINEAGE_FILES.privkey), read(LINEAGE_FILES.cert)), true);
  assert.equal(read(LINEAGE_FILES.fullchain), read(LINEAGE_FILES.cert) + read(LINEAGE_FILES.chain));
  assert.equal(read(LINEAGE_FILES.combined), read(LINEAGE_FILES.fullchain) + read(LINEAGE_FILES.privkey));
  return meta.version;
}

function leftovers(stateDir: string, name: string): string[] {
  const nameDir = path.join(stateDir, 'certs', name);
  return [...fs.readdirSync(nameDir).filter((e) => e.startsWith('.')), ...fs.readdirSync(path.join(nameDir, 'versions')).filter((e) => e.startsWith('.'))];
}

if (process.env[CRASH_CHILD_ENV] !== undefined) {
  // Child mode for the crash test: install new versions as fast as possible until killed.
  const stateDir = process.env[CRASH_CHILD_ENV];
  const inst = installer(stateDir, 3, new ManualClock(Date.now()));
  // Start past every version on disk: a killed predecessor may have written versions/<N>
  // without moving current, and versions are immutable (same N, new cert is refused).
  let version = Math.max(0, ...(await inst.versions('web'))) + 1;
  for (;;) {
    const bundle = await makeBundle({ name: 'web', version, names: ['web.example.test'] });
    await inst.install(bundle);
    process.stdout.write(`installed ${version}\n`);
    version++;
  }
} else {
  void test('install writes cert, chain, fullchain, privkey, combined and meta with 0644/0600 modes in 0700 dirs and points current at them', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    const bundle = await makeBundle({ name: 'web', version: 1, names: ['www.example.test', 'example.test'] });
    const result = await inst.install(bundle);

    const nameDir = path.join(stateDir, 'certs', 'web');
    const versionDir = path.join(nameDir, 'versions', '1');
    assert.equal(result.versionDir, versionDir);
    assert.equal(result.lineageDir, nameDir, 'certs/<name>: its basename is the name (certbot hooks)');
    for (const f of ['cert.pem', 'chain.pem', 'fullchain.pem', 'privkey.pem', 'combined.pem']) assert.equal(fs.readlinkSync(path.join(nameDir, f)), `current/${f}`);
    assert.equal(result.previousVersion, null);
    assert.equal(result.changed, true);
    assert.equal(result.reused, false);
    assert.equal(fs.readlinkSync(path.join(nameDir, 'current')), 'versions/1');

    const mode = (p: string): string => (fs.statSync(p).mode & 0o777).toString(8);
    for (const dir of [path.join(stateDir, 'certs'), nameDir, path.join(nameDir, 'versions'), versionDir]) assert.equal(mode(dir), '700', dir);
    const expected: Record<string, [string, string]> = {
      'cert.pem': ['644', bundle.certPem],
      'chain.pem': ['644', bundle.chainPem],
      'fullchain.pem': ['644', bundle.certPem + bundle.chainPem],
      'privkey.pem': ['600', bundle.keyPem],
      'combined.pem': ['600', bundle.certPem + bundle.chainPem + bundle.keyPem],
    };
    assert.deepEqual(fs.readdirSync(versionDir).sort(), [...Object.keys(expected), 'meta.json'].sort());
    for (const [file, [fileMode, content]] of Object.entries(expected)) {
      assert.equal(mode(path.join(versionDir, file)), fileMode, file);
      assert.equal(fs.readFileSync(path.join(nameDir, 'current', file), 'utf8'), content, file);
    }
    assert.equal(mode(path.join(versionDir, 'meta.json')), '644');
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(versionDir, 'meta.json'), 'utf8')), bundle.meta);
    assert.deepEqual(await inst.current('web'), bundle.meta);
    assert.deepEqual(await inst.versions('web'), [1]);
    assert.equal(await inst.hasVersion('web', 1), true);
    assert.equal(await inst.hasVersion('web', 2), false);
    assert.deepEqual(await inst.load('web', 1), bundle);
  });

  void test('install refuses a bundle whose key does not match, leaving current and every file untouched', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    await inst.install(await makeBundle({ name: 'web', version: 1 }));
    const before = snapshot(stateDir);
    const good = await makeBundle({ name: 'web', version: 2 });
    const stranger = await makeBundle({ name: 'web', version: 2 });
    await assert.rejects(inst.install({ ...good, keyPem: stranger.keyPem }), (err) => isCertfleetError(err, 'BUNDLE_KEY_MISMATCH'));
    assert.deepEqual(snapshot(stateDir), before);
    assert.equal((await inst.current('web'))?.version, 1);
  });

  void test('install refuses names outside the assignment and expired bundles before creating anything', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    const bundle = await makeBundle({ name: 'web', version: 1, names: ['a.example.test'] });
    await assert.rejects(inst.install(bundle, { requiredNames: ['a.example.test', 'b.example.test'] }), (err) => isCertfleetError(err, 'BUNDLE_NAMES_MISSING'));
    const late = installer(stateDir, undefined, new ManualClock(Date.now() + 91 * DAY));
    await assert.rejects(late.install(bundle), (err) => isCertfleetError(err, 'BUNDLE_EXPIRED'));
    assert.deepEqual(fs.readdirSync(stateDir), []);
    assert.equal(await inst.current('web'), null);
    assert.deepEqual(await inst.versions('web'), []);
  });

  void test('re-installing the same version reuses it; the same version with another certificate is refused', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    const v1 = await makeBundle({ name: 'web', version: 1 });
    await inst.install(v1);
    const again = await inst.install(v1);
    assert.equal(again.reused, true);
    assert.equal(again.changed, false);
    const impostor = await makeBundle({ name: 'web', version: 1 });
    await assert.rejects(inst.install(impostor), (err) => isCertfleetError(err, 'INSTALL_FAILED'));
    assert.equal((await inst.current('web'))?.fingerprint, v1.meta.fingerprint);
  });

  void test('retention keeps the newest K versions and deletes older ones', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir, 3);
    const pruned: number[] = [];
    for (let v = 1; v <= 6; v++) pruned.push(...(await inst.install(await makeBundle({ name: 'web', version: v }))).pruned);
    assert.deepEqual(await inst.versions('web'), [4, 5, 6]);
    assert.deepEqual(pruned, [1, 2, 3]);
    assert.equal(fs.existsSync(path.join(stateDir, 'certs', 'web', 'versions', '3')), false);
  });

  void test('retention deletes an old version directory even when something else was put in it (a subdirectory, a link)', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir, 2);
    for (let v = 1; v <= 2; v++) await inst.install(await makeBundle({ name: 'web', version: v }));
    const v1 = path.join(stateDir, 'certs', 'web', 'versions', '1');
    fs.mkdirSync(path.join(v1, 'extra', 'deeper'), { recursive: true });
    fs.writeFileSync(path.join(v1, 'extra', 'deeper', 'note'), 'x');
    fs.symlinkSync('cert.pem', path.join(v1, 'alias.pem'));
    const result = await inst.install(await makeBundle({ name: 'web', version: 3 }));
    assert.deepEqual(result.pruned, [1]);
    assert.equal(fs.existsSync(v1), false);
    assert.deepEqual(await inst.versions('web'), [2, 3]);
    assert.equal(assertCurrentComplete(stateDir, 'web'), 3);
  });

  void test('the loaded marker is written 0644 whatever the umask, read back, and leaves no temporary file; forgetLoaded removes only a marker naming that version', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    const bundle = await makeBundle({ name: 'web', version: 1 });
    await inst.install(bundle);
    assert.equal(await inst.loaded('web'), null);
    const umask = process.umask(0o077);
    try {
      await inst.markLoaded('web', bundle.meta, '2026-11-30T00:00:00.000Z');
    } finally {
      process.umask(umask);
    }
    const nameDir = path.join(stateDir, 'certs', 'web');
    assert.equal((fs.statSync(path.join(nameDir, 'loaded.json')).mode & 0o777).toString(8), '644');
    assert.deepEqual(await inst.loaded('web'), { version: 1, fingerprint: bundle.meta.fingerprint, at: '2026-11-30T00:00:00.000Z' });
    assert.deepEqual(leftovers(stateDir, 'web'), []);
    await inst.forgetLoaded('web', 2);
    assert.equal((await inst.loaded('web'))?.version, 1, 'a marker naming another version stays');
    await inst.forgetLoaded('web', 1);
    assert.equal(await inst.loaded('web'), null);
    // A torn marker (a crash without fsync may leave one) reads as absent.
    fs.writeFileSync(path.join(nameDir, 'loaded.json'), '{"version":');
    assert.equal(await inst.loaded('web'), null);
  });

  void test('lineage links already right are left alone by the next install (same inode), a wrong one is repaired', async () => {
    const stateDir = tempDir();
    const live = path.join(stateDir, 'live');
    const inst = new Installer({ stateDir, clock: new ManualClock(Date.now()), log: silentLogger(), liveDir: live });
    await inst.install(await makeBundle({ name: 'web', version: 1 }));
    const nameDir = path.join(stateDir, 'certs', 'web');
    const inode = (p: string): number => fs.lstatSync(p).ino;
    const before = { cert: inode(path.join(nameDir, 'cert.pem')), live: inode(path.join(live, 'web', 'fullchain.pem')) };
    fs.rmSync(path.join(nameDir, 'chain.pem'));
    fs.symlinkSync('versions/1/chain.pem', path.join(nameDir, 'chain.pem'));
    await inst.install(await makeBundle({ name: 'web', version: 2 }));
    assert.equal(inode(path.join(nameDir, 'cert.pem')), before.cert);
    assert.equal(inode(path.join(live, 'web', 'fullchain.pem')), before.live);
    assert.equal(fs.readlinkSync(path.join(nameDir, 'chain.pem')), 'current/chain.pem');
    assert.equal(fs.readFileSync(path.join(live, 'web', 'cert.pem'), 'utf8'), fs.readFileSync(path.join(nameDir, 'versions', '2', 'cert.pem'), 'utf8'));
  });

  void test('retention never deletes the current version or the one it replaced, even with K = 1 or after a rollback', async () => {
    const stateDir = tempDir();
    const one = installer(stateDir, 1);
    await one.install(await makeBundle({ name: 'a', version: 1 }));
    await one.install(await makeBundle({ name: 'a', version: 2 }));
    assert.deepEqual(await one.versions('a'), [1, 2]);
    await one.install(await makeBundle({ name: 'a', version: 3 }));
    assert.deepEqual(await one.versions('a'), [2, 3]);

    const two = installer(stateDir, 2);
    for (let v = 1; v <= 3; v++) await two.install(await makeBundle({ name: 'b', version: v }));
    await two.activate('b', 2);
    await two.install(await makeBundle({ name: 'b', version: 4 }));
    assert.deepEqual(await two.versions('b'), [2, 3, 4]);
  });

  void test('activate rolls current back to an installed older version and reports the one it replaced', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    const v1 = await makeBundle({ name: 'web', version: 1 });
    const v2 = await makeBundle({ name: 'web', version: 2 });
    await inst.install(v1);
    const installed = await inst.install(v2);
    assert.equal(installed.previousVersion, 1);
    const rolled = await inst.activate('web', 1);
    assert.equal(rolled.previousVersion, 2);
    assert.equal(rolled.changed, true);
    assert.deepEqual(await inst.current('web'), v1.meta);
    assert.equal(fs.readFileSync(path.join(inst.lineageDir('web'), 'cert.pem'), 'utf8'), v1.certPem);
    assert.equal(assertCurrentComplete(stateDir, 'web'), 1);
  });

  void test('activate refuses a version that is not installed or has expired, leaving current as it was', async () => {
    const stateDir = tempDir();
    const clock = new ManualClock(Date.now());
    const inst = installer(stateDir, undefined, clock);
    await inst.install(await makeBundle({ name: 'web', version: 1, notAfter: new Date(Date.now() + 10 * DAY) }));
    await inst.install(await makeBundle({ name: 'web', version: 2 }));
    await assert.rejects(inst.activate('web', 7), (err) => isCertfleetError(err, 'NOT_FOUND'));
    clock.advance(11 * DAY);
    await assert.rejects(inst.activate('web', 1), (err) => isCertfleetError(err, 'BUNDLE_EXPIRED'));
    assert.equal((await inst.current('web'))?.version, 2);
  });

  void test('installs of one certificate issued concurrently are applied one at a time, in call order', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    const bundles = await Promise.all([1, 2, 3, 4, 5].map((version) => makeBundle({ name: 'web', version })));
    const results = await Promise.all(bundles.map((b) => inst.install(b)));
    assert.deepEqual(results.map((r) => r.previousVersion), [null, 1, 2, 3, 4]);
    assert.equal((await inst.current('web'))?.version, 5);
  });

  void test('leftovers of a crashed install (temp dir, temp link) do not disturb current and are removed by the next install', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    await inst.install(await makeBundle({ name: 'web', version: 1 }));
    const nameDir = path.join(stateDir, 'certs', 'web');
    // What a crash in the middle of writing v2, and one between symlink() and rename(), leave.
    fs.mkdirSync(path.join(nameDir, 'versions', '.tmp-2-deadbeef'));
    fs.writeFileSync(path.join(nameDir, 'versions', '.tmp-2-deadbeef', 'cert.pem'), '-----BEGIN CERT');
    fs.symlinkSync('versions/2', path.join(nameDir, '.current-cafebabe'));
    assert.equal((await inst.current('web'))?.version, 1);
    assert.deepEqual(await inst.versions('web'), [1]);
    await inst.install(await makeBundle({ name: 'web', version: 2 }));
    assert.deepEqual(leftovers(stateDir, 'web'), []);
    assert.equal(assertCurrentComplete(stateDir, 'web'), 2);
  });

  void test('a crash after a version is written but before current moves is completed by re-installing that version', async () => {
    const stateDir = tempDir();
    const inst = installer(stateDir);
    await inst.install(await makeBundle({ name: 'web', version: 1 }));
    const v2 = await makeBundle({ name: 'web', version: 2 });
    await inst.install(v2);
    // Put current back as the crash would have left it.
    const nameDir = path.join(stateDir, 'certs', 'web');
    fs.symlinkSync('versions/1', path.join(nameDir, 'current.tmp'));
    fs.renameSync(path.join(nameDir, 'current.tmp'), path.join(nameDir, 'current'));
    assert.equal((await inst.current('web'))?.version, 1);
    const result = await inst.install(v2);
    assert.equal(result.reused, true);
    assert.equal(result.changed, true);
    assert.equal(assertCurrentComplete(stateDir, 'web'), 2);
  });

  void test('an installer process killed at random moments always leaves current on a complete version', async () => {
    const stateDir = tempDir();
    const self = fileURLToPath(import.meta.url);
    let last = 0;
    for (let round = 0; round < 3; round++) {
      const child = startProcess('install-crash', process.execPath, [self], { env: { ...process.env, [CRASH_CHILD_ENV]: stateDir } });
      // Let it get going, then kill it without warning at an arbitrary point of its loop.
      await eventually('child installs', () => {
        if (child.child.exitCode !== null) throw new Error(`installer child exited: ${child.output()}`);
        return (child.output().match(/installed/g)?.length ?? 0) >= 3;
      }, 30_000, 5);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 40)));
      await child.kill();
      const version = assertCurrentComplete(stateDir, 'web');
      assert.ok(version > last, `current moved forward (${last} -> ${version})`);
      last = version;
    }
    const inst = installer(stateDir, 3);
    await inst.install(await makeBundle({ name: 'web', version: last + 100 }));
    assert.deepEqual(leftovers(stateDir, 'web'), []);
    assert.equal(assertCurrentComplete(stateDir, 'web'), last + 100);
  });

  void test('certificate names that could leave the state directory are refused', async () => {
    const inst = installer(tempDir());
    await assert.rejects(inst.current('../etc'), (err) => isCertfleetError(err, 'USAGE_INVALID'));
    await assert.rejects(inst.activate('a/b', 1), (err) => isCertfleetError(err, 'USAGE_INVALID'));
  });
}

/**
 * One controller per file store (controller/store/lock.ts): a live holder is refused by
 * name, a dead one's lock is taken over, a recycled pid does not keep a dead controller's
 * lock, a lock from another host is refused with the file to remove; and end to end, a
 * second `certfleet controller` on a running fleet's file store refuses to start.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { LOCK_FILE, lockFileStore } from '../../controller/store/index.js';
import type { CertfleetError} from '../../shared/errors/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { runCli, startFleet, type Fleet } from '../harness/fleet.js';
import { tempDir } from '../harness/tmp.js';

const LOCK_MODULE = new URL('../../controller/store/lock.js', import.meta.url).href;

/** A separate process that takes the lock and holds it until killed. */
async function holder(dir: string): Promise<ChildProcess> {
  const script = `import { lockFileStore } from ${JSON.stringify(LOCK_MODULE)}; lockFileStore(${JSON.stringify(dir)}, new Date()); process.stdout.write('held\\n'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout, 'data');
  return child;
}

describe('the file store lock', () => {
  test('a live controller holding the store is named, and its lock is taken over once it is killed', async () => {
    const dir = tempDir('certfleet-lock-');
    const child = await holder(dir);
    try {
      assert.throws(
        () => lockFileStore(dir, new Date()),
        (err: CertfleetError) => err.code === ErrorCode.ConfigInvalid && err.message.includes(`in use by another controller (pid ${child.pid}`) && /Vault store/.test(err.message),
      );
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    const lock = lockFileStore(dir, new Date());
    assert.equal((JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid, process.pid);
    assert.equal((fs.statSync(path.join(dir, LOCK_FILE)).mode & 0o777).toString(8), '600');
    lock.release();
    assert.equal(fs.existsSync(path.join(dir, LOCK_FILE)), false);
  });

  test('a recycled pid (a live process with another start time) does not keep a dead controller lock', async () => {
    const dir = tempDir('certfleet-lock-');
    const other = spawn('sleep', ['30']);
    await once(other, 'spawn');
    try {
      fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: other.pid, host: (await import('node:os')).hostname(), procStart: '1', startedAt: '2026-01-01T00:00:00Z' }));
      lockFileStore(dir, new Date()).release();
    } finally {
      other.kill('SIGKILL');
    }
  });

  test('a lock from another host is refused, with the file to remove', () => {
    const dir = tempDir('certfleet-lock-');
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: 4242, host: 'some-other-host.example', procStart: '9', startedAt: '2026-01-01T00:00:00Z' }));
    assert.throws(() => lockFileStore(dir, new Date()), (err: CertfleetError) => err.message.includes('pid 4242 on host some-other-host.example') && err.message.includes(`remove ${path.join(dir, LOCK_FILE)}`));
  });
});

describe('a second controller on a running fleet file store', { timeout: 240_000 }, () => {
  let fleet: Fleet;
  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: ['web.example.test'], agents: 'role=web' }],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] }],
      dns: { 'web.example.test': '127.0.0.2' },
    });
    await fleet.waitUntilReady(1);
  });
  after(async () => {
    await fleet?.stop();
  });

  test('refuses to start, names the running one, and leaves it running', async () => {
    const second = await runCli(['controller', '--config', fleet.controllerConfig]);
    assert.equal(second.code, 3, second.stderr);
    assert.match(second.stderr, /file store .* is in use by another controller \(pid \d+/);
    const certs = await fleet.cliJson<{ certificates: Array<{ name: string }> }>(['certs']);
    assert.equal(certs.certificates.length, 1);
  });
});

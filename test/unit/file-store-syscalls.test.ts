// The file store's writes per issued certificate (issue #13): every file and directory
// entry still fsynced, files 0600, and no chmod where the open mode already set 0600.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../harness/tmp.js';
import { versionInput } from '../contract/cert-store.js';

test('a version and an object: four file fsyncs and two directory fsyncs for the version, one of each for the object, no chmod under umask 022, files 0600', async () => {
  // shared/files skips the chmod when the umask leaves the mode whole.
  const previous = process.umask(0o022);
  try {
    const { FileStore } = await import('../../controller/store/index.js');
    const { silentLogger } = await import('../../shared/log/index.js');
    const root = tempDir('certfleet-store-syscalls-');
    const store = new FileStore({ dir: path.join(root, 'store'), log: silentLogger() });
    await store.putVersion('web', versionInput('web', 'zero'), 0);
    // The folder exists already, as at any issuance after the first.
    await store.putObject('orders/other', { url: 'https://ca.test/order/0' });

    const probe = await fsp.open(path.join(root, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { chmod: (...a: unknown[]) => Promise<void>; sync: () => Promise<void> };
    await probe.close();
    const counts = { chmod: 0, fileSync: 0, dirSync: 0 };
    const chmod = proto.chmod;
    const sync = proto.sync;
    proto.chmod = function (this: unknown, ...a: unknown[]) {
      counts.chmod++;
      return chmod.apply(this, a);
    };
    proto.sync = async function (this: { stat(): Promise<fs.Stats> }) {
      if ((await this.stat()).isDirectory()) counts.dirSync++;
      else counts.fileSync++;
      return sync.apply(this);
    };
    // Directories are fsynced through fs.fsync on a descriptor (shared/files fsyncDir).
    const fsync = fs.fsync;
    (fs as unknown as { fsync: (fd: number, cb: fs.NoParamCallback) => void }).fsync = (fd, cb) => {
      if (fs.fstatSync(fd).isDirectory()) counts.dirSync++;
      else counts.fileSync++;
      fsync(fd, cb);
    };
    try {
      await store.putVersion('web', versionInput('web', 'one'), 1);
      assert.deepEqual(counts, { chmod: 0, fileSync: 4, dirSync: 2 }, 'a version');
      counts.fileSync = counts.dirSync = 0;
      await store.putObject('orders/web', { url: 'https://ca.test/order/1' });
      await store.putObject('orders/web', { url: 'https://ca.test/order/2' });
      assert.deepEqual(counts, { chmod: 0, fileSync: 2, dirSync: 2 }, 'two writes of an object');
    } finally {
      proto.chmod = chmod;
      proto.sync = sync;
      (fs as unknown as { fsync: typeof fsync }).fsync = fsync;
    }
    const dir = path.join(root, 'store', 'certs', 'web', '2');
    for (const f of fs.readdirSync(dir)) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
    assert.equal(fs.statSync(path.join(root, 'store', 'objects', 'orders', 'web.json')).mode & 0o777, 0o600);
    assert.deepEqual(await store.getObject('orders/web'), { url: 'https://ca.test/order/2' });
    assert.equal((await store.latest('web'))?.version, 2);
  } finally {
    process.umask(previous);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDir, writeDurableAll, writeFileReplace } from '../../shared/files/index.js';
import { tempDir } from '../harness/tmp.js';

const mode = (p: string): string => (fs.statSync(p).mode & 0o777).toString(8);
const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

/** Runs `fn` under `umask`, restoring the previous one after. */
async function underUmask<T>(umask: number, fn: () => Promise<T> | T): Promise<T> {
  const before = process.umask(umask);
  try {
    return await fn();
  } finally {
    process.umask(before);
  }
}

void test('writeDurableAll creates every file with its content and exact mode whatever the umask, and fsyncs the directory', async () => {
  const dir = tempDir();
  const files = [
    { file: path.join(dir, 'public.pem'), data: 'public\n', mode: 0o644 },
    { file: path.join(dir, 'secret.pem'), data: 'secret\n', mode: 0o600 },
    { file: path.join(dir, 'empty'), data: '', mode: 0o640 },
  ];
  const fds = openFds();
  // A umask that would strip group/other bits (0644 -> 0600) and one that strips nothing.
  await underUmask(0o077, () => writeDurableAll(files.slice(0, 2), dir));
  await underUmask(0o000, () => writeDurableAll(files.slice(2)));
  assert.equal(openFds(), fds, 'every descriptor closed');
  for (const f of files) {
    assert.equal(fs.readFileSync(f.file, 'utf8'), f.data, f.file);
    assert.equal(mode(f.file), f.mode.toString(8), f.file);
  }
});

void test('writeDurableAll refuses to overwrite a file (EEXIST), closes what it opened and leaves the existing file alone', async () => {
  const dir = tempDir();
  const existing = path.join(dir, 'b');
  fs.writeFileSync(existing, 'old');
  const fds = openFds();
  await assert.rejects(
    writeDurableAll([
      { file: path.join(dir, 'a'), data: 'new a', mode: 0o600 },
      { file: existing, data: 'new b', mode: 0o600 },
    ], dir),
    (err: NodeJS.ErrnoException) => err.code === 'EEXIST',
  );
  assert.equal(openFds(), fds, 'the descriptor of the file created before the failure is closed');
  assert.equal(fs.readFileSync(existing, 'utf8'), 'old');
});

void test('writeFileReplace replaces a file atomically with an exact mode and leaves no temporary file', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'loaded.json');
  await underUmask(0o077, () => writeFileReplace(file, 'one\n', 0o644));
  assert.equal(fs.readFileSync(file, 'utf8'), 'one\n');
  assert.equal(mode(file), '644');
  writeFileReplace(file, 'two\n', 0o644);
  assert.equal(fs.readFileSync(file, 'utf8'), 'two\n');
  assert.deepEqual(fs.readdirSync(dir), ['loaded.json']);
  // A directory that does not exist: the error comes through, nothing is left behind.
  assert.throws(() => writeFileReplace(path.join(dir, 'missing', 'x'), 'x', 0o644), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  assert.deepEqual(fs.readdirSync(dir), ['loaded.json']);
});

void test('fsyncDir syncs a directory and closes it; a missing directory rejects', async () => {
  const dir = tempDir();
  const fds = openFds();
  await fsyncDir(dir);
  assert.equal(openFds(), fds);
  await assert.rejects(fsyncDir(path.join(dir, 'missing')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
});

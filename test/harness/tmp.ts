/** Temporary directories for tests, removed at process exit unless CERTFLEET_KEEP_TMP=1. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made: string[] = [];
process.once('exit', () => {
  if (process.env['CERTFLEET_KEEP_TMP'] === '1') return;
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under the system temp dir. */
export function tempDir(prefix = 'certfleet-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

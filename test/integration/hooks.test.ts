import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { EXIT_NOT_STARTED, OUTPUT_TAIL_BYTES, hookEnvironment, runHook } from '../../agent/hooks/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

/** True while `pid` is a live (not zombie) process. */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after the ")" closing the command name, is the state; Z is a zombie.
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function pidFrom(file: string): Promise<number> {
  return eventually('pid file', () => {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '';
    return text === '' ? undefined : Number(text);
  }, 10_000, 10);
}

void test('a string command runs through /bin/sh and its exit code is reported, zero or not', async () => {
  const ok = await runHook({ command: 'exit 0', timeoutMs: 10_000 }, {});
  assert.equal(ok.ran, true);
  assert.equal(ok.exitCode, 0);
  assert.equal(ok.timedOut, false);
  assert.equal(ok.signal, '');
  const failed = await runHook({ command: 'echo reloading; echo broken config >&2; exit 3', timeoutMs: 10_000 }, {});
  assert.equal(failed.ran, true);
  assert.equal(failed.exitCode, 3);
  assert.match(failed.outputTail, /reloading\n/);
  assert.match(failed.outputTail, /broken config\n/);
});

void test('an array command runs the program directly, without a shell interpreting its arguments', async () => {
  const outcome = await runHook({ command: ['/bin/echo', '$HOME', '; exit 9'], timeoutMs: 10_000 }, {});
  assert.equal(outcome.exitCode, 0);
  assert.equal(outcome.outputTail, '$HOME ; exit 9\n');
});

void test('a program that does not exist is reported as not run with exit code 127 and the reason', async () => {
  const outcome = await runHook({ command: ['/nonexistent/reload-nginx'], timeoutMs: 10_000 }, {});
  assert.equal(outcome.ran, false);
  assert.equal(outcome.exitCode, EXIT_NOT_STARTED);
  assert.match(outcome.outputTail, /ENOENT/);
  const badCwd = await runHook({ command: 'true', timeoutMs: 10_000 }, {}, { cwd: '/nonexistent-dir' });
  assert.equal(badCwd.ran, false);
  assert.equal(badCwd.exitCode, EXIT_NOT_STARTED);
  const empty = await runHook({ command: [], timeoutMs: 10_000 }, {});
  assert.equal(empty.ran, false);
});

void test('the hook sees the given variables on top of the agent environment, and runs in the given cwd', async () => {
  const dir = tempDir();
  const outcome = await runHook(
    { command: 'echo "$RENEWED_LINEAGE|$CERTFLEET_VERSION|$(pwd)"; test -n "$PATH"', timeoutMs: 10_000 },
    { RENEWED_LINEAGE: '/state/certs/web/current', CERTFLEET_VERSION: '7' },
    { cwd: dir },
  );
  assert.equal(outcome.exitCode, 0, outcome.outputTail);
  assert.equal(outcome.outputTail, `/state/certs/web/current|7|${fs.realpathSync(dir)}\n`);
});

void test('only the last 4 KiB of combined output are kept', async () => {
  const outcome = await runHook({ command: 'head -c 20000 /dev/zero | tr "\\0" a; echo; echo THE-END >&2', timeoutMs: 10_000 }, {});
  assert.equal(outcome.exitCode, 0);
  assert.equal(Buffer.byteLength(outcome.outputTail), OUTPUT_TAIL_BYTES);
  assert.ok(outcome.outputTail.endsWith('a\nTHE-END\n'));
});

void test('a hook past its timeout has its whole process group terminated, background children included', async () => {
  const dir = tempDir();
  const pidFile = path.join(dir, 'sleep.pid');
  const outcome = await runHook({ command: `sleep 300 & echo $! > ${pidFile}; echo started; wait`, timeoutMs: 500 }, {});
  assert.equal(outcome.ran, true);
  assert.equal(outcome.timedOut, true);
  assert.equal(outcome.signal, 'SIGTERM');
  assert.match(outcome.outputTail, /started/);
  const sleeper = await pidFrom(pidFile);
  await eventually('background sleep gone', () => !alive(sleeper), 5000, 20);
});

void test('a hook that ignores SIGTERM is killed with SIGKILL after the grace period, with its children', async () => {
  const dir = tempDir();
  const pidFile = path.join(dir, 'sleep.pid');
  const outcome = await runHook({ command: `trap '' TERM; sleep 300 & echo $! > ${pidFile}; wait; wait; wait`, timeoutMs: 300 }, {});
  assert.equal(outcome.timedOut, true);
  assert.equal(outcome.signal, 'SIGKILL');
  assert.equal(outcome.exitCode, -1);
  const sleeper = await pidFrom(pidFile);
  await eventually('background sleep gone', () => !alive(sleeper), 5000, 20);
});

void test('hookEnvironment gives certbot-compatible RENEWED_* variables and certfleet facts', () => {
  const meta: VersionMeta = {
    name: 'web',
    version: 4,
    serial: '1a2b',
    fingerprint: 'ab'.repeat(32),
    names: ['www.example.test', 'example.test'],
    notBefore: '2026-01-01T00:00:00.000Z',
    notAfter: '2026-04-01T00:00:00.000Z',
    issuedAt: '2026-01-01T00:00:00.000Z',
    keyType: 'ecdsa-p256',
  };
  assert.deepEqual(hookEnvironment(meta, '/var/lib/certfleet/certs/web/current'), {
    RENEWED_LINEAGE: '/var/lib/certfleet/certs/web/current',
    RENEWED_DOMAINS: 'www.example.test example.test',
    CERTFLEET_CERT: 'web',
    CERTFLEET_VERSION: '4',
    CERTFLEET_FINGERPRINT: 'ab'.repeat(32),
    CERTFLEET_SERIAL: '1a2b',
    CERTFLEET_NOT_AFTER: '2026-04-01T00:00:00.000Z',
  });
});

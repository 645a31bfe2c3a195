/**
 * Operators with roles, against a real controller (Pebble, NATS, one agent with nginx)
 * driven through the CLI: the admin creates a viewer and an operator; the operator renews
 * and rolls back, the viewer is refused (PERMISSION_DENIED, nothing changed); a revoked
 * operator is refused at its next call; a role change holds at once; events name the
 * operator; and a controller upgraded in place (no operator registry yet) keeps accepting
 * its existing admin-credentials.json as the admin.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, runCli, startFleet, type CliResult, type Fleet } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';

interface HistoryJson {
  pinnedVersion: number;
  versions: Array<{ version: { version: number }; desired: boolean }>;
}
interface EventJson {
  type: string;
  cert: string;
  version: number;
  actor: string;
  message: string;
}

describe('operator credentials with roles', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let viewer: string;
  let operator: string;

  /** Runs the CLI with the credentials in `file`. */
  const as = (file: string, args: string[]): Promise<CliResult> => runCli(args, { ...process.env, CERTFLEET_CREDENTIALS: file });
  const history = (): Promise<HistoryJson> => fleet.cliJson<HistoryJson>(['history', 'web']);
  const events = async (): Promise<EventJson[]> => (await fleet.cliJson<{ events: EventJson[] }>(['events', '--limit', '200'])).events;

  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: ['www.example.test'], agents: 'role=web' }],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] }],
      dns: { 'www.example.test': '127.0.0.2' },
    });
    viewer = path.join(fleet.root, 'vera.json');
    operator = path.join(fleet.root, 'otto.json');
  });

  after(async () => {
    await fleet?.stop();
  });

  test('the admin creates a viewer and an operator; each file is 0600 and says who it is', async () => {
    const v = await fleet.cli(['operators', 'create', 'vera', '--role', 'viewer', '--out', viewer]);
    assert.equal(v.code, 0, v.stderr);
    const o = await fleet.cli(['operators', 'create', 'otto', '--role', 'operator', '--out', operator]);
    assert.equal(o.code, 0, o.stderr);
    for (const f of [viewer, operator]) assert.equal(fs.statSync(f).mode & 0o777, 0o600, f);
    assert.equal((await as(viewer, ['whoami'])).stdout, 'vera (role viewer)\n');
    assert.equal((await as(operator, ['whoami'])).stdout, 'otto (role operator)\n');
    assert.equal((await fleet.cli(['whoami'])).stdout, 'admin (role admin)\n');
    const list = await fleet.cliJson<{ operators: Array<{ name: string; role: string; createdBy: string; revoked: boolean }> }>(['operators', 'list']);
    assert.deepEqual(
      list.operators.map((x) => [x.name, x.role, x.createdBy, x.revoked]),
      [['admin', 'admin', 'controller', false], ['otto', 'operator', 'admin', false], ['vera', 'viewer', 'admin', false]],
    );
    // A viewer reads, but manages nothing.
    assert.equal((await as(viewer, ['certs'])).code, 0);
    const denied = await as(viewer, ['operators', 'list']);
    assert.equal(denied.code, 5, denied.stderr);
    assert.match(denied.stderr, /operator vera has role viewer, which may not list operators \(ListOperators\); it needs role admin\ncode: PERMISSION_DENIED\n/);
    const token = await as(operator, ['token', 'create', 'edge-x']);
    assert.equal(token.code, 5, token.stderr);
    assert.match(token.stderr, /operator otto has role operator, which may not create enrolment tokens/);
  });

  test('a viewer follows events as a stream: the recent ones, then a new one as it is published; Ctrl-C ends it with 0', async () => {
    const child = spawn(process.execPath, [CLI, 'events', '--follow', '--json', '--limit', '3'], {
      env: { ...process.env, CERTFLEET_CREDENTIALS: viewer },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const lines = (): EventJson[] => stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as EventJson);
      await eventually('the recent events', () => lines().length === 3, 20_000);
      const created = await fleet.cli(['token', 'create', 'follow-probe', '--label', 'role=none']);
      assert.equal(created.code, 0, created.stderr);
      await eventually('the new event arrives on the stream', () => lines().some((e) => e.type === 'token-created' && e.message.includes('follow-probe')), 20_000);
      assert.equal(new Set(lines().map((e) => JSON.stringify(e))).size, lines().length, 'no event printed twice');
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0, stderr);
    assert.equal(stderr, '');
  });

  test('an operator renews and rolls back; a viewer cannot roll back and nothing changes; events name the operator', async () => {
    try {
      await eventually('version 1 issued', async () => (await history()).versions.length === 1, 120_000, 500);
      const renew = await as(operator, ['renew', 'web']);
      assert.equal(renew.code, 0, renew.stderr);
      await eventually('version 2 issued and desired', async () => (await history()).versions.find((v) => v.desired)?.version.version === 2, 120_000, 500);

      const beforeDenied = await history();
      const rolledBackBefore = (await events()).filter((e) => e.type === 'rolled-back').length;
      const denied = await as(viewer, ['rollback', 'web']);
      assert.equal(denied.code, 5, denied.stderr);
      assert.equal(
        denied.stderr,
        'certfleet: operator vera has role viewer, which may not roll certificates back (Rollback); it needs role operator or above\ncode: PERMISSION_DENIED\n',
      );
      assert.deepEqual(await history(), beforeDenied, 'no pin, same desired version');
      assert.equal((await events()).filter((e) => e.type === 'rolled-back').length, rolledBackBefore, 'no rolled-back event');

      const rb = await as(operator, ['rollback', 'web']);
      assert.equal(rb.code, 0, rb.stderr);
      assert.equal((await history()).pinnedVersion, 1);

      const all = await events();
      const byType = (t: string): EventJson | undefined => all.filter((e) => e.type === t).at(-1);
      assert.equal(byType('rolled-back')?.actor, 'otto');
      assert.match(byType('rolled-back')?.message ?? '', /by otto/);
      assert.equal(byType('renew-requested')?.actor, 'otto');
      const created = all.filter((e) => e.type === 'operator-created');
      assert.deepEqual(created.map((e) => [e.actor, e.message]), [
        ['admin', 'operator vera created with role viewer by admin'],
        ['admin', 'operator otto created with role operator by admin'],
      ]);
      assert.equal(all.find((e) => e.type === 'issued')?.actor, '', 'what the controller did on its own has no actor');
      // The human output shows the actor in its own column.
      const text = await fleet.cli(['events', '--cert', 'web']);
      assert.match(text.stdout, /^\S+  rolled-back  web  -  v1  otto  rolled back from version 2 to 1 by otto \(pinned\)$/m);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });

  test('a revoked operator is refused at its next call; a role change holds at once', async () => {
    const rev = await fleet.cli(['operators', 'revoke', 'otto']);
    assert.equal(rev.code, 0, rev.stderr);
    const refused = await as(operator, ['release', 'web']);
    assert.equal(refused.code, 5, refused.stderr);
    assert.match(refused.stderr, /^certfleet: operator otto was revoked by admin at \S+\ncode: UNAUTHENTICATED\n$/);
    assert.equal((await as(operator, ['status'])).code, 5, 'reads too');
    assert.equal((await history()).pinnedVersion, 1, 'the refused release changed nothing');

    const last = await fleet.cli(['operators', 'revoke', 'admin']);
    assert.equal(last.code, 2, last.stderr);
    assert.match(last.stderr, /last active admin/);

    const promote = await fleet.cli(['operators', 'set-role', 'vera', '--role', 'operator']);
    assert.equal(promote.code, 0, promote.stderr);
    const rel = await as(viewer, ['release', 'web']);
    assert.equal(rel.code, 0, rel.stderr);
    assert.equal((await history()).pinnedVersion, 0);
    const all = await events();
    assert.equal(all.filter((e) => e.type === 'released').at(-1)?.actor, 'vera');
    assert.equal(all.filter((e) => e.type === 'operator-revoked').at(-1)?.message, 'operator otto revoked by admin');
    assert.equal(all.filter((e) => e.type === 'operator-role-changed').at(-1)?.message, 'operator vera changed from role viewer to operator by admin');
  });

  test('a controller upgraded in place, with no operator registry yet, accepts its existing admin credentials as admin', async () => {
    const registry = path.join(fleet.controllerState, 'store', 'objects', 'operators');
    assert.ok(fs.existsSync(path.join(registry, 'admin.json')), `the registry lives in ${registry}`);
    const credsBefore = fs.readFileSync(fleet.credentials, 'utf8');
    // What a controller from before roles left behind: a CA and admin-credentials.json, no
    // operator records. (Removed just before the restart; nothing writes them meanwhile.)
    fs.rmSync(registry, { recursive: true });
    await fleet.restartController();
    assert.equal(fs.readFileSync(fleet.credentials, 'utf8'), credsBefore, 'the credentials file is kept');
    await eventually('controller answers', async () => (await fleet.cli(['whoami'])).code === 0, 30_000, 300);
    assert.equal((await fleet.cli(['whoami'])).stdout, 'admin (role admin)\n');
    const created = await fleet.cli(['operators', 'create', 'after', '--role', 'viewer', '--out', path.join(fleet.root, 'after.json')]);
    assert.equal(created.code, 0, created.stderr);
    // The other operators' records went with the registry: their certificates are refused, not trusted by default.
    const vera = await as(viewer, ['status']);
    assert.equal(vera.code, 5, vera.stderr);
    assert.match(vera.stderr, /operator vera is not registered/);
  });
});

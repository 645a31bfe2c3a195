/**
 * deploy/install-agent.sh (issue 11), exercised honestly without systemd: `--root DIR
 * --no-start` installs into a directory standing for the node's root. The package is the
 * real `npm pack` of this repository (dependencies bundled); the controller, Pebble and
 * NATS are real; the agent installed from the package is started from there and must
 * come online. What is not exercised here: `systemctl enable --now` (step 6 of the
 * script) — there is no systemd on the test machine.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { FileStore } from '../../controller/store/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { makeBundle } from '../harness/certs.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { eventually, startProcess } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

const execFileAsync = promisify(execFile);
// Compiled to dist/test/e2e/: the repository root is three levels up.
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = path.join(REPO, 'deploy', 'install-agent.sh');

async function script(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await execFileAsync('bash', [SCRIPT, ...args], { timeout: 120_000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? String(err)}` };
  }
}

function mode(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

let fleet: Fleet;
let pkg: string;
before(async () => {
  fleet = await startFleet({ certificates: [{ name: 'www', names: ['www.example.test'], agents: 'role=lb' }], agents: [], dns: {} });
  // No agent answers HTTP-01 here, so v1 is written to the store; the controller publishes it.
  const store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
  const bundle = await makeBundle({ name: 'www', version: 1, names: ['www.example.test'] });
  const { version, ...meta } = bundle.meta;
  assert.equal(version, 1);
  await store.putVersion('www', { certPem: bundle.certPem, chainPem: bundle.chainPem, keyPem: bundle.keyPem, meta }, 0);
  await eventually('www v1 published', async () => (await fleet.cliJson<{ certificates: Array<{ name: string; current?: { version: number } | null }> }>(['certs'])).certificates.some((c) => c.name === 'www' && c.current?.version === 1), 60_000, 500);
  const dest = tempDir('certfleet-pack-');
  const { stdout } = await execFileAsync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dest], { cwd: REPO, timeout: 300_000, maxBuffer: 64 << 20 });
  pkg = path.join(dest, stdout.trim().split('\n').pop() ?? '');
  assert.ok(fs.existsSync(pkg), `npm pack made ${pkg}`);
});
after(async () => {
  await fleet.stop();
});

async function token(name: string, label: string): Promise<string> {
  const file = path.join(tempDir(), 'token');
  fs.writeFileSync(file, (await fleet.cliJson<{ token: string }>(['token', 'create', name, '--label', label])).token, { mode: 0o600 });
  return file;
}

test('install-agent.sh installs the packed code, config, state, unit and identity, prints what the node will serve, and is idempotent; --uninstall keeps config and state', { timeout: 300_000 }, async () => {
  const root = tempDir('certfleet-root-');
  const tokenFile = await token('edge-9', 'role=lb');
  const args = ['--root', root, '--no-start', '--package', pkg, '--controller', `127.0.0.1:${fleet.apiPort}`, '--server-name', 'localhost', '--ca-file', path.join(fleet.controllerState, 'ca.pem'), '--token-file', tokenFile, '--labels', 'role=lb'];
  const first = await script(args);
  assert.equal(first.code, 0, first.out);
  assert.match(first.out, /^enrolled as edge-9$/m);
  assert.match(first.out, /^labels: role=lb$/m);
  assert.match(first.out, /^will serve: www \(www\.example\.test\)$/m);

  const code = path.join(root, 'opt', 'certfleet');
  assert.ok(fs.existsSync(path.join(code, 'node_modules', 'certfleet-sd-notify', 'prebuilds', 'linux-x64', 'certfleet_sd_notify.node')), 'the prebuilt addon is in the package');
  assert.equal(fs.existsSync(path.join(code, 'dist', 'test')), false, 'no tests in the package');
  assert.equal(fs.readFileSync(path.join(root, 'etc', 'systemd', 'system', 'certfleet-agent.service'), 'utf8'), fs.readFileSync(path.join(REPO, 'deploy', 'systemd', 'certfleet-agent.service'), 'utf8'));
  const config = path.join(root, 'etc', 'certfleet', 'agent.yaml');
  assert.match(fs.readFileSync(config, 'utf8'), /^stateDir: \/var\/lib\/certfleet-agent$/m, 'the config names the target paths');
  const state = path.join(root, 'var', 'lib', 'certfleet-agent');
  assert.equal(mode(state), 0o700);
  assert.equal(mode(path.join(state, 'identity', 'key.pem')), 0o600);

  // The agent from the installed package runs and reports to the controller.
  const runConfig = path.join(tempDir(), 'agent.yaml');
  fs.writeFileSync(runConfig, fs.readFileSync(config, 'utf8').replace('stateDir: /', `stateDir: ${root}/`).replace('caFile: /', `caFile: ${root}/`) + 'nats: { servers: ["nats://127.0.0.1:1"] }\nreportInterval: 1s\n');
  const agent = startProcess('installed agent', process.execPath, [path.join(code, 'dist', 'cli', 'main.js'), 'agent', '--config', runConfig], { cwd: tempDir() });
  try {
    await eventually('edge-9 online', async () => (await fleet.cliJson<{ agents: Array<{ name: string; online: boolean }> }>(['agents'])).agents.some((a) => a.name === 'edge-9' && a.online), 60_000, 500).catch((err: Error) => {
      throw new Error(`${err.message}\n${agent.output()}`);
    });
  } finally {
    await agent.stop();
  }

  // Again: the used token is not redeemed twice, an edited config is kept.
  fs.appendFileSync(config, '# edited by the operator\n');
  const second = await script(args);
  assert.equal(second.code, 0, second.out);
  assert.match(second.out, /already enrolled: \{"name":"edge-9"/);
  assert.match(fs.readFileSync(config, 'utf8'), /# edited by the operator/);

  const removed = await script(['--uninstall', '--root', root, '--no-start']);
  assert.equal(removed.code, 0, removed.out);
  assert.equal(fs.existsSync(code), false);
  assert.equal(fs.existsSync(path.join(root, 'etc', 'systemd', 'system', 'certfleet-agent.service')), false);
  assert.ok(fs.existsSync(config) && fs.existsSync(path.join(state, 'identity', 'key.pem')), 'configuration and identity kept');
  assert.equal((await script(['--uninstall', '--root', root, '--no-start'])).code, 0, 'uninstalling twice is fine');
});

test('install-agent.sh stops before starting when the token carries other labels than --labels', { timeout: 300_000 }, async () => {
  const root = tempDir('certfleet-root-');
  const tokenFile = await token('edge-10', 'role=web');
  const res = await script(['--root', root, '--no-start', '--package', pkg, '--controller', `127.0.0.1:${fleet.apiPort}`, '--server-name', 'localhost', '--ca-file', path.join(fleet.controllerState, 'ca.pem'), '--token-file', tokenFile, '--labels', 'role=lb']);
  assert.notEqual(res.code, 0);
  assert.match(res.out, /the token gave labels 'role=web', not the expected 'role=lb'/);
  assert.doesNotMatch(res.out, /not started \(--no-start\)/);
});

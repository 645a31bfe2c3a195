/**
 * Prometheus' own checker on what certfleet ships and serves: `promtool check rules` on
 * deploy/prometheus/alerts.yml, and `promtool check metrics` (its lint: counters end in
 * _total, base units, no reserved suffixes, well-formed text) on a real scrape of a
 * running controller's and a running agent's /metrics (Pebble, NATS, nginx). promtool
 * comes from the Debian package `prometheus` (test/run.sh and .ci/run install it); when
 * it is missing this test fails, it never skips.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { freePort } from '../harness/process.js';

// Compiled to dist/test/integration/: the repository root is three levels up.
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Runs promtool with `args` (and `input` on stdin); its exit code and output. */
function promtool(args: string[], input?: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(input ?? '');
  });
}

test('promtool is installed (Debian package prometheus)', () => {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  assert.equal(r.error, undefined, 'promtool not found: install the Debian package `prometheus` (test/run.sh does)');
  assert.equal(r.status, 0);
});

test('promtool check rules accepts deploy/prometheus/alerts.yml', async () => {
  const r = await promtool(['check', 'rules', 'deploy/prometheus/alerts.yml']);
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /SUCCESS: \d+ rules found/);
});

test('promtool check metrics refuses a bad exposition (the check can fail)', async () => {
  const r = await promtool(['check', 'metrics'], '# HELP certfleet_x_count x\n# TYPE certfleet_x_count counter\ncertfleet_x_count 1\n');
  assert.notEqual(r.code, 0);
  assert.match(r.output, /_total/);
});

describe('promtool check metrics on a running controller and agent', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let controllerPort: number;
  let agentPort: number;

  before(async () => {
    controllerPort = await freePort('127.0.0.1');
    agentPort = await freePort('127.0.0.2');
    fleet = await startFleet({
      certificates: [{ name: 'web', names: ['www.example.test'], agents: 'role=web' }],
      controllerYaml: [`metrics: { listen: "127.0.0.1:${controllerPort}" }`],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'], agentYaml: [`metrics: { listen: "127.0.0.2:${agentPort}" }`] }],
      dns: { 'www.example.test': '127.0.0.2' },
    });
    await fleet.waitUntilReady(1);
  });

  after(async () => {
    await fleet?.stop();
  });

  for (const [who, url] of [
    ['controller', () => `http://127.0.0.1:${controllerPort}/metrics`],
    ['agent', () => `http://127.0.0.2:${agentPort}/metrics`],
  ] as const) {
    test(`the ${who}'s scrape passes promtool check metrics`, async () => {
      const res = await fetch(url());
      assert.equal(res.status, 200);
      const body = await res.text();
      // Not an empty scrape: the families an issuance and an install fill in are there.
      assert.match(body, who === 'controller' ? /^certfleet_acme_client_requests_total\{.*path="newOrder"/m : /^certfleet_agent_installs_total\{cert="web",outcome="installed"\} [1-9]/m);
      const r = await promtool(['check', 'metrics'], body);
      assert.equal(r.code, 0, `promtool check metrics on the ${who}:\n${r.output}`);
      assert.equal(r.output.trim(), '', r.output);
    });
  }
});

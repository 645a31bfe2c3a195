/**
 * Agents and the CLI with a list of controller addresses (issue #12, HA spec decision 9),
 * all real: Pebble, nats-server, the controller and an agent process, driven by the CLI.
 * Two controllers at once need the HA core (lease, shared store); until it lands the
 * second controller is the same one moved: the file store's controller stops on port A
 * and starts again on port B with the same state.
 *
 * The agent's `controller.addresses` and the operator's credentials `servers` are
 * [D, A, B]: D is dead throughout, B is dead until the controller moves there.
 *  1. enrolment, the first sync and `certfleet status`/`certs` work through the list
 *     (past the dead D, to A);
 *  2. the controller moves from A to B; `certfleet renew` through the same list reaches
 *     B, and the running agent (no restart) fetches and installs the new version from B
 *     and reports it there, logging one switch to B.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, runCli, startFleet, type Fleet } from '../harness/fleet.js';
import { eventually, freePort, startProcess, waitForPort, type Started } from '../harness/process.js';

interface CertsJson {
  certificates: Array<{ name: string; state: string; agentsCurrent: number; agentsAssigned: number; desiredVersion: number }>;
}

describe('agents and the CLI fail over along their list of controller addresses', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let agent: Started | undefined;
  let movedController: Started | undefined;
  let dead: string;
  let portB: number;
  let addressA: string;
  let addressB: string;
  let agentDir: string;
  let credsFile: string;
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, CERTFLEET_CREDENTIALS: credsFile });
  const logs = (): string => `${fleet.logs()}\n--- controller on B ---\n${movedController?.output() ?? ''}\n--- edge-1 ---\n${agent?.output() ?? ''}`;
  const certs = async (): Promise<CertsJson['certificates']> => {
    const r = await runCli(['certs', '--json'], env());
    if (r.code !== 0) throw new Error(`certfleet certs exited ${r.code}: ${r.stderr}`);
    return (JSON.parse(r.stdout) as CertsJson).certificates;
  };

  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: ['www.example.test'], agents: 'role=web' }],
      agents: [],
      dns: { 'www.example.test': '127.0.0.31' },
    });
    dead = `127.0.0.1:${await freePort()}`;
    portB = await freePort();
    addressA = `127.0.0.1:${fleet.apiPort}`;
    addressB = `127.0.0.1:${portB}`;
    // The operator's credentials with the list (the admin's own certificate and key).
    const admin = JSON.parse(fs.readFileSync(fleet.credentials, 'utf8')) as Record<string, unknown>;
    credsFile = path.join(fleet.root, 'operator-list.json');
    fs.writeFileSync(credsFile, JSON.stringify({ ...admin, servers: [dead, addressA, addressB] }), { mode: 0o600 });
    agentDir = path.join(fleet.root, 'edge-1');
    fs.mkdirSync(agentDir, { recursive: true });
  });

  after(async () => {
    await agent?.stop();
    await movedController?.stop();
    await fleet?.stop();
  });

  it('enrols, converges and answers `status` through [dead, A, B]', async () => {
    const configFile = path.join(agentDir, 'agent.yaml');
    fs.writeFileSync(
      configFile,
      [
        `stateDir: ${path.join(agentDir, 'state')}`,
        'log: { level: debug }',
        `controller: { addresses: ["${dead}", "${addressA}", "${addressB}"], caFile: ${path.join(fleet.controllerState, 'ca.pem')}, serverName: localhost }`,
        `nats: { servers: ["${fleet.nats.url}"] }`,
        `http01: { listen: "127.0.0.31:${fleet.httpPort}" }`,
        'resyncInterval: 2s',
        'reportInterval: 1s',
        '',
      ].join('\n'),
    );
    const status = await runCli(['status'], env());
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stderr, new RegExp(`using controller ${addressA.replace(/\./g, '\\.')}: controller ${dead.replace(/\./g, '\\.')}: controller unreachable`));
    const token = await runCli(['token', 'create', 'edge-1', '--label', 'role=web', '--json'], env());
    assert.equal(token.code, 0, token.stderr);
    const enrolled = await runCli(['agent', 'enroll', '--config', configFile, '--token', (JSON.parse(token.stdout) as { token: string }).token]);
    assert.equal(enrolled.code, 0, `${enrolled.stderr}\n${logs()}`);
    agent = startProcess('edge-1', process.execPath, [CLI, 'agent', '--config', configFile]);
    try {
      await eventually(
        'web issued and installed on edge-1, seen through the list',
        async () => (await certs()).some((c) => c.name === 'web' && c.state === 'ready' && c.agentsAssigned === 1 && c.agentsCurrent === 1),
        150_000,
        500,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${logs()}`);
    }
    assert.ok(fs.existsSync(path.join(agentDir, 'state', 'certs', 'web', 'current', 'fullchain.pem')));
    assert.match(agent.output(), /controller switched/);
    assert.doesNotMatch(agent.output(), new RegExp(`"to":"${addressB.replace(/\./g, '\\.')}"`), 'B was never used while A answered');
  });

  it('the controller moves from A to B: the running agent converges on a renewal through B without a restart, with one switch logged', async () => {
    assert.ok(agent, 'the agent of the first test runs');
    const before = (await certs()).find((c) => c.name === 'web')?.desiredVersion ?? 0;
    assert.ok(before >= 1);
    await fleet.stopController();
    const yaml = fs.readFileSync(fleet.controllerConfig, 'utf8');
    const movedYaml = path.join(fleet.root, 'controller-b.yaml');
    assert.ok(yaml.includes(`listen: "${addressA}"`), 'the fleet config names A');
    fs.writeFileSync(movedYaml, yaml.replace(`listen: "${addressA}"`, `listen: "${addressB}"`));
    movedController = startProcess('controller-b', process.execPath, [CLI, 'controller', '--config', movedYaml]);
    await waitForPort('127.0.0.1', portB, 30_000, movedController);

    const renew = await runCli(['renew', 'web'], env());
    assert.equal(renew.code, 0, `${renew.stderr}\n${logs()}`);
    assert.match(renew.stderr, new RegExp(`using controller ${addressB.replace(/\./g, '\\.')}`));
    try {
      await eventually(
        'the renewed version installed on edge-1 and reported to B',
        async () => (await certs()).some((c) => c.name === 'web' && c.desiredVersion > before && c.state === 'ready' && c.agentsCurrent === 1),
        150_000,
        500,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${logs()}`);
    }
    const switchesToB = agent.output().split('\n').filter((l) => l.includes('controller switched') && l.includes(`"to":"${addressB}"`));
    assert.equal(switchesToB.length, 1, `one switch to B:\n${agent.output()}`);
    assert.equal(agent.child.exitCode, null, 'the agent was not restarted');
  });
});

/**
 * An agent whose first NATS connect fails joins NATS once a server comes up (issue #13):
 * it used to poll the controller over gRPC for the rest of its life. A real nats-server is
 * started on the agent's configured port only after the agent has said NATS is unreachable;
 * the agent must connect and start watching the desired bucket (created here as a
 * controller would), and the server must list its connection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLI } from '../harness/fleet.js';
import { startNats, type NatsServer } from '../harness/nats.js';
import { writeLoneAgent } from '../harness/lone-agent.js';
import { eventually, startProcess } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { connectNats, openKv, type NatsHandle } from '../../shared/nats/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { Bucket } from '../../shared/wire/index.js';

test('an agent whose first NATS connect failed joins NATS when a server comes up', { timeout: 120_000 }, async () => {
  const dir = tempDir('certfleet-late-nats-');
  const { config, natsPort } = await writeLoneAgent(dir, 'edge-late');
  const agent = startProcess('agent', process.execPath, [CLI, 'agent', '--config', config]);
  let nats: NatsServer | undefined;
  let admin: NatsHandle | undefined;
  const withOutput = (err: Error): never => {
    throw new Error(`${err.message}\n${agent.output().slice(-4000)}`);
  };
  try {
    await eventually('NATS unreachable at start', () => agent.output().includes('NATS unreachable at start'), 60_000, 200).catch(withOutput);
    await eventually('agent ready', () => agent.output().includes('agent ready'), 60_000, 200).catch(withOutput);
    // Plain mode: the agent has no NATS credentials in this test.
    nats = await startNats({ port: natsPort, auth: 'none' });
    admin = await connectNats({ servers: [nats.url], name: 'test-admin', log: silentLogger() });
    await openKv(admin, Bucket.desired, { create: true, parse: (v) => v });
    await eventually('agent connected to NATS', () => agent.output().includes('nats connected'), 60_000, 200).catch(withOutput);
    await eventually('agent watches NATS', () => agent.output().includes('nats joined; watching desired records'), 60_000, 200).catch(withOutput);
    assert.equal(await Promise.race([agent.exited.then(() => 'exited'), Promise.resolve('running')]), 'running');
  } finally {
    await agent.stop();
    await admin?.close();
    await nats?.stop();
  }
});

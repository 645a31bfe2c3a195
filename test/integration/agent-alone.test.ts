/**
 * An agent process that starts while neither NATS nor its controller can be reached,
 * and that serves no HTTP-01 listener, keeps running and keeps trying. It used to end
 * silently after its first pass: every timer of its own is unref'd (so a stop is never
 * held up), and with no NATS connection and no listener nothing else kept node alive
 * (fan-out benchmark, issue #13: agents started under load vanished).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLI } from '../harness/fleet.js';
import { writeLoneAgent } from '../harness/lone-agent.js';
import { eventually, startProcess } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

test('an agent without NATS, controller or HTTP-01 listener keeps running after its first pass', { timeout: 120_000 }, async () => {
  const dir = tempDir('certfleet-agent-alone-');
  // An enrolled identity on disk, as `agent enroll` leaves it; nothing listens on either port.
  const { config } = await writeLoneAgent(dir, 'edge-alone');
  const agent = startProcess('agent', process.execPath, [CLI, 'agent', '--config', config]);
  try {
    await eventually('NATS unreachable at start', () => agent.output().includes('NATS unreachable at start'), 60_000, 200).catch((err: Error) => {
      throw new Error(`${err.message}\n${agent.output()}`);
    });
    await eventually('agent ready', () => agent.output().includes('agent ready'), 60_000, 200).catch((err: Error) => {
      throw new Error(`${err.message}\n${agent.output()}`);
    });
    // Its first pass is over once it is ready; idle from here until a timer fires.
    const outcome = await Promise.race([agent.exited.then((code) => `exited with ${code}`), new Promise<string>((r) => setTimeout(() => r('running'), 5_000))]);
    assert.equal(outcome, 'running', agent.output().slice(-3000));
  } finally {
    await agent.stop();
  }
});

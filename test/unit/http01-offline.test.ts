/**
 * The HTTP-01 offline-agents policy (issue #9), a pure decision: which selected agents
 * must serve a challenge, which hold it back, which are left out. One table, one sentence
 * per row.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { offlineDuty, DEFAULT_OFFLINE_POLICY, type OfflinePolicy, type Responder } from '../../controller/solvers/index.js';

const NOW = Date.UTC(2026, 2, 1, 12, 0, 0);
const MIN = 60_000;
const online = (agent: string): Responder => ({ agent, http01Address: '127.0.0.2:80', unavailable: '' });
const offline = (agent: string, forMs: number | undefined): Responder => ({
  agent,
  http01Address: '127.0.0.3:80',
  unavailable: 'offline',
  ...(forMs === undefined ? {} : { offlineSince: NOW - forMs }),
});
const noListener = (agent: string): Responder => ({ agent, http01Address: '', unavailable: 'no http01.listen configured' });

const grace = (min: number): OfflinePolicy => ({ mode: 'grace', graceMs: min * MIN });

const TABLE: Array<{ says: string; policy: OfflinePolicy; responders: Responder[]; serve: string[]; blocking: string[]; skipped: string[] }> = [
  { says: 'every agent online: all serve, nothing blocks', policy: grace(60), responders: [online('a'), online('b')], serve: ['a', 'b'], blocking: [], skipped: [] },
  { says: 'grace: an agent offline for less than the grace blocks', policy: grace(60), responders: [online('a'), offline('b', 59 * MIN)], serve: ['a'], blocking: ['b'], skipped: [] },
  { says: 'grace: an agent offline for exactly the grace is left out', policy: grace(60), responders: [online('a'), offline('b', 60 * MIN)], serve: ['a'], blocking: [], skipped: ['b'] },
  { says: 'grace: an agent offline for longer than the grace is left out', policy: grace(60), responders: [online('a'), offline('b', 3 * 60 * MIN)], serve: ['a'], blocking: [], skipped: ['b'] },
  { says: 'grace: one agent past the grace and one within it: only the first is left out, the second still blocks', policy: grace(60), responders: [online('a'), offline('b', 2 * 60 * MIN), offline('c', MIN)], serve: ['a'], blocking: ['c'], skipped: ['b'] },
  { says: 'grace: an offline agent without a known start counts as offline just now', policy: grace(60), responders: [online('a'), offline('b', undefined)], serve: ['a'], blocking: ['b'], skipped: [] },
  { says: 'block: an agent offline for days still blocks', policy: { mode: 'block', graceMs: MIN }, responders: [online('a'), offline('b', 7 * 24 * 60 * MIN)], serve: ['a'], blocking: ['b'], skipped: [] },
  { says: 'skip: an agent offline a moment is left out at once', policy: { mode: 'skip', graceMs: 60 * MIN }, responders: [online('a'), offline('b', 1000)], serve: ['a'], blocking: [], skipped: ['b'] },
  { says: 'skip: an online agent without an HTTP-01 listener still blocks (a configuration to fix, not an outage)', policy: { mode: 'skip', graceMs: 0 }, responders: [online('a'), noListener('b')], serve: ['a'], blocking: ['b'], skipped: [] },
  { says: 'skip: every agent offline leaves nobody to serve (the solver refuses that)', policy: { mode: 'skip', graceMs: 0 }, responders: [offline('a', MIN), offline('b', MIN)], serve: [], blocking: [], skipped: ['a', 'b'] },
];

for (const row of TABLE) {
  test(row.says, () => {
    const duty = offlineDuty(row.responders, row.policy, NOW);
    assert.deepEqual(duty.serve.map((r) => r.agent), row.serve);
    assert.deepEqual(duty.blocking.map((b) => b.responder.agent), row.blocking);
    assert.deepEqual(duty.skipped.map((s) => s.responder.agent), row.skipped);
  });
}

test('a blocking agent under grace says until when, and a skipped one for how long it was offline', () => {
  const duty = offlineDuty([offline('b', 10 * MIN), offline('c', 90 * MIN)], grace(60), NOW);
  assert.equal(duty.blocking[0]?.until, NOW + 50 * MIN);
  assert.match(duty.blocking[0]?.why ?? '', /left out after 2026-03-01T12:50:00.000Z \(http01.offlineGrace\)/);
  assert.equal(duty.skipped[0]?.offlineForMs, 90 * MIN);
});

test('the default policy waits an hour', () => {
  assert.deepEqual(DEFAULT_OFFLINE_POLICY, { mode: 'grace', graceMs: 60 * MIN });
});

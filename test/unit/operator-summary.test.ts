/**
 * `certfleet certs` summary (controller/operator summarizeCertificate): an agent that
 * reports the desired version failed makes the certificate `failed`, naming the agent and
 * its code, instead of hiding behind `pending`; the newest, desired and pinned versions, a
 * deferral ahead, and which agents drift from the desired version (issue #14).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentDrift, agentFailures, summarizeCertificate, type SummaryInput } from '../../controller/operator/index.js';
import type { AgentView } from '../../controller/fleet/index.js';
import type { CertRuntime } from '../../controller/reconcile/index.js';
import type { CertStatus, DesiredRecord } from '../../shared/model/index.js';

const DESIRED: DesiredRecord = { name: 'web', version: 3, fingerprint: 'ff'.repeat(32), names: ['www.example.test'], notAfter: '2030-01-01T00:00:00Z', selector: 'role=web', updatedAt: '2029-01-01T00:00:00Z' };

function status(over: Partial<CertStatus>): CertStatus {
  return { name: 'web', version: 3, fingerprint: '', desiredVersion: 3, state: 'installed', hook: null, servedVerified: true, error: '', errorCode: '', updatedAt: '', failedVersion: 0, rollback: '', ...over };
}

function agent(name: string, s: CertStatus | undefined): AgentView {
  return {
    registration: { name, labels: { role: 'web' }, certSerial: '01', enrolledAt: '2029-01-01T00:00:00Z' },
    report: s === undefined ? undefined : ({ name, certificates: [s] } as unknown as AgentView['report']),
    online: true,
    removed: false,
  };
}

const NOW = Date.parse('2029-06-01T00:00:00Z');
const RUNTIME = { state: 'ready', lastError: '', lastErrorCode: '', nextCheck: 0, latest: null } as unknown as CertRuntime;

function input(selected: AgentView[], runtime: CertRuntime | undefined = RUNTIME): SummaryInput {
  return { name: 'web', config: undefined, runtime, desired: DESIRED, selected, now: NOW, nowIso: (ms) => new Date(ms).toISOString() };
}

test('every agent serving the desired version: ready, no error', () => {
  const s = summarizeCertificate(input([agent('edge-a', status({})), agent('edge-b', status({}))]));
  assert.equal(s.state, 'ready');
  assert.equal(s.lastError, '');
  assert.equal(s.agentsCurrent, 2);
});

test('an agent whose hook failed and rolled back: failed, naming the agent, the version and the code', () => {
  const hookFailed = status({ state: 'failed', version: 2, failedVersion: 3, errorCode: 'HOOK_FAILED', error: 'reload hook exited 1', rollback: 'restored' });
  const s = summarizeCertificate(input([agent('edge-a', status({})), agent('edge-b', hookFailed)]));
  assert.equal(s.state, 'failed');
  assert.equal(s.lastError, 'failed on 1 of 2 agents: edge-b (v3 HOOK_FAILED: reload hook exited 1)');
  assert.equal(s.agentsCurrent, 1);
});

test('an agent that refused the bundle: failed with its code; several agents are all named', () => {
  const refused = status({ state: 'failed', version: 2, errorCode: 'BUNDLE_KEY_MISMATCH', error: 'web v3: private key does not match the certificate' });
  const s = summarizeCertificate(input([agent('edge-b', refused), agent('edge-a', { ...refused, errorCode: 'BUNDLE_EXPIRED', error: 'web v3: expired' })]));
  assert.equal(s.state, 'failed');
  assert.match(s.lastError ?? '', /^failed on 2 of 2 agents: edge-a \(v3 BUNDLE_EXPIRED: web v3: expired\); edge-b \(v3 BUNDLE_KEY_MISMATCH: /);
});

test('a failure of an older version, or an agent still pending, is not a failure of the desired version', () => {
  const oldFailure = status({ state: 'failed', version: 1, desiredVersion: 2, failedVersion: 2, errorCode: 'HOOK_FAILED' });
  assert.deepEqual(agentFailures('web', DESIRED, [agent('edge-a', oldFailure), agent('edge-b', status({ state: 'pending', version: 2 }))]), []);
  assert.equal(summarizeCertificate(input([agent('edge-a', oldFailure)])).state, 'pending');
});

test("the controller's own error is kept beside the agents'", () => {
  const rt = { ...RUNTIME, state: 'failed', lastError: 'CA said no', lastErrorCode: 'ACME_PROBLEM' } as CertRuntime;
  const s = summarizeCertificate(input([agent('edge-a', status({ state: 'failed', errorCode: 'NOT_SERVED', error: 'old certificate served' }))], rt));
  assert.equal(s.lastError, 'failed on 1 of 1 agent: edge-a (v3 NOT_SERVED: old certificate served); controller: ACME_PROBLEM: CA said no');
});

test('after a rollback the summary says newest 2, desired 1, pinned 1, and counts the agents serving 1 (issue #14)', () => {
  const rolledBack = { ...DESIRED, version: 1 };
  const rt = { ...RUNTIME, pinned: 1, latest: { version: 2 } } as unknown as CertRuntime;
  const onV1 = status({ version: 1, desiredVersion: 1 });
  const s = summarizeCertificate({ ...input([agent('edge-a', onV1), agent('edge-b', onV1)], rt), desired: rolledBack });
  assert.equal(s.newestVersion, 2);
  assert.equal(s.desiredVersion, 1);
  assert.equal(s.pinnedVersion, 1);
  assert.equal(s.agentsCurrent, 2);
  assert.equal(s.state, 'ready');
  // An agent still on 2 is not counted as serving the desired version.
  const half = summarizeCertificate({ ...input([agent('edge-a', onV1), agent('edge-b', status({ version: 2, desiredVersion: 2 }))], rt), desired: rolledBack });
  assert.equal(half.agentsCurrent, 1);
  assert.equal(half.state, 'pending');
});

test('a budget deferral or backoff shows while it lies ahead, with its reason, and an outstanding request is flagged', () => {
  const until = NOW + 31 * 3_600_000;
  const rt = { ...RUNTIME, deferredUntil: until, deferredReason: 'budget exhausted: New Certificates per Exact Set of Identifiers (5 per 7d)', backoffUntil: NOW + 60_000, force: true };
  const s = summarizeCertificate(input([agent('edge-a', status({}))], rt));
  assert.equal(s.deferredUntil, new Date(until).toISOString());
  assert.match(s.deferredReason ?? '', /Exact Set of Identifiers/);
  assert.equal(s.backoffUntil, new Date(NOW + 60_000).toISOString());
  assert.equal(s.renewalRequested, true);
  const past = summarizeCertificate(input([agent('edge-a', status({}))], { ...rt, deferredUntil: NOW - 1, backoffUntil: NOW - 1 }));
  assert.equal(past.deferredUntil, '');
  assert.equal(past.deferredReason, '');
  assert.equal(past.backoffUntil, '');
});

test('agentDrift: installed at the wanted version is in step; another version, a failure or no report is drift', () => {
  assert.equal(agentDrift('web', 3, agent('edge-a', status({}))), null);
  assert.deepEqual(agentDrift('web', 1, agent('edge-a', status({ version: 2, desiredVersion: 2 }))), { certificate: 'web', desiredVersion: 1, version: 2, state: 'installed' });
  assert.deepEqual(agentDrift('web', 3, agent('edge-a', status({ version: 2, state: 'failed' }))), { certificate: 'web', desiredVersion: 3, version: 2, state: 'failed' });
  assert.deepEqual(agentDrift('web', 3, agent('edge-a', undefined)), { certificate: 'web', desiredVersion: 3, version: 0, state: 'unreported' });
});

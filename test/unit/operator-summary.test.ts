/**
 * `certfleet certs` summary (controller/operator summarizeCertificate): an agent that
 * reports the desired version failed makes the certificate `failed`, naming the agent and
 * its code, instead of hiding behind `pending`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentFailures, summarizeCertificate, type SummaryInput } from '../../controller/operator/index.js';
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

const RUNTIME = { state: 'ready', lastError: '', lastErrorCode: '', nextCheck: 0, latest: null } as unknown as CertRuntime;

function input(selected: AgentView[], runtime: CertRuntime | undefined = RUNTIME): SummaryInput {
  return { name: 'web', config: undefined, runtime, desired: DESIRED, selected, nowIso: (ms) => new Date(ms).toISOString() };
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

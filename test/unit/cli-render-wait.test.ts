/**
 * `--wait` of renew, rollback and release (cli/wait.ts): one look at ShowCertificate
 * decides done, failed (which step, which code) or waiting; the loop ends on either with
 * a fake clock and gives up with WAIT_TIMEOUT.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitServed, waitStep, type WaitTarget } from '../../cli/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import type { pb } from '../../shared/grpc/index.js';

function show(over: Partial<pb.CertificateSummary__Output>, top: Partial<pb.ShowCertificateResponse__Output> = {}): pb.ShowCertificateResponse__Output {
  const summary: pb.CertificateSummary__Output = {
    name: 'web',
    names: [],
    selector: 'role=web',
    current: null,
    state: 'ready',
    lastError: '',
    agentsAssigned: 2,
    agentsCurrent: 2,
    nextRenewal: '',
    newestVersion: 2,
    desiredVersion: 2,
    pinnedVersion: 0,
    deferredUntil: '',
    deferredReason: '',
    backoffUntil: '',
    renewalRequested: false,
    ...over,
  };
  return {
    summary,
    reason: '',
    deferredUntil: summary.deferredUntil,
    deferredReason: summary.deferredReason,
    backoffUntil: summary.backoffUntil,
    failures: 0,
    pinnedVersion: summary.pinnedVersion,
    ariWindowStart: '',
    ariWindowEnd: '',
    desiredVersion: summary.desiredVersion,
    revokedVersions: [],
    issuers: [],
    nextIssuer: '',
    ...top,
  };
}

const RENEW: WaitTarget = { name: 'web', version: 3, atLeast: true, failures: 0 };
const ROLLBACK: WaitTarget = { name: 'web', version: 1, atLeast: false, failures: 0 };

test('renew: waiting while issuing and while agents install; done once every agent serves the new version', () => {
  assert.deepEqual(waitStep(show({ state: 'issuing' }), RENEW), { kind: 'waiting', progress: 'issuing version 3' });
  assert.deepEqual(waitStep(show({ state: 'pending', newestVersion: 3, desiredVersion: 3, agentsCurrent: 1 }), RENEW), { kind: 'waiting', progress: 'version 3: 1/2 agents serve it' });
  assert.deepEqual(waitStep(show({ newestVersion: 3, desiredVersion: 3 }), RENEW), { kind: 'done', version: 3, agents: '2/2' });
  assert.deepEqual(waitStep(show({ newestVersion: 4, desiredVersion: 4 }), RENEW), { kind: 'done', version: 4, agents: '2/2' });
});

test('rollback: the old version desired but still served by one agent is waiting; both serving it is done; a newer one is not it', () => {
  assert.equal(waitStep(show({ state: 'pending', desiredVersion: 1, pinnedVersion: 1, agentsCurrent: 1 }), ROLLBACK).kind, 'waiting');
  assert.deepEqual(waitStep(show({ desiredVersion: 1, pinnedVersion: 1 }), ROLLBACK), { kind: 'done', version: 1, agents: '2/2' });
  assert.equal(waitStep(show({}), ROLLBACK).kind, 'waiting');
});

test('with several issuers a failed issuance is followed, not the end: the loop falls back to the next CA', () => {
  const step = waitStep(
    show({ state: 'failed', lastError: 'ACME_TRANSPORT: connect ECONNREFUSED' }, { failures: 1, backoffUntil: '2026-03-01T12:05:00.000Z', issuers: ['default', 'backup'], nextIssuer: 'backup' }),
    RENEW,
  );
  assert.deepEqual(step, { kind: 'waiting', progress: 'issuing version 3 failed 1 time(s) (ACME_TRANSPORT); the controller tries again with issuer backup at 2026-03-01T12:05:00.000Z' });
});

test('a failed issuance, a budget deferral, an agent failure and a halted rollout each fail their step with their code', () => {
  const issue = waitStep(show({ state: 'failed', lastError: 'ACME_PROBLEM: CA refused' }, { failures: 1, backoffUntil: '2026-03-01T12:05:00.000Z' }), RENEW);
  assert.deepEqual(issue, { kind: 'failed', step: 'issue', code: 'ACME_PROBLEM', message: 'web: issuing version 3 failed: ACME_PROBLEM: CA refused; the controller retries at 2026-03-01T12:05:00.000Z' });
  const budget = waitStep(show({ deferredUntil: '2026-03-02T19:00:00.000Z', deferredReason: 'budget exhausted: X' }), RENEW);
  assert.equal(budget.kind === 'failed' && budget.step, 'budget');
  assert.equal(budget.kind === 'failed' && budget.code, 'BUDGET_DEFERRED');
  const install = waitStep(show({ state: 'failed', newestVersion: 3, desiredVersion: 3, agentsCurrent: 1, lastError: 'failed on 1 of 2 agents: edge-b (v3 HOOK_FAILED: reload exited 1)' }), RENEW);
  assert.equal(install.kind === 'failed' && install.step, 'install');
  assert.equal(install.kind === 'failed' && install.code, 'HOOK_FAILED');
  const halted = waitStep(show({ state: 'halted', newestVersion: 3, desiredVersion: 3, lastError: 'rollout of version 3 halted: canary failed' }), RENEW);
  assert.equal(halted.kind === 'failed' && halted.step, 'rollout');
});

test('waitServed asks until done, printing each new progress line once', async () => {
  const clock = new ManualClock(Date.parse('2026-03-01T12:00:00Z'));
  const answers = [show({ state: 'issuing' }), show({ state: 'issuing' }), show({ state: 'pending', newestVersion: 3, desiredVersion: 3, agentsCurrent: 0 }), show({ newestVersion: 3, desiredVersion: 3 })];
  const lines: string[] = [];
  const running = waitServed(RENEW, { show: () => Promise.resolve(answers.shift() ?? show({})), progress: (l) => lines.push(l), timeoutMs: 60_000, intervalMs: 1000, clock });
  await clock.runUntil(() => answers.length === 0, 10_000);
  const done = await running;
  assert.equal(done.version, 3);
  assert.deepEqual(lines, ['web: issuing version 3', 'web: version 3: 0/2 agents serve it']);
});

test('waitServed gives up with WAIT_TIMEOUT, saying how far it got', async () => {
  const clock = new ManualClock(Date.parse('2026-03-01T12:00:00Z'));
  const running = waitServed(ROLLBACK, { show: () => Promise.resolve(show({ state: 'pending', desiredVersion: 1, agentsCurrent: 1 })), progress: () => undefined, timeoutMs: 5000, intervalMs: 1000, clock });
  const settled = running.then(
    () => assert.fail('resolved'),
    (err: unknown) => err,
  );
  await clock.tick(10_000);
  const err = await settled;
  assert.ok(isCertfleetError(err, 'WAIT_TIMEOUT'), String(err));
  assert.match(err.message, /gave up waiting after 5s: version 1: 1\/2 agents serve it/);
});

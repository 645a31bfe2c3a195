/**
 * The work loop and agents coming online (issue #8 fault matrix, seen in CI): an HTTP-01
 * issuance fails with CHALLENGE_NOT_SERVED because an agent had not reported yet, and
 * that agent comes online while the issuance is still running. agentOnline() clears the
 * backoff of failed certificates, but this failure is recorded after it ran; it used to
 * wait out its backoff (10 minutes at the second failure) although every agent was there.
 *
 * The Reconciler runs for real on a file store; the issuer, NATS-backed publishers and
 * budgets are stand-ins that record calls (the issuer's answer is what the test steers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CertificateConfig } from '../../controller/config/index.js';
import type { Issuer } from '../../controller/issuer/index.js';
import type { DesiredState, EventPublisher } from '../../controller/publish/index.js';
import type { BudgetKeeper } from '../../controller/budget/index.js';
import type { Pins } from '../../controller/rollback/index.js';
import { Reconciler } from '../../controller/reconcile/index.js';
import { FileStore } from '../../controller/store/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

const CERT = { name: 'web', names: ['www.example.test'], keyType: 'ecdsa-p256', agents: 'role=web', challenge: 'http-01' } as unknown as CertificateConfig;

/** An issuer whose every issue() waits until the test settles it. */
function steeredIssuer(): { issuer: Issuer; calls: () => number; fail: (err: Error) => void } {
  const pending: Array<(err: Error) => void> = [];
  const issuer = {
    issue: () => new Promise((_resolve, reject) => pending.push(reject)),
    resumable: () => Promise.resolve(null),
  } as unknown as Issuer;
  return {
    issuer,
    calls: () => pending.length,
    fail: (err) => pending.at(-1)?.(err),
  };
}

function loop(issuer: Issuer): Reconciler {
  const log = silentLogger();
  return new Reconciler({
    certificates: [CERT],
    store: new FileStore({ dir: tempDir('certfleet-reconcile-'), log }),
    issuer,
    desired: { get: () => undefined, publish: () => Promise.resolve({}), put: () => Promise.resolve(), flush: () => Promise.resolve([]) } as unknown as DesiredState,
    events: { emit: () => Promise.resolve() } as unknown as EventPublisher,
    clock: systemClock,
    log,
    intervalMs: 3_600_000,
    concurrency: 4,
    pins: { get: () => Promise.resolve(null), release: () => Promise.resolve(false) } as unknown as Pins,
    budget: {
      check: () => ({ ok: true, spend: { buckets: [] } }),
      commit: () => undefined,
      refund: () => undefined,
      flushed: () => Promise.resolve(),
      recordAuthorizationFailure: () => undefined,
    } as unknown as BudgetKeeper,
    spread: 0.1,
    spooled: () => false,
    selectedAgents: () => [],
  });
}

const notServed = (): CertfleetError => new CertfleetError(ErrorCode.ChallengeNotServed, 'HTTP-01 for www.example.test: edge-b (offline)');

test('an HTTP-01 failure recorded after an agent came online during the issuance is retried at once, not after its backoff', async () => {
  const steer = steeredIssuer();
  const reconciler = loop(steer.issuer);
  try {
    reconciler.start();
    await eventually('the first issuance started', () => steer.calls() === 1, 5_000, 10);
    // The agent reports while the issuance is still answering its challenge...
    reconciler.agentOnline();
    // ...and the issuance fails only afterwards, with the reason that agent was missing.
    steer.fail(notServed());
    await eventually('a second issuance started without waiting out a backoff', () => steer.calls() === 2, 5_000, 10);
  } finally {
    await reconciler.stop(100);
  }
});

test('an HTTP-01 failure with no agent coming online meanwhile keeps its backoff', async () => {
  const steer = steeredIssuer();
  const reconciler = loop(steer.issuer);
  try {
    reconciler.start();
    await eventually('the first issuance started', () => steer.calls() === 1, 5_000, 10);
    steer.fail(notServed());
    await eventually('the failure is recorded with a backoff', () => (reconciler.status('web')?.state ?? '') === 'failed', 5_000, 10);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(steer.calls(), 1, 'no second issuance before the backoff ends');
  } finally {
    await reconciler.stop(100);
  }
});

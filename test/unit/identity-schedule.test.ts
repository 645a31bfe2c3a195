/**
 * The agent's identity renewal loop (agent/enroll startIdentityRenewal) waits on the
 * injected clock: on a manual clock it asks the controller exactly when 2/3 of the
 * identity's lifetime have passed, and after a refusal again a twentieth of the lifetime
 * (at most 5 minutes) later, without any real waiting.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { startIdentityRenewal, type AgentIdentity } from '../../agent/enroll/index.js';
import type { ControllerLink } from '../../agent/link/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { makeLeaf, sharedCa } from '../harness/certs.js';
import { tempDir } from '../harness/tmp.js';

const T0 = Date.UTC(2026, 5, 1);
const DAY = 86_400_000;

test('identity renewal is asked for at 2/3 of the lifetime on clock time, and retried 5 minutes after a refusal', async () => {
  const leaf = await makeLeaf(await sharedCa(), { names: ['agent-1'], notBefore: new Date(T0), notAfter: new Date(T0 + 30 * DAY) });
  const identity: AgentIdentity = { name: 'agent-1', labels: {}, certPem: leaf.certPem, keyPem: leaf.keyPem };
  const clock = new ManualClock(T0);
  const asked: number[] = [];
  const link = {
    renewIdentity: () => {
      asked.push(clock.now());
      return Promise.reject(new CertfleetError(ErrorCode.ControllerUnavailable, 'controller away'));
    },
  } as unknown as ControllerLink;
  const quiet = { info: () => undefined, warn: () => undefined };
  const renewal = startIdentityRenewal({ stateDir: tempDir('certfleet-identity-'), link, identity, clock, log: quiet });
  try {
    // Move to each next timer; between timers let the key generation (real crypto) finish.
    const giveUp = performance.now() + 30_000;
    while (asked.length < 2 && performance.now() < giveUp) {
      if (clock.pendingTimers > 0) await clock.tick((clock.nextDue() ?? clock.now()) - clock.now());
      else await new Promise<void>((r) => setImmediate(r));
    }
    const due = T0 + 20 * DAY;
    assert.equal(asked[0], due, 'first asked exactly at 2/3 of 30 days');
    assert.equal(asked[1], due + 300_000, 'asked again 5 minutes after the refusal');
  } finally {
    renewal.stop();
  }
  assert.equal(clock.pendingTimers, 0, 'stop() cancels the wait');
});

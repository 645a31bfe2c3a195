/**
 * Agents leave the fleet and renew their identity (issue #9), on a real FileStore and a
 * manual clock: a removed agent is refused on every call, saying who removed it and
 * when; unused tokens for its name issued before the removal are withdrawn, a new one
 * re-enrols it; a renewed certificate is accepted alongside the current one until it is
 * first used, which retires the old one; a removed agent cannot renew.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Enrollment } from '../../controller/enroll/index.js';
import { FileStore } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

const START = Date.UTC(2026, 0, 10, 8, 0, 0);

async function setup(): Promise<{ enrollment: Enrollment; clock: ManualClock; store: FileStore }> {
  const store = await FileStore.open({ dir: path.join(tempDir('certfleet-removal-'), 'store'), log: silentLogger() });
  const clock = new ManualClock(START);
  return { enrollment: new Enrollment(store, clock, silentLogger()), clock, store };
}

const enrolled = (name: string, serial: string) => ({ name, labels: { role: 'web' }, certSerial: serial, enrolledAt: new Date(START).toISOString() });

describe('removing an agent', () => {
  it('refuses every certificate of the agent from then on, naming who removed it and when', async () => {
    const { enrollment, clock } = await setup();
    await enrollment.recordAgent(enrolled('edge-b', 'aa01'));
    assert.equal((await enrollment.authenticateAgent('edge-b', 'AA01')).name, 'edge-b');
    clock.advance(60_000);
    const removal = await enrollment.removeAgent('edge-b', 'alice');
    assert.equal(removal.alreadyRemoved, false);
    assert.equal(removal.registration.removedBy, 'alice');
    await assert.rejects(enrollment.authenticateAgent('edge-b', 'aa01'), (err: unknown) => {
      assert.ok(isCertfleetError(err, ErrorCode.Unauthenticated));
      assert.equal(err.message, 'agent edge-b was removed by alice at 2026-01-10T08:01:00.000Z; enrol it again with a new token to bring it back');
      assert.equal(err.details['reason'], 'removed');
      return true;
    });
    // The registration stays (the views show who left), marked removed.
    assert.equal((await enrollment.listAgents())[0]?.removedAt, '2026-01-10T08:01:00.000Z');
  });

  it('is idempotent, and an unknown agent is NOT_FOUND', async () => {
    const { enrollment, clock } = await setup();
    await enrollment.recordAgent(enrolled('edge-b', 'aa01'));
    await enrollment.removeAgent('edge-b', 'alice');
    clock.advance(1000);
    const again = await enrollment.removeAgent('edge-b', 'bob');
    assert.equal(again.alreadyRemoved, true);
    assert.equal(again.registration.removedBy, 'alice', 'the first removal is what is recorded');
    await assert.rejects(enrollment.removeAgent('ghost', 'alice'), (err: unknown) => isCertfleetError(err, ErrorCode.NotFound));
  });

  it('withdraws unused tokens for the name issued before the removal; a token issued after re-enrols it', async () => {
    const { enrollment, clock } = await setup();
    await enrollment.recordAgent(enrolled('edge-b', 'aa01'));
    const old = await enrollment.createToken({ agent: 'edge-b', labels: { role: 'web' } });
    const other = await enrollment.createToken({ agent: 'edge-c' });
    clock.advance(1000);
    const removal = await enrollment.removeAgent('edge-b', 'alice');
    assert.equal(removal.tokensWithdrawn, 1);
    await assert.rejects(enrollment.redeem(old.token), (err: unknown) => isCertfleetError(err, ErrorCode.EnrollTokenInvalid));
    assert.equal((await enrollment.redeem(other.token)).agent, 'edge-c', "another agent's token is untouched");

    clock.advance(1000);
    const fresh = await enrollment.createToken({ agent: 'edge-b', labels: { role: 'web' } });
    const grant = await enrollment.redeem(fresh.token);
    await enrollment.recordAgent({ ...enrolled(grant.agent, 'bb02'), labels: grant.labels });
    const reg = await enrollment.authenticateAgent('edge-b', 'bb02');
    assert.equal(reg.removedAt, undefined, 're-enrolment starts a fresh registration');
    await assert.rejects(enrollment.authenticateAgent('edge-b', 'aa01'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && /replaced/.test(err.message));
  });
});

describe('renewing an agent identity', () => {
  it('accepts the old certificate until the new one is first used, then only the new one', async () => {
    const { enrollment } = await setup();
    await enrollment.recordAgent({ ...enrolled('edge-a', 'aa01'), certNotAfter: '2026-04-10T08:00:00.000Z' });
    await enrollment.recordRenewal('edge-a', 'aa01', 'BB02', '2026-07-10T08:00:00.000Z');
    // The agent may crash before it wrote the new certificate: the old one still works.
    assert.equal((await enrollment.authenticateAgent('edge-a', 'aa01')).certSerial, 'aa01');
    const promoted = await enrollment.authenticateAgent('edge-a', 'bb02');
    assert.equal(promoted.certSerial, 'bb02');
    assert.equal(promoted.certNotAfter, '2026-07-10T08:00:00.000Z');
    assert.equal(promoted.pendingSerial, undefined);
    await assert.rejects(enrollment.authenticateAgent('edge-a', 'aa01'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated));
  });

  it('a second renewal before the first is used replaces the pending one', async () => {
    const { enrollment } = await setup();
    await enrollment.recordAgent(enrolled('edge-a', 'aa01'));
    await enrollment.recordRenewal('edge-a', 'aa01', 'bb02', '2026-07-10T08:00:00.000Z');
    await enrollment.recordRenewal('edge-a', 'aa01', 'cc03', '2026-07-10T09:00:00.000Z');
    await assert.rejects(enrollment.authenticateAgent('edge-a', 'bb02'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated));
    assert.equal((await enrollment.authenticateAgent('edge-a', 'cc03')).certSerial, 'cc03');
  });

  it('a removed agent cannot renew, and removal drops a pending renewal', async () => {
    const { enrollment } = await setup();
    await enrollment.recordAgent(enrolled('edge-a', 'aa01'));
    await enrollment.recordRenewal('edge-a', 'aa01', 'bb02', '2026-07-10T08:00:00.000Z');
    await enrollment.removeAgent('edge-a', 'alice');
    await assert.rejects(enrollment.authenticateAgent('edge-a', 'bb02'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && /removed by alice/.test(err.message));
    await assert.rejects(enrollment.recordRenewal('edge-a', 'aa01', 'cc03', '2026-07-10T08:00:00.000Z'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && /removed/.test(err.message));
  });
});

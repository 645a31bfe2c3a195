/**
 * Agent identity renewal (issue #9): when (a pure plan with the clock passed in) and the
 * two-step commit of the identity files, with the crash points a restart must repair.
 */
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { identityRenewalPlan, loadIdentity } from '../../agent/enroll/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { tempDir } from '../harness/tmp.js';

const T0 = Date.UTC(2026, 0, 1);
const DAY = 86_400_000;
const cert = { notBefore: T0, notAfter: T0 + 90 * DAY };

const PLAN: Array<{ says: string; now: number; retry?: { failures: number; lastFailureAt: number }; action: 'renew' | 'wait'; at?: number }> = [
  { says: 'a fresh identity waits until 2/3 of its lifetime', now: T0 + DAY, action: 'wait', at: T0 + 60 * DAY },
  { says: 'just before 2/3 it still waits', now: T0 + 60 * DAY - 1, action: 'wait', at: T0 + 60 * DAY },
  { says: 'at 2/3 it renews', now: T0 + 60 * DAY, action: 'renew' },
  { says: 'an expired identity still tries (the controller refuses it; the log says why)', now: T0 + 91 * DAY, action: 'renew' },
  { says: 'after a failure it waits a twentieth of the lifetime, at most 5 minutes', now: T0 + 61 * DAY, retry: { failures: 1, lastFailureAt: T0 + 61 * DAY }, action: 'wait', at: T0 + 61 * DAY + 300_000 },
  { says: 'once that wait is over it tries again', now: T0 + 61 * DAY + 300_000, retry: { failures: 1, lastFailureAt: T0 + 61 * DAY }, action: 'renew' },
];

for (const row of PLAN) {
  test(row.says, () => {
    const plan = identityRenewalPlan(cert, row.now, row.retry);
    assert.equal(plan.action, row.action, plan.reason);
    if (plan.action === 'wait') assert.equal(plan.at, row.at);
  });
}

test('a short-lived identity retries after at least 5 seconds', () => {
  const short = { notBefore: T0, notAfter: T0 + 60_000 };
  const plan = identityRenewalPlan(short, T0 + 50_000, { failures: 2, lastFailureAt: T0 + 50_000 });
  assert.deepEqual(plan.action === 'wait' ? plan.at : 0, T0 + 55_000);
});

describe('identity files after a crash during renewal', () => {
  const setup = (): string => {
    const state = tempDir('certfleet-identity-');
    const dir = path.join(state, 'identity');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'agent.json'), JSON.stringify({ name: 'edge-a', labels: {} }));
    fs.writeFileSync(path.join(dir, 'key.pem'), 'OLD KEY', { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'cert.pem'), 'OLD CERT');
    return state;
  };
  const write = (state: string, file: string, text: string): void => fs.writeFileSync(path.join(state, 'identity', file), text, { mode: 0o600 });

  it('a new key without its certificate is dropped: the old pair stays', () => {
    const state = setup();
    write(state, 'key.next.pem', 'NEW KEY');
    const id = loadIdentity(state);
    assert.deepEqual([id.keyPem, id.certPem], ['OLD KEY', 'OLD CERT']);
    assert.equal(fs.existsSync(path.join(state, 'identity', 'key.next.pem')), false);
  });

  it('both new files written: the commit is finished', () => {
    const state = setup();
    write(state, 'key.next.pem', 'NEW KEY');
    write(state, 'cert.next.pem', 'NEW CERT');
    const id = loadIdentity(state);
    assert.deepEqual([id.keyPem, id.certPem], ['NEW KEY', 'NEW CERT']);
    assert.equal(fs.statSync(path.join(state, 'identity', 'key.pem')).mode & 0o777, 0o600);
  });

  it('the key already moved, the certificate not yet: the commit is finished', () => {
    const state = setup();
    write(state, 'key.pem', 'NEW KEY');
    write(state, 'cert.next.pem', 'NEW CERT');
    const id = loadIdentity(state);
    assert.deepEqual([id.keyPem, id.certPem], ['NEW KEY', 'NEW CERT']);
  });

  it('a state directory never enrolled is still refused with a hint', () => {
    assert.throws(() => loadIdentity(tempDir('certfleet-identity-')), (err: unknown) => err instanceof CertfleetError && err.code === ErrorCode.Unauthenticated);
  });
});

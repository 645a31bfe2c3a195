/**
 * The record schemas (shared/records): every value read back from NATS is checked as
 * strictly as the configuration, and a refusal says what is wrong without the value.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { certStatusSchema, parseAgentRecord, parseChallengeRecord, parseDesiredRecord } from '../../shared/records/index.js';
import type { CertStatus, ChallengeRecord, DesiredRecord } from '../../shared/model/index.js';

const FP = 'a'.repeat(64);
const FP2 = 'b'.repeat(64);
const AT = '2030-01-02T03:04:05.000Z';

const desired: DesiredRecord = {
  name: 'web',
  version: 3,
  fingerprint: FP,
  names: ['www.example.test', '*.example.test'],
  notAfter: AT,
  selector: 'role=lb,site in (ams,fra)',
  updatedAt: AT,
};
const withRollout: DesiredRecord = {
  ...desired,
  rollout: { from: { version: 2, fingerprint: FP2, notAfter: AT, names: ['www.example.test'] }, waves: ['site=ams'], released: 1, halted: false, haltReason: '' },
  pinned: true,
};
const challenge: ChallengeRecord = {
  token: 'tok_EN-123',
  keyAuthorization: 'tok_EN-123.thumbPRINT_-9',
  identifier: 'www.example.test',
  cert: 'web',
  selector: '*',
  createdAt: AT,
};
const status: CertStatus = {
  name: 'web',
  version: 3,
  fingerprint: FP,
  desiredVersion: 3,
  state: 'installed',
  hook: { ran: true, exitCode: 0, signal: '', timedOut: false, durationMs: 12, outputTail: 'reloaded' },
  servedVerified: true,
  error: '',
  errorCode: '',
  updatedAt: AT,
  failedVersion: 0,
  rollback: '',
};

test('a well-formed desired record is accepted as is, with and without a rollout and a pin', () => {
  assert.deepEqual(parseDesiredRecord(desired, 'web'), desired);
  assert.deepEqual(parseDesiredRecord(withRollout, 'web'), withRollout);
});

test('a well-formed challenge record and agent record are accepted', () => {
  assert.deepEqual(parseChallengeRecord(challenge, challenge.token), challenge);
  const agent = { name: 'edge-a', http01Address: '127.0.0.2:80', agentVersion: '0.1.0', lastSeen: AT, certificates: [status, { ...status, name: 'api', fingerprint: '', hook: null, state: 'pending' as const, version: 0 }] };
  assert.deepEqual(parseAgentRecord(agent, 'edge-a'), agent);
});

/** [what, value, key, what the message must say] */
const BAD_DESIRED: Array<[string, unknown, string, RegExp]> = [
  ['the record of issue #8: a selector and nothing else', { selector: '*' }, 'web', /name: .*expected string/],
  ['no name', { ...desired, name: undefined }, 'web', /^name: /],
  ['a name that is not a certificate name', { ...desired, name: 'Web!' }, 'Web', /name: not a valid certificate name/],
  ['a name other than its key', desired, 'api', /name: does not match the key/],
  ['version 0', { ...desired, version: 0 }, 'web', /^version: /],
  ['a fractional version', { ...desired, version: 1.5 }, 'web', /^version: /],
  ['a version given as text', { ...desired, version: '3' }, 'web', /^version: .*expected number/],
  ['an upper-case fingerprint', { ...desired, fingerprint: FP.toUpperCase() }, 'web', /fingerprint: not a lower-case hex SHA-256/],
  ['a short fingerprint', { ...desired, fingerprint: 'abc' }, 'web', /fingerprint: /],
  ['no names', { ...desired, names: [] }, 'web', /^names: /],
  ['a name that is not a DNS name', { ...desired, names: ['bad name'] }, 'web', /names\[0\]: not a DNS name/],
  ['a selector that does not parse', { ...desired, selector: 'role in (a,' }, 'web', /selector: not a valid label selector/],
  ['a notAfter that is not a time', { ...desired, notAfter: 'soon' }, 'web', /notAfter: not a date-time/],
  ['an unknown field', { ...desired, extra: 1 }, 'web', /unknown field\(s\) extra/],
  ['a pin that is not a boolean', { ...desired, pinned: 'yes' }, 'web', /pinned: /],
  ['a rollout with a bad wave selector', { ...withRollout, rollout: { ...withRollout.rollout, waves: ['a b'] } }, 'web', /rollout\.waves\[0\]: not a valid label selector/],
  ['a rollout missing its starting version', { ...withRollout, rollout: { ...withRollout.rollout, from: undefined } }, 'web', /rollout\.from: /],
  ['an array', [desired], 'web', /expected object/],
  ['null', null, 'web', /expected object/],
  ['a string', 'web', 'web', /expected object/],
];
for (const [what, value, key, why] of BAD_DESIRED) {
  test(`a desired record with ${what} is refused, saying so`, () => {
    assert.throws(() => parseDesiredRecord(value, key), (err: Error) => {
      assert.equal(err.name, 'RecordError');
      assert.match(err.message, why);
      return true;
    });
  });
}

const BAD_CHALLENGE: Array<[string, unknown, string, RegExp]> = [
  ['no key authorization', { ...challenge, keyAuthorization: undefined }, challenge.token, /keyAuthorization: /],
  ['a key authorization for another token', { ...challenge, keyAuthorization: 'other.thumb' }, challenge.token, /keyAuthorization: key authorization is not for this token/],
  ['a token other than its key', challenge, 'another', /token: does not match the key/],
  ['a token with characters outside base64url', { ...challenge, token: 'a/b', keyAuthorization: 'a/b.x' }, 'a/b', /token: not base64url/],
  ['an identifier that is not a DNS name', { ...challenge, identifier: 'http://x' }, challenge.token, /identifier: not a DNS name/],
  ['no selector', { ...challenge, selector: undefined }, challenge.token, /selector: /],
];
for (const [what, value, key, why] of BAD_CHALLENGE) {
  test(`a challenge record with ${what} is refused, saying so`, () => {
    assert.throws(() => parseChallengeRecord(value, key), why);
  });
}

test('an agent record with a malformed certificate status is refused, naming the entry', () => {
  const agent = { name: 'edge-a', http01Address: '', agentVersion: '0.1.0', lastSeen: AT, certificates: [{ ...status, state: 'done' }] };
  assert.throws(() => parseAgentRecord(agent, 'edge-a'), /certificates\[0\]\.state: /);
  assert.throws(() => parseAgentRecord({ ...agent, certificates: [] }, 'edge-b'), /name: does not match the key/);
  assert.throws(() => parseAgentRecord({ ...agent, certificates: [], lastSeen: 5 }, 'edge-a'), /lastSeen: /);
});

test('a certificate status with an unknown rollback word or a negative version is refused', () => {
  assert.equal(certStatusSchema.safeParse({ ...status, rollback: 'maybe' }).success, false);
  assert.equal(certStatusSchema.safeParse({ ...status, version: -1 }).success, false);
  assert.equal(certStatusSchema.safeParse(status).success, true);
});

test('a refusal never repeats the values it refused', () => {
  const secret = 'S3CRET-do-not-log';
  const cases: Array<() => unknown> = [
    () => parseDesiredRecord({ ...desired, name: secret }, 'web'),
    () => parseDesiredRecord({ ...desired, state: secret }, 'web'),
    () => parseDesiredRecord({ ...desired, [secret]: 1 }, 'web'),
    () => parseDesiredRecord({ ...desired, selector: `${secret} in (` }, 'web'),
    () => parseChallengeRecord({ ...challenge, keyAuthorization: `${secret}.x` }, challenge.token),
    () => parseAgentRecord({ name: 'edge-a', http01Address: '', agentVersion: '', lastSeen: AT, certificates: [{ ...status, state: secret }] }, 'edge-a'),
  ];
  for (const run of cases) {
    assert.throws(run, (err: Error) => {
      assert.ok(!err.message.includes(secret), err.message);
      return true;
    });
  }
});

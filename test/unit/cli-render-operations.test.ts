/**
 * Human output of the per-certificate, budget and event commands (show, history, renew,
 * rollback, release, budgets, events) and the dedupe behind `events --follow`: exact
 * strings from fixed responses and a fixed `now`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  eventKey,
  newEvents,
  renderBudgets,
  renderCertificate,
  renderEvent,
  renderEvents,
  renderHistory,
  renderRelease,
  renderRenew,
  renderRollback,
  shortFingerprint,
} from '../../cli/index.js';
import type { pb } from '../../shared/grpc/index.js';

const NOW = new Date('2026-03-01T12:00:00Z');
const ESC = /\x1b\[[0-9;]*m/g;

function version(v: number, over: Partial<pb.CertificateVersion__Output> = {}): pb.CertificateVersion__Output {
  return {
    name: 'web',
    version: v,
    serial: `0${v}a1`,
    fingerprint: `${v}${v}`.repeat(32),
    names: ['www.example.test'],
    notBefore: '2026-02-28T00:00:00Z',
    notAfter: '2026-05-29T00:00:00Z',
    issuedAt: '2026-02-28T00:00:05Z',
    keyType: 'ecdsa-p256',
    profile: '',
    issuer: '',
    ...over,
  };
}

function show(over: Partial<pb.ShowCertificateResponse__Output> = {}): pb.ShowCertificateResponse__Output {
  return {
    summary: {
      name: 'web',
      names: ['www.example.test', 'example.test'],
      selector: 'role=lb',
      current: version(3, { fingerprint: 'AB:CD:EF:01:23:45:67:89:AB' }),
      state: 'ready',
      lastError: '',
      agentsAssigned: 4,
      agentsCurrent: 3,
      nextRenewal: '2026-03-30T00:00:00Z',
      newestVersion: 3,
      desiredVersion: 3,
      pinnedVersion: 0,
      deferredUntil: '',
      deferredReason: '',
      backoffUntil: '',
      renewalRequested: false,
    },
    reason: 'ARI window',
    issuers: [],
    nextIssuer: '',
    deferredUntil: '',
    deferredReason: '',
    backoffUntil: '',
    failures: 0,
    pinnedVersion: 0,
    ariWindowStart: '',
    ariWindowEnd: '',
    desiredVersion: 3,
    revokedVersions: [],
    ...over,
  };
}

function event(over: Partial<pb.FleetEvent__Output>): pb.FleetEvent__Output {
  return { type: 'issued', at: '2026-03-01T11:00:00.123Z', cert: 'web', agent: '', version: 3, message: '', detailsJson: '', actor: '', ...over };
}

void test('a fingerprint is shortened to its first 12 hex digits, without colons, in lower case', () => {
  assert.equal(shortFingerprint('AB:CD:EF:01:23:45:67:89:AB'), 'abcdef012345');
  assert.equal(shortFingerprint('ff'.repeat(32)), 'ffffffffffff');
  assert.equal(shortFingerprint(''), '');
});

void test('show prints every fact as an aligned key: value line, schedule and reason included', () => {
  assert.equal(
    renderCertificate(show(), NOW),
    [
      'certificate:      web',
      'names:            www.example.test, example.test',
      'selector:         role=lb',
      'state:            ready',
      'current version:  3',
      '  serial:         03a1',
      '  fingerprint:    abcdef012345',
      '  not before:     2026-02-28 00:00:00Z',
      '  not after:      2026-05-29 00:00:00Z (in 88d)',
      '  profile:        -',
      'desired version:  3',
      'pinned version:   -',
      'revoked:          -',
      'agents:           3/4 on the desired version',
      'next renewal:     2026-03-30 00:00:00Z (in 28d): ARI window',
      'ari window:       -',
      'deferred until:   -',
      'backoff until:    -',
      'last error:       -',
      '',
    ].join('\n'),
  );
});

void test('show names a budget deferral, a failure backoff, a pin, the ARI window and the last error on one line each', () => {
  const out = renderCertificate(
    show({
      deferredUntil: '2026-03-01T17:00:00Z',
      deferredReason: 'budget certs-per-domain:example.test is empty',
      backoffUntil: '2026-03-01T12:05:00Z',
      failures: 3,
      pinnedVersion: 2,
      desiredVersion: 2,
      ariWindowStart: '2026-03-29T00:00:00Z',
      ariWindowEnd: '2026-03-31T00:00:00Z',
      summary: { ...show().summary!, state: 'failed', lastError: 'ACME_RATE_LIMITED: too many\ncertificates\x1b[2J' },
    }),
    NOW,
  );
  assert.match(out, /^desired version: {2}2$/m);
  assert.match(out, /^pinned version: {3}2 \(certfleet release web to unpin\)$/m);
  assert.match(out, /^ari window: {7}2026-03-29 00:00:00Z \.\. 2026-03-31 00:00:00Z$/m);
  assert.match(renderCertificate(show({ summary: { ...show().summary!, current: version(3, { profile: 'shortlived' }) } }), NOW), /^ {2}profile: {8}shortlived$/m);
  assert.match(out, /^deferred until: {3}2026-03-01 17:00:00Z \(in 5h\): budget certs-per-domain:example\.test is empty$/m);
  assert.match(out, /^backoff until: {4}2026-03-01 12:05:00Z \(in 5m\) after 3 failures$/m);
  // A line break or escape sequence from the controller cannot break the block or reach the terminal.
  assert.match(out, /^last error: {7}ACME_RATE_LIMITED: too many certificates\?\[2J$/m);
  assert.equal(out.split('\n').length, 20);
});

void test('show of a certificate never issued keeps every key, with "-" values', () => {
  const out = renderCertificate(show({ summary: { ...show().summary!, current: null, state: 'pending', nextRenewal: '' }, reason: '', desiredVersion: 0 }), NOW);
  assert.match(out, /^current version: {2}-$/m);
  assert.match(out, /^ {2}serial: {9}-$/m);
  assert.match(out, /^ {2}not after: {6}-$/m);
  assert.match(out, /^desired version: {2}-$/m);
  assert.match(out, /^next renewal: {5}-$/m);
});

void test('show colours state, pin, deferral and backoff on a terminal without moving the text', () => {
  const resp = show({ pinnedVersion: 2, backoffUntil: '2026-03-01T12:05:00Z', failures: 1 });
  const coloured = renderCertificate(resp, NOW, { color: true });
  assert.match(coloured, /\x1b\[32mready\x1b\[0m/);
  assert.match(coloured, /\x1b\[31m2026-03-01 12:05:00Z \(in 5m\) after 1 failure\x1b\[0m/);
  assert.equal(coloured.replace(ESC, ''), renderCertificate(resp, NOW));
});

void test('history is a table of versions, newest first, with short fingerprints, state and the agents serving each', () => {
  const out = renderHistory(
    {
      name: 'web',
      pinnedVersion: 2,
      versions: [
        { version: version(1, { notAfter: '2026-02-15T00:00:00Z', issuedAt: '2025-11-17T00:00:00Z' }), agents: [], desired: false, expired: true, revoked: false, revocationReason: '', revokedAt: '', revokedBy: '' },
        { version: version(3), agents: ['lb-3'], desired: false, expired: false, revoked: false, revocationReason: '', revokedAt: '', revokedBy: '' },
        { version: version(2, { notAfter: '2026-04-01T00:00:00Z', issuedAt: '2026-01-01T00:00:00Z' }), agents: ['lb-2', 'lb-1'], desired: true, expired: false, revoked: false, revocationReason: '', revokedAt: '', revokedBy: '' },
      ],
    },
    NOW,
  );
  assert.equal(
    out,
    [
      'VERSION   SERIAL   FINGERPRINT    NOT AFTER                      ISSUED       STATE            AGENTS',
      '3         03a1     333333333333   2026-05-29 (in 88d)            2026-02-28   -                lb-3',
      '2         02a1     222222222222   2026-04-01 (in 30d)            2026-01-01   desired,pinned   lb-1,lb-2',
      '1         01a1     111111111111   2026-02-15 (expired 14d ago)   2025-11-17   expired          -',
      '',
    ].join('\n'),
  );
});

void test('history of a certificate never issued says so', () => {
  assert.equal(renderHistory({ name: 'api', versions: [], pinnedVersion: 0 }, NOW), 'api: no versions issued yet\n');
});

function renewResp(over: Partial<pb.RenewCertificateResponse__Output>): pb.RenewCertificateResponse__Output {
  return { message: '', outcome: 'queued', version: 0, previousVersion: 0, deferredUntil: '', budget: '', budgetPreset: '', reason: '', errorCode: '', backoffUntil: '', requestedAt: '', ...over };
}

void test('renew prints the controller message, rollback from/to and how to undo, release the version now desired', () => {
  assert.equal(renderRenew('web', renewResp({ message: 'web: renewal queued' })), 'web: renewal queued\n');
  assert.equal(renderRenew('web', renewResp({ message: '' })), 'web: renewal requested\n');
  assert.equal(
    renderRollback('web', { fromVersion: 3, toVersion: 2 }),
    'web: rolled back from v3 to v2: v2 is desired now, pinned (`certfleet release web` to undo); agents install it now (--wait follows them)\n',
  );
  assert.equal(renderRelease('web', { version: 3 }), 'web: released; v3 is desired now; agents install it now (--wait follows them)\n');
});

void test('budgets shows the preset, then whole available tokens over capacity, reserve and the next token, sorted by name', () => {
  const out = renderBudgets(
    {
      preset: 'letsencrypt',
      budgets: [
        { name: 'new-orders-per-account', limit: '300 per 3h', available: 287.9, capacity: 300, reserved: 10, nextTokenAt: '2026-03-01T12:00:36Z', issuer: '' },
        { name: 'certs-per-domain:example.test', limit: '50 per 7d', available: 50, capacity: 50, reserved: 5, nextTokenAt: '', issuer: '' },
      ],
    },
    NOW,
  );
  assert.equal(
    out,
    [
      'preset: letsencrypt',
      '',
      'BUDGET                          LIMIT        AVAILABLE   RESERVED   NEXT TOKEN',
      'certs-per-domain:example.test   50 per 7d    50/50       5          -',
      'new-orders-per-account          300 per 3h   287/300     10         in 36s',
      '',
    ].join('\n'),
  );
});

void test('budgets turns red at the reserve and yellow under a quarter, only when colour is asked for', () => {
  const resp = {
    preset: '',
    budgets: [
      { name: 'a', limit: '10 per 1h', available: 2.5, capacity: 10, reserved: 2, nextTokenAt: '2026-03-01T12:06:00Z', issuer: '' },
      { name: 'b', limit: '100 per 1h', available: 20, capacity: 100, reserved: 2, nextTokenAt: '2026-03-01T12:00:36Z', issuer: '' },
      { name: 'c', limit: '100 per 1h', available: 99, capacity: 100, reserved: 2, nextTokenAt: '2026-03-01T12:00:36Z', issuer: '' },
    ],
  };
  const coloured = renderBudgets(resp, NOW, { color: true });
  assert.match(coloured, /\x1b\[31m2\/10\x1b\[0m/);
  assert.match(coloured, /\x1b\[33m20\/100\x1b\[0m/);
  assert.match(coloured, / 99\/100 /);
  assert.equal(coloured.replace(ESC, ''), renderBudgets(resp, NOW));
  assert.ok(!renderBudgets(resp, NOW).startsWith('preset'), 'no preset line without a preset');
  assert.equal(renderBudgets({ preset: '', budgets: [] }, NOW), 'no budgets\n');
});

void test('an event is one line: UTC time to the second, type, cert, agent, version, actor, message, "-" for what does not apply', () => {
  assert.equal(renderEvent(event({ message: 'issued by the CA' })), '2026-03-01T11:00:00Z  issued  web  -  v3  -  issued by the CA\n');
  assert.equal(
    renderEvent(event({ type: 'enrolled', cert: '', agent: 'lb-1', version: 0, message: 'labels role=lb' })),
    '2026-03-01T11:00:00Z  enrolled  -  lb-1  -  -  labels role=lb\n',
  );
  assert.equal(renderEvent(event({ message: '' })), '2026-03-01T11:00:00Z  issued  web  -  v3  -\n');
  assert.equal(
    renderEvent(event({ type: 'install-failed', agent: 'lb-1', message: 'hook: exit 1\nstderr: \x1b[31mboom' })),
    '2026-03-01T11:00:00Z  install-failed  web  lb-1  v3  -  hook: exit 1 stderr: ?[31mboom\n',
  );
  assert.equal(
    renderEvent(event({ type: 'failed' }), { color: true }),
    '2026-03-01T11:00:00Z  \x1b[31mfailed\x1b[0m  web  -  v3  -\n',
  );
});

void test('an event an operator caused names the operator in the ACTOR column', () => {
  assert.equal(
    renderEvent(event({ type: 'rolled-back', version: 1, actor: 'alice', message: 'rolled back from version 2 to 1 by alice (pinned)' })),
    '2026-03-01T11:00:00Z  rolled-back  web  -  v1  alice  rolled back from version 2 to 1 by alice (pinned)\n',
  );
  assert.equal(renderEvent(event({ type: 'operator-created', cert: '', version: 0, actor: 'admin', message: '' })), '2026-03-01T11:00:00Z  operator-created  -  -  -  admin\n');
});

void test('the events list keeps the controller order and says so when empty', () => {
  const events = [event({ at: '2026-03-01T11:00:00Z' }), event({ at: '2026-03-01T10:00:00Z', type: 'ordered' })];
  assert.equal(renderEvents({ events }), '2026-03-01T11:00:00Z  issued  web  -  v3  -\n2026-03-01T10:00:00Z  ordered  web  -  v3  -\n');
  assert.equal(renderEvents({ events: [] }), 'no events\n');
});

void test('follow dedupe: a poll yields only events the previous poll did not return, in order', () => {
  const a = event({ at: '2026-03-01T11:00:00Z', message: 'a' });
  const b = event({ at: '2026-03-01T11:00:01Z', message: 'b' });
  const c = event({ at: '2026-03-01T11:00:02Z', message: 'c' });
  const first = newEvents(new Set(), [a, b]);
  assert.deepEqual(first.fresh, [a, b]);
  const second = newEvents(first.seen, [b, c]);
  assert.deepEqual(second.fresh, [c]);
  // The same answer again prints nothing; the next set of keys is only the last answer's.
  const third = newEvents(second.seen, [b, c]);
  assert.deepEqual(third.fresh, []);
  assert.deepEqual([...third.seen], [eventKey(b), eventKey(c)]);
});

void test('follow dedupe: equal time, type, cert and message are one event, but two agents installing at once are two', () => {
  const lb1 = event({ type: 'installed', agent: 'lb-1', message: 'served' });
  const lb2 = event({ type: 'installed', agent: 'lb-2', message: 'served' });
  assert.notEqual(eventKey(lb1), eventKey(lb2));
  assert.equal(eventKey(lb1), eventKey({ ...lb1, detailsJson: '{"x":1}' }));
  assert.deepEqual(newEvents(new Set([eventKey(lb1)]), [lb1, lb2]).fresh, [lb2]);
});

void test('history shows an ISSUER column once a version records its issuer, and show names the issuer and a fallback in use', () => {
  const out = renderHistory({ name: 'web', pinnedVersion: 0, versions: [
    { version: version(1, { issuer: 'default' }), agents: [], desired: false, expired: false, revoked: false, revocationReason: '', revokedAt: '', revokedBy: '' },
    { version: version(2, { issuer: 'backup' }), agents: ['edge-a'], desired: true, expired: false, revoked: false, revocationReason: '', revokedAt: '', revokedBy: '' },
  ] }, NOW);
  const lines = out.split('\n');
  assert.match(lines[0] ?? '', /ISSUED\s+ISSUER\s+STATE/);
  assert.match(lines[1] ?? '', /^2\s.*\bbackup\s+desired/);
  assert.match(lines[2] ?? '', /^1\s.*\bdefault\s/);
  const s = renderCertificate(show({ issuers: ['default', 'backup'], nextIssuer: 'backup' }), NOW);
  assert.match(s, /^issuers:\s+default, backup \(next order: backup, a fallback\)$/m);
  const withIssuer = renderCertificate({ ...show(), summary: { ...show().summary!, current: version(3, { issuer: 'default' }) } }, NOW);
  assert.match(withIssuer, /^ {2}issuer:\s+default$/m);
});

void test('budgets of several issuers get an ISSUER column', () => {
  const out = renderBudgets({ preset: 'default: letsencrypt, backup: letsencrypt', budgets: [
    { name: 'new-orders-per-account', limit: '300 per 3h', available: 300, capacity: 300, reserved: 10, nextTokenAt: '', issuer: 'default' },
    { name: 'new-orders-per-account', limit: '300 per 3h', available: 299, capacity: 300, reserved: 10, nextTokenAt: '', issuer: 'backup' },
  ] }, NOW);
  assert.match(out, /^ISSUER\s+BUDGET/m);
  assert.match(out, /^default\s+new-orders-per-account/m);
  assert.match(out, /^backup\s+new-orders-per-account/m);
});

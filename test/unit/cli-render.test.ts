import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatDuration,
  relativeTime,
  renderAgents,
  renderCertificates,
  renderEnrolled,
  renderJson,
  renderStatus,
  renderTokenNote,
} from '../../cli/index.js';
import type { pb } from '../../shared/grpc/index.js';

const NOW = new Date('2026-03-01T12:00:00Z');
const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;
const at = (offsetMs: number): string => new Date(NOW.getTime() + offsetMs).toISOString();

function version(name: string, v: number, notAfter: string): pb.CertificateVersion__Output {
  return {
    name,
    version: v,
    serial: 'ab',
    fingerprint: 'ff'.repeat(32),
    names: [],
    notBefore: at(-30 * D),
    notAfter,
    issuedAt: at(-30 * D),
    keyType: 'ecdsa-p256',
    profile: '',
    issuer: '',
  };
}

function certSummary(over: Partial<pb.CertificateSummary__Output>): pb.CertificateSummary__Output {
  return {
    name: 'x',
    names: [],
    selector: '*',
    current: null,
    state: 'pending',
    lastError: '',
    agentsAssigned: 0,
    agentsCurrent: 0,
    nextRenewal: '',
    newestVersion: over.current?.version ?? 0,
    desiredVersion: over.current?.version ?? 0,
    pinnedVersion: 0,
    deferredUntil: '',
    deferredReason: '',
    backoffUntil: '',
    renewalRequested: false,
    ...over,
  };
}

function status(over: Partial<pb.CertificateStatus__Output>): pb.CertificateStatus__Output {
  return {
    name: 'x',
    version: 0,
    fingerprint: '',
    desiredVersion: 0,
    state: 'pending',
    hook: null,
    servedVerified: false,
    error: '',
    errorCode: '',
    updatedAt: '',
    failedVersion: 0,
    rollback: '',
    ...over,
  };
}

const cases: [number, string][] = [
  [0, '0s'],
  [12 * S + 900, '12s'],
  [119 * S, '119s'],
  [2 * M, '2m'],
  [119 * M, '119m'],
  [2 * H, '2h'],
  [47 * H + 59 * M, '47h'],
  [2 * D, '2d'],
  [59 * D + 23 * H, '59d'],
  [729 * D, '729d'],
  [800 * D, '2y'],
  [-(3 * H), '3h'],
];
for (const [ms, expected] of cases) {
  void test(`formatDuration renders ${ms} ms as "${expected}" (one unit, rounded down)`, () => {
    assert.equal(formatDuration(ms), expected);
  });
}

void test('relativeTime says "in" for the future, "ago" for the past, "now" within a second, and "" for no time', () => {
  assert.equal(relativeTime(at(59 * D + 5 * H), NOW), 'in 59d');
  assert.equal(relativeTime(at(-12 * S), NOW), '12s ago');
  assert.equal(relativeTime(at(-500), NOW), 'now');
  assert.equal(relativeTime(at(400), NOW), 'now');
  assert.equal(relativeTime('', NOW), '');
  assert.equal(relativeTime('not a date', NOW), '');
});

void test('the certs table has the agreed columns, aligned, sorted by name, with dates and relative times', () => {
  const out = renderCertificates(
    {
      certificates: [
        certSummary({
          name: 'web',
          names: ['www.example.test', 'example.test'],
          current: version('web', 3, at(59 * D + H)),
          state: 'ready',
          agentsAssigned: 4,
          agentsCurrent: 3,
          nextRenewal: at(29 * D + 2 * H),
        }),
        certSummary({ name: 'api', names: ['api.example.test'], state: 'pending', agentsAssigned: 1 }),
      ],
    },
    NOW,
  );
  assert.equal(
    out,
    [
      'NAME   NEWEST   DESIRED   PINNED   SERVING   STATE     NEXT                  EXPIRES               NAMES',
      'api    -        -         -        0/1       pending   -                     -                     api.example.test',
      'web    3        3         -        3/4       ready     2026-03-30 (in 29d)   2026-04-29 (in 59d)   www.example.test,example.test',
      '',
    ].join('\n'),
  );
});

void test('the certs table marks expired certificates and overdue renewals, and lists failures with their error below', () => {
  const out = renderCertificates(
    {
      certificates: [
        certSummary({
          name: 'old',
          names: ['old.example.test'],
          current: version('old', 1, at(-2 * D)),
          state: 'failed',
          lastError: 'ACME_RATE_LIMITED: too many certificates for example.test',
          nextRenewal: at(-3 * H),
        }),
      ],
    },
    NOW,
  );
  const [header, row, blank, failure] = out.split('\n');
  assert.match(header ?? '', /^NAME {3}NEWEST/);
  assert.match(row ?? '', /2026-02-27 \(expired 2d ago\)/);
  assert.match(row ?? '', /2026-03-01 \(due 3h ago\)/);
  assert.equal(blank, '');
  assert.equal(failure, 'old: ACME_RATE_LIMITED: too many certificates for example.test');
});

void test('the agents table shows online, last seen, sorted labels, each certificate as name@version state with failed error codes, and who removed a removed agent', () => {
  const out = renderAgents(
    {
      agents: [
        {
          name: 'lb-2',
          labels: {},
          lastSeen: '',
          online: false,
          http01Address: '',
          certificates: [],
          enrolledAt: at(-D),
          removedAt: '',
          removedBy: '',
          identityNotAfter: '',
          refusals: null,
          drift: [],
        },
        {
          name: 'lb-1',
          labels: { site: 'par', role: 'lb' },
          lastSeen: at(-12 * S),
          online: true,
          http01Address: '127.0.0.1:8080',
          certificates: [
            status({ name: 'web', version: 3, desiredVersion: 3, state: 'installed' }),
            status({ name: 'api', version: 2, desiredVersion: 3, state: 'failed', error: 'reload exited 1', errorCode: 'HOOK_FAILED' }),
            status({ name: 'new', version: 0, desiredVersion: 1, state: 'pending' }),
          ],
          enrolledAt: at(-D),
          removedAt: '',
          removedBy: '',
          identityNotAfter: '',
          refusals: { total: 0, byReason: {}, last: '', lastAt: '' },
          drift: [],
        },
        {
          name: 'lb-3',
          labels: { role: 'lb' },
          lastSeen: '',
          online: false,
          http01Address: '',
          certificates: [],
          enrolledAt: at(-D),
          removedAt: '2026-03-01T12:00:00.000Z',
          removedBy: 'alice',
          identityNotAfter: '',
          refusals: null,
          drift: [],
        },
      ],
    },
    NOW,
  );
  assert.equal(
    out,
    [
      'NAME   ONLINE                                  LAST SEEN   LABELS             CERTIFICATES',
      'lb-1   yes                                     12s ago     role=lb,site=par   api@2->3 failed (HOOK_FAILED), new@0->1 pending, web@3 installed',
      'lb-2   no                                      never       -                  -',
      'lb-3   removed by alice 2026-03-01 12:00:00Z   never       role=lb            -',
      '',
    ].join('\n'),
  );
});

void test('an agent that refused records gets a SECURITY line under the table, with counts per reason and the last refusal on one line', () => {
  const out = renderAgents(
    {
      agents: [
        {
          name: 'lb-1',
          labels: {},
          lastSeen: at(-S),
          online: true,
          http01Address: '',
          certificates: [],
          enrolledAt: at(-D),
          removedAt: '',
          removedBy: '',
          identityNotAfter: '',
          refusals: { total: 3, byReason: { unsigned: 1, replay: 2 }, last: 'replay: generation 4 is older than 7\n(bucket=certfleet_desired)', lastAt: at(-5 * S) },
          drift: [],
        },
      ],
    },
    NOW,
  );
  assert.equal(
    out,
    [
      'NAME   ONLINE   LAST SEEN   LABELS   CERTIFICATES',
      'lb-1   yes      1s ago      -        -',
      'SECURITY lb-1: 3 records refused (replay 2, unsigned 1); last 5s ago: replay: generation 4 is older than 7 (bucket=certfleet_desired)',
      '',
    ].join('\n'),
  );
});

void test('empty lists say so instead of printing a bare header', () => {
  assert.equal(renderCertificates({ certificates: [] }, NOW), 'no certificates configured\n');
  assert.equal(renderAgents({ agents: [] }, NOW), 'no agents enrolled\n');
});

const STATUS: pb.GetStatusResponse__Output = {
  controllerVersion: '0.1.0',
  store: 'file',
  acmeDirectory: 'https://127.0.0.1:14000/dir',
  certificates: 5,
  certificatesReady: 4,
  agents: 12,
  agentsOnline: 11,
  nats: 'connected',
  leader: null,
  self: '',
  role: '',
  controllers: [],
};

void test('status is a block of aligned "key: value" lines', () => {
  assert.equal(
    renderStatus(STATUS),
    [
      'controller:    0.1.0',
      'store:         file',
      'acme:          https://127.0.0.1:14000/dir',
      'nats:          connected',
      'certificates:  5 (4 ready)',
      'agents:        12 (11 online)',
      '',
    ].join('\n'),
  );
});

void test('status from several controllers names the leader with its epoch, who answered, and each controller\'s health', () => {
  const ha: pb.GetStatusResponse__Output = {
    ...STATUS,
    leader: { holder: 'c1#0a1b2c3d', address: '127.0.0.1:7443', epoch: '4', renewedAt: '2026-06-01T11:59:58.000Z' },
    self: 'c2',
    role: 'follower',
    controllers: [
      { name: 'c1', address: '127.0.0.1:7443', role: 'leader', epoch: '4', seenAt: new Date(NOW.getTime() - 2_000).toISOString(), health: 'ok', version: '0.1.0' },
      { name: 'c2', address: '127.0.0.1:7444', role: 'follower', epoch: '0', seenAt: new Date(NOW.getTime() - 90_000).toISOString(), health: 'stale', version: '0.1.0' },
    ],
  };
  assert.equal(
    renderStatus(ha, {}, NOW),
    [
      'controller:    0.1.0',
      'store:         file',
      'acme:          https://127.0.0.1:14000/dir',
      'nats:          connected',
      'certificates:  5 (4 ready)',
      'agents:        12 (11 online)',
      'leader:        c1 (epoch 4) at 127.0.0.1:7443',
      'answered by:   c2 (follower)',
      '',
      'CONTROLLERS',
      'NAME   ROLE       EPOCH   ADDRESS          HEALTH   SEEN      VERSION',
      'c1     leader     4       127.0.0.1:7443   ok       2s ago    0.1.0',
      'c2     follower   -       127.0.0.1:7444   stale    90s ago   0.1.0',
      '',
    ].join('\n'),
  );
  assert.match(renderStatus({ ...ha, leader: null }, {}, NOW), /^leader: +none$/m);
});

void test('colour codes appear only when asked for, and never shift the alignment of the plain text', () => {
  const plain = renderStatus({ ...STATUS, nats: 'disconnected' });
  const coloured = renderStatus({ ...STATUS, nats: 'disconnected' }, { color: true });
  assert.doesNotMatch(plain, /\x1b\[/);
  assert.match(coloured, /\x1b\[31mdisconnected\x1b\[0m/);
  // Removing the escapes gives exactly the plain output: padding was computed on plain text.
  assert.equal(coloured.replace(/\x1b\[[0-9;]*m/g, ''), plain);

  const certs = { certificates: [certSummary({ name: 'a', state: 'failed', names: ['a.test'] }), certSummary({ name: 'bb', state: 'ready' })] };
  const colouredTable = renderCertificates(certs, NOW, { color: true });
  assert.match(colouredTable, /\x1b\[/);
  assert.equal(colouredTable.replace(/\x1b\[[0-9;]*m/g, ''), renderCertificates(certs, NOW));
});

void test('JSON output is the response object with the generated camelCase field names', () => {
  const parsed = JSON.parse(renderJson(STATUS)) as Record<string, unknown>;
  assert.deepEqual(parsed, STATUS);
  assert.ok('certificatesReady' in parsed && 'controllerVersion' in parsed);
});

void test('the token note names the agent, the expiry and how to enrol, and never repeats the token', () => {
  const note = renderTokenNote({ token: 'SECRET-TOKEN', expiresAt: at(H) }, 'web-1', NOW);
  assert.match(note, /agent web-1/);
  assert.match(note, /in 60m/);
  assert.match(note, /certfleet agent enroll/);
  assert.doesNotMatch(note, /SECRET-TOKEN/);
});

void test('the enrolment result prints the name and sorted labels', () => {
  assert.equal(renderEnrolled({ name: 'web-1', labels: { site: 'par', role: 'lb' } }), 'enrolled as web-1\nlabels: role=lb,site=par\n');
  assert.equal(renderEnrolled({ name: 'web-2', labels: {} }), 'enrolled as web-2\nlabels: -\n');
  assert.equal(
    renderEnrolled({ name: 'web-3', labels: { role: 'lb' }, serves: [{ name: 'www', names: ['www.example.com', 'example.com'] }, { name: 'api', names: ['api.example.com'] }] }),
    'enrolled as web-3\nlabels: role=lb\nwill serve: www (www.example.com, example.com); api (api.example.com)\n',
  );
  assert.match(renderEnrolled({ name: 'web-4', labels: {}, serves: [] }), /will serve: nothing yet/);
  assert.match(renderEnrolled({ name: 'web-5', labels: {}, serves: { error: 'deadline exceeded' } }), /will serve: unknown \(asking the controller failed: deadline exceeded\)/);
});

void test('after a rollback the certs table shows newest 2, desired 1, pinned 1, the agents serving 1 and how to release (issue #14)', () => {
  const out = renderCertificates(
    {
      certificates: [
        certSummary({ name: 'web', current: version('web', 2, at(59 * D + H)), newestVersion: 2, desiredVersion: 1, pinnedVersion: 1, state: 'ready', agentsAssigned: 2, agentsCurrent: 2, nextRenewal: at(29 * D) }),
      ],
    },
    NOW,
  );
  const [header, row, blank, note] = out.split('\n');
  assert.match(header ?? '', /^NAME +NEWEST +DESIRED +PINNED +SERVING +STATE +NEXT +EXPIRES +NAMES$/);
  assert.match(row ?? '', /^web +2 +1 +1 +2\/2 +pinned +2026-03-30 \(in 29d\) /);
  assert.equal(blank, '');
  assert.equal(note, 'web: pinned to v1 by a rollback; `certfleet release web` serves v2 again');
});

void test('a budget deferral shows in NEXT and as a note with its reason; a backoff and an outstanding request show in NEXT', () => {
  const out = renderCertificates(
    {
      certificates: [
        certSummary({ name: 'web', current: version('web', 2, at(59 * D)), state: 'ready', renewalRequested: true, deferredUntil: at(31 * H), deferredReason: 'budget exhausted: New Certificates per Exact Set of Identifiers (5 per 7d)' }),
        certSummary({ name: 'api', current: version('api', 1, at(59 * D)), state: 'failed', backoffUntil: at(5 * M), lastError: 'ACME_PROBLEM: refused' }),
        certSummary({ name: 'shop', current: version('shop', 1, at(59 * D)), state: 'ready', renewalRequested: true }),
      ],
    },
    NOW,
  );
  const lines = out.split('\n');
  assert.match(lines[1] ?? '', /^api .* retry in 5m \(backoff\) /);
  assert.match(lines[2] ?? '', /^shop .* requested /);
  assert.match(lines[3] ?? '', /^web .* deferred, in 31h \(budget\) /);
  assert.ok(lines.includes('api: ACME_PROBLEM: refused'), out);
  assert.ok(lines.includes('web: renewal deferred until 2026-03-02 19:00:00Z (in 31h): budget exhausted: New Certificates per Exact Set of Identifiers (5 per 7d)'), out);
});

void test('agents: drifting agents come first, each certificate they lag on marked with the version wanted, and a line names them', () => {
  const base = { lastSeen: at(-S), online: true, http01Address: '', enrolledAt: at(-D), removedAt: '', removedBy: '', identityNotAfter: '', refusals: null };
  const out = renderAgents(
    {
      agents: [
        { ...base, name: 'edge-a', labels: {}, certificates: [status({ name: 'web', version: 1, desiredVersion: 1, state: 'installed' })], drift: [] },
        { ...base, name: 'edge-b', labels: {}, certificates: [status({ name: 'web', version: 2, desiredVersion: 2, state: 'installed' })], drift: [{ certificate: 'web', desiredVersion: 1, version: 2, state: 'installed' }, { certificate: 'api', desiredVersion: 3, version: 0, state: 'unreported' }] },
      ],
    },
    NOW,
  );
  assert.equal(
    out,
    [
      'NAME     ONLINE   LAST SEEN   LABELS   CERTIFICATES',
      'edge-b   yes      1s ago      -        web@2 installed (want 1), api: none (want 3)',
      'edge-a   yes      1s ago      -        web@1 installed',
      '1 agent not serving the desired version: edge-b',
      '',
    ].join('\n'),
  );
});

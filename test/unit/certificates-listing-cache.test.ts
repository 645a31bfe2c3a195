/**
 * `certfleet certs` at 10,000 certificates (issue #13): the controller answers a summary
 * again, as the same object, while nothing it shows changed (controller/operator
 * SummaryMemo), and keeps each summary's protobuf encoding with it (controller/api
 * listCertificatesSerializer). Proves: a remembered summary is answered only while every
 * input is unchanged — any change of the runtime, the desired record, an agent's report
 * or registration, or a backoff or deferral running out gives a new summary equal to
 * summarizeCertificate's; and the kept encodings make the very bytes the generic encoder
 * writes, also for summaries answered again and across pages; pages found by an index
 * are the pages of a scan.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listCertificatesSerializer } from '../../controller/api/index.js';
import { pageOf, SummaryMemo, summarizeCertificate, type SummaryInput } from '../../controller/operator/index.js';
import type { AgentView } from '../../controller/fleet/index.js';
import type { CertRuntime } from '../../controller/reconcile/index.js';
import { loadProtos, type pb } from '../../shared/grpc/index.js';
import type { CertStatus, DesiredRecord, VersionMeta } from '../../shared/model/index.js';

const NOW = Date.parse('2029-06-01T00:00:00Z');
const DESIRED: DesiredRecord = { name: 'web', version: 3, fingerprint: 'ff'.repeat(32), names: ['www.example.test'], notAfter: '2030-01-01T00:00:00Z', selector: 'role=web', updatedAt: '2029-01-01T00:00:00Z' };
const META: VersionMeta = { name: 'web', version: 3, serial: '0a', fingerprint: 'ff'.repeat(32), names: ['www.example.test'], notBefore: '2029-01-01T00:00:00Z', notAfter: '2030-01-01T00:00:00Z', issuedAt: '2029-01-01T00:00:00Z', keyType: 'ecdsa-p256' };

function status(over: Partial<CertStatus> = {}): CertStatus {
  return { name: 'web', version: 3, fingerprint: '', desiredVersion: 3, state: 'installed', hook: null, servedVerified: true, error: '', errorCode: '', updatedAt: '', failedVersion: 0, rollback: '', ...over };
}

function agent(name: string, s: CertStatus): AgentView {
  return {
    registration: { name, labels: { role: 'web' }, certSerial: '01', enrolledAt: '2029-01-01T00:00:00Z' },
    report: { name, certificates: [s] } as unknown as AgentView['report'],
    online: true,
    removed: false,
  };
}

function runtime(over: Partial<CertRuntime> = {}): CertRuntime {
  return {
    state: 'ready',
    failures: 0,
    backoffUntil: 0,
    lastError: '',
    lastErrorCode: '',
    nextCheck: NOW + 86_400_000,
    reason: '',
    latest: META,
    pinned: 0,
    force: false,
    requestedAt: 0,
    deferredUntil: 0,
    deferredReason: '',
    ariWindow: null,
    issuer: '',
    ...over,
  };
}

const AGENTS = [agent('edge-a', status()), agent('edge-b', status())];

function input(over: Partial<SummaryInput> = {}): SummaryInput {
  return { name: 'web', config: undefined, runtime: runtime(), desired: DESIRED, selected: AGENTS, now: NOW, nowIso: (ms) => new Date(ms).toISOString(), ...over };
}

test('nothing changed: the same summary object is answered again', () => {
  const memo = new SummaryMemo();
  const first = memo.summary(input());
  // A fresh runtime object with the same fields, and a fresh copy of the same version (the loop reads one every pass).
  const again = memo.summary(input({ runtime: runtime({ latest: { ...META } }), now: NOW + 1000 }));
  assert.equal(again, first);
  assert.deepEqual(first, summarizeCertificate(input()));
});

const changes: Array<[string, Partial<SummaryInput>]> = [
  ['the loop state', { runtime: runtime({ state: 'issuing' }) }],
  ['the last error', { runtime: runtime({ state: 'failed', lastError: 'no answer', lastErrorCode: 'CHALLENGE_NOT_SERVED' }) }],
  ['the newest version', { runtime: runtime({ latest: { ...META, version: 4, fingerprint: 'ee'.repeat(32) } }) }],
  ['the next renewal', { runtime: runtime({ nextCheck: NOW + 1 }) }],
  ['the pin', { runtime: runtime({ pinned: 2 }) }],
  ['a renewal request', { runtime: runtime({ force: true }) }],
  ['a backoff ahead', { runtime: runtime({ backoffUntil: NOW + 60_000 }) }],
  ['a deferral ahead', { runtime: runtime({ deferredUntil: NOW + 60_000, deferredReason: 'orders/week 0 left' }) }],
  ['the desired record', { desired: { ...DESIRED, version: 4 } }],
  ['an agent report', { selected: [AGENTS[0] as AgentView, agent('edge-b', status({ state: 'failed', errorCode: 'HOOK_FAILED', error: 'exit 1' }))] }],
  ['an agent registration', { selected: [AGENTS[0] as AgentView, { ...(AGENTS[1] as AgentView), registration: { ...(AGENTS[1] as AgentView).registration, labels: { role: 'web', wave: '2' } } }] }],
  ['the selected agents', { selected: [AGENTS[0] as AgentView] }],
];
for (const [what, over] of changes) {
  test(`${what} changed: a new summary, as summarizeCertificate computes it`, () => {
    const memo = new SummaryMemo();
    const before = memo.summary(input());
    const after = memo.summary(input(over));
    assert.notEqual(after, before);
    assert.deepEqual(after, summarizeCertificate(input(over)));
  });
}

test('a backoff that runs out is no longer shown, although the runtime did not change', () => {
  const memo = new SummaryMemo();
  const rt = runtime({ state: 'failed', backoffUntil: NOW + 60_000, lastError: 'no answer', lastErrorCode: 'CHALLENGE_NOT_SERVED' });
  const during = memo.summary(input({ runtime: rt }));
  assert.equal(during.backoffUntil, new Date(NOW + 60_000).toISOString());
  assert.equal(memo.summary(input({ runtime: rt, now: NOW + 30_000 })), during);
  const after = memo.summary(input({ runtime: rt, now: NOW + 60_001 }));
  assert.equal(after.backoffUntil, '');
  const deferred = runtime({ deferredUntil: NOW + 60_000, deferredReason: 'orders/week' });
  memo.summary(input({ runtime: deferred }));
  assert.equal(memo.summary(input({ runtime: deferred, now: NOW + 60_001 })).deferredUntil, '');
});

test('kept encodings: the bytes of the generic encoder, on the first answer and on answers again', () => {
  const def = loadProtos().operator.certfleet.v1.OperatorService.service.ListCertificates;
  const generic = (res: pb.ListCertificatesResponse): Buffer => def.responseSerialize(res);
  let encodedSummaries = 0;
  const encode = listCertificatesSerializer((res) => {
    encodedSummaries += res.certificates?.length ?? 0;
    return generic(res);
  });
  const summaries = ['a', 'b', 'c', 'd'].map((name, i) =>
    summarizeCertificate(input({ name, runtime: runtime({ latest: { ...META, name }, state: i % 2 === 0 ? 'ready' : 'failed', lastError: i % 2 === 0 ? '' : 'é ✓ no answer' }) })),
  );
  const pages: pb.ListCertificatesResponse[] = [
    { certificates: summaries.slice(0, 2), nextPageToken: 'b' },
    { certificates: summaries.slice(2), nextPageToken: '' },
    { certificates: summaries, nextPageToken: '' },
    { certificates: [], nextPageToken: '' },
    { certificates: summaries.slice(1, 3), nextPageToken: 'c' },
  ];
  for (const [i, page] of [...pages, ...pages].entries()) {
    // Each of the four summaries is encoded once, however often it is answered.
    if (i === pages.length) assert.equal(encodedSummaries, 4);
    const bytes = encode(page);
    assert.deepEqual(bytes, generic(page));
    const decoded = def.responseDeserialize(bytes);
    assert.deepEqual(
      decoded.certificates.map((c) => c.name),
      (page.certificates ?? []).map((c) => c.name),
    );
    assert.equal(decoded.nextPageToken, page.nextPageToken);
  }
  assert.equal(encodedSummaries, 4);
});

test('pages found by an index are the pages of a scan', () => {
  const names = Array.from({ length: 23 }, (_, i) => `c${String(i).padStart(2, '0')}`);
  const index = new Map(names.map((n, i) => [n, i]));
  for (const size of [1, 5, 23, 50]) {
    let token = '';
    do {
      const scanned = pageOf(names, size, token, (n) => n);
      assert.deepEqual(pageOf(names, size, token, (n) => n, (k) => index.get(k) ?? -1), scanned);
      token = scanned.nextPageToken;
    } while (token !== '');
  }
  assert.throws(() => pageOf(names, 5, 'gone', (n) => n, (k) => index.get(k) ?? -1));
});

test('a summary is ready only when the loop has the certificate ready (status counts on that)', () => {
  const states: CertRuntime['state'][] = ['pending', 'issuing', 'ready', 'failed'];
  const selections = [AGENTS, [AGENTS[0] as AgentView], [], [agent('edge-a', status({ version: 2 }))]];
  const desireds = [DESIRED, undefined, { ...DESIRED, rollout: { waves: [], released: 1, halted: false, haltReason: '' } } as unknown as DesiredRecord];
  let readyOnes = 0;
  for (const state of states) {
    for (const selected of selections) {
      for (const desired of desireds) {
        const s = summarizeCertificate(input({ runtime: runtime({ state }), selected, desired }));
        if (s.state === 'ready') {
          assert.equal(state, 'ready');
          readyOnes++;
        }
      }
    }
  }
  assert.ok(readyOnes > 0);
});

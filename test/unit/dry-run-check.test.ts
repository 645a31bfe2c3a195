/**
 * `renew NAME --dry-run` and `check [NAME]` without a controller: the command line, the
 * tables, the operator module's answer from the rehearsal's steps (account opened once,
 * again after a failure; a failed step named with its code), and the HTTP-01 self-check
 * per agent (every selected agent asked, an offline one failed without asking, the
 * synthetic record withdrawn).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCommandLine, LONG_TIMEOUT_MS } from '../../cli/args.js';
import { renderChecks, renderDryRun } from '../../cli/render.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { pb } from '../../shared/grpc/index.js';
import type { ChallengeRecord } from '../../shared/model/index.js';
import { dryRun, lazyStaging, checkCertificate, type Rehearser } from '../../controller/operator/index.js';
import { Http01Solver, type ChallengeBoard, type Responder } from '../../controller/solvers/index.js';
import type { CertificateConfig } from '../../controller/config/index.js';

const WEB = { name: 'web', names: ['www.example.test', 'example.test'], agents: 'role=web', challenge: 'http-01', keyType: 'ecdsa-p256' } as unknown as CertificateConfig;

// ---- command line ----

void test('renew --dry-run parses alone, with a 15m default deadline; --cancel or --wait with it is a usage error', () => {
  assert.deepEqual(parseCommandLine(['renew', 'web', '--dry-run']), { command: 'renew', name: 'web', dryRun: true, json: false, operator: { credentialsFile: undefined, timeoutMs: LONG_TIMEOUT_MS } });
  assert.deepEqual(parseCommandLine(['renew', 'web', '--dry-run', '--json', '--timeout', '30s']), { command: 'renew', name: 'web', dryRun: true, json: true, operator: { credentialsFile: undefined, timeoutMs: 30_000 } });
  for (const extra of [['--cancel'], ['--wait'], ['--wait-timeout', '1m']]) {
    assert.throws(() => parseCommandLine(['renew', 'web', '--dry-run', ...extra]), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && /--dry-run goes alone/.test(err.message));
  }
  // Without --dry-run, renew is what it was.
  assert.deepEqual(parseCommandLine(['renew', 'web']), { command: 'renew', name: 'web', cancel: false, json: false, operator: { credentialsFile: undefined, timeoutMs: 10_000 } });
});

void test('check takes an optional certificate name and --json; two names or a bad name are usage errors', () => {
  const op = { credentialsFile: undefined, timeoutMs: LONG_TIMEOUT_MS };
  assert.deepEqual(parseCommandLine(['check']), { command: 'check', name: undefined, json: false, operator: op });
  assert.deepEqual(parseCommandLine(['check', 'web', '--json']), { command: 'check', name: 'web', json: true, operator: op });
  assert.throws(() => parseCommandLine(['check', 'web', 'api']), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && /unexpected argument 'api'/.test(err.message));
  assert.throws(() => parseCommandLine(['check', 'Web!']), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && /not a valid certificate name/.test(err.message));
  assert.throws(() => parseCommandLine(['check', '--dry-run']), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid));
});

// ---- tables ----

const STEPS: pb.DryRunStep__Output[] = [
  { step: 'account', identifier: '', ok: true, durationMs: 412, detail: 'opened at https://staging.test/dir' },
  { step: 'order', identifier: '', ok: true, durationMs: 88, detail: 'https://staging.test/order/1 (2 authorizations)' },
  { step: 'authorization', identifier: 'www.example.test', ok: true, durationMs: 2450, detail: 'http-01 valid' },
];

void test('the dry-run table shows every step with its time and result, then what came of it', () => {
  const ok: pb.DryRunResponse__Output = {
    name: 'web',
    directoryUrl: 'https://staging.test/dir',
    ok: true,
    steps: [...STEPS, { step: 'cleanup', identifier: '', ok: true, durationMs: 3, detail: '2 http-01 records withdrawn' }],
    errorCode: '',
    error: '',
    serial: '2b0f',
    notAfter: '2026-06-01T00:00:00.000Z',
    durationMs: 125_300,
  };
  assert.equal(
    renderDryRun(ok),
    [
      'web: dry run against https://staging.test/dir',
      'STEP            IDENTIFIER         TIME    RESULT   DETAIL',
      'account         -                  412ms   ok       opened at https://staging.test/dir',
      'order           -                  88ms    ok       https://staging.test/order/1 (2 authorizations)',
      'authorization   www.example.test   2.4s    ok       http-01 valid',
      'cleanup         -                  3ms     ok       2 http-01 records withdrawn',
      'web: dry run succeeded in 2m: staging certificate serial 2b0f, notAfter 2026-06-01T00:00:00.000Z; nothing stored, published or charged',
      '',
    ].join('\n'),
  );
  const failed: pb.DryRunResponse__Output = {
    ...ok,
    ok: false,
    steps: [...STEPS.slice(0, 2), { step: 'authorization', identifier: 'example.test', ok: false, durationMs: 20_000, detail: 'CHALLENGE_NOT_SERVED: not served by: edge-b (no answer)\nmore' }],
    errorCode: 'CHALLENGE_NOT_SERVED',
    error: 'HTTP-01 challenge for example.test not served by: edge-b (no answer)',
    serial: '',
    notAfter: '',
  };
  const text = renderDryRun(failed, { color: true });
  assert.match(text, /^authorization   example\.test   20\.0s   \x1b\[31mFAILED\x1b\[0m   CHALLENGE_NOT_SERVED: not served by: edge-b \(no answer\) more$/m);
  assert.match(text, /^web: dry run FAILED \(CHALLENGE_NOT_SERVED\): HTTP-01 challenge for example\.test not served by: edge-b \(no answer\); nothing stored, published or charged\n$/m);
});

void test('the check table has one row per check and a last line naming every failure', () => {
  const row = (identifier: string, agent: string, ok: boolean, detail: string): pb.ChallengeCheck__Output => ({ certificate: 'web', check: 'http-01', identifier, agent, ok, detail, durationMs: 5 });
  const passed: pb.CheckChallengesResponse__Output = { ok: true, checks: [row('www.example.test', 'edge-a', true, 'serves it on 127.0.0.2:80')] };
  assert.equal(
    renderChecks(passed),
    ['CERTIFICATE   CHECK     IDENTIFIER         AGENT    RESULT   DETAIL', 'web           http-01   www.example.test   edge-a   ok       serves it on 127.0.0.2:80', '1 check, all passed', ''].join('\n'),
  );
  const dns: pb.ChallengeCheck__Output = { certificate: 'int', check: 'dns-01', identifier: '*.int.test', agent: '', ok: false, detail: 'DNS_CREDENTIALS_REJECTED: refused', durationMs: 9 };
  const mixed: pb.CheckChallengesResponse__Output = { ok: false, checks: [...(passed.checks ?? []), row('www.example.test', 'edge-b', false, 'offline since 2026-03-01T12:00:00.000Z'), dns] };
  const text = renderChecks(mixed);
  assert.match(text, /^web +http-01 +www\.example\.test +edge-b +FAILED +offline since 2026-03-01T12:00:00\.000Z$/m);
  assert.match(text, /^int +dns-01 +\*\.int\.test +- +FAILED +DNS_CREDENTIALS_REJECTED: refused$/m);
  assert.match(text, /\n2 of 3 checks failed: web http-01 www\.example\.test on edge-b, int dns-01 \*\.int\.test\n$/);
  assert.equal(renderChecks({ ok: true, checks: [] }), 'no certificates to check\n');
});

// ---- the operator module ----

void test('a dry run opens the staging account once, reports the rehearsal steps after it, and names a failed step', async () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 1));
  let opens = 0;
  const state: { fail?: CertfleetError } = {};
  const rehearser: Rehearser = {
    rehearse(req, onStep) {
      onStep({ step: 'order', identifier: '', ok: true, durationMs: 7, detail: `order for ${req.names.join(', ')}` });
      const fail = state.fail;
      if (fail) {
        onStep({ step: 'authorization', identifier: 'example.test', ok: false, durationMs: 3, detail: `${fail.code}: ${fail.message}` });
        return Promise.reject(fail);
      }
      return Promise.resolve({ order: 'o', serial: '0a', fingerprint: 'f', notAfter: '2026-06-01T00:00:00.000Z', names: [...req.names] });
    },
  };
  const staging = lazyStaging('https://staging.test/dir', () => {
    opens++;
    return Promise.resolve(rehearser);
  });
  const first = await dryRun(WEB, staging, clock);
  assert.equal(first.ok, true);
  assert.deepEqual(first.steps?.map((s) => [s.step, s.ok, s.detail]), [
    ['account', true, 'opened at https://staging.test/dir'],
    ['order', true, 'order for www.example.test, example.test'],
  ]);
  assert.equal(first.serial, '0a');
  state.fail = new CertfleetError(ErrorCode.ChallengeNotServed, 'not served by edge-b');
  const second = await dryRun(WEB, staging, clock);
  assert.equal(opens, 1, 'the account is opened once');
  assert.equal(second.ok, false);
  assert.equal(second.steps?.[0]?.detail, 'reused at https://staging.test/dir');
  assert.deepEqual([second.errorCode, second.error, second.serial], ['CHALLENGE_NOT_SERVED', 'not served by edge-b', '']);
  assert.equal(second.steps?.at(-1)?.ok, false);
});

void test('a staging account that cannot be opened fails the account step, and the next dry run tries again', async () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 1));
  let opens = 0;
  const staging = lazyStaging('https://staging.test/dir', () => {
    opens++;
    return opens === 1 ? Promise.reject(new CertfleetError(ErrorCode.AcmeTransport, 'connection refused', { retryable: true })) : Promise.resolve({ rehearse: () => Promise.resolve({ order: 'o', serial: '0b', fingerprint: 'f', notAfter: '', names: [] }) });
  });
  const down = await dryRun(WEB, staging, clock);
  assert.equal(down.ok, false);
  assert.deepEqual(down.steps?.map((s) => [s.step, s.ok, s.detail]), [['account', false, 'ACME_TRANSPORT: connection refused']]);
  assert.equal(down.errorCode, 'ACME_TRANSPORT');
  const up = await dryRun(WEB, staging, clock);
  assert.equal(up.ok, true);
  assert.equal(opens, 2);
  assert.equal(up.steps?.[0]?.detail, 'opened at https://staging.test/dir');
});

// ---- the HTTP-01 self-check ----

class MemoryBoard implements ChallengeBoard {
  readonly records = new Map<string, ChallengeRecord>();
  readonly presented: string[] = [];
  present(r: ChallengeRecord): Promise<void> {
    this.records.set(r.token, r);
    this.presented.push(r.token);
    return Promise.resolve();
  }
  remove(token: string): Promise<void> {
    this.records.delete(token);
    return Promise.resolve();
  }
  list(): Promise<ChallengeRecord[]> {
    return Promise.resolve([...this.records.values()]);
  }
}

void test('check: every selected agent is asked for a synthetic challenge; one that does not serve it, and an offline one, fail by name; the record is withdrawn', async () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 1));
  const board = new MemoryBoard();
  const responders: Responder[] = [
    { agent: 'edge-a', http01Address: '127.0.0.2:80', unavailable: '' },
    { agent: 'edge-b', http01Address: '127.0.0.3:80', unavailable: '' },
    { agent: 'edge-c', http01Address: '127.0.0.4:80', unavailable: 'offline', offlineSince: Date.UTC(2026, 1, 28) },
  ];
  const asked: string[] = [];
  const solver = new Http01Solver({
    board,
    responders: () => responders,
    clock,
    log: silentLogger(),
    selfCheckTimeoutMs: 1000,
    pollMs: 100,
    fetch: (address, identifier, token) => {
      asked.push(`${address} ${identifier}`);
      const r = board.records.get(token);
      // edge-a serves what is on the board; edge-b answers 404.
      return Promise.resolve(address === '127.0.0.2:80' && r ? { status: 200, body: r.keyAuthorization } : { status: 404, body: '' });
    },
  });
  const running = checkCertificate({ ...WEB, names: ['www.example.test'] }, { http01: solver }, clock);
  let finished = false;
  void running.then(() => (finished = true));
  assert.ok(await clock.runUntil(() => finished, 5000), 'the check ends at the self-check timeout');
  const checks = await running;
  assert.ok(asked.filter((a) => a.startsWith('127.0.0.3')).length > 1, 'a lagging agent is asked again until the timeout');
  assert.deepEqual(
    checks.map((c) => [c.agent, c.ok, c.detail]),
    [
      ['edge-a', true, 'serves it on 127.0.0.2:80'],
      ['edge-b', false, 'not served on 127.0.0.3:80: HTTP 404'],
      ['edge-c', false, 'offline since 2026-02-28T00:00:00.000Z'],
    ],
  );
  assert.ok(!asked.some((a) => a.startsWith('127.0.0.4')), 'an offline agent is not asked');
  assert.equal(board.presented.length, 1);
  assert.match(board.presented[0] ?? '', /^[A-Za-z0-9_-]{43}$/);
  assert.equal(board.records.size, 0, 'the synthetic challenge is withdrawn');
});

void test('check: a selector that selects no agent is one failed check', async () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 1));
  const solver = new Http01Solver({ board: new MemoryBoard(), responders: () => [], clock, log: silentLogger(), selfCheckTimeoutMs: 1000 });
  const checks = await checkCertificate({ ...WEB, names: ['www.example.test'] }, { http01: solver }, clock);
  assert.deepEqual(checks.map((c) => [c.identifier, c.agent, c.ok, c.detail]), [['www.example.test', '', false, 'no enrolled agent matches "role=web"']]);
});

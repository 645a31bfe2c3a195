/**
 * The Issuer (controller/issuer) on a ManualClock, with a stand-in for our AcmeClient
 * interface (it signs the CSR with a throwaway CA, so the real bundle checks run), the
 * real Http01Solver with its challenge board in memory and the self-check's GET faked,
 * and an in-memory store. What it proves: the HTTP-01 self-check times out on clock
 * time; the saved order survives that failure and is resumed, charged to the budgets
 * once; a dead order is dropped and refunded. Issuance against Pebble is in
 * test/e2e/renewal.test.ts and test/e2e/durable.test.ts.
 */
import 'reflect-metadata';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { AcmeClient, AcmeOrder } from '../../controller/acme/index.js';
import type { Spend } from '../../controller/budget/index.js';
import { Issuer, type IssueRequest } from '../../controller/issuer/index.js';
import { Http01Solver, type ChallengeBoard } from '../../controller/solvers/index.js';
import type { Spool } from '../../controller/spool/index.js';
import { ManualClock, systemClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { createRootLogger, silentLogger, type Logger } from '../../shared/log/index.js';
import type { ChallengeRecord } from '../../shared/model/index.js';
import { makeTestCa, type TestCa } from '../harness/certs.js';
import { MemoryStore } from './fakes/loop.js';

x509.cryptoProvider.set(webcrypto as never);

const NAME = 'www.example.test';
const SELF_CHECK_MS = 120_000;

/** A CA behind our AcmeClient interface: one order, one HTTP-01 authorization, certificates signed from the CSR. */
class FakeCa {
  placed = 0;
  accepted = 0;
  status: AcmeOrder['status'] = 'pending';
  authzFails = false;
  /** The authorization's status as the CA reports it (valid: validated before a crash). */
  authzStatus: 'pending' | 'valid' = 'pending';
  authzWaits = 0;
  orderWaits = 0;
  /** The status of each order handed to finalize. */
  finalizedFrom: string[] = [];
  private csrPem = '';
  constructor(private readonly ca: TestCa) {}
  private order(): AcmeOrder {
    return {
      url: 'https://ca.test/order/1',
      status: this.status,
      identifiers: [{ type: 'dns', value: NAME }],
      authorizations: [
        {
          url: 'https://ca.test/authz/1',
          identifier: { type: 'dns', value: NAME },
          status: this.authzStatus,
          challenges: [{ type: 'http-01', url: 'https://ca.test/chall/1', token: 'tok1', status: this.accepted > 0 ? 'processing' : 'pending' }],
        } as AcmeOrder['authorizations'][number],
      ],
      finalizeUrl: 'https://ca.test/order/1/finalize',
    };
  }
  readonly client = {
    directoryUrl: 'https://ca.test/dir',
    placeOrder: () => {
      this.placed++;
      return Promise.resolve(this.order());
    },
    getOrder: () => Promise.resolve(this.order()),
    keyAuthorization: (token: string) => Promise.resolve(`${token}.thumb`),
    acceptChallenge: () => {
      this.accepted++;
      return Promise.resolve();
    },
    waitForAuthorization: () =>
      ++this.authzWaits && this.authzFails
        ? Promise.reject(new CertfleetError(ErrorCode.AcmeProblem, 'unauthorized', { details: { identifier: NAME } }))
        : Promise.resolve(),
    waitForOrder: (order: AcmeOrder) =>
      ++this.orderWaits && this.authzFails
        ? Promise.reject(new CertfleetError(ErrorCode.AcmeProblem, 'unauthorized', { details: { identifier: NAME } }))
        : Promise.resolve({ ...order, status: 'ready' as const }),
    finalize: (order: AcmeOrder, csrPem: string) => {
      this.finalizedFrom.push(order.status);
      this.csrPem = csrPem;
      return Promise.resolve({ ...order, status: 'valid' as const, certificateUrl: 'https://ca.test/cert/1' });
    },
    downloadCertificate: async () => {
      const csr = new x509.Pkcs10CertificateRequest(this.csrPem);
      const now = Date.now();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: '0a1b2c',
        subject: csr.subject,
        issuer: this.ca.cert.subject,
        notBefore: new Date(now - 3_600_000),
        notAfter: new Date(now + 90 * 86_400_000),
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        publicKey: csr.publicKey,
        signingKey: this.ca.keys.privateKey,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: NAME }])],
      });
      return { certPem: `${cert.toString('pem')}\n`, chainPem: this.ca.chainPem };
    },
    close: () => undefined,
  } as unknown as AcmeClient;
}

function setup(ca: TestCa, log: Logger = silentLogger()) {
  // The test CA's certificates are dated by the wall clock; the manual clock starts there.
  const clock = new ManualClock(systemClock.now());
  const store = new MemoryStore();
  const acme = new FakeCa(ca);
  const published: ChallengeRecord[] = [];
  const removed: string[] = [];
  const board: ChallengeBoard = {
    present: (r) => {
      published.push(r);
      return Promise.resolve();
    },
    remove: (token) => {
      removed.push(token);
      return Promise.resolve();
    },
    list: () => Promise.resolve([]),
  };
  let served = false;
  const http01 = new Http01Solver({
    board,
    responders: () => [{ agent: 'edge-a', http01Address: '127.0.0.1:1', unavailable: '' }],
    clock,
    log: silentLogger(),
    selfCheckTimeoutMs: SELF_CHECK_MS,
    pollMs: 500,
    // The agent's answer: 404 until the test says it serves the challenge.
    fetch: (_address, _identifier, token) => Promise.resolve(served ? { status: 200, body: `${token}.thumb` } : { status: 404, body: '' }),
  });
  const issuer = new Issuer({ acme: acme.client, store, http01, spool: {} as Spool, clock, log });
  const charges: Spend[] = [];
  const refunds: Spend[] = [];
  const request: IssueRequest = {
    name: 'web',
    names: [NAME],
    keyType: 'ecdsa-p256',
    selector: 'role=web',
    challenge: 'http-01',
    charge: {
      charge: () => {
        const spend: Spend = { items: [{ limit: 'certificatesPerExactSet', key: NAME, cost: 1 }], exemptions: [] };
        charges.push(spend);
        return Promise.resolve(spend);
      },
      refund: (spend) => refunds.push(spend),
    },
  };
  return { clock, store, acme, issuer, http01, request, charges, refunds, published, removed, serve: () => (served = true) };
}

/** Follows a promise without awaiting it. */
function track<T>(p: Promise<T>): { done: boolean; value?: T; error?: unknown } {
  const out: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then(
    (value) => Object.assign(out, { done: true, value }),
    (error: unknown) => Object.assign(out, { done: true, error }),
  );
  return out;
}

/** Lets the issuance reach its challenge (key generation runs on libuv's pool, not on the clock). */
async function published(s: { published: ChallengeRecord[] }, count: number): Promise<void> {
  while (s.published.length < count) await new Promise((r) => setImmediate(r));
}

test('an HTTP-01 self-check nobody answers times out on clock time, not before', async () => {
  const s = setup(await makeTestCa());
  const attempt = track(s.issuer.issue(s.request, 0));
  await published(s, 1);
  const presentedAt = s.clock.now();
  await s.clock.runUntil(() => attempt.done, SELF_CHECK_MS - 1);
  assert.equal(attempt.done, false, 'still checking inside the self-check timeout');
  assert.ok(await s.clock.runUntil(() => attempt.done, 1_000), 'gave up once the clock passed the timeout');
  assert.ok(isCertfleetError(attempt.error, ErrorCode.ChallengeNotServed), `not served: ${String(attempt.error)}`);
  assert.match((attempt.error as Error).message, /not served by: edge-a \(HTTP 404\)/);
  assert.ok(s.clock.now() - presentedAt >= SELF_CHECK_MS);
  assert.equal(s.acme.accepted, 0, 'the CA is not asked to validate what no agent serves');
});

test('a saved order whose challenge timed out is resumed, charged once, and issued', async () => {
  const s = setup(await makeTestCa());
  const first = track(s.issuer.issue(s.request, 0));
  await published(s, 1);
  assert.ok(await s.clock.runUntil(() => first.done, 2 * SELF_CHECK_MS), 'the first attempt ended within clock time');
  assert.ok(isCertfleetError(first.error, ErrorCode.ChallengeNotServed), `not served: ${String(first.error)}`);
  assert.equal(s.acme.placed, 1);
  assert.equal(s.charges.length, 1);
  assert.deepEqual(s.refunds, [], 'a resumable order stays charged');
  const saved = await s.issuer.resumable('web', [NAME], 'ecdsa-p256');
  assert.ok(saved, 'the order is saved for the next attempt');
  assert.equal(saved.spend.items.length, 1, 'with what it was charged');

  s.serve();
  const meta = await s.issuer.issue(s.request, 0);
  assert.equal(meta.version, 1);
  assert.equal(s.acme.placed, 1, 'no second order');
  assert.equal(s.charges.length, 1, 'the resumed order is not charged again');
  assert.equal(await s.issuer.resumable('web', [NAME], 'ecdsa-p256'), null, 'the saved order is gone once issued');
  assert.equal((await s.store.latest('web'))?.fingerprint, meta.fingerprint);
});

test('at level info a successful issuance writes one line, its outcome, naming the order, serial, reason and duration (issue #13)', async () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const s = setup(await makeTestCa(), createRootLogger({ name: 'controller', level: 'info', destination: sink }));
  s.serve();
  const meta = await s.issuer.issue({ ...s.request, reason: 'renewal due' }, 0);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(lines.map((l) => l['msg']), ['certificate issued'], 'no line per ACME step at info');
  const [line] = lines;
  assert.equal(line?.['order'], 'https://ca.test/order/1');
  assert.equal(line?.['serial'], meta.serial);
  assert.equal(line?.['reason'], 'renewal due');
  assert.equal(typeof line?.['durationMs'], 'number');
});

test('the authorization of a one-name order is waited for through the order, and finalize gets the ready order that wait returned', async () => {
  const s = setup(await makeTestCa());
  s.serve();
  const meta = await s.issuer.issue(s.request, 0);
  assert.equal(meta.version, 1);
  assert.equal(s.acme.authzWaits, 0, 'the authorization is not polled');
  assert.equal(s.acme.orderWaits, 1);
  assert.deepEqual(s.acme.finalizedFrom, ['ready'], 'finalize can skip reading the order again');
});

test('a resumed order whose authorization the CA validated before the crash withdraws the challenge record the crashed run published', async () => {
  const s = setup(await makeTestCa());
  // The crashed run published tok1, the CA validated it, then the process died: the order
  // comes back with the authorization valid, and nothing is presented again.
  s.acme.authzStatus = 'valid';
  const meta = await s.issuer.issue(s.request, 0);
  assert.equal(meta.version, 1);
  assert.deepEqual(s.published, [], 'nothing presented again');
  assert.deepEqual(s.removed, ['tok1'], 'the leftover record is withdrawn, not left to the periodic sweep');
});

test('a rehearsal lists an authorization the CA handed back already valid, with no challenge', async () => {
  const s = setup(await makeTestCa());
  s.acme.authzStatus = 'valid';
  const steps: Array<{ step: string; identifier: string; ok: boolean; detail: string }> = [];
  await s.issuer.rehearse(s.request, (st) => steps.push(st));
  const authz = steps.filter((st) => st.step === 'authorization');
  assert.deepEqual(authz.map((st) => [st.identifier, st.ok, st.detail]), [[NAME, true, 'already valid at the CA (no challenge needed)']]);
  assert.deepEqual(s.published, [], 'nothing presented');
});

test('an order whose validation fails is dropped and its charge refunded', async () => {
  const s = setup(await makeTestCa());
  s.serve();
  s.acme.authzFails = true;
  await assert.rejects(s.issuer.issue(s.request, 0), (err: unknown) => isCertfleetError(err, ErrorCode.AcmeProblem));
  assert.equal(s.charges.length, 1);
  assert.equal(s.refunds.length, 1, 'the CA counts certificates at issuance: the charge comes back');
  assert.equal(await s.issuer.resumable('web', [NAME], 'ecdsa-p256'), null, 'a dead order is not resumed');
});

test('with several issuers an issuance orders from the named one, records it in the version, and drops another issuer’s saved order refunding that issuer', async () => {
  const s = setup(await makeTestCa());
  const backup = new FakeCa(await makeTestCa());
  const issuer = new Issuer({
    acme: s.acme.client,
    accounts: (name) => (name === 'backup' ? Promise.resolve(backup.client) : name === 'default' ? Promise.resolve(s.acme.client) : Promise.reject(new Error(name))),
    store: s.store,
    http01: s.http01,
    spool: {} as Spool,
    clock: s.clock,
    log: silentLogger(),
  });
  const refunds: Array<[Spend, string | undefined]> = [];
  const at = (name: string): IssueRequest => ({ ...s.request, issuer: name, charge: { charge: () => s.request.charge?.charge() ?? assert.fail('no charge'), refund: (spend, other) => refunds.push([spend, other]) } });

  // The first issuer's attempt ends with a saved order (no agent served the challenge).
  const first = track(issuer.issue(at('default'), 0));
  await published(s, 1);
  assert.ok(await s.clock.runUntil(() => first.done, 2 * SELF_CHECK_MS));
  assert.ok(isCertfleetError(first.error, ErrorCode.ChallengeNotServed));
  assert.ok(await issuer.resumable('web', [NAME], 'ecdsa-p256', 'default'), 'resumable at the issuer that placed it');
  assert.equal(await issuer.resumable('web', [NAME], 'ecdsa-p256', 'backup'), null, 'not at another issuer');

  s.serve();
  const meta = await issuer.issue(at('backup'), 0);
  assert.equal(backup.placed, 1, 'the fallback CA got its own order');
  assert.equal(s.acme.placed, 1, 'the first CA got no second one');
  assert.equal(meta.issuer, 'backup');
  assert.equal((await s.store.latest('web'))?.issuer, 'backup', 'the stored version records its issuer');
  assert.deepEqual(refunds.map(([, other]) => other), ['default'], 'the dropped order is refunded to the issuer it was charged to');
});

/**
 * The AgentService backend's decisions (controller/agentservice), over a real Enrollment
 * on a FileStore, the real controller CA and real CSRs; the desired pointers, fleet view
 * and events are small in-memory stand-ins for the NATS-backed modules. Proves: a key
 * leaves only towards agents the configuration assigns the certificate to (by registered
 * labels), version 0 follows the agent's rollout wave, a removed or replaced identity is
 * refused before anything is read or recorded, and a malformed CSR leaves the token usable.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createAgentService, type AgentServiceDeps } from '../../controller/agentservice/index.js';
import type { AgentReport, CallerIdentity } from '../../controller/api/index.js';
import type { CertificateConfig } from '../../controller/config/index.js';
import { Enrollment, type AgentRegistration } from '../../controller/enroll/index.js';
import { createControllerCa } from '../../controller/pki/index.js';
import { FileStore } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError, type ErrorCode as Code } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle, DesiredRecord } from '../../shared/model/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';
import { tempDir } from '../harness/tmp.js';

const START = Date.UTC(2026, 2, 1, 12, 0, 0);

function cert(name: string, agents: string): CertificateConfig {
  return { name, names: [`${name}.example.test`], agents } as unknown as CertificateConfig;
}

function desiredRecord(name: string, version: number, extra: Partial<DesiredRecord> = {}): DesiredRecord {
  return { name, version, fingerprint: `fp-${version}`, names: [`${name}.example.test`], notAfter: '2026-06-01T00:00:00.000Z', selector: '', updatedAt: '2026-03-01T00:00:00.000Z', ...extra };
}

function bundle(name: string, version: number): Bundle {
  return {
    meta: { name, version, serial: `s${version}`, fingerprint: `fp-${version}`, names: [`${name}.example.test`], notBefore: '', notAfter: '', issuedAt: '', keyType: 'ecdsa-p256' },
    certPem: `cert ${name} ${version}`,
    chainPem: '',
    keyPem: `key ${name} ${version}`,
  };
}

function hasCode(code: Code) {
  return (err: unknown): boolean => {
    assert.ok(isCertfleetError(err, code), `expected ${code}, got ${String(err)}`);
    return true;
  };
}

async function setup() {
  const clock = new ManualClock(START);
  const store = await FileStore.open({ dir: path.join(tempDir('certfleet-agentservice-'), 'store'), log: silentLogger() });
  const enrollment = new Enrollment(store, clock, silentLogger());
  const ca = await createControllerCa({ now: START });
  const desired = new Map<string, DesiredRecord>();
  const versions = new Map<string, Bundle>();
  const reports: Array<{ agent: string; report: AgentReport }> = [];
  const registered: AgentRegistration[] = [];
  const events: string[] = [];
  const fetched: string[] = [];
  const deps: AgentServiceDeps = {
    certificates: [cert('web', 'role=web'), cert('db', 'role=db'), cert('all', '*')],
    identityValidityMs: 7 * 24 * 3600 * 1000,
    ca,
    enrollment,
    fleet: {
      registered: (reg) => void registered.push(reg),
      report: (agent, report) => Promise.resolve(void reports.push({ agent, report })),
    },
    desired: { all: () => [...desired.values()], get: (n) => desired.get(n) },
    store: {
      getVersion: (name, version) => {
        fetched.push(`${name}@${version}`);
        return Promise.resolve(versions.get(`${name}@${version}`) ?? null);
      },
    },
    signer: { publicKeys: () => [] },
    events: { emit: (type) => Promise.resolve(void events.push(type)) },
    clock,
  };
  const service = createAgentService(deps);
  /** Enrols `agent` through the service with a fresh token; returns its caller identity. */
  const enrol = async (agent: string, labels: Record<string, string>): Promise<CallerIdentity> => {
    const { token } = await enrollment.createToken({ agent, labels });
    const { csrPem } = await createAgentKeyAndCsr(agent);
    await service.enroll(token, csrPem);
    const reg = await enrollment.getAgent(agent);
    assert.ok(reg);
    return { role: 'agent', name: agent, serial: reg.certSerial };
  };
  return { clock, store, enrollment, service, desired, versions, reports, registered, events, fetched, enrol };
}

void describe('agent service: who gets which certificate', () => {
  void it('an agent fetches the bundle of a certificate whose selector matches its registered labels, and nothing else', async () => {
    const t = await setup();
    t.desired.set('web', desiredRecord('web', 2));
    t.desired.set('db', desiredRecord('db', 1));
    t.versions.set('web@2', bundle('web', 2));
    t.versions.set('db@1', bundle('db', 1));
    const web1 = await t.enrol('web-1', { role: 'web' });

    assert.equal((await t.service.fetchBundle(web1, 'web', 0)).keyPem, 'key web 2');
    await assert.rejects(t.service.fetchBundle(web1, 'db', 1), hasCode(ErrorCode.PermissionDenied));
    await assert.rejects(t.service.fetchBundle(web1, 'db', 0), hasCode(ErrorCode.PermissionDenied));
    // Not declared at all: refused the same way, never looked up.
    await assert.rejects(t.service.fetchBundle(web1, 'nope', 1), hasCode(ErrorCode.PermissionDenied));
    assert.deepEqual(t.fetched, ['web@2'], 'the store is read only for the assigned certificate');
  });

  void it('a version fetched by many agents at once is read from the store once; a missing one is read again (issue #13)', async () => {
    const t = await setup();
    t.desired.set('all', desiredRecord('all', 3));
    const agents = await Promise.all(['a-1', 'a-2', 'a-3'].map((n) => t.enrol(n, { role: 'web' })));
    // Not stored yet: NOT_FOUND, and not remembered as missing.
    await assert.rejects(t.service.fetchBundle(agents[0] as CallerIdentity, 'all', 0), hasCode(ErrorCode.NotFound));
    t.versions.set('all@3', bundle('all', 3));
    const got = await Promise.all(agents.map((a) => t.service.fetchBundle(a, 'all', 0)));
    assert.deepEqual(got.map((b) => b.keyPem), ['key all 3', 'key all 3', 'key all 3']);
    assert.equal((await t.service.fetchBundle(agents[1] as CallerIdentity, 'all', 3)).meta.version, 3);
    assert.deepEqual(t.fetched, ['all@3', 'all@3'], 'one read for the missing version, one for everyone after');
    // Authorisation still holds for a cached bundle.
    const db1 = await t.enrol('db-1', { role: 'db' });
    t.desired.set('web', desiredRecord('web', 3));
    t.versions.set('web@3', bundle('web', 3));
    await t.service.fetchBundle(agents[0] as CallerIdentity, 'web', 3);
    await assert.rejects(t.service.fetchBundle(db1, 'web', 3), hasCode(ErrorCode.PermissionDenied));
  });

  void it('assignments list only the certificates the agent is assigned, the every-agent selector included', async () => {
    const t = await setup();
    t.desired.set('web', desiredRecord('web', 2));
    t.desired.set('db', desiredRecord('db', 1));
    t.desired.set('all', desiredRecord('all', 3));
    const db1 = await t.enrol('db-1', { role: 'db' });
    const a = await t.service.assignments(db1);
    assert.deepEqual(a.desired.map((d) => d.name).sort(), ['all', 'db']);
    assert.deepEqual(a.assigned.map((c) => c.name).sort(), ['all', 'db']);
    assert.deepEqual(a.assigned.find((c) => c.name === 'db')?.names, ['db.example.test']);
  });

  void it('version 0 is the version of the agent\'s rollout wave; an explicit version is served as asked', async () => {
    const t = await setup();
    const rollout = { from: { version: 1, fingerprint: 'fp-1', notAfter: '2026-05-01T00:00:00.000Z', names: ['web.example.test'] }, waves: ['zone=a', 'zone=b'], released: 1 };
    t.desired.set('web', desiredRecord('web', 2, { rollout } as Partial<DesiredRecord>));
    t.versions.set('web@1', bundle('web', 1));
    t.versions.set('web@2', bundle('web', 2));
    const early = await t.enrol('web-a', { role: 'web', zone: 'a' });
    const late = await t.enrol('web-b', { role: 'web', zone: 'b' });
    assert.equal((await t.service.fetchBundle(early, 'web', 0)).meta.version, 2);
    assert.equal((await t.service.fetchBundle(late, 'web', 0)).meta.version, 1);
    assert.equal((await t.service.fetchBundle(late, 'web', 2)).meta.version, 2);
    assert.deepEqual((await t.service.assignments(late)).effective.map((d) => d.version), [1]);
  });

  void it('a certificate without a desired version, or a version not stored, is NOT_FOUND', async () => {
    const t = await setup();
    const web1 = await t.enrol('web-1', { role: 'web' });
    await assert.rejects(t.service.fetchBundle(web1, 'web', 0), hasCode(ErrorCode.NotFound));
    await assert.rejects(t.service.fetchBundle(web1, 'web', 7), hasCode(ErrorCode.NotFound));
  });
});

void describe('agent service: identity', () => {
  void it('a removed agent is refused on every call, its report not recorded', async () => {
    const t = await setup();
    t.desired.set('web', desiredRecord('web', 1));
    t.versions.set('web@1', bundle('web', 1));
    const web1 = await t.enrol('web-1', { role: 'web' });
    await t.enrollment.removeAgent('web-1', 'admin');
    const report: AgentReport = { http01Address: '127.0.0.1:1', agentVersion: 'test', certificates: [] };
    await assert.rejects(t.service.fetchBundle(web1, 'web', 0), hasCode(ErrorCode.Unauthenticated));
    await assert.rejects(t.service.assignments(web1), hasCode(ErrorCode.Unauthenticated));
    await assert.rejects(t.service.reportStatus(web1, report), hasCode(ErrorCode.Unauthenticated));
    assert.deepEqual(t.reports, []);
    assert.deepEqual(t.fetched, []);
  });

  void it('the certificate of an earlier enrolment is refused once the agent enrolled again', async () => {
    const t = await setup();
    const first = await t.enrol('web-1', { role: 'web' });
    const second = await t.enrol('web-1', { role: 'web' });
    assert.notEqual(first.serial, second.serial);
    await assert.rejects(t.service.assignments(first), hasCode(ErrorCode.Unauthenticated));
    await t.service.reportStatus(second, { http01Address: '127.0.0.1:1', agentVersion: 'test', certificates: [] });
    assert.deepEqual(t.reports.map((r) => r.agent), ['web-1']);
  });

  void it('labels come from the registration, so re-enrolling with other labels changes what the agent may fetch', async () => {
    const t = await setup();
    t.desired.set('db', desiredRecord('db', 1));
    t.versions.set('db@1', bundle('db', 1));
    const asWeb = await t.enrol('node-1', { role: 'web' });
    await assert.rejects(t.service.fetchBundle(asWeb, 'db', 0), hasCode(ErrorCode.PermissionDenied));
    const asDb = await t.enrol('node-1', { role: 'db' });
    assert.equal((await t.service.fetchBundle(asDb, 'db', 0)).meta.version, 1);
  });

  void it('a malformed CSR is refused before the token is redeemed: the token still enrols afterwards', async () => {
    const t = await setup();
    const { token } = await t.enrollment.createToken({ agent: 'web-1', labels: { role: 'web' } });
    await assert.rejects(t.service.enroll(token, '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'));
    const { csrPem } = await createAgentKeyAndCsr('web-1');
    const out = await t.service.enroll(token, csrPem);
    assert.equal(out.agent, 'web-1');
    assert.deepEqual(out.labels, { role: 'web' });
    assert.equal(out.natsCredentials, '', 'no NATS user without a NATS authority');
    assert.deepEqual(t.events, ['enrolled']);
  });

  void it('identity renewal keeps the old certificate accepted until the new one is used', async () => {
    const t = await setup();
    const old = await t.enrol('web-1', { role: 'web' });
    const { csrPem } = await createAgentKeyAndCsr('web-1');
    const renewed = await t.service.renewIdentity(old, csrPem);
    const reg = await t.enrollment.getAgent('web-1');
    assert.ok(reg?.pendingSerial, 'the new serial is pending');
    await t.service.assignments(old); // still accepted
    await t.service.assignments({ role: 'agent', name: 'web-1', serial: reg.pendingSerial });
    await assert.rejects(t.service.assignments(old), hasCode(ErrorCode.Unauthenticated));
    assert.ok(renewed.certificatePem.includes('BEGIN CERTIFICATE'));
  });
});

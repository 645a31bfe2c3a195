/**
 * Operator access: the role table (role × OperatorService method → allowed), the
 * refusal message, and the operator registry on a real FileStore (create, authenticate,
 * revoke, set-role, the last admin, the bootstrap admin of an upgraded controller).
 */
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { authorize, OperatorRegistry, permissionDenied, REQUIRED_ROLE, OPERATOR_ROLES } from '../../controller/access/index.js';
import { FileStore } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { loadProtos } from '../../shared/grpc/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

/** The table, written out in full: every method, and for each role whether it may call it. */
const EXPECTED: Record<string, { viewer: boolean; operator: boolean; admin: boolean }> = {
  GetStatus: { viewer: true, operator: true, admin: true },
  ListCertificates: { viewer: true, operator: true, admin: true },
  ListAgents: { viewer: true, operator: true, admin: true },
  ShowCertificate: { viewer: true, operator: true, admin: true },
  GetHistory: { viewer: true, operator: true, admin: true },
  ListEvents: { viewer: true, operator: true, admin: true },
  FollowEvents: { viewer: true, operator: true, admin: true },
  ListBudgets: { viewer: true, operator: true, admin: true },
  WhoAmI: { viewer: true, operator: true, admin: true },
  RenewCertificate: { viewer: false, operator: true, admin: true },
  Rollback: { viewer: false, operator: true, admin: true },
  Release: { viewer: false, operator: true, admin: true },
  RevokeCertificate: { viewer: false, operator: true, admin: true },
  DryRun: { viewer: false, operator: true, admin: true },
  CheckChallenges: { viewer: false, operator: true, admin: true },
  CreateEnrollmentToken: { viewer: false, operator: false, admin: true },
  RemoveAgent: { viewer: false, operator: false, admin: true },
  CreateOperator: { viewer: false, operator: false, admin: true },
  ListOperators: { viewer: false, operator: false, admin: true },
  RevokeOperator: { viewer: false, operator: false, admin: true },
  SetOperatorRole: { viewer: false, operator: false, admin: true },
};

describe('the role table', () => {
  for (const [method, roles] of Object.entries(EXPECTED)) {
    for (const role of OPERATOR_ROLES) {
      it(`${role} ${roles[role] ? 'may' : 'may not'} call ${method}`, () => {
        assert.equal(authorize(role, method).allowed, roles[role]);
      });
    }
  }

  it('the policy has exactly the rows written out here (a new method needs a deliberate row)', () => {
    assert.deepEqual(Object.keys(REQUIRED_ROLE).sort(), Object.keys(EXPECTED).sort());
  });

  it('every OperatorService RPC in the proto has a row, so none is refused to everyone by omission', () => {
    const service = loadProtos().operator.certfleet.v1.OperatorService.service as unknown as Record<string, unknown>;
    const missing = Object.keys(service).filter((m) => !Object.hasOwn(REQUIRED_ROLE, m));
    assert.deepEqual(missing, []);
  });

  it('an unknown method is refused to every role, admin included, and names no role that would do', () => {
    for (const role of OPERATOR_ROLES) assert.deepEqual(authorize(role, 'DropEverything'), { allowed: false, needs: undefined });
    assert.equal(authorize('admin', 'toString').allowed, false, 'no inherited property counts as a row');
  });

  it('an unknown role may call nothing, not even the reads', () => {
    assert.deepEqual(authorize('root', 'GetStatus'), { allowed: false, needs: 'viewer' });
    assert.equal(authorize('', 'GetStatus').allowed, false);
  });

  it('a refusal names the operator, its role, what it tried, and the role it needs', () => {
    const err = permissionDenied('alice', 'viewer', 'Rollback');
    assert.equal(err.code, ErrorCode.PermissionDenied);
    assert.equal(err.message, 'operator alice has role viewer, which may not roll certificates back (Rollback); it needs role operator or above');
    assert.equal(permissionDenied('bob', 'operator', 'CreateOperator').message, 'operator bob has role operator, which may not create operators (CreateOperator); it needs role admin');
    assert.deepEqual(permissionDenied('bob', 'operator', 'CreateOperator').details, { operator: 'bob', role: 'operator', method: 'CreateOperator', needs: 'admin' });
  });
});

async function registry(): Promise<{ reg: OperatorRegistry; clock: ManualClock; store: FileStore }> {
  const store = await FileStore.open({ dir: tempDir('certfleet-access-'), log: silentLogger() });
  const clock = new ManualClock(Date.parse('2026-03-01T12:00:00Z'));
  return { reg: new OperatorRegistry(store, clock), clock, store };
}

const code = (c: string) => (err: unknown) => isCertfleetError(err) && err.code === c;

describe('the operator registry', () => {
  test('a created operator authenticates with its serial and is allowed what its role allows, checked on every call', async () => {
    const { reg } = await registry();
    const rec = await reg.create({ name: 'alice', role: 'viewer', serial: 'aa01', notAfter: '2027-03-01T12:00:00.000Z', by: 'admin' });
    assert.deepEqual(rec, { name: 'alice', role: 'viewer', serial: 'aa01', notAfter: '2027-03-01T12:00:00.000Z', createdBy: 'admin', createdAt: '2026-03-01T12:00:00.000Z', revoked: false });
    assert.equal((await reg.check({ name: 'alice', serial: 'aa01' }, 'ListEvents')).role, 'viewer');
    await assert.rejects(reg.check({ name: 'alice', serial: 'aa01' }, 'Rollback'), (err: unknown) => isCertfleetError(err, ErrorCode.PermissionDenied) && /role viewer/.test(err.message));
    // A role change holds from the next call on, with the same certificate.
    await reg.setRole('alice', 'operator', 'admin');
    assert.equal((await reg.check({ name: 'alice', serial: 'aa01' }, 'Rollback')).role, 'operator');
  });

  test('a revoked operator is refused UNAUTHENTICATED with "revoked", whatever it calls', async () => {
    const { reg } = await registry();
    await reg.create({ name: 'admin', role: 'admin', serial: 'ad01', notAfter: '', by: 'controller' });
    await reg.create({ name: 'bob', role: 'operator', serial: 'b001', notAfter: '', by: 'admin' });
    const revoked = await reg.revoke('bob', 'admin');
    assert.equal(revoked.revoked, true);
    assert.equal(revoked.revokedBy, 'admin');
    await assert.rejects(reg.check({ name: 'bob', serial: 'b001' }, 'GetStatus'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && err.message === 'operator bob was revoked by admin at 2026-03-01T12:00:00.000Z');
    assert.equal((await reg.revoke('bob', 'admin')).revokedAt, revoked.revokedAt, 'revoking again changes nothing');
    await assert.rejects(reg.setRole('bob', 'admin', 'admin'), code(ErrorCode.UsageInvalid));
  });

  test('unknown operators and replaced certificates are refused; a revoked name can be created again with a new certificate only', async () => {
    const { reg } = await registry();
    await assert.rejects(reg.check({ name: 'ghost', serial: '01' }, 'GetStatus'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && /not registered/.test(err.message));
    await reg.create({ name: 'admin', role: 'admin', serial: 'ad01', notAfter: '', by: 'controller' });
    await reg.create({ name: 'carol', role: 'viewer', serial: 'c001', notAfter: '', by: 'admin' });
    await assert.rejects(reg.create({ name: 'carol', role: 'admin', serial: 'c002', notAfter: '', by: 'admin' }), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && /already exists/.test(err.message));
    await reg.revoke('carol', 'admin');
    await reg.create({ name: 'carol', role: 'operator', serial: 'c002', notAfter: '', by: 'admin' });
    await assert.rejects(reg.check({ name: 'carol', serial: 'c001' }, 'GetStatus'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && /replaced/.test(err.message));
    assert.equal((await reg.check({ name: 'carol', serial: 'c002' }, 'Release')).role, 'operator');
  });

  test('the last active admin can be neither revoked nor demoted; with a second admin both work', async () => {
    const { reg } = await registry();
    await reg.create({ name: 'admin', role: 'admin', serial: 'ad01', notAfter: '', by: 'controller' });
    await assert.rejects(reg.revoke('admin', 'admin'), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && /last active admin/.test(err.message));
    await assert.rejects(reg.setRole('admin', 'viewer', 'admin'), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && /last active admin/.test(err.message));
    await reg.create({ name: 'root2', role: 'admin', serial: 'r002', notAfter: '', by: 'admin' });
    assert.equal((await reg.setRole('admin', 'viewer', 'root2')).previous, 'admin');
    await assert.rejects(reg.revoke('root2', 'root2'), code(ErrorCode.UsageInvalid));
  });

  test('bad names and roles are refused before anything is stored; unknown names are NOT_FOUND', async () => {
    const { reg, store } = await registry();
    await assert.rejects(reg.create({ name: 'Alice', role: 'viewer', serial: '01', notAfter: '', by: 'admin' }), code(ErrorCode.UsageInvalid));
    await assert.rejects(reg.create({ name: 'alice', role: 'root', serial: '01', notAfter: '', by: 'admin' }), code(ErrorCode.UsageInvalid));
    assert.deepEqual(await store.listObjects('operators/'), []);
    await assert.rejects(reg.revoke('nobody', 'admin'), code(ErrorCode.NotFound));
    await assert.rejects(reg.setRole('nobody', 'viewer', 'admin'), code(ErrorCode.NotFound));
  });

  test('the bootstrap admin: registered on first start and on an upgrade, re-keyed only when its file was rewritten, never revived once revoked', async () => {
    const { reg } = await registry();
    // A controller upgraded in place: its admin-credentials.json predates the registry.
    const first = await reg.ensureBootstrapAdmin({ serial: 'old1', notAfter: '2027-01-01T00:00:00.000Z', fresh: false });
    assert.deepEqual([first.name, first.role, first.serial, first.createdBy], ['admin', 'admin', 'old1', 'controller']);
    assert.equal((await reg.check({ name: 'admin', serial: 'old1' }, 'CreateOperator')).role, 'admin');
    // A restart reads the same file: nothing changes; another file is not taken over silently.
    assert.equal((await reg.ensureBootstrapAdmin({ serial: 'other', notAfter: '', fresh: false })).serial, 'old1');
    // The file was deleted and the controller wrote a new one: the new certificate replaces the old.
    assert.equal((await reg.ensureBootstrapAdmin({ serial: 'new2', notAfter: '', fresh: true })).serial, 'new2');
    await assert.rejects(reg.check({ name: 'admin', serial: 'old1' }, 'GetStatus'), code(ErrorCode.Unauthenticated));
    await reg.create({ name: 'ops', role: 'admin', serial: 'op01', notAfter: '', by: 'admin' });
    await reg.revoke('admin', 'ops');
    const after = await reg.ensureBootstrapAdmin({ serial: 'new3', notAfter: '', fresh: true });
    assert.equal(after.revoked, true);
    assert.equal(after.serial, 'new2');
  });

  test('list returns every operator, revoked ones included, sorted by name', async () => {
    const { reg } = await registry();
    await reg.create({ name: 'zed', role: 'viewer', serial: '01', notAfter: '', by: 'admin' });
    await reg.create({ name: 'admin', role: 'admin', serial: '02', notAfter: '', by: 'controller' });
    await reg.revoke('zed', 'admin');
    assert.deepEqual((await reg.list()).map((r) => [r.name, r.revoked]), [['admin', false], ['zed', true]]);
  });
});

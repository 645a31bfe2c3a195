/**
 * The operator commands against a real gRPC server with mutual TLS on loopback. The
 * server's handlers return fixed answers (the controller's own OperatorService is tested
 * with the controller); what is proved here is the CLI's side: credentials, TLS names,
 * client certificates, deadlines, error codes and output.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import path from 'node:path';
import { runCli, type CliIo } from '../../cli/index.js';
import { CertfleetError, ErrorCode, ExitCode } from '../../shared/errors/index.js';
import { grpc, loadProtos, toServiceError, type OperatorServiceHandlers, type pb } from '../../shared/grpc/index.js';
import { makeLeaf, makeTestCa, type TestCa, type TestLeaf } from '../harness/certs.js';
import { signOperatorCsr, verifyClientCertificate } from '../../controller/pki/index.js';
import { tempDir } from '../harness/tmp.js';

const NOW = new Date('2026-03-01T12:00:00Z');

const STATUS: pb.GetStatusResponse = {
  controllerVersion: '0.1.0',
  store: 'file',
  acmeDirectory: 'https://127.0.0.1:14000/dir',
  certificates: 2,
  certificatesReady: 1,
  agents: 1,
  agentsOnline: 1,
  nats: 'connected',
  // Several controllers (issue #12): --json carries the leader and the registry.
  leader: { holder: 'c1#0a1b2c3d', address: '127.0.0.1:7443', epoch: '4', renewedAt: '2026-03-01T11:59:58.000Z' },
  self: 'c1',
  role: 'leader',
  controllers: [{ name: 'c1', address: '127.0.0.1:7443', role: 'leader', epoch: '4', seenAt: '2026-03-01T11:59:58.000Z', health: 'ok', version: '0.1.0' }],
};

const CERTS: pb.ListCertificatesResponse = {
  certificates: [
    {
      name: 'web',
      names: ['www.example.test'],
      selector: 'role=lb',
      current: {
        name: 'web',
        version: 2,
        serial: '0a',
        fingerprint: 'ab'.repeat(32),
        names: ['www.example.test'],
        notBefore: '2026-02-01T00:00:00Z',
        notAfter: '2026-05-01T00:00:00Z',
        issuedAt: '2026-02-01T00:00:00Z',
        keyType: 'ecdsa-p256',
      },
      state: 'ready',
      agentsAssigned: 1,
      agentsCurrent: 1,
      nextRenewal: '2026-03-31T00:00:00Z',
      newestVersion: 2,
      desiredVersion: 2,
    },
  ],
};

const AGENTS: pb.ListAgentsResponse = {
  agents: [
    {
      name: 'lb-1',
      labels: { role: 'lb' },
      lastSeen: '2026-03-01T11:59:48Z',
      online: true,
      certificates: [{ name: 'web', version: 2, desiredVersion: 2, state: 'installed' }],
    },
  ],
};

const SHOW: pb.ShowCertificateResponse = {
  summary: CERTS.certificates?.[0] ?? null,
  reason: 'ARI window',
  deferredUntil: '',
  deferredReason: '',
  backoffUntil: '',
  failures: 0,
  pinnedVersion: 0,
  ariWindowStart: '2026-03-30T00:00:00Z',
  ariWindowEnd: '2026-04-01T00:00:00Z',
  desiredVersion: 2,
};

const HISTORY: pb.GetHistoryResponse = {
  name: 'web',
  pinnedVersion: 0,
  versions: [
    {
      version: { name: 'web', version: 1, serial: '09', fingerprint: 'cd'.repeat(32), notAfter: '2026-02-15T00:00:00Z', issuedAt: '2025-11-17T00:00:00Z' },
      agents: [],
      desired: false,
      expired: true,
    },
    { version: CERTS.certificates?.[0]?.current ?? null, agents: ['lb-1'], desired: true, expired: false },
  ],
};

const BUDGETS: pb.ListBudgetsResponse = {
  preset: 'letsencrypt',
  budgets: [{ name: 'new-orders-per-account', limit: '300 per 3h', available: 287.6, capacity: 300, reserved: 10, nextTokenAt: '2026-03-01T12:00:36Z' }],
};

/** The events stream as the fake controller holds it; `events --follow` tests append to it. */
const EVENTS: pb.FleetEvent[] = [
  { type: 'issued', at: '2026-03-01T11:00:00.000Z', cert: 'web', version: 2, message: 'issued by the CA' },
  { type: 'installed', at: '2026-03-01T11:01:00.000Z', cert: 'web', agent: 'lb-1', version: 2, message: 'hook ok, served' },
  { type: 'issued', at: '2026-03-01T11:05:00.000Z', cert: 'api', version: 1, message: 'issued by the CA' },
];

const rollbackRequests: pb.RollbackRequest__Output[] = [];
const createOperatorRequests: pb.CreateOperatorRequest__Output[] = [];

function operatorRecord(over: Partial<pb.Operator> = {}): pb.Operator {
  return { name: 'alice', role: 'viewer', serial: 'ab12', notAfter: '2027-03-01T12:00:00.000Z', createdBy: 'admin', createdAt: '2026-03-01T11:00:00.000Z', revoked: false, revokedBy: '', revokedAt: '', ...over };
}
const eventRequests: pb.ListEventsRequest__Output[] = [];
const followRequests: pb.FollowEventsRequest__Output[] = [];

/** The fake controller's open FollowEvents streams; {@link publish} writes to them. */
const followers = new Set<{ match: (e: pb.FleetEvent) => boolean; call: grpc.ServerWritableStream<pb.FollowEventsRequest__Output, pb.FleetEvent> }>();

/** A new event on the fake controller: appended to EVENTS and sent to every matching stream. */
function publish(e: pb.FleetEvent): void {
  EVENTS.push(e);
  for (const f of followers) if (f.match(e)) f.call.write(e);
}

function notFound(name: string): Partial<grpc.StatusObject> {
  return toServiceError(new CertfleetError(ErrorCode.NotFound, `no certificate named ${name}`));
}

let ca: TestCa;
let otherCa: TestCa;
let admin: TestLeaf;
let stranger: TestLeaf;
let server: grpc.Server;
let port: number;
const tokenRequests: pb.CreateEnrollmentTokenRequest__Output[] = [];
const revokeRequests: pb.RevokeCertificateRequest__Output[] = [];
const peers: string[] = [];

const handlers: OperatorServiceHandlers = {
  GetStatus(call, cb) {
    // The client certificate the CLI presented, as the controller will see it.
    const cert = call.getAuthContext().sslPeerCertificate;
    peers.push(String(cert?.subject?.CN ?? ''));
    cb(null, STATUS);
  },
  ListCertificates(_call, cb) {
    cb(null, CERTS);
  },
  ListAgents(_call, cb) {
    cb(null, AGENTS);
  },
  CreateEnrollmentToken(call, cb) {
    tokenRequests.push(call.request);
    if (call.request.agent === 'missing') {
      cb(toServiceError(new CertfleetError(ErrorCode.NotFound, 'no such thing')));
    } else if (call.request.agent === 'slow') {
      // Never answers: the CLI's deadline must end the call.
    } else {
      cb(null, { token: `tok-for-${call.request.agent}`, expiresAt: '2026-03-01T13:00:00Z' });
    }
  },
  ShowCertificate(call, cb) {
    if (call.request.name === 'web') cb(null, SHOW);
    else cb(notFound(call.request.name));
  },
  RenewCertificate(call, cb) {
    if (call.request.name === 'web') cb(null, { message: call.request.cancel ? 'web: renewal request cancelled' : 'web: renewal queued (backoff cleared)' });
    else cb(notFound(call.request.name));
  },
  GetHistory(call, cb) {
    if (call.request.name === 'web') cb(null, HISTORY);
    else cb(notFound(call.request.name));
  },
  Rollback(call, cb) {
    rollbackRequests.push(call.request);
    if (call.request.name !== 'web') {
      cb(notFound(call.request.name));
    } else if (call.request.toVersion === 1) {
      cb(toServiceError(new CertfleetError(ErrorCode.BundleExpired, 'web v1 expired on 2026-02-15; pick a valid version')));
    } else {
      cb(null, { fromVersion: 3, toVersion: call.request.toVersion === 0 ? 2 : call.request.toVersion });
    }
  },
  Release(call, cb) {
    if (call.request.name === 'web') cb(null, { version: 3 });
    else cb(notFound(call.request.name));
  },
  RevokeCertificate(call, cb) {
    revokeRequests.push(call.request);
    if (call.request.name !== 'web') {
      cb(notFound(call.request.name));
      return;
    }
    cb(null, {
      name: 'web',
      version: call.request.version,
      serial: '0abc',
      reason: call.request.reason,
      reasonCode: 1,
      alreadyRevoked: false,
      revokedAt: '2026-03-01T00:00:00.000Z',
      revokedBy: 'admin',
      served: true,
      servingVersion: 1,
      servingPinned: true,
      pinReleased: false,
      renewalRequested: true,
      message: `web: version ${call.request.version} revoked at the CA (${call.request.reason}); the fleet moves to v1, pinned until the renewal is issued`,
    });
  },
  ListBudgets(_call, cb) {
    cb(null, BUDGETS);
  },
  WhoAmI(_call, cb) {
    cb(null, { name: 'admin', role: 'admin' });
  },
  CreateOperator(call, cb) {
    createOperatorRequests.push(call.request);
    if (call.request.name === 'taken') {
      cb(toServiceError(new CertfleetError(ErrorCode.UsageInvalid, 'operator taken already exists (role admin); revoke it first or choose another name')));
      return;
    }
    // Signed as the controller does, so the test can check the file the CLI writes works.
    signOperatorCsr({ certPem: ca.certPem, keyPem: ca.keyPem }, call.request.csrPem, { operator: call.request.name, role: call.request.role, now: Date.now() }).then(
      (signed) => cb(null, { operator: operatorRecord({ name: call.request.name, role: call.request.role, serial: signed.serial }), certificatePem: signed.certPem, caPem: ca.certPem }),
      (err: unknown) => cb(toServiceError(err instanceof CertfleetError ? err : new CertfleetError(ErrorCode.Internal, String(err)))),
    );
  },
  ListOperators(_call, cb) {
    cb(null, {
      operators: [
        operatorRecord({ name: 'bob', role: 'operator', revoked: true, revokedBy: 'admin', revokedAt: '2026-03-01T11:30:00.000Z' }),
        operatorRecord({ name: 'admin', role: 'admin', createdBy: 'controller' }),
      ],
    });
  },
  RevokeOperator(call, cb) {
    if (call.request.name === 'admin') {
      cb(toServiceError(new CertfleetError(ErrorCode.PermissionDenied, 'operator carol has role operator, which may not revoke operators (RevokeOperator); it needs role admin')));
    } else {
      cb(null, { operator: operatorRecord({ name: call.request.name, revoked: true, revokedBy: 'admin', revokedAt: '2026-03-01T12:00:00.000Z' }) });
    }
  },
  SetOperatorRole(call, cb) {
    cb(null, { operator: operatorRecord({ name: call.request.name, role: call.request.role }), previousRole: 'viewer' });
  },
  RemoveAgent(call, cb) {
    if (call.request.name === 'ghost') {
      cb(toServiceError(new CertfleetError(ErrorCode.NotFound, 'agent ghost is not enrolled')));
      return;
    }
    const again = call.request.name === 'gone';
    cb(null, { name: call.request.name, removedBy: 'admin', removedAt: '2026-03-01T12:00:00.000Z', alreadyRemoved: again, tokensWithdrawn: again ? 0 : 1 });
  },
  DryRun(call, cb) {
    cb(notFound(call.request.name));
  },
  CheckChallenges(call, cb) {
    cb(notFound(call.request.name));
  },
  ListEvents(call, cb) {
    eventRequests.push(call.request);
    const matching = EVENTS.filter((e) => call.request.cert === '' || e.cert === call.request.cert);
    // Like the controller: the most recent `limit` events (0: 50), oldest first.
    cb(null, { events: matching.slice(-(call.request.limit || 50)) });
  },
  FollowEvents(call) {
    followRequests.push(call.request);
    const match = (e: pb.FleetEvent): boolean => call.request.cert === '' || e.cert === call.request.cert;
    // Like the controller: headers, the most recent `limit` events, then each new one.
    call.sendMetadata(new grpc.Metadata());
    for (const e of EVENTS.filter(match).slice(-(call.request.limit || 50))) call.write(e);
    const entry = { match, call };
    followers.add(entry);
    call.on('cancelled', () => followers.delete(entry));
  },
};

before(async () => {
  ca = await makeTestCa({ commonName: 'certfleet test controller CA' });
  otherCa = await makeTestCa({ commonName: 'someone else' });
  // The server certificate names only controller.test: dialling 127.0.0.1 needs serverName.
  const serverLeaf = await makeLeaf(ca, { names: ['controller.test'] });
  admin = await makeLeaf(ca, { names: ['admin'] });
  stranger = await makeLeaf(otherCa, { names: ['admin'] });
  server = new grpc.Server();
  server.addService(loadProtos().operator.certfleet.v1.OperatorService.service, handlers);
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(ca.certPem),
    [{ cert_chain: Buffer.from(serverLeaf.fullchainPem), private_key: Buffer.from(serverLeaf.keyPem) }],
    true,
  );
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
});

after(() => {
  server.forceShutdown();
});

interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(argv: string[], env: Record<string, string> = {}, isTTY = false, extra: Partial<CliIo> = {}): Promise<Captured> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: (t: string) => (stdout += t), isTTY },
    stderr: { write: (t: string) => (stderr += t) },
    stdin: () => Readable.from([]),
    env,
    now: () => NOW,
    ...extra,
  };
  const code = await runCli(argv, io);
  return { code, stdout, stderr };
}

function credentialsFile(over: Record<string, unknown> = {}, mode = 0o600): string {
  const file = path.join(tempDir(), 'admin-credentials.json');
  const body = { server: `127.0.0.1:${port}`, serverName: 'controller.test', caPem: ca.certPem, certPem: admin.certPem, keyPem: admin.keyPem, ...over };
  fs.writeFileSync(file, JSON.stringify(body), { mode });
  fs.chmodSync(file, mode);
  return file;
}

void test('status --json prints the controller response with camelCase names, over mutual TLS with the admin certificate', async () => {
  const r = await cli(['status', '--json', '--credentials', credentialsFile()]);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), STATUS);
  assert.equal(peers.at(-1), 'admin');
});

void test('the credentials file is found through CERTFLEET_CREDENTIALS when --credentials is not given', async () => {
  const r = await cli(['status'], { CERTFLEET_CREDENTIALS: credentialsFile() });
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^controller: +0\.1\.0$/m);
  assert.match(r.stdout, /^certificates: +2 \(1 ready\)$/m);
  assert.match(r.stdout, /^leader: +c1 \(epoch 4\) at 127\.0\.0\.1:7443$/m);
  assert.match(r.stdout, /^CONTROLLERS\nNAME +ROLE +EPOCH +ADDRESS +HEALTH +SEEN +VERSION\nc1 +leader +4 +127\.0\.0\.1:7443 +ok /m);
});

void test('certs and agents print tables by default and the full response with --json', async () => {
  const file = credentialsFile();
  const certs = await cli(['certs', '--credentials', file]);
  assert.equal(certs.code, 0);
  assert.match(certs.stdout, /^NAME +NEWEST +DESIRED +PINNED +SERVING +STATE +NEXT +EXPIRES +NAMES\n/);
  assert.match(certs.stdout, /^web +2 +2 +- +1\/1 +ready +2026-03-31 \(in 29d\) +2026-05-01 \(in 60d\) +www\.example\.test$/m);

  const certsJson = JSON.parse((await cli(['certs', '--json', '--credentials', file])).stdout) as pb.ListCertificatesResponse__Output;
  assert.equal(certsJson.certificates[0]?.current?.fingerprint, 'ab'.repeat(32));
  assert.equal(certsJson.certificates[0]?.lastError, '', 'defaults are filled in, so scripts see every field');

  const agents = await cli(['agents', '--credentials', file]);
  assert.equal(agents.code, 0);
  assert.match(agents.stdout, /^lb-1 +yes +12s ago +role=lb +web@2 installed$/m);
  const agentsJson = JSON.parse((await cli(['agents', '--json', '--credentials', file])).stdout) as pb.ListAgentsResponse__Output;
  assert.deepEqual(agentsJson.agents[0]?.labels, { role: 'lb' });
});

void test('colour is used on a terminal and dropped when NO_COLOR is set', async () => {
  const file = credentialsFile();
  assert.match((await cli(['certs', '--credentials', file], {}, true)).stdout, /\x1b\[32mready\x1b\[0m/);
  assert.doesNotMatch((await cli(['certs', '--credentials', file], { NO_COLOR: '1' }, true)).stdout, /\x1b\[/);
});

void test('token create sends the agent, labels and ttl, prints only the token on stdout and the expiry on stderr', async () => {
  const r = await cli(['token', 'create', 'web-1', '--label', 'role=lb', '--label', 'site=par', '--ttl', '15m', '--credentials', credentialsFile()]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'tok-for-web-1\n');
  assert.match(r.stderr, /agent web-1, valid until 2026-03-01T13:00:00Z \(in 60m\)/);
  assert.deepEqual(tokenRequests.at(-1), { agent: 'web-1', labels: { role: 'lb', site: 'par' }, ttlSeconds: 900 });

  const json = await cli(['token', 'create', 'web-2', '--json', '--credentials', credentialsFile()]);
  assert.deepEqual(JSON.parse(json.stdout), { token: 'tok-for-web-2', expiresAt: '2026-03-01T13:00:00Z' });
  assert.equal(tokenRequests.at(-1)?.ttlSeconds, 0, 'no --ttl leaves the default to the controller');
});

void test("the controller's error code travels back: NOT_FOUND prints the message and code and exits 6", async () => {
  const r = await cli(['token', 'create', 'missing', '--credentials', credentialsFile()]);
  assert.equal(r.code, ExitCode.NotFound);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, 'certfleet: no such thing\ncode: NOT_FOUND\n');
});

void test('a call the controller does not answer ends at --timeout with CONTROLLER_UNAVAILABLE, exit 4, saying the deadline passed', async () => {
  const r = await cli(['token', 'create', 'slow', '--timeout', '500ms', '--credentials', credentialsFile()]);
  assert.equal(r.code, ExitCode.Unavailable);
  assert.match(r.stderr, /code: CONTROLLER_UNAVAILABLE/);
  // It was reached: "unreachable" would send the operator after the network.
  assert.match(r.stderr, /no answer before the deadline .*or the timeout is too short/);
  assert.doesNotMatch(r.stderr, /unreachable \(/);
});

void test('nothing listening on the server address gives CONTROLLER_UNAVAILABLE, exit 4, naming the address', async () => {
  const r = await cli(['status', '--credentials', credentialsFile({ server: '127.0.0.1:1' })]);
  assert.equal(r.code, ExitCode.Unavailable);
  assert.match(r.stderr, /^certfleet: controller 127\.0\.0\.1:1: /);
  assert.match(r.stderr, /code: CONTROLLER_UNAVAILABLE/);
});

void test('without serverName the dialled address must be in the server certificate, so the handshake fails', async () => {
  const file = credentialsFile();
  const body = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  delete body['serverName'];
  fs.writeFileSync(file, JSON.stringify(body));
  const r = await cli(['status', '--credentials', file]);
  assert.equal(r.code, ExitCode.Unavailable);
  assert.equal(r.stdout, '');
});

void test('a server certificate from another CA is refused', async () => {
  const r = await cli(['status', '--credentials', credentialsFile({ caPem: otherCa.certPem })]);
  assert.equal(r.code, ExitCode.Unavailable);
  assert.equal(r.stdout, '');
});

void test('a client certificate the controller did not issue is refused', async () => {
  const before = peers.length;
  const r = await cli(['status', '--credentials', credentialsFile({ certPem: stranger.certPem, keyPem: stranger.keyPem })]);
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, '');
  assert.equal(peers.length, before, 'the handler never ran');
});

void test('a credentials file readable by others still works but draws a warning that never shows the key', async () => {
  const r = await cli(['status', '--credentials', credentialsFile({}, 0o644)]);
  assert.equal(r.code, 0);
  assert.match(r.stderr, /^certfleet: warning: credentials file .* is readable by others \(mode 0644\)/);
  assert.doesNotMatch(r.stderr, /PRIVATE KEY/);
});

void test('show prints the certificate block from ShowCertificate, and --json the response', async () => {
  const file = credentialsFile();
  const r = await cli(['show', 'web', '--credentials', file]);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^certificate: +web$/m);
  assert.match(r.stdout, /^ {2}fingerprint: +abababababab$/m);
  assert.match(r.stdout, /^next renewal: +2026-03-31 00:00:00Z \(in 29d\): ARI window$/m);
  assert.match(r.stdout, /^agents: +1\/1 on the desired version$/m);
  const json = JSON.parse((await cli(['show', 'web', '--json', '--credentials', file])).stdout) as pb.ShowCertificateResponse__Output;
  assert.equal(json.desiredVersion, 2);
  assert.equal(json.summary?.name, 'web');
});

void test('every per-certificate command turns NOT_FOUND from the controller into exit 6 with the message', async () => {
  const file = credentialsFile();
  for (const argv of [['show', 'nope'], ['history', 'nope'], ['renew', 'nope'], ['rollback', 'nope'], ['release', 'nope']]) {
    const r = await cli([...argv, '--credentials', file]);
    assert.equal(r.code, ExitCode.NotFound, argv.join(' '));
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'certfleet: no certificate named nope\ncode: NOT_FOUND\n');
  }
});

void test('history lists the versions newest first with state and serving agents', async () => {
  const r = await cli(['history', 'web', '--credentials', credentialsFile()]);
  assert.equal(r.code, 0);
  const lines = r.stdout.split('\n');
  assert.match(lines[0] ?? '', /^VERSION +SERIAL +FINGERPRINT +NOT AFTER +ISSUED +STATE +AGENTS$/);
  assert.match(lines[1] ?? '', /^2 +0a +abababababab +2026-05-01 \(in 60d\) +2026-02-01 +desired +lb-1$/);
  assert.match(lines[2] ?? '', /^1 +09 +cdcdcdcdcdcd +2026-02-15 \(expired 14d ago\) +2025-11-17 +expired +-$/);
});

void test('renew prints the controller message; release prints the version now desired', async () => {
  const file = credentialsFile();
  const renew = await cli(['renew', 'web', '--credentials', file]);
  assert.equal(renew.code, 0);
  assert.equal(renew.stdout, 'web: renewal queued (backoff cleared)\n');
  const cancel = await cli(['renew', 'web', '--cancel', '--credentials', file]);
  assert.equal(cancel.code, 0);
  assert.equal(cancel.stdout, 'web: renewal request cancelled\n', '--cancel reaches the controller');
  const release = await cli(['release', 'web', '--credentials', file]);
  assert.equal(release.code, 0);
  assert.equal(release.stdout, 'web: released; v3 is desired now; agents install it now (--wait follows them)\n');
});

void test('rollback --wait follows the certificate until every agent serves the version; --json adds what it waited for', async () => {
  const file = credentialsFile();
  const r = await cli(['rollback', 'web', '--to', '2', '--wait', '--credentials', file], {}, false, { waitIntervalMs: 10 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^web: rolled back from v3 to v2/);
  assert.equal(r.stdout, 'web: version 2 served by 1/1 agent\n');
  const j = await cli(['rollback', 'web', '--to', '2', '--wait', '--json', '--credentials', file], {}, false, { waitIntervalMs: 10 });
  assert.equal(j.code, 0, j.stderr);
  assert.deepEqual(JSON.parse(j.stdout), { fromVersion: 3, toVersion: 2, wait: { served: true, version: 2, agentsCurrent: 1, agentsAssigned: 1 } });
});

void test('release --wait gives up after --wait-timeout with WAIT_TIMEOUT, saying how far it got', async () => {
  const r = await cli(['release', 'web', '--wait', '--wait-timeout', '200ms', '--credentials', credentialsFile()], {}, false, { waitIntervalMs: 20 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /web: gave up waiting after 0s: waiting for version 3 \(state ready\)/);
  assert.match(r.stderr, /\ncode: WAIT_TIMEOUT\n/);
});

void test('rollback sends --to (0 without it) and prints from and to with how to undo', async () => {
  const file = credentialsFile();
  const r = await cli(['rollback', 'web', '--credentials', file]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'web: rolled back from v3 to v2: v2 is desired now, pinned (`certfleet release web` to undo); agents install it now (--wait follows them)\n');
  assert.deepEqual(rollbackRequests.at(-1), { name: 'web', toVersion: 0 });

  const to = await cli(['rollback', 'web', '--to', '2', '--json', '--credentials', file]);
  assert.deepEqual(JSON.parse(to.stdout), { fromVersion: 3, toVersion: 2 });
  assert.deepEqual(rollbackRequests.at(-1), { name: 'web', toVersion: 2 });

  const refused = await cli(['rollback', 'web', '--to', '1', '--credentials', file]);
  assert.equal(refused.code, ExitCode.Failure);
  assert.equal(refused.stderr, 'certfleet: web v1 expired on 2026-02-15; pick a valid version\ncode: BUNDLE_EXPIRED\n');
});

void test('budgets prints the preset and the budget table', async () => {
  const r = await cli(['budgets', '--credentials', credentialsFile()]);
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout,
    'preset: letsencrypt\n\n' +
      'BUDGET                   LIMIT        AVAILABLE   RESERVED   NEXT TOKEN\n' +
      'new-orders-per-account   300 per 3h   287/300     10         in 36s\n',
  );
});

void test('events sends --cert and --limit and prints one line per event, oldest first', async () => {
  const file = credentialsFile();
  const all = await cli(['events', '--credentials', file]);
  assert.equal(all.code, 0);
  assert.deepEqual(eventRequests.at(-1), { limit: 0, cert: '' });
  assert.equal(
    all.stdout,
    '2026-03-01T11:00:00Z  issued  web  -  v2  -  issued by the CA\n' +
      '2026-03-01T11:01:00Z  installed  web  lb-1  v2  -  hook ok, served\n' +
      '2026-03-01T11:05:00Z  issued  api  -  v1  -  issued by the CA\n',
  );
  const web = await cli(['events', '--cert', 'web', '--limit', '1', '--json', '--credentials', file]);
  assert.deepEqual(eventRequests.at(-1), { limit: 1, cert: 'web' });
  const json = JSON.parse(web.stdout) as pb.ListEventsResponse__Output;
  assert.deepEqual(
    json.events.map((e) => e.type),
    ['installed'],
  );
});

void test('events --follow streams: the recent events, then each new one as the controller publishes it (no polling), until interrupted', async () => {
  const stop = new AbortController();
  const lists = eventRequests.length;
  const follows = followRequests.length;
  let written = '';
  const added: pb.FleetEvent = { type: 'rolled-back', at: '2026-03-01T12:00:01.000Z', cert: 'web', agent: 'lb-1', version: 1, message: 'hook failed' };
  const run = cli(['events', '--follow', '--limit', '2', '--credentials', credentialsFile()], {}, false, {
    followIntervalMs: 20,
    interrupt: () => stop.signal,
    stdout: {
      write: (t: string) => {
        written += t;
        // Once the two recent events are printed, a new one is published; once it is printed, Ctrl-C.
        if (t.includes('issued  api')) setImmediate(() => publish(added));
        else if (t.includes('rolled-back')) stop.abort();
        return true;
      },
    },
  });
  const r = await run;
  EVENTS.splice(EVENTS.indexOf(added), 1);
  assert.equal(r.code, 0);
  assert.equal(r.stderr, '');
  assert.equal(followRequests.length - follows, 1, 'one stream');
  assert.deepEqual(followRequests.at(-1), { limit: 2, cert: '' });
  assert.equal(eventRequests.length, lists, 'no ListEvents polls');
  // The cancellation reaches the server a moment after the CLI returned.
  for (let i = 0; i < 200 && followers.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(followers.size, 0, 'Ctrl-C cancelled the stream');
  assert.equal(
    written,
    '2026-03-01T11:01:00Z  installed  web  lb-1  v2  -  hook ok, served\n' +
      '2026-03-01T11:05:00Z  issued  api  -  v1  -  issued by the CA\n' +
      '2026-03-01T12:00:01Z  rolled-back  web  lb-1  v1  -  hook failed\n',
  );
});

void test('events --follow reconnects when the controller ends the stream: one warning, events already printed are not printed again', async () => {
  const serverLeaf = await makeLeaf(ca, { names: ['controller.test'] });
  const own = new grpc.Server();
  let streams = 0;
  own.addService(loadProtos().operator.certfleet.v1.OperatorService.service, {
    ...handlers,
    FollowEvents(call) {
      streams++;
      call.sendMetadata(new grpc.Metadata());
      if (streams === 1) {
        // The first controller sends one event and stops.
        call.write(EVENTS[0] ?? {});
        call.emit('error', toServiceError(new CertfleetError(ErrorCode.ControllerUnavailable, 'the controller is stopping')));
        return;
      }
      // The next one has the recent events, the first of them already printed.
      for (const e of EVENTS.slice(0, 2)) call.write(e);
    },
  } satisfies OperatorServiceHandlers);
  const ownPort = await new Promise<number>((resolve, reject) =>
    own.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: Buffer.from(serverLeaf.fullchainPem), private_key: Buffer.from(serverLeaf.keyPem) }], true),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  const stop = new AbortController();
  let written = '';
  let stderr = '';
  try {
    const r = await cli(['events', '--follow', '--json', '--credentials', credentialsFile({ server: `127.0.0.1:${ownPort}` })], {}, false, {
      followIntervalMs: 20,
      interrupt: () => stop.signal,
      stdout: {
        write: (t: string) => {
          written += t;
          if (t.includes('"installed"')) stop.abort();
          return true;
        },
      },
      stderr: {
        write: (t: string) => {
          stderr += t;
          return true;
        },
      },
    });
    assert.equal(r.code, 0);
  } finally {
    own.forceShutdown();
  }
  assert.equal(streams, 2);
  assert.deepEqual(
    written.trimEnd().split('\n').map((l) => (JSON.parse(l) as { type: string }).type),
    ['issued', 'installed'],
    'the first event once, then the new one',
  );
  assert.equal(stderr, 'certfleet: warning: the controller is stopping; reconnecting every 0.02s\ncertfleet: controller reachable again\n');
});

void test('events --follow --json writes one JSON object per event per line', async () => {
  const stop = new AbortController();
  let written = '';
  const r = await cli(['events', '--follow', '--json', '--cert', 'api', '--credentials', credentialsFile()], {}, false, {
    followIntervalMs: 20,
    interrupt: () => stop.signal,
    stdout: {
      write: (t: string) => {
        written += t;
        stop.abort();
        return true;
      },
    },
  });
  assert.equal(r.code, 0);
  const lines = written.trimEnd().split('\n');
  assert.equal(lines.length, 1);
  assert.deepEqual(JSON.parse(lines[0] ?? ''), { type: 'issued', at: '2026-03-01T11:05:00.000Z', cert: 'api', agent: '', version: 1, message: 'issued by the CA', detailsJson: '', actor: '' });
});

void test('events --follow fails at once, with the usual exit code, when the controller cannot be reached at the start', async () => {
  const stop = new AbortController();
  const r = await cli(['events', '--follow', '--credentials', credentialsFile({ server: '127.0.0.1:1' })], {}, false, {
    followIntervalMs: 20,
    interrupt: () => stop.signal,
  });
  assert.equal(r.code, ExitCode.Unavailable);
  assert.match(r.stderr, /code: CONTROLLER_UNAVAILABLE/);
});

void test('events --follow outlives a controller that goes away after the stream opened: one warning, reconnecting goes on, Ctrl-C exits 0', async () => {
  // A second server, so stopping it leaves the other tests' server alone.
  const serverLeaf = await makeLeaf(ca, { names: ['controller.test'] });
  const own = new grpc.Server();
  let served = 0;
  own.addService(loadProtos().operator.certfleet.v1.OperatorService.service, {
    ...handlers,
    FollowEvents(call) {
      served++;
      call.sendMetadata(new grpc.Metadata());
      call.write(EVENTS[0] ?? {});
    },
  } satisfies OperatorServiceHandlers);
  const ownPort = await new Promise<number>((resolve, reject) =>
    own.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: Buffer.from(serverLeaf.fullchainPem), private_key: Buffer.from(serverLeaf.keyPem) }], true),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  const stop = new AbortController();
  let stderr = '';
  let failures = 0;
  const r = await cli(['events', '--follow', '--timeout', '1s', '--credentials', credentialsFile({ server: `127.0.0.1:${ownPort}` })], {}, false, {
    followIntervalMs: 20,
    interrupt: () => stop.signal,
    stdout: {
      write: (t: string) => {
        // The first answer is printed: now the controller goes away.
        own.forceShutdown();
        return t;
      },
    },
    stderr: {
      write: (t: string) => {
        stderr += t;
        // Let a few polls fail after the warning before pressing Ctrl-C.
        if (t.includes('warning') && ++failures === 1) setTimeout(() => stop.abort(), 200);
        return true;
      },
    },
  });
  assert.equal(served, 1);
  assert.equal(r.code, 0);
  assert.equal(stderr.match(/warning/g)?.length, 1, `one warning per outage, got: ${stderr}`);
  assert.match(stderr, /^certfleet: warning: controller 127\.0\.0\.1:\d+: .*; reconnecting every 0\.02s\n$/);
});

void test('operators create makes the key here, sends only a CSR, and writes a working 0600 credentials file for the same controller', async () => {
  const dir = tempDir();
  const out = path.join(dir, 'alice.json');
  const r = await cli(['operators', 'create', 'alice', '--role', 'operator', '--out', out, '--credentials', credentialsFile()]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^operator alice created with role operator; credentials written to .*alice\.json \(mode 0600\)\n/);
  const req = createOperatorRequests.at(-1);
  assert.equal(req?.name, 'alice');
  assert.equal(req?.role, 'operator');
  assert.match(req?.csrPem ?? '', /^-----BEGIN CERTIFICATE REQUEST-----/);
  assert.doesNotMatch(JSON.stringify(req), /PRIVATE KEY/, 'no key material is sent');
  assert.equal(fs.statSync(out).mode & 0o777, 0o600);
  const written = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, string>;
  assert.equal(written['server'], `127.0.0.1:${port}`);
  assert.equal(written['serverName'], 'controller.test');
  assert.equal(written['caPem'], ca.certPem);
  const id = verifyClientCertificate({ certPem: ca.certPem, keyPem: ca.keyPem }, written['certPem'] ?? '', Date.now());
  assert.deepEqual([id.role, id.name], ['operator', 'alice']);
  // The key in the file is the one the certificate is for: the file works as credentials.
  const who = await cli(['whoami', '--credentials', out]);
  assert.equal(who.code, 0, who.stderr);
});

void test('operators create refuses an existing --out file before asking the controller, and removes its file when the controller refuses', async () => {
  const dir = tempDir();
  const existing = path.join(dir, 'exists.json');
  fs.writeFileSync(existing, 'keep me');
  const before = createOperatorRequests.length;
  const r = await cli(['operators', 'create', 'dave', '--role', 'viewer', '--out', existing, '--credentials', credentialsFile()]);
  assert.equal(r.code, ExitCode.Usage);
  assert.match(r.stderr, /cannot create .*exists\.json: it exists already/);
  assert.equal(createOperatorRequests.length, before, 'the controller was not asked');
  assert.equal(fs.readFileSync(existing, 'utf8'), 'keep me');

  const out = path.join(dir, 'taken.json');
  const refused = await cli(['operators', 'create', 'taken', '--role', 'viewer', '--out', out, '--credentials', credentialsFile()]);
  assert.equal(refused.code, ExitCode.Usage, refused.stderr);
  assert.match(refused.stderr, /operator taken already exists/);
  assert.equal(fs.existsSync(out), false, 'no empty or partial credentials file is left behind');
});

void test('operators list, set-role, revoke and whoami print their answers; --json prints the response', async () => {
  const file = credentialsFile();
  const list = await cli(['operators', 'list', '--credentials', file]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^NAME +ROLE +STATE +CREATED +EXPIRES\n/);
  assert.match(list.stdout, /^admin +admin +active +2026-03-01 11:00:00Z by controller +2027-03-01 12:00:00Z \(in 365d\)$/m);
  assert.match(list.stdout, /^bob +operator +revoked by admin 2026-03-01 11:30:00Z +2026-03-01 11:00:00Z by admin /m);
  assert.ok(list.stdout.indexOf('admin ') < list.stdout.indexOf('bob '), 'sorted by name');
  const listJson = JSON.parse((await cli(['operators', 'list', '--json', '--credentials', file])).stdout) as pb.ListOperatorsResponse__Output;
  assert.equal(listJson.operators.length, 2);

  const role = await cli(['operators', 'set-role', 'alice', '--role', 'operator', '--credentials', file]);
  assert.equal(role.code, 0, role.stderr);
  assert.equal(role.stdout, 'operator alice: role viewer -> operator (from the next call on)\n');

  const revoke = await cli(['operators', 'revoke', 'alice', '--credentials', file]);
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.equal(revoke.stdout, 'operator alice revoked: the controller refuses its credentials from now on\n');

  const who = await cli(['whoami', '--credentials', file]);
  assert.equal(who.stdout, 'admin (role admin)\n');
});

void test('a PERMISSION_DENIED answer exits 5 and prints the controller\'s message naming the role', async () => {
  const r = await cli(['operators', 'revoke', 'admin', '--credentials', credentialsFile()]);
  assert.equal(r.code, ExitCode.PermissionDenied);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^certfleet: operator carol has role operator, which may not revoke operators \(RevokeOperator\); it needs role admin\ncode: PERMISSION_DENIED\n$/);
});

void test('revoke sends the version and reason (unspecified by default), prints what the controller did, and --json the response', async () => {
  const file = credentialsFile();
  revokeRequests.length = 0;
  const r = await cli(['revoke', 'web', '--version', '2', '--reason', 'keyCompromise', '--credentials', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    'web: version 2 revoked at the CA (keyCompromise); the fleet moves to v1, pinned until the renewal is issued\n' +
      'web: "certfleet renew web --wait" follows the renewal until the fleet serves it\n',
  );
  const j = await cli(['revoke', 'web', '--version', '3', '--json', '--credentials', file]);
  assert.equal(j.code, 0, j.stderr);
  const body = JSON.parse(j.stdout) as { version: number; reason: string; renewalRequested: boolean; servingVersion: number };
  assert.deepEqual([body.version, body.reason, body.renewalRequested, body.servingVersion], [3, 'unspecified', true, 1]);
  assert.deepEqual(
    revokeRequests.map((q) => [q.name, q.version, q.reason]),
    [
      ['web', 2, 'keyCompromise'],
      ['web', 3, 'unspecified'],
    ],
  );
  const missing = await cli(['revoke', 'nope', '--version', '1', '--credentials', file]);
  assert.equal(missing.code, ExitCode.NotFound);
  assert.equal(missing.stderr, 'certfleet: no certificate named nope\ncode: NOT_FOUND\n');
});

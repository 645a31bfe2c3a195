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

let ca: TestCa;
let otherCa: TestCa;
let admin: TestLeaf;
let stranger: TestLeaf;
let server: grpc.Server;
let port: number;
const tokenRequests: pb.CreateEnrollmentTokenRequest__Output[] = [];
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

async function cli(argv: string[], env: Record<string, string> = {}, isTTY = false): Promise<Captured> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: (t: string) => (stdout += t), isTTY },
    stderr: { write: (t: string) => (stderr += t) },
    stdin: () => Readable.from([]),
    env,
    now: () => NOW,
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
});

void test('certs and agents print tables by default and the full response with --json', async () => {
  const file = credentialsFile();
  const certs = await cli(['certs', '--credentials', file]);
  assert.equal(certs.code, 0);
  assert.match(certs.stdout, /^NAME +VERSION +STATE +AGENTS +EXPIRES +NEXT RENEWAL +NAMES\n/);
  assert.match(certs.stdout, /^web +2 +ready +1\/1 +2026-05-01 \(in 60d\) +2026-03-31 \(in 29d\) +www\.example\.test$/m);

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

void test('a call the controller does not answer ends at --timeout with CONTROLLER_UNAVAILABLE, exit 4', async () => {
  const r = await cli(['token', 'create', 'slow', '--timeout', '300ms', '--credentials', credentialsFile()]);
  assert.equal(r.code, ExitCode.Unavailable);
  assert.match(r.stderr, /code: CONTROLLER_UNAVAILABLE/);
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

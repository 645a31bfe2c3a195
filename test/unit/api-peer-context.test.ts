// The controller API reads a connection's peer certificate once, not on every call
// (issue #13), while the caller is still identified, and refused, on every call.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { startApiServer, type ApiServer, type OperatorBackend } from '../../controller/api/index.js';
import { createControllerCa, issueServerCertificate, signAgentCsr, verifyClientCertificate, type CaMaterial } from '../../controller/pki/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { clientCredentials, deadline, loadProtos, type grpc } from '../../shared/grpc/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';

let ca: CaMaterial;
let api: ApiServer;
let identified = 0;
let refuseFrom = Infinity;
let creds: { certPem: string; keyPem: string };
/** getPeerCertificate calls on the server's sockets. */
let serverPeerReads = 0;
const original = Object.getOwnPropertyDescriptor(tls.TLSSocket.prototype, 'getPeerCertificate');

before(async () => {
  const now = Date.now();
  ca = await createControllerCa({ now });
  const server = await issueServerCertificate(ca, { hosts: ['localhost'], now });
  const key = await createAgentKeyAndCsr('edge-1');
  creds = { certPem: (await signAgentCsr(ca, key.csrPem, { agent: 'edge-1', now })).certPem, keyPem: key.keyPem };
  const read = original?.value as (this: tls.TLSSocket, ...a: unknown[]) => tls.PeerCertificate;
  tls.TLSSocket.prototype.getPeerCertificate = function (this: tls.TLSSocket, ...args: unknown[]) {
    if ((this as unknown as { server?: unknown }).server !== undefined) serverPeerReads++;
    return read.apply(this, args);
  } as typeof tls.TLSSocket.prototype.getPeerCertificate;
  api = await startApiServer({
    listen: { host: '127.0.0.1', port: 0 },
    caPem: ca.certPem,
    certPem: server.certPem,
    keyPem: server.keyPem,
    log: silentLogger(),
    auth: {
      identify: (der) => {
        identified++;
        if (identified >= refuseFrom) throw new CertfleetError(ErrorCode.Unauthenticated, 'certificate revoked');
        return verifyClientCertificate(ca, der, Date.now());
      },
      authorizeOperator: () => Promise.reject(new Error('not used')),
    },
    agents: {
      enroll: () => Promise.reject(new Error('not used')),
      assignments: () => Promise.resolve({ desired: [], effective: [], signingKeys: [], assigned: [] }),
      fetchBundle: () => Promise.reject(new CertfleetError(ErrorCode.NotFound, 'no bundles here')),
      renewIdentity: () => Promise.reject(new Error('not used')),
      reportStatus: () => Promise.resolve(),
    },
    operators: {} as OperatorBackend,
  });
});

after(async () => {
  await api.stop(0);
  if (original) Object.defineProperty(tls.TLSSocket.prototype, 'getPeerCertificate', original);
});

test('one connection: the peer certificate is read once, the caller identified on every call, a refusal takes effect on the next call', async () => {
  const { agent } = loadProtos();
  const client = new agent.certfleet.v1.AgentService(`127.0.0.1:${api.port}`, clientCredentials({ caPem: ca.certPem, ...creds }), {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
  });
  const call = (): Promise<grpc.ServiceError | null> =>
    new Promise((resolve) => client.getAssignments({}, { deadline: deadline(5000) }, (err) => resolve(err)));
  try {
    for (let i = 0; i < 5; i++) assert.equal(await call(), null, `call ${i + 1} answered`);
    assert.equal(identified, 5, 'the caller is identified on every call');
    assert.equal(serverPeerReads, 1, 'the peer certificate of the one connection is read once');
    refuseFrom = 6;
    const refused = await call();
    assert.ok(refused, 'the call after a refusal is refused on the same connection');
    assert.match(refused.details, /certificate revoked/);
  } finally {
    client.close();
  }
});

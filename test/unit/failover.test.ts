/**
 * Failover between several controllers (issue #12, HA spec decision 9): the pure verdict
 * table, then the agent's link and the operator client against real grpc-js servers on
 * loopback with mutual TLS, which the tests start, stop, and make answer NOT_LEADER:
 * a refused address is skipped and the one that answered is remembered (one switch);
 * a controller that stops is left for the next; NOT_LEADER moves even a one-time call;
 * a one-time call the first controller received is never sent to a second; a paused
 * controller (TCP accepted, no TLS) is passed after the connect timeout; an identity swap
 * reaches every controller; `events --follow` reopens on the next controller when its
 * stream drops.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ControllerLink, type ControllerSwitch } from '../../agent/link/index.js';
import { parseAgentConfig, controllerAddresses } from '../../agent/config/index.js';
import { operatorClient } from '../../cli/client.js';
import { credentialServers, parseCredentials } from '../../cli/credentials.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { failoverVerdict, grpc, loadProtos, toServiceError, type AgentServiceHandlers, type OperatorServiceHandlers, type pb } from '../../shared/grpc/index.js';
import { makeLeaf, makeTestCa, type TestCa, type TestLeaf } from '../harness/certs.js';
import { freePort } from '../harness/process.js';

const err = (code: ErrorCode): CertfleetError => new CertfleetError(code, code);

describe('failoverVerdict', () => {
  const rows: Array<[string, CertfleetError, 'connect' | 'sent', 'idempotent' | 'once', { tryNext: boolean; leave: boolean }]> = [
    ['no connection: a one-time call moves on (nothing was sent)', err(ErrorCode.ControllerUnavailable), 'connect', 'once', { tryNext: true, leave: true }],
    ['no connection: a read moves on', err(ErrorCode.ControllerUnavailable), 'connect', 'idempotent', { tryNext: true, leave: true }],
    ['NOT_LEADER: a one-time call moves on (the controller did nothing)', err(ErrorCode.NotLeader), 'sent', 'once', { tryNext: true, leave: true }],
    ['connection lost after sending: a read moves on', err(ErrorCode.ControllerUnavailable), 'sent', 'idempotent', { tryNext: true, leave: true }],
    ['connection lost after sending: a one-time call fails, the next call starts elsewhere', err(ErrorCode.ControllerUnavailable), 'sent', 'once', { tryNext: false, leave: true }],
    ["the controller's NATS is down: a read moves on", err(ErrorCode.NatsUnavailable), 'sent', 'idempotent', { tryNext: true, leave: true }],
    ["the controller's store is down: a one-time call stays (it answered)", err(ErrorCode.StoreUnavailable), 'sent', 'once', { tryNext: false, leave: false }],
    ['a refusal is the answer, for a read too', err(ErrorCode.PermissionDenied), 'sent', 'idempotent', { tryNext: false, leave: false }],
    ['not found is the answer', err(ErrorCode.NotFound), 'sent', 'idempotent', { tryNext: false, leave: false }],
    ['a spent token is the answer', err(ErrorCode.EnrollTokenInvalid), 'sent', 'once', { tryNext: false, leave: false }],
  ];
  for (const [name, e, phase, safety, want] of rows) {
    it(name, () => assert.deepEqual(failoverVerdict(e, phase, safety), want));
  }
});

let ca: TestCa;
let serverLeaf: TestLeaf;
let agentLeaf: TestLeaf;

before(async () => {
  ca = await makeTestCa({ commonName: 'certfleet failover test CA' });
  // Only controller.test: every client dials 127.0.0.1 with serverName.
  serverLeaf = await makeLeaf(ca, { names: ['controller.test'] });
  agentLeaf = await makeLeaf(ca, { names: ['edge-1'] });
});

/** A real controller stand-in: grpc-js with mutual TLS, counting calls per method and the client certificates seen. */
interface FakeController {
  port: number;
  address: string;
  calls: Map<string, number>;
  peers: string[];
  server: grpc.Server;
  stop(): void;
}

type Behaviour = Partial<Record<'Enroll' | 'GetAssignments' | 'FetchBundle' | 'ReportStatus' | 'RenewIdentity', (self: FakeController) => Partial<grpc.StatusObject> | 'kill' | undefined>>;

const servers: FakeController[] = [];

after(() => {
  for (const s of servers) s.server.forceShutdown();
});

async function startAgentController(behaviour: Behaviour = {}, port = 0): Promise<FakeController> {
  const server = new grpc.Server();
  const self: FakeController = {
    port: 0,
    address: '',
    calls: new Map(),
    peers: [],
    server,
    stop: () => server.forceShutdown(),
  };
  const answer =
    <Res>(method: keyof Behaviour, ok: Res) =>
    (call: grpc.ServerUnaryCall<unknown, Res>, cb: grpc.sendUnaryData<Res>): void => {
      self.calls.set(method, (self.calls.get(method) ?? 0) + 1);
      const peer = call.getAuthContext()?.sslPeerCertificate;
      if (peer?.subject?.CN !== undefined) self.peers.push(String(peer.fingerprint256));
      const b = behaviour[method]?.(self);
      // The controller dies with the request in hand: the connection drops before any answer.
      if (b === 'kill') return void server.forceShutdown();
      if (b !== undefined) return cb(b);
      cb(null, ok);
    };
  const handlers: AgentServiceHandlers = {
    Enroll: answer<pb.EnrollResponse>('Enroll', { agent: 'edge-1', certificatePem: 'cert', caPem: 'ca', labels: {}, natsCredentials: '', signingKeys: [] }),
    GetAssignments: answer<pb.GetAssignmentsResponse>('GetAssignments', { signedDesired: [], signingKeys: [], assigned: [{ name: 'web', names: ['www.example.test'] }] }),
    FetchBundle: answer<pb.FetchBundleResponse>('FetchBundle', { certificatePem: 'c', chainPem: 'ch', privateKeyPem: 'k', version: { name: 'web', version: 2 } }),
    ReportStatus: answer<pb.ReportStatusResponse>('ReportStatus', {}),
    RenewIdentity: answer<pb.RenewIdentityResponse>('RenewIdentity', { certificatePem: 'c', natsCredentials: '' }),
  };
  server.addService(loadProtos().agent.certfleet.v1.AgentService.service, handlers);
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: Buffer.from(serverLeaf.fullchainPem), private_key: Buffer.from(serverLeaf.keyPem) }], true);
  self.port = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, creds, (e, p) => (e ? reject(e) : resolve(p))));
  self.address = `127.0.0.1:${self.port}`;
  servers.push(self);
  return self;
}

/** An address nothing listens on: connecting is refused at once. */
async function deadAddress(): Promise<string> {
  return `127.0.0.1:${await freePort()}`;
}

function link(addresses: string[], switches: ControllerSwitch[], opts: { connectTimeoutMs?: number; callTimeoutMs?: number } = {}): ControllerLink {
  return new ControllerLink({
    addresses,
    caPem: ca.certPem,
    certPem: agentLeaf.certPem,
    keyPem: agentLeaf.keyPem,
    serverName: 'controller.test',
    callTimeoutMs: opts.callTimeoutMs ?? 5000,
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    onSwitch: (s) => switches.push(s),
  });
}

const report = { http01Address: '', agentVersion: 'test', certificates: [] };

describe('the agent link with several controllers', () => {
  it('skips a refused address, answers from the next, and remembers it: one switch, later calls go straight there', async () => {
    const a = await startAgentController();
    const dead = await deadAddress();
    const switches: ControllerSwitch[] = [];
    const l = link([dead, a.address], switches);
    try {
      const got = await l.assignments();
      assert.deepEqual(got.assigned, [{ name: 'web', names: ['www.example.test'] }]);
      await l.fetchBundle('web', 2);
      await l.reportStatus(report);
      assert.equal(l.address, a.address);
      assert.equal(switches.length, 1, 'one switch, not one per call');
      assert.equal(switches[0]?.from, dead);
      assert.equal(switches[0]?.to, a.address);
      assert.match(switches[0]?.reason ?? '', /unreachable/);
    } finally {
      l.close();
    }
  });

  it('enrolment works through the list: a token sent to no controller was not redeemed, the next one redeems it once', async () => {
    const a = await startAgentController();
    const switches: ControllerSwitch[] = [];
    const l = link([await deadAddress(), a.address], switches);
    try {
      const res = await l.enroll('cft_token', 'csr');
      assert.equal(res.agent, 'edge-1');
      assert.equal(a.calls.get('Enroll'), 1);
    } finally {
      l.close();
    }
  });

  it('leaves a controller that stopped for the next one, and comes back to the first when it returns and the second stops', async () => {
    const a = await startAgentController();
    const b = await startAgentController();
    const switches: ControllerSwitch[] = [];
    const l = link([a.address, b.address], switches);
    try {
      await l.reportStatus(report);
      assert.equal(a.calls.get('ReportStatus'), 1);
      assert.equal(switches.length, 0, 'the first controller answered: no switch');
      a.stop();
      await l.reportStatus(report);
      assert.equal(b.calls.get('ReportStatus'), 1);
      assert.equal(l.address, b.address);
      assert.deepEqual(
        switches.map((s) => [s.from, s.to]),
        [[a.address, b.address]],
      );
      // The first comes back on its port, the second goes: the link follows without a restart.
      const a2 = await startAgentController({}, a.port);
      b.stop();
      await l.fetchBundle('web', 2);
      assert.equal(a2.calls.get('FetchBundle'), 1);
      assert.deepEqual(
        switches.map((s) => [s.from, s.to]),
        [
          [a.address, b.address],
          [b.address, a.address],
        ],
      );
    } finally {
      l.close();
    }
  });

  it('NOT_LEADER moves even a one-time call (identity renewal) to the next controller, which carries it out once', async () => {
    const notLeader = toServiceError(new CertfleetError(ErrorCode.NotLeader, 'not the leader', { retryable: true }));
    const a = await startAgentController({ RenewIdentity: () => notLeader });
    const b = await startAgentController();
    const switches: ControllerSwitch[] = [];
    const l = link([a.address, b.address], switches);
    try {
      await l.renewIdentity('csr');
      assert.equal(a.calls.get('RenewIdentity'), 1);
      assert.equal(b.calls.get('RenewIdentity'), 1);
      assert.equal(l.address, b.address);
      assert.match(switches[0]?.reason ?? '', /not the leader/);
    } finally {
      l.close();
    }
  });

  it('a one-time call the first controller received is not sent to a second when the connection drops; the next call starts at the second', async () => {
    const a = await startAgentController({ RenewIdentity: () => 'kill' });
    const b = await startAgentController();
    const switches: ControllerSwitch[] = [];
    const l = link([a.address, b.address], switches);
    try {
      await l.reportStatus(report); // connected to a
      await assert.rejects(l.renewIdentity('csr'), (e: unknown) => isCertfleetError(e, ErrorCode.ControllerUnavailable));
      assert.equal(a.calls.get('RenewIdentity'), 1);
      assert.equal(b.calls.get('RenewIdentity') ?? 0, 0, 'it may have been carried out: never sent twice');
      assert.equal(l.address, b.address, 'the controller that dropped it is left');
      await l.reportStatus(report);
      assert.equal(b.calls.get('ReportStatus'), 1);
    } finally {
      l.close();
    }
  });

  it('a read the first controller received is sent to the next one when the connection drops, in the same call', async () => {
    const a = await startAgentController({ FetchBundle: () => 'kill' });
    const b = await startAgentController();
    const l = link([a.address, b.address], []);
    try {
      const bundle = await l.fetchBundle('web', 2);
      assert.equal(bundle.meta.version, 2);
      assert.equal(a.calls.get('FetchBundle'), 1);
      assert.equal(b.calls.get('FetchBundle'), 1);
    } finally {
      l.close();
    }
  });

  it('a paused controller (the kernel accepts, nothing answers TLS) is passed after the connect timeout', async () => {
    const sockets: net.Socket[] = [];
    const mute = net.createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const muteAddress = `127.0.0.1:${(mute.address() as net.AddressInfo).port}`;
    const b = await startAgentController();
    const switches: ControllerSwitch[] = [];
    const l = link([muteAddress, b.address], switches, { connectTimeoutMs: 300 });
    try {
      await l.enroll('cft_token', 'csr');
      assert.equal(b.calls.get('Enroll'), 1);
      assert.ok(sockets.length >= 1, 'the paused controller was dialled first');
      assert.match(switches[0]?.reason ?? '', /no connection within 300 ms/);
    } finally {
      l.close();
      for (const s of sockets) s.destroy();
      mute.close();
    }
  });

  it('every controller down: one error naming each address, CONTROLLER_UNAVAILABLE and retryable; no switch', async () => {
    const d1 = await deadAddress();
    const d2 = await deadAddress();
    const switches: ControllerSwitch[] = [];
    const l = link([d1, d2], switches);
    try {
      await assert.rejects(l.assignments(), (e: unknown) => {
        assert.ok(isCertfleetError(e, ErrorCode.ControllerUnavailable));
        assert.equal(e.retryable, true);
        assert.ok(e.message.includes(d1) && e.message.includes(d2), e.message);
        return true;
      });
      assert.deepEqual(switches, []);
    } finally {
      l.close();
    }
  });

  it('an answer other than unavailable or NOT_LEADER is the answer: no other controller is asked', async () => {
    const a = await startAgentController({ FetchBundle: () => toServiceError(new CertfleetError(ErrorCode.NotFound, 'no such version')) });
    const b = await startAgentController();
    const l = link([a.address, b.address], []);
    try {
      await assert.rejects(l.fetchBundle('web', 9), (e: unknown) => isCertfleetError(e, ErrorCode.NotFound));
      assert.equal(b.calls.get('FetchBundle') ?? 0, 0);
    } finally {
      l.close();
    }
  });

  it('an identity swap reaches every controller: each presents the new certificate from the next call', async () => {
    const a = await startAgentController();
    const b = await startAgentController();
    const l = link([a.address, b.address], []);
    try {
      await l.reportStatus(report);
      const next = await makeLeaf(ca, { names: ['edge-1'] });
      l.useIdentity({ certPem: next.certPem, keyPem: next.keyPem });
      await l.reportStatus(report);
      a.stop();
      await l.reportStatus(report);
      assert.equal(a.peers.length, 2);
      assert.notEqual(a.peers[0], a.peers[1], 'the first controller saw the new certificate after the swap');
      assert.deepEqual(b.peers, [a.peers[1]], 'the second controller only ever saw the new one');
    } finally {
      l.close();
    }
  });
});

/** Targets of the client channels grpc-js tracks for channelz in this process. */
function channelzTargets(): Promise<string[]> {
  const { GetTopChannels } = grpc.getChannelzHandlers();
  type Top = { channel: Array<{ data?: { target?: string } | null }> };
  return new Promise((resolve, reject) => {
    const call = { request: { start_channel_id: 0, max_results: 1000 } } as unknown as Parameters<typeof GetTopChannels>[0];
    GetTopChannels(call, (e: unknown, res: unknown) => (e ? reject(new Error('channelz GetTopChannels failed')) : resolve(((res as Top | undefined)?.channel ?? []).map((c) => c.data?.target ?? ''))));
  });
}

describe('channelz (issue #13: per-call bookkeeping nobody reads)', () => {
  it("the link's channels are not tracked by channelz, and calls are answered as before", async () => {
    const a = await startAgentController();
    const l = link([a.address], []);
    try {
      assert.deepEqual((await l.assignments()).assigned, [{ name: 'web', names: ['www.example.test'] }]);
      assert.equal((await l.fetchBundle('web', 2)).meta.version, 2);
      await l.reportStatus(report);
      const tracked = (await channelzTargets()).filter((t) => t.includes(String(a.port)));
      assert.deepEqual(tracked, [], 'no channel to the controller is registered with channelz');
    } finally {
      l.close();
    }
  });
});

describe('agent config: controller.address or controller.addresses', () => {
  const base = (controller: string): string => ['stateDir: /var/lib/certfleet-agent', `controller: ${controller}`, ''].join('\n');

  it('addresses: a list, dialled in order', () => {
    const cfg = parseAgentConfig(base('{ addresses: ["10.0.0.1:7443", "10.0.0.2:7443"], caFile: ca.pem }'), '/etc/certfleet/agent.yaml');
    assert.deepEqual(controllerAddresses(cfg), ['10.0.0.1:7443', '10.0.0.2:7443']);
  });

  it('address: one controller, as before', () => {
    const cfg = parseAgentConfig(base('{ address: "10.0.0.1:7443", caFile: ca.pem }'), '/etc/certfleet/agent.yaml');
    assert.deepEqual(controllerAddresses(cfg), ['10.0.0.1:7443']);
  });

  const refused: Array<[string, string, RegExp]> = [
    ['both', '{ address: "10.0.0.1:7443", addresses: ["10.0.0.2:7443"], caFile: ca.pem }', /agent\.yaml:2: controller\.addresses: give either address \(one controller\) or addresses \(several\), not both/],
    ['neither', '{ caFile: ca.pem }', /agent\.yaml:2: controller\.address: required/],
    ['an empty list', '{ addresses: [], caFile: ca.pem }', /controller\.addresses: give at least one host:port/],
    ['a bad entry', '{ addresses: ["10.0.0.1:7443", "nope"], caFile: ca.pem }', /controller\.addresses\[1\]: expected host:port/],
    ['an address twice', '{ addresses: ["10.0.0.1:7443", "10.0.0.1:7443"], caFile: ca.pem }', /controller\.addresses: lists an address twice/],
  ];
  for (const [name, yaml, message] of refused) {
    it(`${name} is refused, naming the field and the file`, () => {
      assert.throws(
        () => parseAgentConfig(base(yaml), '/etc/certfleet/agent.yaml'),
        (e: unknown) => {
          assert.ok(isCertfleetError(e, ErrorCode.ConfigInvalid));
          assert.match(e.message, /\/etc\/certfleet\/agent\.yaml/);
          assert.match(e.message, message);
          return true;
        },
      );
    });
  }
});

describe('operator credentials: server and servers', () => {
  const pems = { caPem: '-----BEGIN CERTIFICATE-----', certPem: '-----BEGIN CERTIFICATE-----', keyPem: '-----BEGIN PRIVATE KEY-----' };
  it('servers, when present, is the list (server stays for older CLIs)', () => {
    const c = parseCredentials(JSON.stringify({ server: '127.0.0.1:7443', servers: ['127.0.0.1:7443', '127.0.0.1:7444'], ...pems }), 'creds.json');
    assert.deepEqual(credentialServers(c), ['127.0.0.1:7443', '127.0.0.1:7444']);
  });
  it('an old file with server only still works', () => {
    assert.deepEqual(credentialServers(parseCredentials(JSON.stringify({ server: '127.0.0.1:7443', ...pems }), 'creds.json')), ['127.0.0.1:7443']);
  });
  it('a file with neither is refused naming server', () => {
    assert.throws(() => parseCredentials(JSON.stringify(pems), 'creds.json'), /creds\.json.*server: required/s);
  });
});

describe('the operator client with several controllers', () => {
  let admin: TestLeaf;
  before(async () => {
    admin = await makeLeaf(ca, { names: ['admin'] });
  });

  async function startOperatorController(handlers: Partial<OperatorServiceHandlers>): Promise<{ address: string; server: grpc.Server }> {
    const server = new grpc.Server();
    server.addService(loadProtos().operator.certfleet.v1.OperatorService.service, handlers as OperatorServiceHandlers);
    const creds = grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: Buffer.from(serverLeaf.fullchainPem), private_key: Buffer.from(serverLeaf.keyPem) }], true);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? reject(e) : resolve(p))));
    servers.push({ port, address: `127.0.0.1:${port}`, calls: new Map(), peers: [], server, stop: () => server.forceShutdown() });
    return { address: `127.0.0.1:${port}`, server };
  }

  const creds = (servers: string[]) => ({ servers, serverName: 'controller.test', caPem: ca.certPem, certPem: admin.certPem, keyPem: admin.keyPem });

  it('status through [dead, live]: answered by the live one, one switch reported', async () => {
    const live = await startOperatorController({ GetStatus: (_call, cb) => cb(null, { controllerVersion: 'live' }) });
    const dead = await deadAddress();
    const switches: ControllerSwitch[] = [];
    const client = operatorClient(creds([dead, live.address]), 5000, (s) => switches.push(s));
    try {
      assert.equal((await client.getStatus()).controllerVersion, 'live');
      assert.equal((await client.getStatus()).controllerVersion, 'live');
      assert.equal(client.address, live.address);
      assert.equal(switches.length, 1);
    } finally {
      client.close();
    }
  });

  it('a mutation a follower answers NOT_LEADER is carried out by the next controller', async () => {
    let refused = 0;
    let done = 0;
    const follower = await startOperatorController({
      Rollback: (_call, cb) => {
        refused++;
        cb(toServiceError(new CertfleetError(ErrorCode.NotLeader, 'no leader took the request', { retryable: true })));
      },
    });
    const leader = await startOperatorController({
      Rollback: (_call, cb) => {
        done++;
        cb(null, { fromVersion: 2, toVersion: 1 });
      },
    });
    const client = operatorClient(creds([follower.address, leader.address]), 5000);
    try {
      const r = await client.rollback({ name: 'web' });
      assert.equal(r.toVersion, 1);
      assert.deepEqual([refused, done], [1, 1]);
    } finally {
      client.close();
    }
  });

  it('events --follow: when the stream drops with the controller gone, it reopens on the next controller without an error to the caller', async () => {
    const event = (type: string): pb.FleetEvent => ({ type, at: '2026-03-01T12:00:00Z', cert: 'web', agent: '', version: 1, message: type });
    const first: { server?: grpc.Server } = {};
    const a = await startOperatorController({
      FollowEvents: (call) => {
        call.sendMetadata(new grpc.Metadata());
        call.write(event('issued'));
        // The controller goes away with the stream open.
        setImmediate(() => first.server?.forceShutdown());
      },
    });
    first.server = a.server;
    const b = await startOperatorController({
      FollowEvents: (call) => {
        call.sendMetadata(new grpc.Metadata());
        call.write(event('issued'));
        call.write(event('installed'));
      },
    });
    const client = operatorClient(creds([a.address, b.address]), 5000);
    const stop = new AbortController();
    const seen: string[] = [];
    let opens = 0;
    try {
      await client.followEvents(
        {},
        {
          onOpen: () => opens++,
          onEvent: (e) => {
            seen.push(e.type);
            if (e.type === 'installed') stop.abort();
          },
        },
        stop.signal,
      );
      assert.equal(opens, 2, 'opened on the first controller, then on the second');
      assert.deepEqual(seen, ['issued', 'issued', 'installed']);
      assert.equal(client.address, b.address);
    } finally {
      client.close();
    }
  });
});

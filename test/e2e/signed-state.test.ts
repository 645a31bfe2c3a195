/**
 * Signed desired state (issue #9, item 2), end to end with real parts: Pebble, a
 * nats-server with authorization OFF (the misconfigured deployment of the issue: anyone
 * who reaches the port can write any bucket), the controller and two agent processes,
 * each in front of its own nginx.
 *
 * 1. The stranger's certificate: an outside ACME account orders one of the fleet's names
 *    from the same CA and writes its key authorization, unsigned, into the challenges
 *    bucket with selector `*`. No agent serves it, both report the refusal, and the CA's
 *    validation (Pebble connecting to the agents' HTTP-01 responders, as for the fleet's
 *    own orders) fails.
 * 2. Desired pointers written by someone else: a replay of the controller's own earlier
 *    record (correctly signed, older generation), a pointer signed with a wrong key, one
 *    claiming the controller's key id, and plain garbage. Each is refused and reported,
 *    nothing is installed, and both nginx keep serving the version the controller wants.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import * as acme from 'acme-client';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { FileStore } from '../../controller/store/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { DesiredRecord, RecordRefusals } from '../../shared/model/index.js';
import { connectNats, openKv, readEvents, type JsonKv, type NatsHandle } from '../../shared/nats/index.js';
import { parseDesiredRecord } from '../../shared/records/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';
import { testSigner } from '../harness/signing.js';
import { servedCertificate } from '../harness/tls.js';

interface AgentJson {
  name: string;
  refusals: RecordRefusals | null;
  certificates: Array<{ name: string; version: number; desiredVersion: number; state: string; fingerprint: string }>;
}

const AGENTS = [
  { name: 'edge-a', ip: '127.0.0.2' },
  { name: 'edge-b', ip: '127.0.0.3' },
];
const NAMES = ['www.example.test', 'example.test'];

function getChallenge(host: string, port: number, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: `/.well-known/acme-challenge/${token}`, headers: { host: 'www.example.test' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

describe('with NATS writable by anyone, agents act only on what the controller signed', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let store: FileStore;
  let nats: NatsHandle;
  let desiredKv: JsonKv<DesiredRecord>;
  let raw: NatsConnection;
  let js: JetStreamClient;

  const refusals = async (): Promise<Map<string, Record<string, number>>> => {
    const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    return new Map(res.agents.map((a) => [a.name, a.refusals?.byReason ?? {}]));
  };
  const put = async (bucket: string, key: string, data: string | Uint8Array): Promise<void> => {
    await js.publish(`$KV.${bucket}.${key}`, data);
  };

  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: NAMES, agents: 'role=web' }],
      agents: AGENTS.map((a) => ({ ...a, labels: { role: 'web' }, serves: ['web'] })),
      dns: { 'www.example.test': '127.0.0.2', 'example.test': '127.0.0.3' },
      // The deployment this file is about: NATS authorization off (nats.authority:
      // external, no users), so anyone who reaches the port can write every bucket.
      natsAuth: 'none',
    });
    await fleet.waitUntilReady(1);
    store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
    nats = await connectNats({ servers: [fleet.nats.url], name: 'test-reader', log: silentLogger() });
    desiredKv = await openKv<DesiredRecord>(nats, Bucket.desired, { create: false, parse: parseDesiredRecord });
    // The writer: a plain NATS client with no credentials, as anyone on the network.
    raw = await connect({ servers: fleet.nats.url, name: 'stranger' });
    js = jetstream(raw);
  });

  after(async () => {
    await raw?.close();
    await nats?.close();
    await store?.close();
    await fleet?.stop();
  });

  test('each agent got the controller\'s public signing key at enrolment (0600) and signed records verify with it', async () => {
    const record = (await desiredKv.get('web'))?.value;
    assert.ok(record?.keyId !== undefined);
    for (const a of AGENTS) {
      const agent = fleet.agents.get(a.name);
      assert.ok(agent);
      const file = path.join(agent.stateDir, 'trust', 'signing-keys.json');
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      const keys = (JSON.parse(fs.readFileSync(file, 'utf8')) as { keys: Array<{ keyId: string; publicKey: string }> }).keys;
      assert.deepEqual(keys.map((k) => k.keyId), [record.keyId], `${a.name} trusts exactly the controller's key`);
      assert.equal(JSON.stringify(keys).includes('PRIVATE'), false);
    }
  });

  test("a stranger's unsigned challenge for a fleet name is served by no agent, and the CA refuses the stranger's order", async () => {
    // The stranger is an ordinary ACME client with its own account at the fleet's CA.
    acme.axios.defaults.httpsAgent = new https.Agent({ ca: fleet.pebble.caPem });
    const stranger = new acme.Client({ directoryUrl: fleet.pebble.directoryUrl, accountKey: await acme.crypto.createPrivateKey() });
    await stranger.createAccount({ termsOfServiceAgreed: true });
    const order = await stranger.createOrder({ identifiers: [{ type: 'dns', value: 'www.example.test' }] });
    const [authz] = await stranger.getAuthorizations(order);
    const challenge = authz?.challenges.find((c) => c.type === 'http-01');
    assert.ok(authz && challenge, 'Pebble offers http-01');
    const keyAuthorization = await stranger.getChallengeKeyAuthorization(challenge);

    // What the issue reproduced: its key authorization, for the fleet's certificate, selector `*`.
    const before = await refusals();
    await put(
      Bucket.challenges,
      challenge.token,
      JSON.stringify({ token: challenge.token, keyAuthorization, identifier: 'www.example.test', cert: 'web', selector: '*', createdAt: new Date().toISOString() }),
    );
    await eventually(
      'both agents report the unsigned challenge refused',
      async () => {
        const now = await refusals();
        return AGENTS.every((a) => (now.get(a.name)?.['unsigned'] ?? 0) > (before.get(a.name)?.['unsigned'] ?? 0));
      },
      30_000,
      300,
    );
    for (const a of AGENTS) {
      assert.equal((await getChallenge(a.ip, fleet.httpPort, challenge.token)).status, 404, `${a.name} does not serve the stranger's key authorization`);
    }

    // The CA connects to the agents (challtestsrv resolves the name to them) and fails.
    await stranger.completeChallenge(challenge);
    const decided = await eventually(
      "Pebble's validation of the stranger's authorization ends",
      async () => {
        const [now] = await stranger.getAuthorizations(order);
        return now && now.status !== 'pending' ? now : undefined;
      },
      60_000,
      300,
    );
    assert.equal(decided.status, 'invalid', 'the stranger gets no authorization for a fleet name');
    const ordered = await stranger.getOrder(order);
    assert.equal(ordered.status, 'invalid', 'and no certificate');
  });

  test('a replayed older pointer, pointers signed with a wrong key, and garbage are refused and reported; nothing is installed and nginx keeps serving the right version', async () => {
    const first = (await desiredKv.get('web'))?.value;
    assert.ok(first?.generation !== undefined && first.version === 1, 'v1 is desired and signed');
    // A legitimate newer pointer: the operator renews, v2 is issued and installed everywhere.
    const renewed = await fleet.cli(['renew', 'web']);
    assert.equal(renewed.code, 0, renewed.stderr);
    await eventually(
      'both agents serve v2',
      async () => {
        const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
        return res.agents.every((a) => a.certificates.some((c) => c.name === 'web' && c.state === 'installed' && c.version === 2));
      },
      120_000,
      500,
    );
    const second = (await desiredKv.get('web'))?.value;
    const v2 = await store.getVersion('web', 2);
    assert.ok(second?.generation !== undefined && v2);
    assert.ok(second.generation > first.generation, 'the renewal is a newer generation');
    assert.equal(second.fingerprint, v2.meta.fingerprint);

    const before = await refusals();
    const logMark = new Map(AGENTS.map((a) => [a.name, fleet.agents.get(a.name)?.process.output().length ?? 0]));
    // 1. Replay: the controller's own record of v1, captured earlier, byte for byte.
    await put(Bucket.desired, 'web', JSON.stringify(first));
    // 2. A pointer to v1 with a far higher generation, signed with a key the controller never gave.
    const forger = testSigner();
    const v1Pointer: DesiredRecord = { ...first };
    delete v1Pointer.generation;
    delete v1Pointer.keyId;
    delete v1Pointer.signature;
    await put(Bucket.desired, 'web', JSON.stringify(forger.desired(v1Pointer, second.generation + 100)));
    // 3. The same, claiming the controller's key id.
    await put(Bucket.desired, 'web', JSON.stringify({ ...forger.desired(v1Pointer, second.generation + 101), keyId: second.keyId }));
    // 4. Garbage: the name-less record of issue #8, and bytes that are not JSON.
    await put(Bucket.desired, 'web', JSON.stringify({ selector: '*' }));
    await put(Bucket.desired, 'web', new Uint8Array([0xff, 0x00, 0x7b]));

    const reasons = ['replay', 'unknown-key', 'bad-signature', 'malformed'];
    const seen = await eventually(
      'both agents report every kind of refusal',
      async () => {
        const now = await refusals();
        const grew = AGENTS.every((a) => reasons.every((r) => (now.get(a.name)?.[r] ?? 0) > (before.get(a.name)?.[r] ?? 0)));
        return grew ? now : undefined;
      },
      60_000,
      300,
    );
    assert.ok(seen);

    // Nothing was installed, not even for a moment (the controller writes its pointer back
    // at once, so a brief install would be gone by now): no install, activation or hook ran.
    for (const a of AGENTS) {
      const since = fleet.agents.get(a.name)?.process.output().slice(logMark.get(a.name)) ?? '';
      assert.doesNotMatch(since, /certificate installed|activated from the local archive|reload hook succeeded/, `${a.name} installed nothing`);
    }
    // `current` is v2 on both, and both nginx serve v2 for every name.
    for (const a of AGENTS) {
      const agent = fleet.agents.get(a.name);
      assert.ok(agent);
      assert.equal(fs.realpathSync(path.join(agent.stateDir, 'certs', 'web', 'current')), path.join(agent.stateDir, 'certs', 'web', 'versions', '2'), `${a.name} current`);
      for (const name of NAMES) {
        const served = await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername: name });
        assert.equal(served.fingerprint, v2.meta.fingerprint, `${a.name} serves v2 for ${name}`);
      }
    }
    // Still so in the agents' next reports (a refused pointer is not a desired version).
    const reportedAt = Date.now();
    const later = await eventually(
      'a report after the refusals',
      async () => {
        const res = await fleet.cliJson<{ agents: Array<AgentJson & { lastSeen: string }> }>(['agents']);
        return res.agents.every((a) => Date.parse(a.lastSeen) > reportedAt + 1000) ? res.agents : undefined;
      },
      30_000,
      300,
    );
    for (const a of later) {
      const web = a.certificates.find((c) => c.name === 'web');
      assert.deepEqual([web?.state, web?.version, web?.desiredVersion], ['installed', 2, 2], a.name);
    }

    // Reported where an operator looks: a SECURITY line in `certfleet agents`, and events.
    const table = await fleet.cli(['agents']);
    for (const a of AGENTS) assert.match(table.stdout, new RegExp(`SECURITY ${a.name}: \\d+ records refused \\(.*replay \\d`));
    const events = await readEvents(nats, { limit: 1000 });
    assert.ok(events.some((e) => e.type === 'security' && e.agent === 'edge-a'), 'a security event names the agent');
    // The controller refused them too, and wrote its own pointer back over them.
    await eventually('the bucket holds the controller pointer again', async () => (await desiredKv.get('web').catch(() => null))?.value.generation === second.generation, 30_000, 300);
  });
});

/**
 * NATS least privilege against a real nats-server 2.9 in operator mode (memory resolver),
 * with users minted by controller/natsauth: who gets in, what an agent's user may read
 * and may not write, and how a revocation reaches a running and a restarted server.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { NatsAccess, type NatsAuthority } from '../../controller/natsauth/index.js';
import { ErrorCode, isCertfleetError, type CertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, ensureFleetNats, openKv, publishEvent, pushAccountClaims, type NatsHandle } from '../../shared/nats/index.js';
import { agentInboxPrefix, Bucket, EventType, eventSubject } from '../../shared/wire/index.js';
import { eventually } from '../harness/process.js';
import { startNats, type NatsServer } from '../harness/nats.js';

/** Test records are written raw and read back as they are: these tests are about permissions, not record shapes. */
function raw<T>(value: unknown): T {
  return value as T;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<CertfleetError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isCertfleetError(err, code), `expected ${code}, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** Connects the way agent/index.ts does: its creds and its own inbox prefix. */
function connectAgent(server: NatsServer, agent: string, creds: string): Promise<NatsHandle> {
  return connectNats({ servers: [server.url], name: `certfleet-agent ${agent}`, credentials: creds, inboxPrefix: agentInboxPrefix(agent), requestTimeoutMs: 2000, log: silentLogger() });
}

const DESIRED = { name: 'web', version: 1, fingerprint: 'aa', notAfter: '2027-01-01T00:00:00Z', selector: 'role=lb' };

void describe('NATS authorization issued by the controller (operator mode)', () => {
  let server: NatsServer;
  let authority: NatsAuthority;
  let controller: NatsHandle;
  let system: NatsHandle;
  let access: NatsAccess;

  before(async () => {
    server = await startNats();
    assert.ok(server.authority && server.include);
    authority = server.authority;
    controller = await connectNats({ servers: [server.url], name: 'certfleet-controller', credentials: server.creds, log: silentLogger() });
    await ensureFleetNats(controller);
    await (await openKv(controller, Bucket.desired, { create: false, parse: raw })).put('web', DESIRED);
    system = await connectNats({ servers: [server.url], name: 'system', credentials: (await authority.systemCredentials()).creds, checkJetStream: false, log: silentLogger() });
    access = new NatsAccess({ authority, serverConfigFile: server.include, push: (id, jwt) => pushAccountClaims(system, id, jwt) });
  });

  after(async () => {
    await system?.close();
    await controller?.close();
    await server?.stop();
  });

  void test('a client without credentials is refused with UNAUTHENTICATED', async () => {
    await rejectsWith(connectNats({ servers: [server.url], name: 'stranger', log: silentLogger() }), ErrorCode.Unauthenticated);
  });

  void test("an agent's credentials watch the desired and challenges buckets with the agent's own watch code", async () => {
    const creds = await access.credentialsForAgent('edge-a', Date.now() + 3600_000);
    const agent = await connectAgent(server, 'edge-a', creds);
    try {
      const seen: string[] = [];
      const desired = await openKv<typeof DESIRED>(agent, Bucket.desired, { create: false, parse: raw });
      const challenges = await openKv<{ token: string }>(agent, Bucket.challenges, { create: false, parse: raw });
      const w1 = await desired.watch((key, value) => seen.push(`desired ${key} v${value?.version ?? '-'}`));
      const w2 = await challenges.watch((key) => seen.push(`challenge ${key}`));
      await w1.initialDone;
      await w2.initialDone;
      assert.deepEqual(seen, ['desired web v1']);
      assert.equal((await desired.get('web'))?.value.version, 1, 'a single get works too');
      await (await openKv(controller, Bucket.desired, { create: false, parse: raw })).put('web', { ...DESIRED, version: 2 });
      await (await openKv(controller, Bucket.challenges, { create: false, parse: raw })).put('tok-1', { token: 'tok-1' });
      await eventually('both changes delivered', () => seen.includes('desired web v2') && seen.includes('challenge tok-1'), 10_000);
      await w1.stop();
      await w2.stop();
    } finally {
      await agent.close();
    }
    assert.doesNotMatch(server.output(), /Violation/, 'reading needed no right the agent lacks');
  });

  void test("an agent's credentials cannot write desired pointers, challenges, events, budgets or any agent's status", async () => {
    const creds = await access.credentialsForAgent('edge-b', Date.now() + 3600_000);
    const agent = await connectAgent(server, 'edge-b', creds);
    try {
      const attempts: Array<[string, () => Promise<unknown>]> = [
        ['desired pointer', () => openKv(agent, Bucket.desired, { create: false, parse: raw }).then((kv) => kv.put('web', { ...DESIRED, version: 99, fingerprint: 'forged' }))],
        ['challenge', () => openKv(agent, Bucket.challenges, { create: false, parse: raw }).then((kv) => kv.put('forged-token', { token: 'forged-token' }))],
        ['event', () => publishEvent(agent, eventSubject(EventType.installed, 'web'), { type: EventType.installed, at: new Date().toISOString(), message: 'forged' })],
        ['own status', () => openKv(agent, Bucket.agents, { create: false, parse: raw }).then((kv) => kv.put('edge-b', { forged: true }))],
        ["another agent's status", () => openKv(agent, Bucket.agents, { create: false, parse: raw }).then((kv) => kv.put('edge-a', { forged: true }))],
        ['budget', () => openKv(agent, Bucket.budgets, { create: false, parse: raw }).then((kv) => kv.put('acct', { forged: true }))],
      ];
      for (const [what, attempt] of attempts) {
        const err = await rejectsWith(attempt(), ErrorCode.PermissionDenied).catch((e: unknown) => {
          throw new Error(`${what}: ${(e as Error).message}`);
        });
        assert.equal(err.retryable, false, `${what}: a refusal is not retried`);
      }
    } finally {
      await agent.close();
    }
    // The server saw (and logged) each refused write; nothing changed.
    await eventually('violations logged', () => /Publish Violation.*\$KV\.certfleet_desired\.web/.test(server.output()), 5000);
    assert.match(server.output(), /Publish Violation.*\$KV\.certfleet_challenges\.forged-token/);
    assert.match(server.output(), /Publish Violation.*certfleet\.events\.installed\.web/);
    const desired = await (await openKv<typeof DESIRED>(controller, Bucket.desired, { create: false, parse: raw })).get('web');
    assert.notEqual(desired?.value.fingerprint, 'forged');
    assert.equal(await (await openKv(controller, Bucket.challenges, { create: false, parse: raw })).get('forged-token'), null);
    assert.deepEqual(await (await openKv(controller, Bucket.agents, { create: false, parse: raw })).keys(), []);
  });

  void test("an agent's credentials can neither read nor write the intents bucket ($KV.certfleet_intents.>)", async () => {
    const creds = await access.credentialsForAgent('edge-g', Date.now() + 3600_000);
    const agent = await connectAgent(server, 'edge-g', creds);
    const intents = await openKv(controller, Bucket.intents, { create: false, parse: raw });
    await intents.put('0123456789abcdef0123456789abcdef', { state: 'pending' });
    try {
      const attempts: Array<[string, () => Promise<unknown>]> = [
        ['open (stream info)', () => openKv(agent, Bucket.intents, { create: false, parse: raw })],
        // A raw JetStream publish on the KV subject: what a KV put is, without needing the stream info first.
        ['write an intent', () => publishEvent(agent, `$KV.${Bucket.intents}.ffffffffffffffffffffffffffffffff`, { type: EventType.installed, at: new Date().toISOString(), message: 'forged' })],
      ];
      for (const [what, attempt] of attempts) {
        await rejectsWith(attempt(), ErrorCode.PermissionDenied).catch((e: unknown) => {
          throw new Error(`${what}: ${(e as Error).message}`);
        });
      }
    } finally {
      await agent.close();
    }
    await eventually('the write refused by the server', () => /Publish Violation.*\$KV\.certfleet_intents\.f+/.test(server.output()), 5000);
    assert.match(server.output(), /Publish Violation.*\$JS\.API\.STREAM\.INFO\.KV_certfleet_intents/);
    assert.deepEqual(await intents.keys(), ['0123456789abcdef0123456789abcdef'], 'nothing written');
  });

  void test('revoking an agent closes its connection at once and refuses it after a server restart; others keep working', async () => {
    const creds = await access.credentialsForAgent('edge-c', Date.now() + 3600_000);
    const other = await connectAgent(server, 'edge-d', await access.credentialsForAgent('edge-d', Date.now() + 3600_000));
    const agent = await connectAgent(server, 'edge-c', creds);
    try {
      assert.equal(agent.isConnected(), true);
      assert.equal(await access.revokeAgentNatsUser('edge-c'), true);
      await eventually('revoked connection dropped', () => !agent.isConnected(), 10_000);
      await rejectsWith(connectAgent(server, 'edge-c', creds), ErrorCode.Unauthenticated);
      // The include was rewritten: a restarted server refuses the user without any push.
      assert.match(fs.readFileSync(server.include ?? '', 'utf8'), /resolver_preload/);
      await server.restart();
      await rejectsWith(connectAgent(server, 'edge-c', creds), ErrorCode.Unauthenticated);
      await eventually('the other agent reconnected', () => other.isConnected(), 15_000);
      const kv = await openKv<typeof DESIRED>(other, Bucket.desired, { create: false, parse: raw });
      assert.equal((await kv.get('web'))?.value.name, 'web');
      await eventually('the controller reconnected', () => controller.isConnected() && system.isConnected(), 15_000);
      assert.equal(await access.revokeAgentNatsUser('edge-c'), true, 'revoking again is harmless');
      assert.equal(await access.revokeAgentNatsUser('never-enrolled'), false);
    } finally {
      await agent.close();
      await other.close();
    }
  });

  void test('enrolling again rotates the credentials: the previous user is refused, the new one works', async () => {
    const first = await access.credentialsForAgent('edge-e', Date.now() + 3600_000);
    const second = await access.credentialsForAgent('edge-e', Date.now() + 3600_000);
    await rejectsWith(connectAgent(server, 'edge-e', first), ErrorCode.Unauthenticated);
    const agent = await connectAgent(server, 'edge-e', second);
    assert.equal(agent.isConnected(), true);
    await agent.close();
  });

  void test("an agent's user expires with its certificate", async () => {
    const creds = await access.credentialsForAgent('edge-f', Date.now() + 2000);
    const agent = await connectAgent(server, 'edge-f', creds);
    try {
      await eventually('expired connection dropped', () => !agent.isConnected(), 15_000);
      await rejectsWith(connectAgent(server, 'edge-f', creds), ErrorCode.Unauthenticated);
    } finally {
      await agent.close();
    }
  });
});

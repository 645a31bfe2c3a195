/**
 * The agent's intake of signed records (issue #9), against a real nats-server with
 * authorization off: records are written raw with the nats.js client, as any writer
 * could. The agent's loop runs for real (NATS watches, HTTP-01 responder, installer,
 * disk); the controller's gRPC side is scripted, holding its own signing keys, so key
 * rotation and new certificates can be played.
 *
 * Proves: a fetched bundle that is not the signed one is refused; a key rotation reaches
 * the agent over the (m)TLS link before records signed with the new key are acted on, and
 * a retired key is refused afterwards; challenges are served only when signed, unexpired,
 * selected and for a name of an assigned certificate (learnt just in time from the
 * controller, also for a second new certificate within the resync rate limit); a replayed older record is still refused after a restart.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { parseAgentConfig } from '../../agent/config/index.js';
import { Http01Responder } from '../../agent/http01/index.js';
import { Installer } from '../../agent/install/index.js';
import type { ControllerLink, LinkAssignments } from '../../agent/link/index.js';
import { Sync } from '../../agent/sync/index.js';
import type { Trust } from '../../agent/trust/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, ChallengeRecord, DesiredRecord, SigningPublicKey } from '../../shared/model/index.js';
import { connectNats, ensureFleetNats, openKv, type NatsHandle } from '../../shared/nats/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { makeBundle } from '../harness/certs.js';
import { startNats, type NatsServer } from '../harness/nats.js';
import { eventually, freePort } from '../harness/process.js';
import { testSigner, trustFor, type TestSigner } from '../harness/signing.js';
import { tempDir } from '../harness/tmp.js';

function get(port: number, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/.well-known/acme-challenge/${token}` }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

function pointer(b: Bundle, selector = 'role=lb'): DesiredRecord {
  return { name: b.meta.name, version: b.meta.version, fingerprint: b.meta.fingerprint, names: b.meta.names, notAfter: b.meta.notAfter, selector, updatedAt: new Date().toISOString() };
}

/** The scripted controller: what GetAssignments answers, and the bundles it serves. */
interface Controller {
  keys: SigningPublicKey[];
  desired: DesiredRecord[];
  assigned: Array<{ name: string; names: string[] }>;
  bundles: Map<string, Bundle>;
  resyncs: number;
  fetches: string[];
  reports: CertStatus[][];
}

interface Agent {
  sync: Sync;
  trust: Trust;
  stateDir: string;
  httpPort: number;
  stop(): Promise<void>;
}

describe('an agent acts only on records the controller signed', { timeout: 120_000 }, () => {
  let server: NatsServer;
  let nats: NatsHandle;
  let raw: NatsConnection;

  const put = async (bucket: string, key: string, value: unknown): Promise<void> => {
    await jetstream(raw).publish(`$KV.${bucket}.${key}`, JSON.stringify(value));
  };
  const newController = (keys: SigningPublicKey[]): Controller => ({ keys, desired: [], assigned: [], bundles: new Map(), resyncs: 0, fetches: [], reports: [] });

  async function startAgent(ctl: Controller, signer: TestSigner | null, stateDir = path.join(tempDir('certfleet-intake-'), 'state')): Promise<Agent> {
    const httpPort = await freePort();
    const config = parseAgentConfig(
      [`stateDir: ${stateDir}`, 'controller: { address: "127.0.0.1:1", caFile: /nonexistent }', `nats: { servers: ["${server.url}"] }`, `http01: { listen: "127.0.0.1:${httpPort}" }`, 'reportInterval: 1s', ''].join('\n'),
      'agent.yaml',
    );
    const link = {
      assignments: (): Promise<LinkAssignments> => {
        ctl.resyncs++;
        return Promise.resolve({ desired: JSON.parse(JSON.stringify(ctl.desired)) as unknown[], signingKeys: ctl.keys, assigned: ctl.assigned });
      },
      fetchBundle: (name: string, version: number) => {
        ctl.fetches.push(`${name}/${version}`);
        const b = ctl.bundles.get(`${name}/${version}`);
        return b ? Promise.resolve(b) : Promise.reject(new Error(`no ${name} v${version}`));
      },
      reportStatus: (r: { certificates: CertStatus[] }) => {
        ctl.reports.push(r.certificates);
        return Promise.resolve();
      },
    } as unknown as ControllerLink;
    const log = silentLogger();
    const http01 = new Http01Responder({ log });
    await http01.start({ host: '127.0.0.1', port: httpPort });
    const trust = await trustFor(stateDir, signer, log);
    const sync = new Sync({ config, labels: { role: 'lb' }, link, installer: new Installer({ stateDir, clock: systemClock, log }), nats, http01, trust, clock: systemClock, log });
    try {
      await sync.start();
    } catch (err) {
      await sync.stop();
      await http01.stop();
      throw err;
    }
    return {
      sync,
      trust,
      stateDir,
      httpPort,
      async stop() {
        await sync.stop();
        await http01.stop();
      },
    };
  }
  const statusOf = (ctl: Controller, name: string): CertStatus | undefined => ctl.reports.at(-1)?.find((s) => s.name === name);
  const currentVersion = (a: Agent, name: string): string => path.basename(fs.realpathSync(path.join(a.stateDir, 'certs', name, 'current')));

  beforeEach(async () => {
    // NATS without authorization: the test writes forged records itself, as anyone could there.
    server = await startNats({ auth: 'none' });
    nats = await connectNats({ servers: [server.url], name: 'agent', log: silentLogger() });
    await ensureFleetNats(nats);
    raw = await connect({ servers: server.url, name: 'writer' });
  });

  afterEach(async () => {
    await raw?.close();
    await nats?.close();
    await server?.stop();
  });

  test('a fetched bundle whose fingerprint is not the one the signed pointer names is refused and reported, and nothing of it reaches the disk', async () => {
    const s = testSigner();
    const ctl = newController(s.publicKeys);
    const v1 = await makeBundle({ name: 'web', version: 1, names: ['web.example.test'] });
    const v2 = await makeBundle({ name: 'web', version: 2, names: ['web.example.test'] });
    // The controller's store answers version 2 with another, valid certificate (a restored backup, tampering).
    const other = await makeBundle({ name: 'web', version: 2, names: ['web.example.test'] });
    ctl.bundles.set('web/1', v1).set('web/2', other);
    ctl.desired = [s.desired(pointer(v1))];
    const a = await startAgent(ctl, s);
    try {
      await eventually('v1 installed', () => statusOf(ctl, 'web')?.state === 'installed', 20_000);
      await put(Bucket.desired, 'web', s.desired(pointer(v2)));
      const st = await eventually('v2 refused', () => (statusOf(ctl, 'web')?.desiredVersion === 2 && statusOf(ctl, 'web')?.state === 'failed' ? statusOf(ctl, 'web') : undefined), 20_000);
      assert.equal(st?.errorCode, ErrorCode.BundleFingerprintMismatch);
      assert.equal(st?.version, 1, 'v1 is still what is installed');
      assert.equal(currentVersion(a, 'web'), '1');
      assert.equal(fs.existsSync(path.join(a.stateDir, 'certs', 'web', 'versions', '2')), false, 'nothing of the other certificate on disk');
      assert.equal(a.trust.refusals().byReason['fingerprint-mismatch'], 1);
    } finally {
      await a.stop();
    }
  });

  test('a key rotation: a record signed with the new key makes the agent fetch the key set over the link first, then act on it; after retirement the old key is refused', async () => {
    const oldKey = testSigner();
    const newKey = testSigner();
    const ctl = newController(oldKey.publicKeys);
    const bundles = await Promise.all([1, 2, 3].map((version) => makeBundle({ name: 'web', version, names: ['web.example.test'] })));
    for (const b of bundles) ctl.bundles.set(`web/${b.meta.version}`, b);
    const [v1, v2, v3] = bundles;
    assert.ok(v1 && v2 && v3);
    ctl.desired = [oldKey.desired(pointer(v1), 1)];
    const a = await startAgent(ctl, oldKey);
    try {
      await eventually('v1 installed', () => statusOf(ctl, 'web')?.state === 'installed', 20_000);
      // prepare + activate on the controller: both keys are published, records get the new one.
      ctl.keys = [...oldKey.publicKeys, ...newKey.publicKeys];
      const second = newKey.desired(pointer(v2), 2);
      ctl.desired = [second];
      const resyncs = ctl.resyncs;
      await put(Bucket.desired, 'web', second);
      await eventually('v2 installed', () => statusOf(ctl, 'web')?.state === 'installed' && statusOf(ctl, 'web')?.version === 2, 20_000);
      assert.ok(ctl.resyncs > resyncs, 'the unknown key made the agent resynchronise');
      assert.equal(a.trust.refusals().total, 0, 'nothing refused during the rotation');
      const saved = JSON.parse(fs.readFileSync(path.join(a.stateDir, 'trust', 'signing-keys.json'), 'utf8')) as { keys: SigningPublicKey[] };
      assert.deepEqual(saved.keys.map((k) => k.keyId).sort(), [oldKey.keyId, newKey.keyId].sort());

      // retire: only the new key is published; a record signed with the old one is refused.
      ctl.keys = newKey.publicKeys;
      await a.sync.resync();
      await put(Bucket.desired, 'web', oldKey.desired(pointer(v3), 9));
      await eventually(
        'the retired key refused',
        async () => {
          await a.sync.resync();
          return a.trust.refusals().byReason['unknown-key'] === 1;
        },
        20_000,
        200,
      );
      assert.equal(currentVersion(a, 'web'), '2');
      assert.ok(!ctl.fetches.includes('web/3'), 'v3 never fetched');
    } finally {
      await a.stop();
    }
  });

  test('challenges are served only when signed, unexpired, selected, and for a name of a certificate assigned to the agent, learnt from the controller if new', async () => {
    const s = testSigner();
    const ctl = newController(s.publicKeys);
    const a = await startAgent(ctl, s);
    try {
      // A certificate added to the controller's configuration after the agent's last resync.
      ctl.assigned = [{ name: 'shop', names: ['shop.example.test'] }];
      const base = { identifier: 'shop.example.test', cert: 'shop', selector: 'role=lb', createdAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 600_000).toISOString() };
      const ch = (token: string, extra: Partial<ChallengeRecord> = {}): ChallengeRecord => ({ ...base, token, keyAuthorization: `${token}.thumb`, ...extra });
      await put(Bucket.challenges, 'tok-good', s.challenge(ch('tok-good')));
      await eventually('the new certificate challenge is served', async () => (await get(a.httpPort, 'tok-good')).body === 'tok-good.thumb', 20_000, 100);
      assert.equal(a.trust.refusals().total, 0);

      // A second new certificate right after: the resync it asks for comes at the end of
      // the 10 s since the last (not at the periodic one, minutes away), and it is served.
      ctl.assigned = [...ctl.assigned, { name: 'blog', names: ['blog.example.test'] }];
      await put(Bucket.challenges, 'tok-blog', s.challenge(ch('tok-blog', { cert: 'blog', identifier: 'blog.example.test' })));
      await eventually('the second new certificate challenge is served', async () => (await get(a.httpPort, 'tok-blog')).body === 'tok-blog.thumb', 30_000, 200);
      assert.equal(a.trust.refusals().total, 0);

      await put(Bucket.challenges, 'tok-other', s.challenge(ch('tok-other', { selector: 'role=db' }))); // for other agents: ignored
      await put(Bucket.challenges, 'tok-unsigned', ch('tok-unsigned'));
      await put(Bucket.challenges, 'tok-expired', s.challenge(ch('tok-expired', { expiresAt: new Date(Date.now() - 1000).toISOString() })));
      await put(Bucket.challenges, 'tok-stranger', s.challenge(ch('tok-stranger', { identifier: 'stranger.example.test' })));
      await eventually(
        'each bad challenge refused',
        async () => {
          await a.sync.resync(); // the one naming an unknown name waits for a resync
          const r = a.trust.refusals().byReason;
          return r['unsigned'] === 1 && r['expired'] === 1 && r['not-assigned'] === 1;
        },
        20_000,
        200,
      );
      assert.equal(a.trust.refusals().total, 3, 'a challenge for other agents is not a refusal');
      for (const token of ['tok-other', 'tok-unsigned', 'tok-expired', 'tok-stranger']) assert.equal((await get(a.httpPort, token)).status, 404, token);
      assert.equal((await get(a.httpPort, 'tok-good')).status, 200);

      // The controller withdraws it: no longer served.
      await (await openKv<unknown>(nats, Bucket.challenges, { create: false, parse: (v) => v })).delete('tok-good');
      await eventually('withdrawn', async () => (await get(a.httpPort, 'tok-good')).status === 404, 20_000, 100);
    } finally {
      await a.stop();
    }
  });

  test('a correctly signed but older record found in the bucket after a restart is refused: the highest generation is kept on disk', async () => {
    const s = testSigner();
    const ctl = newController(s.publicKeys);
    const v1 = await makeBundle({ name: 'web', version: 1, names: ['web.example.test'] });
    const v2 = await makeBundle({ name: 'web', version: 2, names: ['web.example.test'] });
    ctl.bundles.set('web/1', v1).set('web/2', v2);
    // A captured record of v2 at generation 3; the controller has since rolled back to v1 (generation 5).
    const captured = s.desired(pointer(v2), 3);
    ctl.desired = [s.desired(pointer(v1), 5)];
    const first = await startAgent(ctl, s);
    await eventually('v1 installed', () => statusOf(ctl, 'web')?.state === 'installed', 20_000);
    await first.stop();
    assert.deepEqual((JSON.parse(fs.readFileSync(path.join(first.stateDir, 'trust', 'generations.json'), 'utf8')) as Record<string, unknown>)['web'], { epoch: 0, generation: 5 });

    // While it is down, someone puts the captured record back.
    await put(Bucket.desired, 'web', captured);
    ctl.reports.length = 0;
    const again = await startAgent(ctl, null, first.stateDir);
    try {
      await eventually('the replay refused', () => again.trust.refusals().byReason['replay'] === 1, 20_000);
      await eventually('a report after the refusal', () => ctl.reports.length > 2, 20_000);
      assert.equal(statusOf(ctl, 'web')?.version, 1);
      assert.equal(currentVersion(again, 'web'), '1');
      assert.ok(!ctl.fetches.includes('web/2'), 'v2 never fetched');
    } finally {
      await again.stop();
    }
  });
});

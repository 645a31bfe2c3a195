/**
 * Two controllers, one leader (issue #12), in one process against real servers: one
 * nats-server, the Vault KV v2 double as the shared store, Pebble validating DNS-01
 * through BIND. It proves:
 *
 *  - only the leader orders: the first certificate is ordered once although both run;
 *  - the second controller writes no admin credentials (the first one's stay valid);
 *  - `status` on the follower names the leader, its epoch, and both controllers;
 *  - after the leader's graceful stop (it releases the lease) the follower takes over with
 *    a higher epoch, re-signs the desired pointer with it, and orders on request;
 *  - a deposed leader's desired write is refused (compare-and-set on its stale revision,
 *    then the fence), and a record of its older epoch is refused by an agent's check.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { desiredVerdict } from '../../agent/trust/index.js';
import { operatorClient } from '../../cli/client.js';
import { loadCredentials } from '../../cli/credentials.js';
import { parseControllerConfig } from '../../controller/config/index.js';
import { DesiredState } from '../../controller/publish/index.js';
import { startController, STATE_FILES, type Controller } from '../../controller/runtime.js';
import { RecordSigner } from '../../controller/signing/index.js';
import { openStore, type CertStore } from '../../controller/store/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { DesiredRecord } from '../../shared/model/index.js';
import { connectNats, openKv, readEvents, type NatsHandle } from '../../shared/nats/index.js';
import { parseDesiredRecord } from '../../shared/records/index.js';
import { stampOf, trustedKeys } from '../../shared/signing/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { startBind, type BindHandle } from '../harness/bind.js';
import { startNats, type NatsServer } from '../harness/nats.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { eventually, freePort } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { startVaultDouble, type VaultDouble } from '../harness/vault-double.js';

const log = silentLogger();
const CERT = 'site';

void describe('two controllers on one NATS and one Vault store', { timeout: 300_000 }, () => {
  let nats: NatsServer;
  let vault: VaultDouble;
  let bind: BindHandle;
  let resolver: BindHandle;
  let pebble: PebbleHandle;
  let nc: NatsHandle;
  let store: CertStore;
  const running: Controller[] = [];
  let yaml: (name: string, port: number, peer: number) => string;

  before(async () => {
    nats = await startNats({ auth: 'none' });
    vault = await startVaultDouble();
    bind = await startBind();
    resolver = await startBind({ keys: [], zones: [], forward: { server: bind.server, zones: ['example.test'] } });
    pebble = await startPebble({ httpPort: await freePort(), dnsServer: resolver.server });
    const dir = tempDir('certfleet-ha-');
    const caFile = path.join(dir, 'pebble-ca.pem');
    fs.writeFileSync(caFile, pebble.caPem);
    const key = bind.key('certfleet-key');
    const secretFile = path.join(dir, 'certfleet-key.secret');
    fs.writeFileSync(secretFile, key.secret, { mode: 0o600 });
    yaml = (name, port, peer) =>
      [
        `stateDir: ${path.join(dir, name)}`,
        'log: { level: silent }',
        `api: { listen: "127.0.0.1:${port}", peers: ["127.0.0.1:${peer}"] }`,
        `ha: { name: ${name}, leaseTtl: 3s }`,
        `nats: { servers: ["${nats.url}"], authority: external }`,
        `store: { type: vault, address: "${vault.addr}", auth: { method: token, token: "${vault.rootToken}" } }`,
        `acme: { directoryUrl: "${pebble.directoryUrl}", caFile: ${caFile}, termsOfServiceAgreed: true }`,
        // Long: every pass here comes from a kick (an election, a renew), none from the interval.
        'renewal: { checkInterval: 1h }',
        'dns01:',
        `  providers: { bind: { type: rfc2136, server: "${bind.server}", keyName: ${key.name}, algorithm: ${key.algorithm}, secretFile: ${secretFile} } }`,
        '  zones: [{ zone: example.test, provider: bind }]',
        `  propagation: { resolvers: ["${bind.server}"], nameservers: ["${bind.server}"], timeout: 20s, interval: 200ms }`,
        'certificates:',
        `  - { name: ${CERT}, names: [ha.example.test], agents: "role=web", challenge: dns-01, dnsProvider: bind }`,
        '',
      ].join('\n');
    nc = await connectNats({ servers: [nats.url], name: 'test', log });
    store = await openStore({ type: 'vault', address: vault.addr, auth: { method: 'token', token: vault.rootToken } }, log);
  });

  after(async () => {
    for (const c of running) await c.stop().catch(() => undefined);
    await nc?.close();
    await store?.close();
    await pebble?.stop();
    await resolver?.stop();
    await bind?.stop();
    await vault?.close();
    await nats?.stop();
  });

  const orders = async (): Promise<number> => (await readEvents(nc, { limit: 1000 })).filter((e) => e.type === 'ordered' && e.cert === CERT).length;
  const desiredKv = (): Promise<Awaited<ReturnType<typeof openKv<DesiredRecord>>>> => openKv<DesiredRecord>(nc, Bucket.desired, { create: false, parse: parseDesiredRecord });

  test('one leads and orders, the other follows; after the leader stops the follower takes over with a new epoch; a deposed leader cannot publish', async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const cfg1 = parseControllerConfig(yaml('c1', p1, p2), '/etc/certfleet/c1.yaml');
    const cfg2 = parseControllerConfig(yaml('c2', p2, p1), '/etc/certfleet/c2.yaml');
    const c1 = await startController(cfg1, log);
    running.push(c1);
    assert.equal(c1.lease.view().role, 'leader', 'the first controller on an empty lease leads at once');
    const c2 = await startController(cfg2, log);
    running.push(c2);
    assert.equal(c2.lease.view().role, 'follower');
    const epoch1 = c1.lease.view().epoch ?? 0;

    // Admin credentials: written once, by the first; they list both controllers.
    const creds1 = JSON.parse(fs.readFileSync(path.join(cfg1.stateDir, STATE_FILES.adminCredentials), 'utf8')) as { server: string; servers?: string[] };
    assert.deepEqual(creds1.servers, [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`]);
    assert.equal(fs.existsSync(path.join(cfg2.stateDir, STATE_FILES.adminCredentials)), false, 'the second controller issues no admin of its own');

    await eventually('version 1 stored', async () => (await store.latest(CERT))?.version === 1, 120_000, 250);
    const d1 = await eventually('the pointer published at the leader\'s epoch', async () => {
      const v = await (await desiredKv()).get(CERT);
      return v?.value.version === 1 ? v : undefined;
    }, 20_000, 200);
    assert.equal(d1.value.epoch, epoch1);
    assert.equal(await orders(), 1, 'one order although two controllers run');
    assert.equal(c2.leading(), false);

    // Status on the follower names the leader and both controllers.
    const client = operatorClient({ ...loadCredentials(path.join(cfg1.stateDir, STATE_FILES.adminCredentials)), server: `127.0.0.1:${p2}`, servers: [`127.0.0.1:${p2}`] }, 10_000);
    try {
      const st = await eventually('both controllers registered', async () => {
        const s = await client.getStatus();
        return s.controllers.length === 2 ? s : undefined;
      }, 10_000, 200);
      assert.equal(st.self, 'c2');
      assert.equal(st.role, 'follower');
      assert.match(st.leader?.holder ?? '', /^c1#/);
      assert.equal(st.leader?.address, `127.0.0.1:${p1}`);
      assert.equal(Number(st.leader?.epoch), epoch1);
      assert.deepEqual(st.controllers.map((c) => [c.name, c.role, c.health]), [['c1', 'leader', 'ok'], ['c2', 'follower', 'ok']]);
    } finally {
      client.close();
    }

    // A writer of the first epoch that saw the pointer's revision, and whose fence passed
    // right before its KV write, then it froze (put asks the fence before signing and again
    // before the write): what a leader paused mid-write looks like. Only the
    // compare-and-set can stop that write; the fence refuses from then on.
    const signer = await RecordSigner.open(store, systemClock, log);
    let fenceCalls = 0;
    const pausedFence = (): number => {
      fenceCalls += 1;
      if (fenceCalls <= 2) return epoch1;
      throw new CertfleetError(ErrorCode.NotLeader, 'leader lease ran out before it was renewed', { retryable: true });
    };
    const stale = await DesiredState.open(nc, signer, systemClock, log, pausedFence);
    // Frozen from here on: a paused process sees no change in the bucket either.
    await stale.close();

    // The leader stops gracefully: it releases the lease, the follower takes over at once.
    await c1.stop();
    await eventually('c2 leads', () => c2.leading(), 15_000, 100);
    const epoch2 = c2.lease.view().epoch ?? 0;
    assert.ok(epoch2 > epoch1, `epoch ${epoch2} above ${epoch1}`);
    const d2 = await eventually('the pointer re-signed with the new epoch', async () => {
      const v = await (await desiredKv()).get(CERT);
      return v?.value.epoch === epoch2 ? v : undefined;
    }, 15_000, 200);
    assert.equal(d2.value.version, 1);

    // The deposed writer's pointer: compare-and-set on its stale revision fails, the fence
    // then refuses; the bucket keeps the new leader's record.
    await assert.rejects(
      stale.put({ ...d1.value, pinned: true }),
      (err: unknown) => isCertfleetError(err, ErrorCode.NotLeader),
    );
    assert.equal(fenceCalls, 3, 'refused by the compare-and-set, then by the fence asked again');
    const now = await (await desiredKv()).get(CERT);
    assert.equal(now?.value.epoch, epoch2);
    assert.equal(now?.value.pinned, undefined);

    // An agent that holds the new leader's record refuses one of the old epoch, however
    // high its generation (a deposed leader's replay).
    const replay = await signer.sign('desired', CERT, { ...d1.value, epoch: epoch1, generation: (d2.value.generation ?? 0) + 100 });
    const verdict = desiredVerdict(replay, trustedKeys(signer.publicKeys()), stampOf(d2.value));
    assert.equal(verdict.ok ? 'ok' : verdict.reason, 'replay');

    // The new leader does the work: a renewal is ordered by it, once.
    assert.equal(await orders(), 1, 'the takeover placed no order (the certificate is fresh)');
    const client2 = operatorClient({ ...loadCredentials(path.join(cfg1.stateDir, STATE_FILES.adminCredentials)), server: `127.0.0.1:${p2}`, servers: [`127.0.0.1:${p2}`] }, 30_000);
    try {
      await client2.renewCertificate({ name: CERT });
    } finally {
      client2.close();
    }
    await eventually('version 2 stored by the new leader', async () => (await store.latest(CERT))?.version === 2, 120_000, 250);
    assert.equal(await orders(), 2);
    const d3 = await eventually('version 2 published at the new epoch', async () => {
      const v = await (await desiredKv()).get(CERT);
      return v?.value.version === 2 ? v : undefined;
    }, 20_000, 200);
    assert.equal(d3.value.epoch, epoch2);
  });
});

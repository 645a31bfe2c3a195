/**
 * End to end, all real: Pebble issues, the controller orders and answers HTTP-01
 * through two agent processes, each agent installs into its state dir, reloads its own
 * nginx, verifies, and reports over gRPC (mutual TLS). Then the refusals: a certificate
 * not assigned to an agent, reused and wrong bootstrap tokens, a bad config, and a
 * bundle whose key does not match its certificate.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { FileStore } from '../../controller/store/index.js';
import { ControllerLink } from '../../agent/link/index.js';
import { loadIdentity } from '../../agent/enroll/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, openKv, readEvents } from '../../shared/nats/index.js';
import { agentInboxPrefix, Bucket } from '../../shared/wire/index.js';
import { runCli, startFleet, type Fleet } from '../harness/fleet.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

/** Test records are written raw and read back as they are: these tests are about permissions, not record shapes. */
function raw<T>(value: unknown): T {
  return value as T;
}

interface AgentJson {
  name: string;
  online: boolean;
  certificates: Array<{ name: string; version: number; desiredVersion: number; state: string; errorCode: string; fingerprint: string; servedVerified: boolean }>;
}

const CERTS = [
  { name: 'web', names: ['www.example.test', 'example.test'], agents: 'role=web' },
  { name: 'api', names: ['api.example.test'], agents: 'site=a' },
];

describe('a local fleet issues, installs, serves and reports', { timeout: 240_000 }, () => {
  let fleet: Fleet;
  let store: FileStore;

  before(async () => {
    fleet = await startFleet({
      certificates: CERTS,
      agents: [
        { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web', site: 'a' }, serves: ['web', 'api'] },
        { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web', site: 'b' }, serves: ['web'] },
      ],
      dns: { 'www.example.test': '127.0.0.2', 'example.test': '127.0.0.3', 'api.example.test': '127.0.0.2' },
    });
    store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
    await fleet.waitUntilReady(2);
  });

  after(async () => {
    await store?.close();
    await fleet?.stop();
  });

  test('each nginx serves, for every name, the version the store holds', async () => {
    const expected = [
      { agent: 'edge-a', ip: '127.0.0.2', cert: 'web' },
      { agent: 'edge-a', ip: '127.0.0.2', cert: 'api' },
      { agent: 'edge-b', ip: '127.0.0.3', cert: 'web' },
    ];
    for (const e of expected) {
      const latest = await store.latest(e.cert);
      assert.ok(latest, `store has ${e.cert}`);
      const spec = CERTS.find((c) => c.name === e.cert);
      for (const name of spec?.names ?? []) {
        const served = await servedCertificate({ host: e.ip, port: fleet.tlsPort, servername: name });
        assert.equal(served.fingerprint, latest.fingerprint, `${e.agent} serves ${e.cert} for ${name}`);
        assert.ok(served.names.includes(name));
      }
    }
  });

  test('private keys on agents and in the store are mode 0600', () => {
    for (const agent of fleet.agents.values()) {
      for (const cert of agent.serves) {
        const dir = path.join(agent.stateDir, 'certs', cert, 'current');
        assert.equal(fs.statSync(path.join(dir, 'privkey.pem')).mode & 0o777, 0o600, `${agent.name} ${cert} privkey`);
        assert.equal(fs.statSync(path.join(dir, 'combined.pem')).mode & 0o777, 0o600, `${agent.name} ${cert} combined`);
      }
      assert.equal(fs.statSync(path.join(agent.stateDir, 'identity', 'key.pem')).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.join(agent.stateDir, 'identity', 'nats.creds')).mode & 0o777, 0o600, `${agent.name} nats.creds`);
    }
    assert.equal(fs.statSync(path.join(fleet.controllerState, 'store', 'certs', 'web', '1', 'privkey.pem')).mode & 0o777, 0o600);
    assert.equal(fs.statSync(fleet.credentials).mode & 0o777, 0o600);
  });

  test('`certfleet agents --json` shows both agents online at the desired version, verified', async () => {
    const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    const byName = new Map(res.agents.map((a) => [a.name, a]));
    for (const [agent, certs] of [['edge-a', ['api', 'web']], ['edge-b', ['web']]] as const) {
      const a = byName.get(agent);
      assert.ok(a, `${agent} listed`);
      assert.equal(a.online, true, `${agent} online`);
      for (const cert of certs) {
        const st: AgentJson['certificates'][number] | undefined = a.certificates.find((c) => c.name === cert);
        const latest = await store.latest(cert);
        assert.equal(st?.state, 'installed', `${agent} ${cert}`);
        assert.equal(st?.version, latest?.version);
        assert.equal(st?.desiredVersion, latest?.version);
        assert.equal(st?.fingerprint, latest?.fingerprint);
        assert.equal(st?.servedVerified, true);
      }
    }
    assert.equal(byName.get('edge-b')?.certificates.some((c) => c.name === 'api'), false, 'edge-b never got api');
  });

  test('no key material or token travels over NATS or appears in any log', async () => {
    const secrets: string[] = [];
    for (const cert of ['web', 'api']) {
      const latest = await store.latest(cert);
      const bundle = latest ? await store.getVersion(cert, latest.version) : null;
      assert.ok(bundle);
      // The base64 body of the key, without armour or line breaks, in chunks a log line could hold.
      const body = bundle.keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
      secrets.push(body.slice(0, 40), body.slice(-40));
    }
    for (const agent of fleet.agents.values()) secrets.push(agent.token);
    const nats = await connectNats({ servers: [fleet.nats.url], name: 'test-reader', credentials: fleet.natsCreds, log: silentLogger() });
    try {
      const seen: string[] = [];
      for (const bucket of [Bucket.desired, Bucket.challenges, Bucket.agents]) {
        const kv = await openKv<unknown>(nats, bucket, { create: false, parse: (v) => v });
        for (const item of await kv.entries()) seen.push(JSON.stringify(item.value));
      }
      const events = await readEvents(nats, { limit: 1000 });
      assert.ok(events.some((e) => e.type === 'issued'), 'the stream holds the issued events');
      seen.push(...events.map((e) => JSON.stringify(e)));
      const onNats = seen.join('\n');
      assert.ok(onNats.includes('"fingerprint"'), 'the buckets were read');
      assert.doesNotMatch(onNats, /PRIVATE KEY/);
      const logs = fleet.logs();
      assert.doesNotMatch(logs, /PRIVATE KEY/);
      for (const secret of secrets) {
        assert.equal(onNats.includes(secret), false, 'a secret is on NATS');
        assert.equal(logs.includes(secret), false, 'a secret is in a log');
      }
    } finally {
      await nats.close();
    }
  });

  test('NATS refuses a client without credentials, and an agent\'s own credentials read but cannot write', async () => {
    // Everything so far (enrolment, watches, issuance, installs) ran under the agents'
    // least-privilege users: none of it needed a right they lack.
    assert.doesNotMatch(fleet.nats.output(), /Violation/);
    await assert.rejects(connectNats({ servers: [fleet.nats.url], name: 'stranger', log: silentLogger() }), (err) => isCertfleetError(err, ErrorCode.Unauthenticated));
    const a = fleet.agents.get('edge-a');
    assert.ok(a);
    // The very file the agent process connects with, handed over at enrolment.
    const nats = await connectNats({
      servers: [fleet.nats.url],
      name: 'edge-a-creds',
      credentialsFile: path.join(a.stateDir, 'identity', 'nats.creds'),
      inboxPrefix: agentInboxPrefix('edge-a'),
      log: silentLogger(),
    });
    try {
      const desired = await openKv<{ version: number }>(nats, Bucket.desired, { create: false, parse: raw });
      const before = await desired.get('web');
      assert.ok(before, 'the agent reads the desired pointer');
      await assert.rejects(desired.put('web', { ...before.value, version: 1 }), (err) => isCertfleetError(err, ErrorCode.PermissionDenied));
      const challenges = await openKv<unknown>(nats, Bucket.challenges, { create: false, parse: raw });
      await assert.rejects(challenges.put('forged', { token: 'forged' }), (err) => isCertfleetError(err, ErrorCode.PermissionDenied));
      // Agents report over gRPC; their users have no right on the agents bucket at all.
      await assert.rejects(
        openKv<unknown>(nats, Bucket.agents, { create: false, parse: raw }).then((kv) => kv.put('edge-b', { forged: true })),
        (err) => isCertfleetError(err, ErrorCode.PermissionDenied),
      );
      assert.equal((await desired.get('web'))?.revision, before.revision, 'the pointer did not move');
    } finally {
      await nats.close();
    }
    assert.match(fleet.nats.output(), /Publish Violation.*\$KV\.certfleet_desired\.web/);
  });

  test('an agent asking for a certificate not assigned to it gets PERMISSION_DENIED', async () => {
    const b = fleet.agents.get('edge-b');
    assert.ok(b);
    const id = loadIdentity(b.stateDir);
    const link = new ControllerLink({
      address: `127.0.0.1:${fleet.apiPort}`,
      caPem: fs.readFileSync(path.join(fleet.controllerState, 'ca.pem'), 'utf8'),
      certPem: id.certPem,
      keyPem: id.keyPem,
      serverName: 'localhost',
    });
    try {
      await assert.rejects(link.fetchBundle('api', 0), (err: unknown) => err instanceof CertfleetError && err.code === ErrorCode.PermissionDenied);
      // Its own assignment still works, so the refusal above is about assignment.
      const own = await link.fetchBundle('web', 0);
      assert.equal(own.meta.name, 'web');
    } finally {
      link.close();
    }
  });

  test('a caller without a client certificate cannot use the agent API', async () => {
    const link = new ControllerLink({
      address: `127.0.0.1:${fleet.apiPort}`,
      caPem: fs.readFileSync(path.join(fleet.controllerState, 'ca.pem'), 'utf8'),
      serverName: 'localhost',
    });
    try {
      await assert.rejects(link.fetchBundle('web', 0), (err: unknown) => err instanceof CertfleetError && err.code === ErrorCode.Unauthenticated);
    } finally {
      link.close();
    }
  });

  test('a reused bootstrap token and a made-up one are both refused', async () => {
    const a = fleet.agents.get('edge-a');
    assert.ok(a);
    const reused = await runCli(['agent', 'enroll', '--config', a.configFile, '--token', a.token]);
    assert.notEqual(reused.code, 0);
    assert.match(reused.stderr, /ENROLL_TOKEN_INVALID/);
    const made = await runCli(['agent', 'enroll', '--config', a.configFile, '--token', 'cft_' + 'A'.repeat(43)]);
    assert.notEqual(made.code, 0);
    assert.match(made.stderr, /ENROLL_TOKEN_INVALID/);
    // The failed attempts did not replace the agent's identity: it still reports.
    const agents = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    assert.ok(agents.agents.find((x) => x.name === 'edge-a')?.online);
  });

  test('an invalid config exits non-zero naming the file and the field', async () => {
    const dir = tempDir();
    const bad = path.join(dir, 'controller.yaml');
    fs.writeFileSync(bad, `stateDir: ${dir}\nacme:\n  directoryUrl: https://127.0.0.1:1/dir\n  termsOfServiceAgreed: true\ncertificates:\n  - { name: x, names: [x.test], agents: "*", keyTyp: rsa-2048 }\n`);
    const res = await runCli(['controller', '--config', bad]);
    assert.equal(res.code, 3);
    assert.match(res.stderr, new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:6: certificates\\[0\\]\\.keyTyp`));
  });

  test('a bundle whose key does not match is refused and reported, and the old files stay', async () => {
    const a = fleet.agents.get('edge-a');
    assert.ok(a);
    const good = await store.latest('api');
    assert.ok(good);
    const goodBundle = await store.getVersion('api', good.version);
    assert.ok(goodBundle);
    const currentDir = path.join(a.stateDir, 'certs', 'api', 'current');
    const keyBefore = fs.readFileSync(path.join(currentDir, 'privkey.pem'), 'utf8');
    // A damaged store: the next version carries the right certificate with another key.
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    assert.notEqual(createPrivateKey(otherKey).asymmetricKeyType, undefined);
    const { version: goodVersion, ...meta } = good;
    assert.ok(goodVersion >= 1);
    const bad = await store.putVersion('api', { certPem: goodBundle.certPem, chainPem: goodBundle.chainPem, keyPem: otherKey, meta }, good.version);

    const reported = await eventually(
      'edge-a reports the refused version',
      async () => {
        const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
        const st = res.agents.find((x) => x.name === 'edge-a')?.certificates.find((c) => c.name === 'api');
        return st?.desiredVersion === bad.version && st.state === 'failed' ? st : undefined;
      },
      60_000,
      300,
    );
    assert.equal(reported.errorCode, ErrorCode.BundleKeyMismatch);
    assert.equal(reported.version, good.version, 'the installed version is still the good one');
    assert.equal(fs.realpathSync(currentDir), path.join(a.stateDir, 'certs', 'api', 'versions', String(good.version)));
    assert.equal(fs.existsSync(path.join(a.stateDir, 'certs', 'api', 'versions', String(bad.version))), false, 'nothing of the bad version on disk');
    assert.equal(fs.readFileSync(path.join(currentDir, 'privkey.pem'), 'utf8'), keyBefore);
    const served = await servedCertificate({ host: '127.0.0.2', port: fleet.tlsPort, servername: 'api.example.test' });
    assert.equal(served.fingerprint, good.fingerprint, 'nginx still serves the good version');
  });
});

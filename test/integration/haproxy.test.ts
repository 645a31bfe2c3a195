/**
 * HAProxy done properly (issue 11): a `crt` directory of one combined PEM per
 * certificate, and renewals pushed through HAProxy's runtime API with no reload, a reload
 * only when the API refuses. Real HAProxy processes started here on loopback, the agent's
 * real loop (Sync), installer and hooks; a scripted controller stands in for the gRPC link.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import tls from 'node:tls';
import { parseAgentConfig } from '../../agent/config/index.js';
import { runReloadHook, runtimeCommand, updateCertificate } from '../../agent/hooks/index.js';
import { Installer } from '../../agent/install/index.js';
import type { ControllerLink } from '../../agent/link/index.js';
import { Sync } from '../../agent/sync/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { createRootLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, DesiredRecord } from '../../shared/model/index.js';
import { makeBundle } from '../harness/certs.js';
import { haproxyPid, haproxyReloadCommand, startHaproxyMaster, stopHaproxy, writeHaproxyConfig } from '../harness/haproxy.js';
import { eventually, freePort } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';
import { tempDir } from '../harness/tmp.js';
import { testSigner, trustFor, type TestSigner } from '../harness/signing.js';

const HOST = '127.0.0.1';

/** A scripted controller: serves the bundles, assigns what `desired` names, keeps the last report. */
function scriptedController(bundles: Bundle[]): { link: ControllerLink; signer: TestSigner; want: Map<string, number>; reported: () => Map<string, CertStatus> } {
  const want = new Map<string, number>();
  const signer = testSigner();
  let reported = new Map<string, CertStatus>();
  const find = (name: string, version: number): Bundle | undefined => bundles.find((b) => b.meta.name === name && b.meta.version === version);
  const link = {
    // Signed as the controller signs them (agent/trust refuses anything else); the
    // generation is the version, which only grows in these tests.
    assignments: () =>
      Promise.resolve({
        desired: [...want].map(([name, version]): DesiredRecord => {
          const meta = find(name, version)?.meta;
          assert.ok(meta, `${name} v${version}`);
          return signer.desired({ name, version, fingerprint: meta.fingerprint, names: meta.names, notAfter: meta.notAfter, selector: '*', updatedAt: new Date().toISOString() }, version);
        }),
        signingKeys: signer.publicKeys,
        assigned: [...new Set(bundles.map((b) => b.meta.name))].map((name) => ({ name, names: bundles.find((b) => b.meta.name === name)?.meta.names ?? [] })),
      }),
    fetchBundle: (name: string, version: number) => {
      const b = find(name, version);
      return b ? Promise.resolve(b) : Promise.reject(new Error(`no ${name} v${version}`));
    },
    reportStatus: (r: { certificates: CertStatus[] }) => {
      reported = new Map(r.certificates.map((c) => [c.name, c]));
      return Promise.resolve();
    },
  } as unknown as ControllerLink;
  return { link, signer, want, reported: () => reported };
}

/** Everything a logger wrote, as text. */
function capturedLogger(): { log: ReturnType<typeof createRootLogger>; text: () => string } {
  let text = '';
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  return { log: createRootLogger({ name: 'agent', level: 'debug', destination }), text: () => text };
}

/** An open HTTPS keep-alive connection: its certificate, and requests over it. */
async function openConnection(port: number, servername: string): Promise<{ fingerprint: string; get(): Promise<string>; close(): void }> {
  const socket = tls.connect({ host: HOST, port, servername, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const fingerprint = socket.getPeerX509Certificate()?.fingerprint256.replaceAll(':', '').toLowerCase() ?? '';
  return {
    fingerprint,
    get: () =>
      new Promise<string>((resolve, reject) => {
        let answer = '';
        const onData = (d: Buffer): void => {
          answer += d.toString('utf8');
          if (/\r\n\r\nok$/.test(answer)) {
            socket.off('data', onData);
            resolve(answer);
          }
        };
        socket.on('data', onData);
        socket.once('error', reject);
        socket.once('close', () => reject(new Error(`connection closed; got ${JSON.stringify(answer)}`)));
        socket.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\n\r\n`);
      }),
    close: () => socket.destroy(),
  };
}

async function served(port: number, servername: string): Promise<string> {
  return (await servedCertificate({ host: HOST, port, servername })).fingerprint;
}

function pidFromShowInfo(answer: string): number {
  return Number(/^Pid: (\d+)$/m.exec(answer)?.[1]);
}

test('a renewal reaches HAProxy through the runtime API: new handshakes get it, the pid is the same, an open connection keeps working; a certificate HAProxy does not know yet gets a reload', { timeout: 120_000 }, async () => {
  const dir = tempDir('certfleet-haproxy-');
  const port = await freePort(HOST);
  const crtDir = path.join(dir, 'crt');
  const files = writeHaproxyConfig({ dir, host: HOST, port, crt: crtDir });
  const reload = haproxyReloadCommand(files, port);
  const config = parseAgentConfig(
    [
      `stateDir: ${path.join(dir, 'state')}`,
      'controller: { address: "127.0.0.1:1", caFile: /nonexistent }',
      'nats: { servers: ["nats://127.0.0.1:1"] }',
      `haproxy: { crtDir: ${crtDir} }`,
      `hooks: { reload: { haproxy: { socket: ${files.statsSocket} }, command: ${JSON.stringify(reload)}, timeout: 20s } }`,
      'certificates:',
      `  www: { verify: [{ address: "${HOST}:${port}" }] }`,
      `  api: { verify: [{ address: "${HOST}:${port}" }] }`,
      '',
    ].join('\n'),
    path.join(dir, 'agent.yaml'),
  );
  const bundles = [
    await makeBundle({ name: 'www', version: 1, names: ['www.example.test'] }),
    await makeBundle({ name: 'www', version: 2, names: ['www.example.test'] }),
    await makeBundle({ name: 'api', version: 1, names: ['api.example.test'] }),
  ];
  const [www1, www2, api1] = bundles as [Bundle, Bundle, Bundle];
  const controller = scriptedController(bundles);
  const { log, text: logText } = capturedLogger();
  const installer = new Installer({ stateDir: config.stateDir, clock: systemClock, log, haproxyCrtDir: crtDir });
  const trust = await trustFor(config.stateDir, controller.signer);
  const sync = new Sync({ config, labels: {}, link: controller.link, installer, nats: null, http01: null, trust, clock: systemClock, log });
  const status = (name: string): CertStatus | undefined => controller.reported().get(name);
  let conn: Awaited<ReturnType<typeof openConnection>> | undefined;
  try {
    // v1 before HAProxy runs: the runtime API is not there, the fallback command starts HAProxy.
    controller.want.set('www', 1);
    await sync.start();
    const first = await eventually('www v1 installed', () => (status('www')?.state === 'installed' ? status('www') : undefined), 30_000);
    assert.equal(first.version, 1);
    assert.equal(first.servedVerified, true);
    assert.match(first.hook?.outputTail ?? '', /falling back to the reload command/);
    const link = path.join(crtDir, 'www.pem');
    assert.ok(fs.lstatSync(link).isSymbolicLink(), 'the crt directory holds a link per certificate');
    assert.equal(fs.realpathSync(link), path.join(fs.realpathSync(config.stateDir), 'certs', 'www', 'versions', '1', 'combined.pem'));
    assert.equal(fs.statSync(link).mode & 0o777, 0o600, 'the combined PEM holds the key');
    assert.equal(await served(port, 'www.example.test'), www1.meta.fingerprint);
    const pid = haproxyPid(files);
    assert.ok(pid !== undefined, 'HAProxy runs');

    conn = await openConnection(port, 'www.example.test');
    assert.equal(conn.fingerprint, www1.meta.fingerprint);
    assert.match(await conn.get(), /^HTTP\/1\.1 200/);

    // v2: pushed through the runtime API, no reload.
    controller.want.set('www', 2);
    await sync.resync();
    const second = await eventually('www v2 tried', () => (status('www')?.desiredVersion === 2 && status('www')?.state !== 'pending' ? status('www') : undefined), 30_000);
    assert.equal(second.state, 'installed', second.error);
    assert.equal(second.servedVerified, true, 'the agent saw v2 served');
    assert.match(second.hook?.outputTail ?? '', new RegExp(`${link.replaceAll('.', '\\.')} committed`));
    assert.doesNotMatch(second.hook?.outputTail ?? '', /falling back/);
    assert.equal(await served(port, 'www.example.test'), www2.meta.fingerprint, 'a new handshake gets v2');
    assert.equal(haproxyPid(files), pid, 'the same HAProxy process, not restarted');
    assert.equal(pidFromShowInfo(await runtimeCommand({ socket: files.statsSocket, master: false }, 'show info', undefined, 5_000)), pid);
    assert.match(await conn.get(), /^HTTP\/1\.1 200/, 'the connection opened under v1 is still open and usable');

    // A certificate HAProxy has not loaded: the API refuses, the fallback reloads.
    controller.want.set('api', 1);
    await sync.resync();
    const third = await eventually('api v1 tried', () => (status('api')?.state !== undefined && status('api')?.state !== 'pending' ? status('api') : undefined), 30_000);
    assert.equal(third.state, 'installed', third.error);
    assert.match(third.hook?.outputTail ?? '', /api\.pem is not loaded by HAProxy[\s\S]*falling back to the reload command/);
    assert.equal(await served(port, 'api.example.test'), api1.meta.fingerprint);
    assert.equal(await served(port, 'www.example.test'), www2.meta.fingerprint, 'the reload loaded www v2 from the crt directory');
    assert.notEqual(haproxyPid(files), pid, 'this time HAProxy was reloaded');

    // The key never reaches a report or a log line.
    const everything = `${logText()}\n${JSON.stringify([...controller.reported().values()])}`;
    assert.doesNotMatch(everything, /PRIVATE KEY/);
    for (const b of bundles) assert.ok(!everything.includes(b.keyPem.split('\n')[1] ?? 'unreachable'), `no line of ${b.meta.name} v${b.meta.version}'s key`);
  } finally {
    conn?.close();
    await sync.stop();
    stopHaproxy(files);
  }
});

test('over the master CLI the update goes to the current worker, which keeps running', { timeout: 60_000 }, async () => {
  const dir = tempDir('certfleet-haproxy-master-');
  const port = await freePort(HOST);
  const crtDir = path.join(dir, 'crt');
  const files = writeHaproxyConfig({ dir, host: HOST, port, crt: crtDir });
  const installer = new Installer({ stateDir: path.join(dir, 'state'), clock: systemClock, log: capturedLogger().log, haproxyCrtDir: crtDir });
  const v1 = await makeBundle({ name: 'shop', version: 1, names: ['shop.example.test'] });
  const v2 = await makeBundle({ name: 'shop', version: 2, names: ['shop.example.test'] });
  await installer.install(v1);
  const haproxy = await startHaproxyMaster(files, HOST, port);
  try {
    // `show proc` is the master's own command: sent without the @1 prefix. The pids of the current workers.
    const workers = async (): Promise<string[]> => {
      const section = (await runtimeCommand({ socket: files.masterSocket, master: false }, 'show proc', undefined, 5_000)).split('# workers')[1]?.split('#')[0] ?? '';
      return [...section.matchAll(/^(\d+)\s+worker/gm)].map((m) => m[1] ?? '');
    };
    const before = await workers();
    assert.equal(before.length, 1);
    assert.equal(await served(port, 'shop.example.test'), v1.meta.fingerprint);

    await installer.install(v2);
    const outcome = await runReloadHook({ haproxy: { socket: files.masterSocket, master: true, crtDir }, timeout: 10_000 }, ['shop'], {});
    assert.equal(outcome.exitCode, 0, outcome.outputTail);
    assert.equal(await served(port, 'shop.example.test'), v2.meta.fingerprint);
    assert.deepEqual(await workers(), before, 'the same worker, no reload');
  } finally {
    await haproxy.stop();
  }
});

test('the runtime API refuses rather than guess: not admin, another transaction open, no socket; without a fallback that fails the hook', { timeout: 60_000 }, async () => {
  const dir = tempDir('certfleet-haproxy-refuse-');
  const port = await freePort(HOST);
  const crtDir = path.join(dir, 'crt');
  const installer = new Installer({ stateDir: path.join(dir, 'state'), clock: systemClock, log: capturedLogger().log, haproxyCrtDir: crtDir });
  const a1 = await makeBundle({ name: 'a', version: 1, names: ['a.example.test'] });
  const b1 = await makeBundle({ name: 'b', version: 1, names: ['b.example.test'] });
  const a2 = await makeBundle({ name: 'a', version: 2, names: ['a.example.test'] });
  await installer.install(a1);
  await installer.install(b1);
  const admin = writeHaproxyConfig({ dir, host: HOST, port, crt: crtDir });
  const start = haproxyReloadCommand(admin, port);
  const started = await runReloadHook({ command: start, timeout: 20_000 }, ['a', 'b'], {});
  assert.equal(started.exitCode, 0, started.outputTail);
  const api = { socket: admin.statsSocket, master: false };
  const aFile = path.join(crtDir, 'a.pem');
  const bFile = path.join(crtDir, 'b.pem');
  try {
    await installer.install(a2);
    const a2Pem = fs.readFileSync(aFile, 'utf8');

    // Someone else's transaction on b: HAProxy 2.6 would file a `set` for a under b.
    const opened = await runtimeCommand(api, `set ssl cert ${bFile}`, fs.readFileSync(bFile, 'utf8').trim(), 5_000);
    assert.match(opened, /Transaction created/);
    const refused = await updateCertificate(api, aFile, a2Pem, 5_000);
    assert.deepEqual(refused, { ok: false, reason: `a certificate transaction is already open for ${bFile}` });
    assert.match(await runtimeCommand(api, 'show ssl cert', undefined, 5_000), new RegExp(`# transaction\\n\\*${bFile.replaceAll('.', '\\.')}\\n`), 'left as it was');
    await runtimeCommand(api, `abort ssl cert ${bFile}`, undefined, 5_000);
    assert.equal(await served(port, 'a.example.test'), a1.meta.fingerprint, 'nothing was committed');

    // No such socket, and no fallback: the hook fails with the reason, never the PEM.
    const missing = await runReloadHook({ haproxy: { socket: path.join(dir, 'nope.sock'), master: false, crtDir }, timeout: 5_000 }, ['a'], {});
    assert.equal(missing.exitCode, 1);
    assert.match(missing.outputTail, /nope\.sock: ENOENT/);

    // A socket below level admin.
    stopHaproxy(admin);
    const userDir = tempDir('certfleet-haproxy-user-');
    const user = writeHaproxyConfig({ dir: userDir, host: HOST, port, crt: crtDir, statsLevel: 'user' });
    await eventually('the admin HAProxy is gone', () => haproxyPid(admin) === undefined, 10_000);
    const userStart = await runReloadHook({ command: haproxyReloadCommand(user, port), timeout: 20_000 }, ['a'], {});
    assert.equal(userStart.exitCode, 0, userStart.outputTail);
    try {
      const notAdmin = await runReloadHook({ haproxy: { socket: user.statsSocket, master: false, crtDir }, timeout: 5_000 }, ['a'], {});
      assert.equal(notAdmin.exitCode, 1);
      assert.match(notAdmin.outputTail, /refused: show ssl cert: .*level admin/);
      assert.doesNotMatch(`${missing.outputTail}${notAdmin.outputTail}${refused.ok ? '' : refused.reason}`, /BEGIN|PRIVATE/);
    } finally {
      stopHaproxy(user);
    }
  } finally {
    stopHaproxy(admin);
  }
});

/**
 * The nginx and TLS harness against a real nginx: what agents' reload hooks rely on.
 * Certificates come from the openssl CLI (independent of our own PKI code), and expected
 * fingerprints from `openssl x509 -fingerprint`, so servedCertificate is checked against
 * a second implementation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { freePort } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { nginxReloadCommand, SHIPPED_RELOAD_SCRIPT, startNginx, stopNginx, writeNginxConfig } from '../harness/nginx.js';
import { servedCertificate } from '../harness/tls.js';

interface TestCert {
  certFile: string;
  keyFile: string;
  fingerprint: string;
  serial: string;
}

/** A fresh self-signed P-256 certificate for `names` (first one is the CN), written to dir/<label>.{crt,key}. */
function makeCert(dir: string, label: string, names: string[]): TestCert {
  const certFile = path.join(dir, `${label}.crt`);
  const keyFile = path.join(dir, `${label}.key`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2',
    '-subj', `/CN=${names[0] ?? 'unnamed'}`,
    '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  fs.chmodSync(keyFile, 0o600);
  const fp = execFileSync('openssl', ['x509', '-in', certFile, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' });
  const serial = execFileSync('openssl', ['x509', '-in', certFile, '-noout', '-serial'], { encoding: 'utf8' });
  return {
    certFile,
    keyFile,
    fingerprint: fp.slice(fp.indexOf('=') + 1).trim().replace(/:/g, '').toLowerCase(),
    serial: serial.slice(serial.indexOf('=') + 1).trim().toLowerCase(),
  };
}

/** Copies `from` over the files nginx is configured with (what an agent's install does). */
function install(from: TestCert, to: { certFile: string; keyFile: string }): void {
  fs.copyFileSync(from.certFile, to.certFile);
  fs.copyFileSync(from.keyFile, to.keyFile);
}

/** Runs a hook command the way an agent does: /bin/sh -c, exit code and stderr kept. */
function runHook(command: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], { timeout: 60_000 }, (err, _stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stderr });
    });
  });
}

void test('nginx serves each certificate on disk to the SNI name it is configured for', async () => {
  const dir = tempDir();
  const www = makeCert(dir, 'www', ['www.example.test', 'alt.example.test']);
  const api = makeCert(dir, 'api', ['api.example.test']);
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const conf = writeNginxConfig({
    prefix: path.join(dir, 'nginx'),
    servers: [
      { listen, serverNames: ['www.example.test', 'alt.example.test'], certFile: www.certFile, keyFile: www.keyFile },
      { listen, serverNames: ['api.example.test'], certFile: api.certFile, keyFile: api.keyFile },
    ],
  });
  const nginx = await startNginx(conf, path.join(dir, 'nginx'));
  try {
    assert.ok(nginx.pid() > 1);
    const served = await servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test' });
    assert.equal(served.fingerprint, www.fingerprint);
    assert.equal(served.serial, www.serial);
    assert.deepEqual(served.names, ['www.example.test', 'alt.example.test']);
    assert.match(served.pem, /^-----BEGIN CERTIFICATE-----\n/);
    const other = await servedCertificate({ host: '127.0.0.1', port, servername: 'api.example.test' });
    assert.equal(other.fingerprint, api.fingerprint);
    assert.deepEqual(other.names, ['api.example.test']);
  } finally {
    await nginx.stop();
  }
  await assert.rejects(servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test' }), /failed|closed/);
});

void test('the reload command returns only once new connections get the replaced certificate', async () => {
  const dir = tempDir();
  const prefix = path.join(dir, 'nginx');
  const live = { certFile: path.join(dir, 'live.crt'), keyFile: path.join(dir, 'live.key') };
  const certs = [makeCert(dir, 'one', ['www.example.test']), makeCert(dir, 'two', ['www.example.test'])];
  const [one, two] = certs as [TestCert, TestCert];
  install(one, live);
  const port = await freePort();
  const conf = writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${port}`, serverNames: ['www.example.test'], ...live }] });
  const nginx = await startNginx(conf, prefix);
  const served = (): Promise<string> => servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test' }).then((c) => c.fingerprint);
  try {
    assert.equal(await served(), one.fingerprint);
    const master = nginx.pid();
    // Several rounds: a reload that returned early would be caught by at least one of them.
    for (let round = 0; round < 6; round++) {
      const next = round % 2 === 0 ? two : one;
      install(next, live);
      const hook = await runHook(nginxReloadCommand(conf, prefix));
      assert.equal(hook.code, 0, hook.stderr);
      assert.equal(await served(), next.fingerprint, `round ${round}: the old certificate was still served after the hook returned`);
    }
    assert.equal(nginx.pid(), master, 'a reload keeps the same master');
  } finally {
    await nginx.stop();
  }
});

void test('a reload completes while an idle connection holds an old worker, and new connections get the new certificate', async () => {
  const dir = tempDir();
  const prefix = path.join(dir, 'nginx');
  const live = { certFile: path.join(dir, 'live.crt'), keyFile: path.join(dir, 'live.key') };
  const one = makeCert(dir, 'one', ['www.example.test']);
  const two = makeCert(dir, 'two', ['www.example.test']);
  install(one, live);
  const port = await freePort();
  const conf = writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${port}`, serverNames: ['www.example.test'], ...live }] });
  const nginx = await startNginx(conf, prefix);
  // An idle TLS connection keeps its old worker alive after the reload (until
  // worker_shutdown_timeout): the command must still finish, and not hand the next
  // connection to that worker.
  const held = tls.connect({ host: '127.0.0.1', port, servername: 'www.example.test', rejectUnauthorized: false });
  held.on('error', () => undefined);
  try {
    await new Promise<void>((resolve, reject) => {
      held.once('secureConnect', () => resolve());
      held.once('error', reject);
    });
    install(two, live);
    const hook = await runHook(nginxReloadCommand(conf, prefix));
    assert.equal(hook.code, 0, hook.stderr);
    assert.equal((await servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test' })).fingerprint, two.fingerprint);
  } finally {
    held.destroy();
    await nginx.stop();
  }
});

void test('the reload command is the shipped deploy/nginx-reload.sh, not a copy of it', () => {
  const source = fileURLToPath(new URL('../../../deploy/nginx-reload.sh', import.meta.url));
  assert.equal(SHIPPED_RELOAD_SCRIPT, source);
  const command = nginxReloadCommand('/tmp/x/nginx.conf', '/tmp/x');
  assert.ok(command.includes(`'${source}'`), command);
  fs.accessSync(source, fs.constants.X_OK);
});

void test('the reload command still works behind `exec` in a wrapper script (how e2e hooks wrap it)', async () => {
  // agent-restart and agent-rollback end their hook scripts with `exec <reload command>`:
  // a command that begins with an assignment (NGINX=... script) is "not found" there.
  const dir = tempDir();
  const prefix = path.join(dir, 'nginx');
  const cert = makeCert(dir, 'first', ['wrapped.example.test']);
  const port = await freePort();
  const conf = writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${port}`, serverNames: ['wrapped.example.test'], certFile: cert.certFile, keyFile: cert.keyFile }] });
  const wrapper = path.join(dir, 'hook.sh');
  fs.writeFileSync(wrapper, ['#!/bin/sh', 'echo wrapped >&2', `exec ${nginxReloadCommand(conf, prefix)}`, ''].join('\n'), { mode: 0o700 });
  try {
    const hook = await runHook(`/bin/sh ${wrapper}`);
    assert.equal(hook.code, 0, hook.stderr);
    assert.equal((await servedCertificate({ host: '127.0.0.1', port, servername: 'wrapped.example.test' })).fingerprint, cert.fingerprint);
  } finally {
    await stopNginx(prefix);
  }
});

void test('the reload command starts nginx when none is running (first install) and it serves at once', async () => {
  const dir = tempDir();
  const prefix = path.join(dir, 'nginx');
  const cert = makeCert(dir, 'first', ['first.example.test']);
  const port = await freePort();
  const conf = writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${port}`, serverNames: ['first.example.test'], certFile: cert.certFile, keyFile: cert.keyFile }] });
  try {
    const hook = await runHook(nginxReloadCommand(conf, prefix));
    assert.equal(hook.code, 0, hook.stderr);
    const served = await servedCertificate({ host: '127.0.0.1', port, servername: 'first.example.test' });
    assert.equal(served.fingerprint, cert.fingerprint);
    // A second hook right after the first must reload the running nginx, not start another.
    const again = await runHook(nginxReloadCommand(conf, prefix));
    assert.equal(again.code, 0, again.stderr);
  } finally {
    await stopNginx(prefix);
  }
  await assert.rejects(servedCertificate({ host: '127.0.0.1', port, servername: 'first.example.test' }));
});

void test('a configuration nginx -t rejects fails the reload command and the old certificate stays served', async () => {
  const dir = tempDir();
  const prefix = path.join(dir, 'nginx');
  const live = { certFile: path.join(dir, 'live.crt'), keyFile: path.join(dir, 'live.key') };
  const one = makeCert(dir, 'one', ['www.example.test']);
  const two = makeCert(dir, 'two', ['www.example.test']);
  install(one, live);
  const port = await freePort();
  const conf = writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${port}`, serverNames: ['www.example.test'], ...live }] });
  const nginx = await startNginx(conf, prefix);
  try {
    // The new certificate with the old key: the pair does not match.
    fs.copyFileSync(two.certFile, live.certFile);
    const hook = await runHook(nginxReloadCommand(conf, prefix));
    assert.notEqual(hook.code, 0);
    assert.match(hook.stderr, /configuration test failed/);
    assert.match(hook.stderr, /key values mismatch|ssl_certificate/);
    assert.equal((await servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test' })).fingerprint, one.fingerprint);
  } finally {
    await nginx.stop();
  }
});

void test('a reload nginx rejects after its config test passed fails the command and keeps the old workers', async () => {
  const dir = tempDir();
  const prefix = path.join(dir, 'nginx');
  const cert = makeCert(dir, 'one', ['www.example.test']);
  const port = await freePort();
  // nginx -t does not bind; only the master finds out that the new address is taken.
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  const busy = (squatter.address() as net.AddressInfo).port;
  const server = { serverNames: ['www.example.test'], certFile: cert.certFile, keyFile: cert.keyFile };
  const conf = writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${port}`, ...server }] });
  const nginx = await startNginx(conf, prefix);
  try {
    writeNginxConfig({ prefix, servers: [{ listen: `127.0.0.1:${busy}`, ...server }] });
    const hook = await runHook(nginxReloadCommand(conf, prefix));
    assert.notEqual(hook.code, 0);
    assert.match(hook.stderr, /rejected the new configuration/);
    assert.match(hook.stderr, /Address already in use/);
    assert.equal((await servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test' })).fingerprint, cert.fingerprint);
  } finally {
    await nginx.stop();
    squatter.close();
  }
});

void test('servedCertificate rejects when the listener never completes a handshake', async () => {
  const silent = net.createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const port = (silent.address() as net.AddressInfo).port;
  try {
    await assert.rejects(servedCertificate({ host: '127.0.0.1', port, servername: 'www.example.test', timeoutMs: 300 }), /timed out/);
  } finally {
    silent.close();
  }
});

void test('the harness refuses a non-loopback listen address', () => {
  assert.throws(
    () => writeNginxConfig({ prefix: tempDir(), servers: [{ listen: '0.0.0.0:443', serverNames: ['x.test'], certFile: '/x.crt', keyFile: '/x.key' }] }),
    /loopback/,
  );
});

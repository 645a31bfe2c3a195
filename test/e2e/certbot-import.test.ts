/**
 * Moving a certbot machine to certfleet, end to end (issue 11): a real certbot (Debian
 * package) issues two certificates from Pebble with its standalone HTTP-01 server (one
 * RSA under the lineage name `web`, one ECDSA under certbot's default lineage name, the
 * domain); `certfleet import-certbot` merges their declarations into the controller's
 * configuration, which then passes `certfleet controller --check`, and stores them as
 * version 1. The controller started on that store places NO new order (the ACME proxy
 * counts newOrders) even though the CA's ARI window for every certificate says "renew
 * now": imported versions renew by the lifetime rule, because a CA may refuse a
 * `replaces` naming another account's certificate. The agent installs version 1 and
 * nginx serves exactly the certificate certbot got.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parseCertificate } from '../../shared/pki/index.js';
import { runCli, startFleet, type Fleet } from '../harness/fleet.js';
import { eventually } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';

const execFileAsync = promisify(execFile);

interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string } }>;
}

const EDGE = '127.0.0.2';
const WEB = { lineage: 'web', name: 'web', names: ['web.certbot.test', 'www.certbot.test'] };
const API = { lineage: 'api.certbot.test', name: 'api-certbot-test', names: ['api.certbot.test'] };

/** Runs certbot certonly --standalone against `directoryUrl`, all state under `root`. */
async function certbot(root: string, directoryUrl: string, caFile: string, httpPort: number, args: string[]): Promise<void> {
  const argv = [
    'certonly',
    '--non-interactive',
    '--standalone',
    '--http-01-address', EDGE,
    '--http-01-port', String(httpPort),
    '--server', directoryUrl,
    '--config-dir', path.join(root, 'letsencrypt'),
    '--work-dir', path.join(root, 'work'),
    '--logs-dir', path.join(root, 'logs'),
    '--agree-tos',
    '--register-unsafely-without-email',
    ...args,
  ];
  try {
    // Pebble's HTTPS certificate comes from the harness's throwaway CA: requests trusts it through REQUESTS_CA_BUNDLE.
    await execFileAsync('certbot', argv, { env: { ...process.env, REQUESTS_CA_BUNDLE: caFile }, timeout: 120_000 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`certbot ${args.join(' ')} failed:\n${e.stdout ?? ''}\n${e.stderr ?? String(err)}`, { cause: err });
  }
}

test('a certbot machine is imported without a new order: declarations pass --check, v1 is certbot\'s certificate, the agent serves it', { timeout: 400_000 }, async () => {
  let certbotDir = '';
  let importOutput = '';
  const now = Date.now();
  const fleet: Fleet = await startFleet({
    certificates: [
      { name: WEB.name, names: WEB.names, agents: 'role=lb', undeclared: true },
      { name: API.name, names: API.names, agents: 'role=lb', undeclared: true },
    ],
    agents: [{ name: 'edge-a', ip: EDGE, labels: { role: 'lb' }, serves: [WEB.name, API.name] }],
    dns: Object.fromEntries([...WEB.names, ...API.names].map((n) => [n, EDGE])),
    // The CA would have every certificate renewed at once, if the controller asked it.
    proxy: { defaultWindow: { start: now - 3_600_000, end: now - 60_000 } },
    async beforeController(_stateDir, { pebble, httpPort, controllerConfig }) {
      const root = path.join(path.dirname(controllerConfig), 'certbot');
      const caFile = path.join(root, 'pebble-https-ca.pem');
      fs.mkdirSync(root, { recursive: true });
      fs.writeFileSync(caFile, pebble.caPem);
      // certbot talks to Pebble directly: only the controller's orders pass the proxy.
      await certbot(root, pebble.directoryUrl, caFile, httpPort, ['--cert-name', WEB.lineage, '--key-type', 'rsa', '--rsa-key-size', '2048', ...WEB.names.flatMap((n) => ['-d', n])]);
      await certbot(root, pebble.directoryUrl, caFile, httpPort, ['--key-type', 'ecdsa', ...API.names.flatMap((n) => ['-d', n])]);
      certbotDir = path.join(root, 'letsencrypt');

      const dry = await runCli(['import-certbot', certbotDir, '--config', controllerConfig, '--agents', 'role=lb', '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.ok(!fs.existsSync(path.join(_stateDir, 'store')), 'the dry run wrote no store');
      const imported = await runCli(['import-certbot', certbotDir, '--config', controllerConfig, '--agents', 'role=lb', '--out', controllerConfig]);
      assert.equal(imported.code, 0, imported.stderr);
      importOutput = imported.stderr;
      const check = await runCli(['controller', '--check', '--config', controllerConfig]);
      assert.equal(check.code, 0, `${check.stderr}\n${fs.readFileSync(controllerConfig, 'utf8')}`);
    },
  });
  try {
    const live = (lineage: string): string => parseCertificate(fs.readFileSync(path.join(certbotDir, 'live', lineage, 'cert.pem'), 'utf8')).fingerprint;
    const want = { [WEB.name]: live(WEB.lineage), [API.name]: live(API.lineage) };
    assert.match(importOutput, /^web: imported as v1 from lineage web \(standalone -> http-01;/m);
    assert.match(importOutput, /^api-certbot-test: imported as v1 from lineage api\.certbot\.test/m);
    const yaml = fs.readFileSync(fleet.controllerConfig, 'utf8');
    assert.match(yaml, /# imported from certbot lineage web /);
    assert.ok(!yaml.includes('PRIVATE KEY'));

    await fleet.waitUntilReady(2);
    const proxy = fleet.proxy;
    assert.ok(proxy);
    // Several work-loop passes (checkInterval 1s) with the ARI window open.
    await eventually('the controller has decided about both certificates', async () => {
      const shows = await Promise.all([WEB.name, API.name].map((n) => fleet.cliJson<{ reason: string }>(['show', n])));
      return shows.every((s) => s.reason.startsWith('renewal window not reached'));
    }, 60_000, 500);
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(proxy.newOrders(), [], 'no order was placed');
    for (const name of [WEB.name, API.name]) {
      const history = await fleet.cliJson<HistoryJson>(['history', name]);
      assert.deepEqual(history.versions.map((v) => [v.version.version, v.version.fingerprint]), [[1, want[name]]], `${name}: only v1, certbot's certificate`);
    }
    for (const [name, names] of [[WEB.name, WEB.names], [API.name, API.names]] as const) {
      for (const servername of names) {
        const served = await servedCertificate({ host: EDGE, port: fleet.tlsPort, servername });
        assert.equal(served.fingerprint, want[name], `${servername} is served with certbot's certificate`);
      }
    }
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${fleet.logs()}`, { cause: err });
  } finally {
    await fleet.stop();
  }
});

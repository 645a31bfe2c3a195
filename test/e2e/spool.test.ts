/**
 * Nothing issued is lost: with the Vault store (the KV v2 double here, see
 * docs/storage.md) refusing certificate writes after the CA has issued, the controller
 * keeps the certificate in its local spool (0600), survives a SIGKILL with it there, and
 * delivers it once the store is back — without asking the CA again — after which the
 * agent installs it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startVaultDouble, type VaultDouble } from '../harness/vault-double.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';

interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string; fingerprint: string }>;
}

describe('an issued certificate survives a store outage and a controller crash', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let vault: VaultDouble;

  before(async () => {
    vault = await startVaultDouble();
    // Reads work, certificate writes fail: the outage starts before the first issuance.
    vault.setWriteOutage('secret/data/certfleet/certs/');
    fleet = await startFleet({
      certificates: [{ name: 'web', names: ['www.example.test'], agents: 'role=web' }],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] }],
      dns: { 'www.example.test': '127.0.0.2' },
      proxy: {},
      controllerYaml: [`store: { type: vault, address: "${vault.addr}", auth: { method: token, token: "${vault.rootToken}" } }`],
    });
  });

  after(async () => {
    await fleet?.stop();
    await vault?.close();
  });

  test('spooled while the store refuses, kept across SIGKILL, delivered and installed when it is back', async () => {
    try {
      const spoolDir = path.join(fleet.controllerState, 'spool');
      const spooled = await eventually(
        'the issued certificate in the spool',
        () => {
          const files = fs.existsSync(spoolDir) ? fs.readdirSync(spoolDir).filter((f) => f.endsWith('.json')) : [];
          return files.length === 1 ? path.join(spoolDir, files[0] ?? '') : undefined;
        },
        120_000,
        200,
      );
      assert.equal(fs.statSync(spooled).mode & 0o777, 0o600);
      assert.equal(fs.statSync(spoolDir).mode & 0o777, 0o700);
      const ordersBefore = fleet.proxy?.newOrders().length;
      assert.equal(ordersBefore, 1);

      await fleet.restartController({ kill: true });
      // Still down: the restarted controller holds the certificate and places no new order.
      await new Promise((r) => setTimeout(r, 3000));
      assert.ok(fs.existsSync(spooled), 'the spool entry survived the crash');
      assert.equal(fleet.proxy?.newOrders().length, 1, 'no new order while the issued certificate waits');

      vault.setWriteOutage(null);
      const installed = await eventually(
        'version 1 installed from the spooled certificate',
        async () => {
          const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
          const s = res.agents.find((a) => a.name === 'edge-a')?.certificates.find((c) => c.name === 'web');
          return s?.state === 'installed' && s.version === 1 ? s : undefined;
        },
        90_000,
        300,
      );
      assert.equal(fs.existsSync(spooled), false, 'delivered entries leave the spool');
      assert.equal(fleet.proxy?.newOrders().length, 1, 'the CA was asked once in all');
      const served = await servedCertificate({ host: '127.0.0.2', port: fleet.tlsPort, servername: 'www.example.test' });
      assert.equal(served.fingerprint, installed.fingerprint);
      const events = await fleet.cliJson<{ events: Array<{ type: string; message: string }> }>(['events', '--cert', 'web']);
      assert.ok(events.events.some((e) => e.type === 'spooled'));
      assert.ok(events.events.some((e) => e.type === 'issued' && /delivered from the spool/.test(e.message)));
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });
});

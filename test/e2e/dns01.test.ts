/**
 * DNS-01 through the whole controller: configuration, provider check at start-up, the
 * janitor sweeping a record a crash left behind, the issuer presenting a wildcard and its
 * apex together through RFC 2136 (real BIND, TSIG), Pebble validating through a BIND
 * resolver, and an agent installing and serving the wildcard certificate with nginx.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Rfc2136Provider, parseServer } from '../../controller/solvers/dns01/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { startBind, type BindHandle } from '../harness/bind.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

interface AgentJson {
  name: string;
  certificates: Array<{ name: string; version: number; state: string; fingerprint: string }>;
}

describe('a wildcard certificate issued through DNS-01 by the controller', { timeout: 240_000 }, () => {
  let bind: BindHandle;
  let resolver: BindHandle;
  let fleet: Fleet;
  const leftover = { fqdn: '_acme-challenge.stale.example.test.', value: 'left-behind-by-a-crash' };

  before(async () => {
    bind = await startBind();
    resolver = await startBind({ keys: [], zones: [], forward: { server: bind.server, zones: ['example.test'] } });
    const key = bind.key('certfleet-key');
    const secretFile = path.join(tempDir(), 'certfleet-key.secret');
    fs.writeFileSync(secretFile, key.secret, { mode: 0o600 });

    // A record a crashed controller wrote and journalled, but never removed.
    const provider = new Rfc2136Provider({ name: 'bind', server: parseServer(bind.server), key: { name: key.name, algorithm: key.algorithm, secret: Buffer.from(key.secret, 'base64') }, clock: systemClock, log: silentLogger() });
    await provider.present(leftover.fqdn, leftover.value);
    assert.deepEqual(await bind.txt(leftover.fqdn), [leftover.value]);
    const id = crypto.createHash('sha256').update(`bind\n${leftover.fqdn}\n${leftover.value}`).digest('hex').slice(0, 32);
    const entry = { id, provider: 'bind', fqdn: leftover.fqdn, value: leftover.value, cert: 'old', identifier: 'stale.example.test', createdAt: new Date(Date.now() - 3_600_000).toISOString() };

    fleet = await startFleet({
      certificates: [{ name: 'wild', names: ['*.example.test', 'example.test'], agents: 'role=web', extra: 'challenge: dns-01, dnsProvider: bind' }],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['wild'] }],
      dns: {},
      pebbleDnsServer: resolver.server,
      controllerYaml: [
        'dns01:',
        `  providers: { bind: { type: rfc2136, server: "${bind.server}", keyName: ${key.name}, algorithm: ${key.algorithm}, secretFile: ${secretFile} } }`,
        '  zones: [{ zone: example.test, provider: bind }]',
        `  propagation: { resolvers: ["${bind.server}"], nameservers: ["${bind.server}"], timeout: 20s, interval: 200ms }`,
      ],
      beforeController: (stateDir) => {
        const dir = path.join(stateDir, 'store', 'objects', 'dns01');
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
        const name = crypto.createHash('sha256').update(id).digest('hex');
        fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(entry), { mode: 0o600 });
      },
    });
  });

  after(async () => {
    await fleet?.stop();
    await resolver?.stop();
    await bind?.stop();
  });

  test('the janitor removes the leftover record, the wildcard is issued, installed and served, and no TXT record remains', async () => {
    try {
      await eventually('the leftover record removed at start-up', async () => (await bind.txt(leftover.fqdn)).length === 0, 30_000, 200);
      const installed = await eventually(
        'the wildcard installed on edge-a',
        async () => {
          const res = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
          const s = res.agents.find((a) => a.name === 'edge-a')?.certificates.find((c) => c.name === 'wild');
          return s?.state === 'installed' ? s : undefined;
        },
        150_000,
        500,
      );
      const served = await servedCertificate({ host: '127.0.0.2', port: fleet.tlsPort, servername: 'anything.example.test' });
      assert.equal(served.fingerprint, installed.fingerprint);
      assert.deepEqual([...served.names].sort(), ['*.example.test', 'example.test']);
      assert.deepEqual(await bind.txt('_acme-challenge.example.test.'), [], 'challenge records cleaned up');
      const journal = path.join(fleet.controllerState, 'store', 'objects', 'dns01');
      assert.deepEqual(fs.existsSync(journal) ? fs.readdirSync(journal).filter((f) => f.endsWith('.json')) : [], [], 'the journal is empty');
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
  });
});

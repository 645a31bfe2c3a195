/**
 * Several issuers with fallback (issue #15): a controller with two real CAs (two Pebble
 * instances), the harness's Pebble as `default` (the `acme` section) and a second one as
 * issuer `backup`. Version 1 comes from `default`; with that CA stopped, `renew web`
 * fails there once (renewal.fallbackAfter: 1) and version 2 is issued by `backup`,
 * installed and served by nginx. `history` and `show` name the issuer of each version,
 * `--json` carries it, and `budgets` lists each issuer's own budgets.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { eventually } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';

const NAMES = { 'web.example.test': '127.0.0.2' };

interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string; issuer: string; serial: string }; desired: boolean; agents: string[] }>;
}

describe('two issuers, the first one stopped', { timeout: 420_000 }, () => {
  let fleet: Fleet;
  let backup: PebbleHandle | undefined;
  before(async () => {
    fleet = await startFleet({
      renewalYaml: '{ checkInterval: 1s, fallbackAfter: 1 }',
      certificates: [{ name: 'web', names: ['web.example.test'], agents: 'role=web' }],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] }],
      dns: NAMES,
      // The second CA validates HTTP-01 on the same port as the first (the agents' responder).
      beforeController: async (stateDir, ctx) => {
        backup = await startPebble({ httpPort: ctx.httpPort });
        for (const [name, ip] of Object.entries(NAMES)) await backup.addA(name, ip);
        const caFile = path.join(path.dirname(ctx.controllerConfig), 'backup-ca.pem');
        fs.writeFileSync(caFile, backup.caPem);
        // The documented one change: an `issuers:` block. Every certificate then tries
        // `default` (the acme section) first and `backup` next.
        fs.appendFileSync(ctx.controllerConfig, ['issuers:', '  backup:', `    directoryUrl: ${backup.directoryUrl}`, `    caFile: ${caFile}`, '    termsOfServiceAgreed: true', '    budgets: { preset: none }', ''].join('\n'));
      },
    });
  });
  after(async () => {
    await fleet?.stop();
    await backup?.stop();
  });

  test('v1 from the first issuer; with its CA down, v2 from the fallback, served by nginx, and history names both', async () => {
    await fleet.waitUntilReady(1);
    const v1 = await fleet.cliJson<HistoryJson>(['history', 'web']);
    assert.equal(v1.versions.length, 1);
    assert.equal(v1.versions[0]?.version.issuer, 'default');

    await fleet.pebble.stop();
    const renew = await fleet.cli(['renew', 'web']);
    assert.equal(renew.code, 0, renew.stderr);

    let v2: { version: number; fingerprint: string; issuer: string; serial: string } | undefined;
    try {
      await eventually(
        'version 2 issued by the fallback and served',
        async () => {
          const h = await fleet.cliJson<HistoryJson>(['history', 'web']);
          v2 = h.versions.find((v) => v.version.version === 2)?.version;
          if (!v2) return false;
          const served = await servedCertificate({ host: '127.0.0.2', port: fleet.tlsPort, servername: 'web.example.test' });
          return served.fingerprint === v2.fingerprint;
        },
        240_000,
        1000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
    }
    assert.equal(v2?.issuer, 'backup');

    const text = await fleet.cli(['history', 'web']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /ISSUER/);
    const rows = text.stdout.split('\n');
    assert.match(rows.find((l) => /^\s*2\s/.test(l)) ?? '', /\bbackup\b/);
    assert.match(rows.find((l) => /^\s*1\s/.test(l)) ?? '', /\bdefault\b/);

    const show = await fleet.cli(['show', 'web']);
    assert.match(show.stdout, /^\s+issuer:\s+backup$/m);
    assert.match(show.stdout, /^issuers:\s+default, backup/m);

    // Budgets are per issuer: each account's own rows.
    const budgets = await fleet.cliJson<{ budgets: Array<{ issuer: string; name: string }> }>(['budgets']);
    assert.ok(budgets.budgets.some((b) => b.issuer === 'default'), JSON.stringify(budgets));
    const text2 = await fleet.cli(['budgets']);
    assert.match(text2.stdout, /^ISSUER\s+BUDGET/m);

    // The failure at the first issuer and the move are in the events.
    const events = await fleet.cli(['events', '--cert', 'web', '--json']);
    assert.match(events.stdout, /"nextIssuer":\s*"backup"|nextIssuer.{0,6}backup/);

    // Revoking v2 goes to the CA that issued it (backup), though the first CA is down.
    const revoked = await fleet.cli(['revoke', 'web', '--version', '2', '--reason', 'superseded']);
    assert.equal(revoked.code, 0, `${revoked.stderr}\n${fleet.logs()}`);
    assert.match(revoked.stdout, /version 2 revoked at the CA \(superseded\)/);
    assert.equal((await backup!.certStatus(v2.serial)).Status, 'Revoked');
  });
});

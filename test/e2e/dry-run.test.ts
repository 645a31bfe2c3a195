/**
 * Issue #14 part 3, end to end with a second Pebble playing the staging CA:
 *
 * - `renew web --dry-run` runs the whole pipeline against staging (account, order, one
 *   HTTP-01 authorization per name answered by the agents, finalize, download, cleanup),
 *   reports each step, and keeps nothing: the staging Pebble knows the certificate, the
 *   production Pebble does not, the history still has one version, the desired pointer
 *   has not moved, both nginx still serve version 1, and the events hold one `dry-run`
 *   and no `ordered`/`issued` of it.
 * - `check` passes for the good fleet, and fails naming edge-b when its HTTP-01
 *   responder is gone (agent process stopped: no answer) and again once the controller
 *   counts it offline.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { servedCertificate } from '../harness/tls.js';
import { eventually } from '../harness/process.js';

interface DryRunJson {
  name: string;
  directoryUrl: string;
  ok: boolean;
  steps: Array<{ step: string; identifier: string; ok: boolean; durationMs: number; detail: string }>;
  errorCode: string;
  error: string;
  serial: string;
  notAfter: string;
}
interface CheckJson {
  ok: boolean;
  checks: Array<{ certificate: string; check: string; identifier: string; agent: string; ok: boolean; detail: string }>;
}
interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string; serial: string }; desired: boolean }>;
}
interface EventJson {
  type: string;
  cert: string;
  actor: string;
  message: string;
  detailsJson: string;
}

const NAMES = ['www.example.test', 'example.test'];
const AGENTS = [
  { name: 'edge-a', ip: '127.0.0.2' },
  { name: 'edge-b', ip: '127.0.0.3' },
];

/** Pebble's management API: the status of the certificate with this (hex) serial, or the HTTP status when unknown. */
function certStatus(pebble: PebbleHandle, serial: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${pebble.managementUrl}/cert-status-by-serial/${serial}`, { ca: pebble.caPem }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

describe('dry run against a staging CA, and the challenge-path check', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let staging: PebbleHandle | undefined;

  before(async () => {
    fleet = await startFleet({
      certificates: [{ name: 'web', names: NAMES, agents: 'role=web' }],
      agents: AGENTS.map((a) => ({ ...a, labels: { role: 'web' }, serves: ['web'] })),
      dns: { 'www.example.test': '127.0.0.2', 'example.test': '127.0.0.3' },
      apiYaml: 'agentOfflineAfter: 5s',
      beforeController: async (_state, ctx) => {
        // The second CA validates on the same HTTP-01 port of the same agents' addresses.
        staging = await startPebble({ httpPort: ctx.httpPort });
        await staging.addA('www.example.test', '127.0.0.2');
        await staging.addA('example.test', '127.0.0.3');
        const caFile = path.join(path.dirname(ctx.controllerConfig), 'staging-ca.pem');
        fs.writeFileSync(caFile, staging.caPem);
        const yaml = fs.readFileSync(ctx.controllerConfig, 'utf8');
        const tos = '  termsOfServiceAgreed: true\n';
        assert.ok(yaml.includes(tos));
        fs.writeFileSync(ctx.controllerConfig, yaml.replace(tos, `${tos}  staging: { directoryUrl: "${staging.directoryUrl}", caFile: ${caFile} }\n`));
      },
    });
  });

  after(async () => {
    await fleet?.stop();
    await staging?.stop();
  });

  test('renew --dry-run rehearses every step against staging and changes nothing in production', async () => {
    try {
      await fleet.waitUntilReady(1);
      const before = await fleet.cliJson<HistoryJson>(['history', 'web']);
      assert.equal(before.versions.length, 1);
      const v1 = before.versions[0]?.version;
      assert.ok(v1);
      const eventsBefore = (await fleet.cliJson<{ events: EventJson[] }>(['events', '--cert', 'web', '--limit', '1000'])).events.length;

      const res = await fleet.cliJson<DryRunJson>(['renew', 'web', '--dry-run']);
      assert.equal(res.ok, true, JSON.stringify(res, null, 2));
      assert.equal(res.directoryUrl, staging?.directoryUrl);
      // The pipeline's order; the CA chooses the order of the authorizations.
      const lines = res.steps.map((s) => `${s.step}${s.identifier ? ` ${s.identifier}` : ''} ${s.ok ? 'ok' : 'FAILED'}`);
      const shown = JSON.stringify(res.steps, null, 2);
      assert.deepEqual(lines.slice(0, 2), ['account ok', 'order ok'], shown);
      assert.deepEqual(lines.slice(2, 4).sort(), NAMES.map((n) => `authorization ${n} ok`).sort(), shown);
      assert.deepEqual(lines.slice(4), ['finalize ok', 'download ok', 'cleanup ok'], shown);
      assert.equal(res.steps.at(-1)?.detail, '2 http-01 records withdrawn');
      assert.match(res.steps[0]?.detail ?? '', /^opened at https:\/\/127\.0\.0\.1:\d+\/dir$/);
      assert.ok(res.steps.every((s) => Number.isInteger(s.durationMs) && s.durationMs >= 0));
      assert.match(res.serial, /^[0-9a-f]+$/);
      assert.ok(res.steps.find((s) => s.step === 'download')?.detail.includes(`serial ${res.serial}`));

      // The staging CA issued it; the production CA never saw it.
      assert.ok(staging);
      const atStaging = await certStatus(staging, res.serial);
      assert.equal(atStaging.status, 200, atStaging.body);
      assert.match(atStaging.body, /"Status": ?"Valid"/);
      assert.equal((await certStatus(fleet.pebble, res.serial)).status, 404);

      // Nothing kept: one version, still desired, both nginx on version 1.
      const afterRun = await fleet.cliJson<HistoryJson>(['history', 'web']);
      assert.deepEqual(afterRun, before);
      const certs = await fleet.cliJson<{ certificates: Array<{ name: string; newestVersion: number; desiredVersion: number }> }>(['certs']);
      assert.deepEqual(certs.certificates.map((c) => [c.name, c.newestVersion, c.desiredVersion]), [['web', 1, 1]]);
      for (const a of AGENTS) {
        for (const name of NAMES) {
          const served = await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername: name });
          assert.equal(served.fingerprint, v1.fingerprint, `${a.name} still serves version 1 for ${name}`);
        }
      }
      // One dry-run event naming the operator; no order or issuance announced.
      const events = (await fleet.cliJson<{ events: EventJson[] }>(['events', '--cert', 'web', '--limit', '1000'])).events.slice(eventsBefore);
      assert.deepEqual(events.filter((e) => e.type === 'ordered' || e.type === 'issued'), []);
      const dry = events.filter((e) => e.type === 'dry-run');
      assert.equal(dry.length, 1, JSON.stringify(events));
      assert.equal(dry[0]?.actor, 'admin');
      assert.deepEqual(JSON.parse(dry[0]?.detailsJson ?? '{}') as unknown, { directoryUrl: staging.directoryUrl, ok: true, durationMs: (JSON.parse(dry[0]?.detailsJson ?? '{}') as { durationMs: number }).durationMs, serial: res.serial, notAfter: res.notAfter });

      // The table: every step on its own line, and what was kept (nothing).
      const table = await fleet.cli(['renew', 'web', '--dry-run']);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^web: dry run against https:\/\/127\.0\.0\.1:\d+\/dir\n/);
      // Pebble may hand back an authorization still valid from the rehearsal before: it is listed too.
      assert.match(table.stdout, /^authorization +www\.example\.test +\S+ +ok +(http-01 valid|already valid at the CA \(no challenge needed\))$/m);
      assert.match(table.stdout, /^web: dry run succeeded in \S+: staging certificate serial [0-9a-f]+, notAfter \S+; nothing stored, published or charged$/m);
      assert.equal((await fleet.cliJson<HistoryJson>(['history', 'web'])).versions.length, 1);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`, { cause: err });
    }
  });

  test('check passes on the good fleet and fails naming edge-b when its responder is gone, then when it is offline', async () => {
    try {
      await fleet.waitUntilReady(1);
      const good = await fleet.cli(['check', '--json']);
      assert.equal(good.code, 0, good.stderr);
      const goodJson = JSON.parse(good.stdout) as CheckJson;
      assert.equal(goodJson.ok, true);
      assert.deepEqual(
        goodJson.checks.map((c) => `${c.certificate} ${c.check} ${c.identifier} ${c.agent} ${c.ok}`).sort(),
        NAMES.flatMap((n) => AGENTS.map((a) => `web http-01 ${n} ${a.name} true`)).sort(),
      );
      const table = await fleet.cli(['check', 'web']);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^4 checks, all passed$/m);

      // edge-b's process (and its HTTP-01 responder) stops; the controller still counts it online.
      await fleet.agents.get('edge-b')?.process.stop();
      const gone = await fleet.cli(['check', '--json']);
      assert.notEqual(gone.code, 0);
      const goneJson = JSON.parse(gone.stdout) as CheckJson;
      assert.equal(goneJson.ok, false);
      const failed = goneJson.checks.filter((c) => !c.ok);
      assert.deepEqual([...new Set(failed.map((c) => c.agent))], ['edge-b'], gone.stdout);
      assert.equal(failed.length, 2);
      assert.ok(goneJson.checks.filter((c) => c.agent === 'edge-a').every((c) => c.ok));
      assert.match(gone.stderr, /edge-b/);
      assert.match(gone.stderr, /CHALLENGE_NOT_SERVED/);

      // Once the controller counts it offline, the check says so without asking it.
      await eventually(
        'edge-b offline',
        async () => (await fleet.cliJson<{ agents: Array<{ name: string; online: boolean }> }>(['agents'])).agents.some((a) => a.name === 'edge-b' && !a.online),
        60_000,
        500,
      );
      const offline = await fleet.cli(['check']);
      assert.equal(offline.code, 1, offline.stderr);
      assert.match(offline.stdout, /^web +http-01 +www\.example\.test +edge-b +FAILED +offline since \S+$/m);
      assert.match(offline.stdout, /^2 of 4 checks failed: web http-01 (www\.)?example\.test on edge-b, web http-01 (www\.)?example\.test on edge-b$/m);
      assert.match(offline.stderr, /2 of 4 challenge checks failed: .*on edge-b/);
      // Nothing was ordered by any check.
      assert.equal((await fleet.cliJson<HistoryJson>(['history', 'web'])).versions.length, 1);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${fleet.logs()}`, { cause: err });
    }
  });
});


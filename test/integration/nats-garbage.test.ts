/**
 * Garbage in the `desired` and `challenges` buckets (issue #8, item 2), against a real
 * nats-server: one `{"selector":"*"}` without a name used to make every agent's status
 * report throw every 5 s. Now every record is validated (shared/records) as it is read.
 *
 * The agent's loop runs with a real NATS connection, a real HTTP-01 responder, real
 * installer and disk; the controller's gRPC side is scripted (it answers no assignments,
 * so NATS alone drives the agent). Raw bytes are written with the nats.js client, as any
 * writer with access to the bucket could.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Writable } from 'node:stream';
import { connect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { parseAgentConfig } from '../../agent/config/index.js';
import { Http01Responder } from '../../agent/http01/index.js';
import { Installer } from '../../agent/install/index.js';
import type { ControllerLink } from '../../agent/link/index.js';
import { Sync } from '../../agent/sync/index.js';
import type { Trust } from '../../agent/trust/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { createRootLogger } from '../../shared/log/index.js';
import type { Bundle, CertStatus, ChallengeRecord, DesiredRecord } from '../../shared/model/index.js';
import { connectNats, ensureFleetNats, malformedRecords, type NatsHandle } from '../../shared/nats/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { makeBundle } from '../harness/certs.js';
import { startNats, type NatsServer } from '../harness/nats.js';
import { eventually, freePort } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { testSigner, trustFor, type TestSigner } from '../harness/signing.js';

const SECRET = 'G4RBAGE-VALUE-not-for-logs';

function get(port: number, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/.well-known/acme-challenge/${token}`, headers: { host: 'web.example.test' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

describe('garbage in the desired and challenges buckets', { timeout: 120_000 }, () => {
  let server: NatsServer;
  let nats: NatsHandle;
  let raw: NatsConnection;
  let js: JetStreamClient;
  let sync: Sync;
  let http01: Http01Responder;
  let httpPort: number;
  let v1: Bundle;
  let signer: TestSigner;
  let trust: Trust;
  const logLines: string[] = [];
  const reports: CertStatus[][] = [];
  const fetches: string[] = [];

  const put = async (bucket: string, key: string, data: string | Uint8Array): Promise<void> => {
    await js.publish(`$KV.${bucket}.${key}`, data);
  };

  before(async () => {
    server = await startNats();
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
        cb();
      },
    });
    const log = createRootLogger({ name: 'garbage-test', level: 'debug', destination: sink });
    nats = await connectNats({ servers: [server.url], name: 'agent', credentials: server.creds, log });
    await ensureFleetNats(nats);
    // A writer with the controller's rights: a buggy or older controller, or an operator
    // with the nats CLI. (Strangers are refused outright: test/integration/natsauth.test.ts.)
    raw = await connect({ servers: server.url, name: 'garbage-writer', ...(server.creds === undefined ? {} : { authenticator: credsAuthenticator(new TextEncoder().encode(server.creds)) }) });
    js = jetstream(raw);

    v1 = await makeBundle({ name: 'web', version: 1, names: ['web.example.test'] });
    const dir = tempDir('certfleet-garbage-');
    httpPort = await freePort();
    const config = parseAgentConfig(
      [`stateDir: ${dir}/state`, 'controller: { address: "127.0.0.1:1", caFile: /nonexistent }', `nats: { servers: ["${server.url}"] }`, `http01: { listen: "127.0.0.1:${httpPort}" }`, 'reportInterval: 1s', ''].join('\n'),
      'agent.yaml',
    );
    const link = {
      // The controller is unreachable: NATS alone tells the agent what to install.
      assignments: () => Promise.reject(new Error('controller unreachable')),
      fetchBundle: (name: string, version: number) => {
        fetches.push(`${name}/${version}`);
        return name === 'web' && version === 1 ? Promise.resolve(v1) : Promise.reject(new Error(`no ${name} v${version}`));
      },
      reportStatus: (r: { certificates: CertStatus[] }) => {
        reports.push(r.certificates);
        return Promise.resolve();
      },
    } as unknown as ControllerLink;
    http01 = new Http01Responder({ log });
    await http01.start({ host: '127.0.0.1', port: httpPort });
    signer = testSigner();
    trust = await trustFor(`${dir}/state`, signer, log);
    sync = new Sync({ config, labels: { role: 'lb' }, link, installer: new Installer({ stateDir: `${dir}/state`, clock: systemClock, log }), nats, http01, trust, clock: systemClock, log });
    await sync.start();
  });

  after(async () => {
    await sync?.stop();
    await http01?.stop();
    await raw?.close();
    await nats?.close();
    await server?.stop();
  });

  test('the agent skips every bad record, keeps reporting and serving, and installs nothing from them', async () => {
    const good: DesiredRecord = {
      name: 'web',
      version: 1,
      fingerprint: v1.meta.fingerprint,
      names: v1.meta.names,
      notAfter: v1.meta.notAfter,
      selector: 'role=lb',
      updatedAt: new Date().toISOString(),
    };
    await put(Bucket.desired, 'web', JSON.stringify(signer.desired(good)));
    await eventually('v1 installed from the good record', () => reports.at(-1)?.some((s) => s.name === 'web' && s.state === 'installed' && s.version === 1), 20_000);

    // The record of the incident, then worse: under the installed name and under new ones.
    await put(Bucket.desired, 'web', JSON.stringify({ selector: '*' }));
    await put(Bucket.desired, 'api', JSON.stringify({ selector: '*' }));
    await put(Bucket.desired, 'mail', new Uint8Array([0xff, 0xfe, 0x00, 0x81, 0x7b]));
    await put(Bucket.desired, 'blob', '{"name": "blob", "version": ');
    await put(Bucket.desired, 'shop', JSON.stringify({ ...good, name: 'shop', version: 'two', fingerprint: SECRET }));
    await put(Bucket.desired, 'other', JSON.stringify({ ...good, version: 2 })); // names "web" under key "other"
    await put(Bucket.desired, 'list', JSON.stringify([good]));
    await put(Bucket.desired, 'num', '42');

    const goodChallenge: ChallengeRecord = {
      token: 'good-token_1',
      keyAuthorization: 'good-token_1.thumb',
      identifier: 'web.example.test',
      cert: 'web',
      selector: 'role=lb',
      createdAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + 600_000).toISOString(),
    };
    await put(Bucket.challenges, 'bad-token_1', JSON.stringify({ selector: '*', token: 'bad-token_1' }));
    await put(Bucket.challenges, 'bad-token_2', JSON.stringify({ ...goodChallenge, token: 'bad-token_2', keyAuthorization: `${SECRET}.x` }));
    await put(Bucket.challenges, 'bad-token_3', new Uint8Array([0xc3, 0x28]));
    await put(Bucket.challenges, 'bad-token_4', JSON.stringify({ ...goodChallenge, token: 'bad-token_4', keyAuthorization: 'bad-token_4.x', extra: true }));
    await put(Bucket.challenges, goodChallenge.token, JSON.stringify(signer.challenge(goodChallenge)));

    // A good record after the garbage is still acted on: the watch kept going.
    await eventually('the good challenge is served', async () => (await get(httpPort, goodChallenge.token)).body === goodChallenge.keyAuthorization, 20_000, 200);
    for (const token of ['bad-token_1', 'bad-token_2', 'bad-token_3', 'bad-token_4']) {
      assert.equal((await get(httpPort, token)).status, 404, `${token} is not served`);
    }

    // Reports keep coming, and say only what is true: web v1 installed, nothing else.
    const before = reports.length;
    await eventually('three more reports', () => reports.length >= before + 3, 20_000);
    assert.ok(!logLines.some((l) => l.includes('status report failed')), 'no report failed');
    for (const r of reports.slice(before)) {
      assert.deepEqual(
        r.map((s) => [s.name, s.state, s.version]),
        [['web', 'installed', 1]],
      );
    }
    assert.deepEqual(fetches, ['web/1'], 'nothing fetched or installed because of a bad record');

    // Each bad record logged once, with key and reason, never its value; and counted.
    const skipped = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'malformed kv value skipped');
    const keys = (bucket: string): string[] => skipped.filter((l) => l['bucket'] === bucket).map((l) => String(l['kvKey'])).sort();
    assert.deepEqual(keys(Bucket.desired), ['api', 'blob', 'list', 'mail', 'num', 'other', 'shop', 'web']);
    assert.deepEqual(keys(Bucket.challenges), ['bad-token_1', 'bad-token_2', 'bad-token_3', 'bad-token_4']);
    assert.match(String(skipped.find((l) => l['kvKey'] === 'web')?.['reason']), /name: /);
    assert.match(String(skipped.find((l) => l['kvKey'] === 'other')?.['reason']), /name: does not match the key/);
    assert.equal(skipped.find((l) => l['kvKey'] === 'mail')?.['reason'], 'not JSON');
    assert.ok(!logLines.some((l) => l.includes(SECRET)), 'no bad value in the logs');
    assert.equal(malformedRecords()[Bucket.desired], 8);
    assert.equal(malformedRecords()[Bucket.challenges], 4);
    // Garbage in a bucket only the controller writes is also a refused record (SECURITY).
    assert.equal(trust.refusals().byReason['malformed'], 12);
    assert.ok(reports.length > 0);
  });
});

/**
 * A certificate issued by Pebble through a cloud DNS provider, end to end: the solver
 * writes through the fake Cloudflare API (and, for a CNAME-delegated name, the fake
 * acme-dns API); each fake copies the TXT values its API holds into a real BIND (by
 * signed DNS UPDATE), which plays the provider's authoritative nameservers. A second
 * order goes through the Route 53 and Cloud DNS fakes the same way. So the
 * solver's own propagation check asks BIND directly, and Pebble validates through a
 * recursive BIND in front of it — the same path a real CA takes to a cloud provider's
 * nameservers. Only the HTTP APIs are fakes (see dns01-cloud.test.ts); DNS and the CA
 * are real.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createAcmeClient, createCsr, generateAccountKey, generateKey, type AcmeClient } from '../../controller/acme/index.js';
import { AcmeDnsProvider, CloudflareProvider, Dns01Solver, GcloudProvider, MemoryDns01Journal, Rfc2136Provider, Route53Provider, parseServiceAccount, type Dns01Challenge, type DnsProvider } from '../../controller/solvers/dns01/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { freePort } from '../harness/process.js';
import { startBind, type BindHandle } from '../harness/bind.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { FakeCloudflare } from '../harness/fake-cloudflare.js';
import { FakeAcmeDns } from '../harness/fake-acmedns.js';
import { FakeRoute53 } from '../harness/fake-route53.js';
import { FakeGcloud } from '../harness/fake-gcloud.js';
import type { TxtMirror } from '../harness/fake-dns-api.js';

const log = silentLogger();
const ACMEDNS_SUB = '4f1c2a7e-0b6d-4c3e-9a85-2d7f1e6b9c01';

void describe('DNS-01 through cloud provider APIs, validated by Pebble', () => {
  let bind: BindHandle;
  let resolver: BindHandle;
  let pebble: PebbleHandle;
  let acme: AcmeClient;
  let cloudflare: FakeCloudflare;
  let acmedns: FakeAcmeDns;
  let route53: FakeRoute53;
  let gcloud: FakeGcloud;
  const AWS = { accessKeyId: 'AKIDE2E', secretAccessKey: 'e2e-secret' };
  const TOKEN = 'cf-e2e-token';

  before(async () => {
    bind = await startBind({
      keys: [{ name: 'certfleet-key', algorithm: 'hmac-sha256' }],
      // auth.cloud.test stands for the acme-dns server's own zone; the delegation CNAME is made once, by hand, as acme-dns asks.
      zones: [{ name: 'cloud.test', updateKey: 'certfleet-key', records: [`_acme-challenge.delegated IN CNAME ${ACMEDNS_SUB}.auth.cloud.test.`] }],
    });
    const k = bind.key('certfleet-key');
    // The fakes' "nameservers": every value their APIs hold is copied into BIND.
    const writer = new Rfc2136Provider({ name: 'mirror', server: { host: bind.address, port: bind.port }, key: { name: k.name, algorithm: k.algorithm, secret: Buffer.from(k.secret, 'base64') }, ttl: 1, clock: systemClock, log });
    const mirror: TxtMirror = (op, fqdn, value) => (op === 'add' ? writer.present(fqdn, value) : writer.cleanup(fqdn, value));
    cloudflare = new FakeCloudflare({ token: TOKEN, zones: [{ id: 'zone-cloud', name: 'cloud.test' }], mirror });
    acmedns = new FakeAcmeDns({ domain: 'auth.cloud.test', mirror });
    route53 = new FakeRoute53({ keys: { [AWS.accessKeyId]: AWS }, zones: [{ id: 'ZCLOUD', name: 'cloud.test' }], mirror });
    gcloud = new FakeGcloud({ zones: [{ name: 'cloud-test', dnsName: 'cloud.test.' }], mirror });
    await cloudflare.listen();
    await acmedns.listen();
    await route53.listen();
    await gcloud.listen();
    resolver = await startBind({ keys: [], zones: [], forward: { server: bind.server, zones: ['cloud.test'] } });
    pebble = await startPebble({ httpPort: await freePort(), dnsServer: resolver.server });
    acme = createAcmeClient({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, accountKeyPem: await generateAccountKey(), log });
    await acme.ensureAccount();
  });

  after(async () => {
    acme?.close();
    await pebble?.stop();
    await resolver?.stop();
    await bind?.stop();
    await cloudflare?.close();
    await acmedns?.close();
    await route53?.close();
    await gcloud?.close();
  });

  const solverOf = (providers: DnsProvider[], zones: Array<{ zone: string; provider: string }>, journal = new MemoryDns01Journal()): Dns01Solver =>
    new Dns01Solver({
      providers: new Map(providers.map((p) => [p.name, p])),
      zones,
      journal,
      lookup: { resolvers: [{ host: bind.address, port: bind.port }], nameserverPort: bind.port, queryTimeoutMs: 1000 },
      propagationTimeoutMs: 15_000,
      propagationIntervalMs: 100,
      clock: systemClock,
      log,
    });

  async function issue(s: Dns01Solver, names: string[], providerOf: (identifier: string) => string | undefined = () => undefined): Promise<string> {
    const order = await acme.placeOrder(names);
    const challenges: Dns01Challenge[] = [];
    const urls: Array<{ authz: string; challenge: string }> = [];
    for (const authz of order.authorizations) {
      const ch = authz.challenges.find((c) => c.type === 'dns-01');
      assert.ok(ch);
      const identifier = authz.wildcard ? `*.${authz.identifier.value}` : authz.identifier.value;
      const provider = providerOf(identifier);
      challenges.push({ cert: 'cloud', identifier, keyAuthorization: await acme.keyAuthorization(ch.token), ...(provider === undefined ? {} : { provider }) });
      urls.push({ authz: authz.url, challenge: ch.url });
    }
    const presented = await s.present(challenges);
    try {
      for (const u of urls) await acme.acceptChallenge(u.challenge);
      await Promise.all(urls.map((u) => acme.waitForAuthorization(u.authz, AbortSignal.timeout(30_000))));
    } finally {
      await s.cleanup(presented);
    }
    const finalized = await acme.finalize(order, await createCsr(await generateKey('ecdsa-p256'), names));
    return (await acme.downloadCertificate(finalized)).certPem;
  }

  void it('issues a wildcard + apex certificate through the Cloudflare API and an acme-dns-delegated name, then removes the Cloudflare records', async () => {
    const acct = acmedns.register(ACMEDNS_SUB);
    const cf = new CloudflareProvider({ name: 'cf', apiToken: TOKEN, baseUrl: cloudflare.baseUrl, clock: systemClock, log });
    const adns = new AcmeDnsProvider({ name: 'adns', server: acmedns.origin, accounts: new Map([['delegated.cloud.test', acct]]), clock: systemClock, log });
    await cf.check();
    await adns.check();
    const journal = new MemoryDns01Journal();
    const solver = solverOf(
      [cf, adns],
      [
        { zone: 'cloud.test', provider: 'cf' },
        { zone: 'auth.cloud.test', provider: 'adns' },
      ],
      journal,
    );
    const certPem = await issue(solver, ['cloud.test', '*.cloud.test', 'delegated.cloud.test']);
    const sans = (new X509Certificate(certPem).subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, '')).sort();
    assert.deepEqual(sans, ['*.cloud.test', 'cloud.test', 'delegated.cloud.test']);
    assert.deepEqual(cloudflare.values('_acme-challenge.cloud.test'), [], 'Cloudflare records removed');
    assert.deepEqual(await bind.txt('_acme-challenge.cloud.test'), []);
    assert.equal(journal.entries.size, 0);
    assert.ok(cloudflare.requests.some((r) => r.method === 'POST'), 'records were written through the Cloudflare API');
    // acme-dns cannot delete: its value stays until the next update rolls it out.
    assert.equal(acmedns.txt.get(acct.fulldomain).length, 1);
  });

  void it('issues through the Route 53 API (SigV4, INSYNC wait) and the Cloud DNS API (service-account token) in one order', async () => {
    const aws = new Route53Provider({ name: 'aws', credentials: () => AWS, endpoint: route53.origin, pollIntervalMs: 100, clock: systemClock, log });
    const sa = parseServiceAccount(gcloud.serviceAccountJson());
    assert.ok(!('problem' in sa));
    const gdns = new GcloudProvider({ name: 'gdns', serviceAccount: sa, project: gcloud.project, baseUrl: gcloud.baseUrl, pollIntervalMs: 100, clock: systemClock, log });
    await aws.check();
    await gdns.check();
    // Both fakes mirror into the same BIND zone; each name is routed to one provider per challenge.
    const names = ['r53.cloud.test', 'gc.cloud.test'];
    const certPem = await issue(solverOf([aws, gdns], []), names, (id) => (id.startsWith('r53.') ? 'aws' : 'gdns'));
    const sans = (new X509Certificate(certPem).subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, '')).sort();
    assert.deepEqual(sans, ['gc.cloud.test', 'r53.cloud.test']);
    assert.ok(route53.getChangeCalls >= 2, 'Route 53 changes were polled until INSYNC');
    assert.deepEqual(route53.txt.get('_acme-challenge.r53.cloud.test'), []);
    assert.deepEqual(gcloud.txt.get('_acme-challenge.gc.cloud.test'), []);
    assert.deepEqual(await bind.txt('_acme-challenge.r53.cloud.test'), []);
    assert.deepEqual(await bind.txt('_acme-challenge.gc.cloud.test'), []);
  });
});

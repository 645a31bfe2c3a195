/**
 * Contract tests of the cloud DNS providers against local fakes of their APIs (real HTTP
 * over the loopback; test/harness/fake-{cloudflare,route53,gcloud,acmedns}.ts implement
 * the documented request and response shapes). These services cannot be reached from
 * the test machines: passing here means certfleet speaks the documented API, not that it
 * was tried against the live service.
 *
 * For each provider: a value is added and shows in the fake, a second value at the same
 * name leaves the first alone, cleanup removes exactly one value and is idempotent; zone
 * discovery follows pagination; rejected credentials are DNS_CREDENTIALS_REJECTED; a
 * rate-limit answer is retried after waiting on the (manual) clock; the credential never
 * appears in a log line or an error.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import {
  AcmeDnsProvider,
  CloudflareProvider,
  GcloudProvider,
  MemoryDns01Journal,
  Route53Provider,
  createDns01Providers,
  dns01ConfigSchema,
  janitor,
  parseServiceAccount,
  type DnsProvider,
  type ServiceAccountKey,
} from '../../controller/solvers/dns01/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { ManualClock, systemClock, type Clock } from '../../shared/clock/index.js';
import { createRootLogger, type Logger } from '../../shared/log/index.js';
import { FakeCloudflare } from '../harness/fake-cloudflare.js';
import { FakeRoute53 } from '../harness/fake-route53.js';
import { FakeGcloud } from '../harness/fake-gcloud.js';
import { FakeAcmeDns } from '../harness/fake-acmedns.js';

/** A logger at trace level whose lines are kept, to prove secrets never reach them. */
function capturingLog(): { log: Logger; text: () => string } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { log: createRootLogger({ name: 'test', level: 'trace', destination }), text: () => lines.join('') };
}

async function rejection(p: Promise<unknown>): Promise<CertfleetError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof CertfleetError, `expected a CertfleetError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a rejection');
}

/** Runs `p` to completion on a manual clock: whenever a timer waits, time jumps to it; otherwise real I/O gets its turn. */
async function drive<T>(clock: ManualClock, p: Promise<T>): Promise<T> {
  let done = false;
  const tracked = p.finally(() => (done = true));
  tracked.catch(() => undefined);
  while (!done) {
    const next = clock.nextDue();
    if (next !== undefined) await clock.tick(next - clock.now());
    else await new Promise((r) => setImmediate(r));
  }
  return p;
}

const V1 = 'a'.repeat(43);
const V2 = 'b'.repeat(43);
const V3 = 'c'.repeat(43);

/** The behaviour every provider shares: add, add beside, remove one, remove again. */
async function addBesideRemove(p: DnsProvider, fqdn: string, seen: () => string[]): Promise<void> {
  await p.present(fqdn, V1);
  assert.deepEqual(seen(), [V1]);
  await p.present(fqdn, V2);
  assert.deepEqual(seen().sort(), [V1, V2]);
  await p.present(fqdn, V2); // the same value again changes nothing
  assert.deepEqual(seen().sort(), [V1, V2]);
  await p.cleanup(fqdn, V1);
  assert.deepEqual(seen(), [V2]);
  await p.cleanup(fqdn, V1); // already gone: still success
  await p.cleanup(fqdn, V2);
  assert.deepEqual(seen(), []);
}

void describe('cloudflare provider against the fake Cloudflare API', () => {
  const TOKEN = 'cf-token-Zx81kqP0s3cr3t';
  let fake: FakeCloudflare;
  before(async () => {
    fake = new FakeCloudflare({
      token: TOKEN,
      pageSize: 1,
      zones: [
        { id: 'z-other', name: 'example.net' },
        // The same name twice: a zone that moved away stays listed; discovery must page on to the active one.
        { id: 'z-moved', name: 'example.com', status: 'moved' },
        { id: 'z-com', name: 'example.com' },
      ],
    });
    await fake.listen();
  });
  after(() => fake.close());

  const provider = (opts: { token?: string; clock?: Clock; log?: Logger; zoneId?: string } = {}): CloudflareProvider =>
    new CloudflareProvider({ name: 'cf', apiToken: opts.token ?? TOKEN, baseUrl: fake.baseUrl, ...(opts.zoneId ? { zoneId: opts.zoneId } : {}), clock: opts.clock ?? systemClock, log: opts.log ?? capturingLog().log });

  void it('adds values beside each other, finds the zone on the second page, and removes exactly one value', async () => {
    const p = provider();
    await p.check();
    await addBesideRemove(p, '_acme-challenge.www.example.com.', () => fake.values('_acme-challenge.www.example.com'));
    const posts = fake.requests.filter((r) => r.method === 'POST');
    assert.ok(posts.every((r) => r.path === '/client/v4/zones/z-com/dns_records'), 'records went to the active zone');
    assert.ok(fake.requests.some((r) => /\/zones\?name=example\.com&per_page=50&page=2$/.test(r.path)), 'page 2 of the zone list was read');
  });

  void it('lists records across pages when cleaning up', async () => {
    const p = provider({ zoneId: 'z-com' });
    await p.present('_acme-challenge.many.example.com.', V1);
    await p.present('_acme-challenge.many.example.com.', V2);
    await p.present('_acme-challenge.many.example.com.', V3);
    await p.cleanup('_acme-challenge.many.example.com.', V3); // third record: third page of one
    assert.deepEqual(fake.values('_acme-challenge.many.example.com').sort(), [V1, V2]);
    await p.cleanup('_acme-challenge.many.example.com.', V1);
    await p.cleanup('_acme-challenge.many.example.com.', V2);
  });

  void it('reports a rejected token as DNS_CREDENTIALS_REJECTED with Cloudflare’s words and without the token', async () => {
    const { log, text } = capturingLog();
    const wrong = 'wrong-token-Qq77';
    const err = await rejection(provider({ token: wrong, log }).check());
    assert.equal(err.code, ErrorCode.DnsCredentialsRejected);
    assert.equal(err.retryable, false);
    assert.match(err.message, /cloudflare provider "cf": check credentials: credentials rejected: HTTP 403: 10000 Authentication error/);
    const presentErr = await rejection(provider({ token: wrong, log }).present('_acme-challenge.x.example.com.', V1));
    assert.equal(presentErr.code, ErrorCode.DnsCredentialsRejected);
    for (const secret of [wrong, TOKEN]) {
      assert.ok(!JSON.stringify({ m: err.message, d: err.details, m2: presentErr.message }).includes(secret));
      assert.ok(!text().includes(secret));
    }
  });

  void it('waits Retry-After on the clock when rate-limited (429), then succeeds; the token is in no log line', async () => {
    const clock = new ManualClock();
    const { log, text } = capturingLog();
    const p = provider({ clock, log, zoneId: 'z-com' });
    const start = clock.now();
    fake.rateLimitNext(2);
    const before429 = fake.rateLimited;
    await drive(clock, p.present('_acme-challenge.slow.example.com.', V1));
    assert.equal(fake.rateLimited - before429, 2);
    assert.ok(clock.now() - start >= 2 * fake.retryAfterSeconds * 1000, `waited ${clock.now() - start} ms on the clock`);
    assert.deepEqual(fake.values('_acme-challenge.slow.example.com'), [V1]);
    await p.cleanup('_acme-challenge.slow.example.com.', V1);
    assert.match(text(), /dns record added/);
    assert.ok(!text().includes(TOKEN));
  });

  void it('gives up after five rate-limited answers with a retryable error carrying Retry-After', async () => {
    const clock = new ManualClock();
    fake.rateLimitNext(5);
    const err = await rejection(drive(clock, provider({ clock, zoneId: 'z-com' }).present('_acme-challenge.busy.example.com.', V1)));
    assert.equal(err.code, ErrorCode.DnsProviderFailed);
    assert.equal(err.retryable, true);
    assert.equal(err.retryAfterMs, fake.retryAfterSeconds * 1000);
    assert.deepEqual(fake.values('_acme-challenge.busy.example.com'), []);
  });

  void it('is built from the dns01 configuration with the token from the environment and the base URL pointed at the fake', async () => {
    const cfg = dns01ConfigSchema.parse({ providers: { cf: { type: 'cloudflare', apiTokenEnv: 'CF_DNS_API_TOKEN', baseUrl: fake.baseUrl, ttl: 120 } } });
    const { log, text } = capturingLog();
    const p = createDns01Providers(cfg, { env: { CF_DNS_API_TOKEN: TOKEN }, clock: systemClock, log }).get('cf');
    assert.ok(p);
    await p.check();
    await p.present('_acme-challenge.cfg.example.com.', V1);
    assert.equal(fake.records.find((r) => r.name === '_acme-challenge.cfg.example.com')?.ttl, 120);
    await p.cleanup('_acme-challenge.cfg.example.com.', V1);
    assert.deepEqual(fake.values('_acme-challenge.cfg.example.com'), []);
    assert.ok(!text().includes(TOKEN));
  });

  void it('the janitor removes a record a crash left behind, through the provider', async () => {
    const p = provider();
    await p.present('_acme-challenge.crash.example.com.', V3);
    const journal = new MemoryDns01Journal();
    await journal.add({ id: 'j1', provider: 'cf', fqdn: '_acme-challenge.crash.example.com.', value: V3, cert: 'c', identifier: 'crash.example.com', createdAt: '2020-01-01T00:00:00.000Z' });
    const report = await janitor(journal, new Map([['cf', p]]), { log: capturingLog().log, clock: systemClock });
    assert.deepEqual(report.removed.map((e) => e.id), ['j1']);
    assert.deepEqual(fake.values('_acme-challenge.crash.example.com'), []);
  });
});

void describe('route53 provider against the fake Route 53 API', () => {
  const KEYS = { AKIDCERTFLEET: { accessKeyId: 'AKIDCERTFLEET', secretAccessKey: 'r53-secret-Jm2k9Lq' } };
  let fake: FakeRoute53;
  before(async () => {
    fake = new FakeRoute53({
      keys: KEYS,
      pageSize: 1,
      zones: [
        { id: 'ZA', name: 'a.example' },
        // A private zone of the same name sorts first; the public one is on the next page.
        { id: 'Z1PRIVATE', name: 'example.org', private: true },
        { id: 'Z2PUBLIC', name: 'example.org' },
        { id: 'ZZ', name: 'zzz.example' },
      ],
    });
    await fake.listen();
  });
  after(() => fake.close());

  const provider = (opts: { secret?: string; clock?: Clock; log?: Logger; hostedZoneId?: string } = {}): Route53Provider =>
    new Route53Provider({
      name: 'aws',
      credentials: () => ({ accessKeyId: 'AKIDCERTFLEET', secretAccessKey: opts.secret ?? KEYS.AKIDCERTFLEET.secretAccessKey }),
      endpoint: fake.origin,
      ...(opts.hostedZoneId ? { hostedZoneId: opts.hostedZoneId } : {}),
      pollIntervalMs: 1000,
      clock: opts.clock ?? new ManualClock(),
      log: opts.log ?? capturingLog().log,
    });

  void it('UPSERTs quoted values into one record set in the public zone found on page two, waits for INSYNC on the clock, and DELETEs the exact set', async () => {
    const clock = new ManualClock();
    const p = provider({ clock });
    await drive(clock, p.check());
    const polls = fake.getChangeCalls;
    const start = clock.now();
    const fqdn = '_acme-challenge.www.example.org.';
    const seen = (): string[] => fake.txt.get(fqdn);
    await drive(clock, p.present(fqdn, V1));
    assert.deepEqual(seen(), [V1]);
    assert.ok(fake.getChangeCalls - polls >= 2, 'GetChange polled until INSYNC (PENDING once first)');
    assert.ok(clock.now() - start >= 2 * 1000, 'the polls waited on the clock');
    await drive(clock, p.present(fqdn, V2));
    assert.deepEqual(seen(), [V1, V2]);
    await drive(clock, p.cleanup(fqdn, V1));
    assert.deepEqual(seen(), [V2]);
    await drive(clock, p.cleanup(fqdn, V2));
    assert.deepEqual(seen(), []);
    await drive(clock, p.cleanup(fqdn, V2));
    const changes = fake.requests.filter((r) => r.method === 'POST');
    assert.ok(changes.every((r) => r.path === '/2013-04-01/hostedzone/Z2PUBLIC/rrset/'), 'every change went to the public zone');
    assert.match(changes[1]!.body, /<Action>UPSERT<\/Action>.*<ResourceRecord><Value>"a{43}"<\/Value><\/ResourceRecord><ResourceRecord><Value>"b{43}"<\/Value><\/ResourceRecord>/);
    assert.match(changes.at(-1)!.body, /<Action>DELETE<\/Action>/);
    assert.ok(fake.requests.some((r) => r.path.includes('hostedzoneid=Z2PUBLIC')), 'the second page was asked for with NextHostedZoneId');
  });

  void it('adding two values to one name at once keeps both (changes to a name are queued)', async () => {
    const clock = new ManualClock();
    const p = provider({ clock, hostedZoneId: '/hostedzone/Z2PUBLIC' });
    const fqdn = '_acme-challenge.both.example.org.';
    await drive(clock, Promise.all([p.present(fqdn, V1), p.present(fqdn, V2)]));
    assert.deepEqual(fake.txt.get(fqdn).sort(), [V1, V2]);
    await drive(clock, Promise.all([p.cleanup(fqdn, V1), p.cleanup(fqdn, V2)]));
    assert.deepEqual(fake.txt.get(fqdn), []);
  });

  void it('a wrong secret is SignatureDoesNotMatch → DNS_CREDENTIALS_REJECTED, with neither secret in messages or logs', async () => {
    const { log, text } = capturingLog();
    const clock = new ManualClock();
    const err = await rejection(drive(clock, provider({ secret: 'wrong-secret-Vv0', log, clock }).check()));
    assert.equal(err.code, ErrorCode.DnsCredentialsRejected);
    assert.equal(err.retryable, false);
    assert.match(err.message, /route53 provider "aws": check credentials: credentials rejected: HTTP 403: SignatureDoesNotMatch: The request signature we calculated/);
    for (const secret of ['wrong-secret-Vv0', KEYS.AKIDCERTFLEET.secretAccessKey]) {
      assert.ok(!JSON.stringify({ m: err.message, d: err.details }).includes(secret));
      assert.ok(!text().includes(secret));
    }
  });

  void it('retries Throttling (400, XML error body) with backoff on the clock', async () => {
    const clock = new ManualClock();
    const p = provider({ clock, hostedZoneId: 'Z2PUBLIC' });
    const start = clock.now();
    const before = fake.rateLimited;
    fake.rateLimitNext(3);
    await drive(clock, p.present('_acme-challenge.throttled.example.org.', V1));
    assert.equal(fake.rateLimited - before, 3);
    // No Retry-After from Route 53: 1 s, 2 s, 4 s of backoff (plus the INSYNC poll).
    assert.ok(clock.now() - start >= 7000, `waited ${clock.now() - start} ms`);
    assert.deepEqual(fake.txt.get('_acme-challenge.throttled.example.org'), [V1]);
    await drive(clock, p.cleanup('_acme-challenge.throttled.example.org.', V1));
  });

  void it('a change that never reaches INSYNC fails retryable after changeTimeout', async () => {
    const clock = new ManualClock();
    fake.pendingPolls = 1000;
    try {
      const p = new Route53Provider({ name: 'aws', credentials: () => KEYS.AKIDCERTFLEET, endpoint: fake.origin, hostedZoneId: 'Z2PUBLIC', pollIntervalMs: 5000, changeTimeoutMs: 30_000, clock, log: capturingLog().log });
      const err = await rejection(drive(clock, p.present('_acme-challenge.stuck.example.org.', V1)));
      assert.equal(err.code, ErrorCode.DnsProviderFailed);
      assert.equal(err.retryable, true);
      assert.match(err.message, /change C[0-9A-F]+ still PENDING after 30000 ms/);
    } finally {
      fake.pendingPolls = 1;
    }
  });
});

void describe('gcloud provider against the fake Cloud DNS and token endpoint', () => {
  let fake: FakeGcloud;
  let sa: ServiceAccountKey;
  before(async () => {
    fake = new FakeGcloud({
      pageSize: 1,
      zones: [
        { name: 'corp-private', dnsName: 'example.dev.', visibility: 'private' },
        { name: 'corp-public', dnsName: 'example.dev.' },
      ],
    });
    await fake.listen();
    const parsed = parseServiceAccount(fake.serviceAccountJson());
    assert.ok(!('problem' in parsed));
    sa = parsed;
  });
  after(() => fake.close());

  const provider = (opts: { key?: ServiceAccountKey; clock?: Clock; log?: Logger } = {}): GcloudProvider =>
    new GcloudProvider({ name: 'gc', serviceAccount: opts.key ?? sa, project: fake.project, baseUrl: fake.baseUrl, pollIntervalMs: 500, clock: opts.clock ?? new ManualClock(), log: opts.log ?? capturingLog().log });

  void it('gets a token with a signed JWT, finds the public zone on page two, and changes the TXT set until "done"', async () => {
    const clock = new ManualClock();
    const { log, text } = capturingLog();
    const p = provider({ clock, log });
    await drive(clock, p.check());
    const fqdn = '_acme-challenge.api.example.dev.';
    await drive(clock, p.present(fqdn, V1));
    await drive(clock, p.present(fqdn, V2));
    assert.deepEqual(fake.txt.get(fqdn).sort(), [V1, V2]);
    await drive(clock, p.cleanup(fqdn, V1));
    assert.deepEqual(fake.txt.get(fqdn), [V2]);
    await drive(clock, p.cleanup(fqdn, V2));
    await drive(clock, p.cleanup(fqdn, V2));
    assert.deepEqual(fake.txt.get(fqdn), []);
    assert.equal(fake.tokensIssued, 1, 'one token, reused until it expires');
    assert.ok(fake.requests.some((r) => r.path.includes('managedZones?dnsName=example.dev.&pageToken=1')), 'page two of the zone list');
    assert.ok(fake.requests.filter((r) => r.method === 'POST' && r.path.includes('/changes')).every((r) => r.path.includes('/managedZones/corp-public/')));
    const tokens = fake.requests.map((r) => String(r.headers.authorization ?? '')).filter((a) => a.startsWith('Bearer ')).map((a) => a.slice(7));
    assert.ok(tokens.length > 0);
    for (const t of tokens) assert.ok(!text().includes(t), 'the access token is in no log line');
    assert.ok(!text().includes('PRIVATE KEY'));
  });

  void it('a key the account does not have is invalid_grant → DNS_CREDENTIALS_REJECTED', async () => {
    const other = parseServiceAccount(fake.serviceAccountJson(true));
    assert.ok(!('problem' in other));
    const err = await rejection(provider({ key: other }).check());
    assert.equal(err.code, ErrorCode.DnsCredentialsRejected);
    assert.match(err.message, /gcloud provider "gc": get an access token: credentials rejected: HTTP 400: invalid_grant: Invalid JWT Signature\./);
  });

  void it('retries 429 rateLimitExceeded with backoff on the clock', async () => {
    const clock = new ManualClock();
    const p = provider({ clock });
    const before = fake.rateLimited;
    fake.rateLimitNext(2);
    const start = clock.now();
    await drive(clock, p.present('_acme-challenge.rl.example.dev.', V1));
    assert.equal(fake.rateLimited - before, 2);
    assert.ok(clock.now() - start >= 3000, `waited ${clock.now() - start} ms`);
    await drive(clock, p.cleanup('_acme-challenge.rl.example.dev.', V1));
    assert.deepEqual(fake.txt.get('_acme-challenge.rl.example.dev'), []);
  });
});

void describe('acme-dns provider against the fake acme-dns API', () => {
  let fake: FakeAcmeDns;
  before(async () => {
    fake = new FakeAcmeDns({ domain: 'auth.example.org' });
    await fake.listen();
  });
  after(() => fake.close());

  void it('updates the account’s fulldomain (the CNAME target) with X-Api-User/X-Api-Key; allows two values and refuses a third', async () => {
    const acct = fake.register();
    const { log, text } = capturingLog();
    const p = new AcmeDnsProvider({ name: 'adns', server: fake.origin, accounts: new Map([['example.com', acct]]), clock: systemClock, log });
    await p.check();
    // What the solver hands over after following _acme-challenge.example.com CNAME <fulldomain>.
    await p.present(`${acct.fulldomain}.`, V1);
    await p.present(`${acct.fulldomain}.`, V2);
    assert.deepEqual(fake.txt.get(acct.fulldomain), [V1, V2]);
    const third = await rejection(p.present(`${acct.fulldomain}.`, V3));
    assert.equal(third.code, ErrorCode.DnsProviderFailed);
    assert.equal(third.retryable, true);
    assert.match(third.message, /acme-dns keeps only 2/);
    assert.deepEqual(fake.txt.get(acct.fulldomain), [V1, V2], 'nothing was pushed out');
    await p.cleanup(`${acct.fulldomain}.`, V1);
    await p.present(`${acct.fulldomain}.`, V3); // a slot is free again; acme-dns rolls V1 out
    assert.deepEqual(fake.txt.get(acct.fulldomain), [V2, V3]);
    // Without CNAME following the solver passes _acme-challenge.<name>: the same account.
    await p.cleanup(`${acct.fulldomain}.`, V2);
    await p.present('_acme-challenge.example.com.', V1);
    assert.deepEqual(fake.txt.get(acct.fulldomain), [V3, V1]);
    const update = fake.requests.find((r) => r.path === '/update');
    assert.equal(update?.headers['x-api-user'], acct.username);
    assert.deepEqual(JSON.parse(update?.body ?? '{}'), { subdomain: acct.subdomain, txt: V1 });
    assert.ok(!text().includes(acct.password));
  });

  void it('a wrong password is DNS_CREDENTIALS_REJECTED; a name without an account says which CNAME to create', async () => {
    const acct = fake.register();
    const p = new AcmeDnsProvider({ name: 'adns', server: fake.origin, accounts: new Map([['example.net', { ...acct, password: 'not-the-password' }]]), clock: systemClock, log: capturingLog().log });
    const err = await rejection(p.present(`${acct.fulldomain}.`, V1));
    assert.equal(err.code, ErrorCode.DnsCredentialsRejected);
    assert.match(err.message, /update TXT .*: credentials rejected: HTTP 401: forbidden/);
    assert.ok(!err.message.includes('not-the-password'));
    const none = await rejection(p.present('_acme-challenge.other.example.', V1));
    assert.equal(none.code, ErrorCode.DnsProviderFailed);
    assert.match(none.message, new RegExp(`no account for _acme-challenge\\.other\\.example: register one and create the CNAME .*_acme-challenge\\.example\\.net -> ${acct.fulldomain}`));
  });

  void it('retries a 429 after Retry-After on the clock', async () => {
    const acct = fake.register();
    const clock = new ManualClock();
    const p = new AcmeDnsProvider({ name: 'adns', server: fake.origin, accounts: new Map([['example.org', acct]]), clock, log: capturingLog().log });
    fake.rateLimitNext(1);
    const start = clock.now();
    await drive(clock, p.present(`${acct.fulldomain}.`, V1));
    assert.ok(clock.now() - start >= 3000);
    assert.deepEqual(fake.txt.get(acct.fulldomain), [V1]);
  });
});

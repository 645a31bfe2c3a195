/**
 * The ACME adapter against a real CA (Debian's Pebble) and, for answers Pebble cannot
 * give (rate limits, 5xx, endless badNonce), a small HTTP server speaking just enough
 * ACME. HTTP-01 is answered by a throwaway server on 127.0.0.2, as agents will.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import {
  createAcmeClient,
  createCsr,
  generateAccountKey,
  generateKey,
  observeAcmeRequests,
  type AcmeClient,
  type AcmeOrder,
} from '../../controller/acme/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { createRootLogger, silentLogger } from '../../shared/log/index.js';
import { ManualClock, systemClock } from '../../shared/clock/index.js';
import { freePort } from '../harness/process.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';

const CHALLENGE_IP = '127.0.0.2';
const log = silentLogger();

/** Answers /.well-known/acme-challenge/<token> from `keyAuths`, counting hits per token. */
interface ChallengeServer {
  port: number;
  keyAuths: Map<string, string>;
  hits: Map<string, number>;
  close(): Promise<void>;
}

async function startChallengeServer(): Promise<ChallengeServer> {
  const port = await freePort(CHALLENGE_IP);
  const keyAuths = new Map<string, string>();
  const hits = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const m = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
    const token = m?.[1];
    const answer = token === undefined ? undefined : keyAuths.get(token);
    if (token === undefined || answer === undefined) {
      res.writeHead(404).end();
      return;
    }
    hits.set(token, (hits.get(token) ?? 0) + 1);
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(answer);
  });
  server.listen(port, CHALLENGE_IP);
  await once(server, 'listening');
  return {
    port,
    keyAuths,
    hits,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Serves, accepts and waits for every http-01 challenge of `order`. */
async function passChallenges(client: AcmeClient, order: AcmeOrder, challenges: ChallengeServer): Promise<string[]> {
  const tokens: string[] = [];
  for (const authz of order.authorizations) {
    const ch = authz.challenges.find((c) => c.type === 'http-01');
    assert.ok(ch, `no http-01 challenge for ${authz.identifier.value}`);
    challenges.keyAuths.set(ch.token, await client.keyAuthorization(ch.token));
    tokens.push(ch.token);
    await client.acceptChallenge(ch.url);
  }
  await Promise.all(order.authorizations.map((a) => client.waitForAuthorization(a.url, AbortSignal.timeout(30_000))));
  return tokens;
}

async function issue(client: AcmeClient, order: AcmeOrder, names: string[], challenges: ChallengeServer) {
  const tokens = await passChallenges(client, order, challenges);
  const keyPem = await generateKey('ecdsa-p256');
  const finalized = await client.finalize(order, await createCsr(keyPem, names));
  const cert = await client.downloadCertificate(finalized);
  return { ...cert, keyPem, tokens, finalized };
}

function sans(certPem: string): string[] {
  return (new X509Certificate(certPem).subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, '')).sort();
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail('expected a rejection');
}

void describe('ACME adapter against Pebble', () => {
  let challenges: ChallengeServer;
  let pebble: PebbleHandle;
  const clients: AcmeClient[] = [];
  const client = (opts: { accountKeyPem: string; accountUrl?: string; caPem?: string; directoryUrl?: string }): AcmeClient => {
    const c = createAcmeClient({
      directoryUrl: opts.directoryUrl ?? pebble.directoryUrl,
      caPem: opts.caPem ?? pebble.caPem,
      accountKeyPem: opts.accountKeyPem,
      ...(opts.accountUrl === undefined ? {} : { accountUrl: opts.accountUrl }),
      email: 'ops@certfleet.test',
      log,
    });
    clients.push(c);
    return c;
  };

  before(async () => {
    challenges = await startChallengeServer();
    pebble = await startPebble({ httpPort: challenges.port });
  });
  after(async () => {
    for (const c of clients) c.close();
    await pebble?.stop();
    await challenges?.close();
  });

  void it('issues a certificate for two names over HTTP-01 whose leaf carries both names and chains to Pebble’s root', async () => {
    const names = ['a.issue.certfleet.test', 'b.issue.certfleet.test'];
    for (const n of names) await pebble.addA(n, CHALLENGE_IP);
    const c = client({ accountKeyPem: await generateAccountKey() });
    await c.ensureAccount();
    const order = await c.placeOrder(names);
    assert.equal(order.status, 'pending');
    assert.deepEqual(order.identifiers.map((i) => i.value).sort(), names);
    assert.equal(order.authorizations.length, 2);

    const { certPem, chainPem, keyPem, tokens, finalized } = await issue(c, order, names, challenges);
    assert.equal(finalized.status, 'valid');
    assert.ok(finalized.certificateUrl);
    // Pebble really fetched both answers from our server (no authz reuse, no shortcut).
    for (const t of tokens) assert.ok((challenges.hits.get(t) ?? 0) >= 1, `token ${t} never fetched`);

    const leaf = new X509Certificate(certPem);
    assert.deepEqual(sans(certPem), names);
    assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)), 'leaf is for the key we made the CSR with');
    assert.match(certPem, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    assert.equal(certPem.match(/BEGIN CERTIFICATE/g)?.length, 1, 'certPem is the leaf only');

    const intermediates = chainPem.split(/(?<=-----END CERTIFICATE-----\n)/).filter((p) => p.trim() !== '');
    assert.ok(intermediates.length >= 1, 'chain holds the intermediate');
    const root = new X509Certificate(await pebble.rootsPem());
    let child = leaf;
    for (const pem of intermediates) {
      const issuer = new X509Certificate(pem);
      assert.ok(child.checkIssued(issuer) && child.verify(issuer.publicKey), `${child.subject} not signed by ${issuer.subject}`);
      child = issuer;
    }
    assert.ok(child.checkIssued(root) && child.verify(root.publicKey), 'chain does not end at Pebble’s root');
    // And not trivially: the leaf is not signed by the root directly.
    assert.equal(leaf.verify(root.publicKey), false);
  });

  void it('writes no info line per ACME step: placing, finalizing and downloading an order are debug lines (issue #13)', async () => {
    const names = ['steps.issue.certfleet.test'];
    for (const n of names) await pebble.addA(n, CHALLENGE_IP);
    const lines: Array<{ level: number; msg: string }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as { level: number; msg: string });
        done();
      },
    });
    const c = createAcmeClient({
      directoryUrl: pebble.directoryUrl,
      caPem: pebble.caPem,
      accountKeyPem: await generateAccountKey(),
      log: createRootLogger({ name: 'controller', level: 'debug', destination: sink }),
    });
    clients.push(c);
    await c.ensureAccount();
    const mark = lines.length;
    const order = await c.placeOrder(names);
    await issue(c, order, names, challenges);
    await new Promise((r) => setImmediate(r));
    const steps = lines.slice(mark);
    assert.deepEqual(steps.filter((l) => l.level >= 30).map((l) => l.msg), [], 'nothing at info or above');
    for (const msg of ['order placed', 'order finalized', 'certificate downloaded']) assert.ok(steps.some((l) => l.msg === msg), `${msg} is a debug line`);
  });

  void it('revokes a certificate with the account key and a reason; a second revoke is answered alreadyRevoked, not an error', async () => {
    const names = ['revoke.certfleet.test'];
    for (const n of names) await pebble.addA(n, CHALLENGE_IP);
    const c = client({ accountKeyPem: await generateAccountKey() });
    await c.ensureAccount();
    const { certPem } = await issue(c, await c.placeOrder(names), names, challenges);
    const serial = new X509Certificate(certPem).serialNumber.toLowerCase();
    assert.equal((await pebble.certStatus(serial)).Status, 'Valid');
    assert.deepEqual(await c.revokeCertificate(certPem, 4), { alreadyRevoked: false });
    const status = await pebble.certStatus(serial);
    assert.deepEqual([status.Status, status.Reason], ['Revoked', 4]);
    assert.deepEqual(await c.revokeCertificate(certPem, 4), { alreadyRevoked: true });
    // An account that did not order it (and holds no authorization for its names) is refused with the CA's problem.
    const stranger = client({ accountKeyPem: await generateAccountKey() });
    await stranger.ensureAccount();
    const { certPem: other } = await issue(c, await c.placeOrder(names), names, challenges);
    const err = await rejection(stranger.revokeCertificate(other, 0));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.equal((await pebble.certStatus(new X509Certificate(other).serialNumber)).Status, 'Valid');
  });

  void it('finds the account created once again from the same key, and a different key gets a different account', async () => {
    const key = await generateAccountKey();
    const first = await client({ accountKeyPem: key }).ensureAccount();
    const again = await client({ accountKeyPem: key }).ensureAccount();
    const pinned = await client({ accountKeyPem: key, accountUrl: first.accountUrl }).ensureAccount();
    const other = await client({ accountKeyPem: await generateAccountKey() }).ensureAccount();
    assert.match(first.accountUrl, /^https:\/\/127\.0\.0\.1:\d+\//);
    assert.equal(again.accountUrl, first.accountUrl);
    assert.equal(pinned.accountUrl, first.accountUrl);
    assert.notEqual(other.accountUrl, first.accountUrl);
  });

  void it('finds its account again by URL when no email is configured: a POST-as-GET, never an empty update the CA refuses', async () => {
    // The quick start sets no email; Pebble answers an update without changes with 400
    // malformed ("Use POST-as-GET ..."), which stopped the controller from restarting.
    const key = await generateAccountKey();
    const noEmail = (accountUrl?: string): AcmeClient => {
      const c = createAcmeClient({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, accountKeyPem: key, ...(accountUrl ? { accountUrl } : {}), log });
      clients.push(c);
      return c;
    };
    const first = await noEmail().ensureAccount();
    const second = await noEmail(first.accountUrl).ensureAccount();
    const third = await noEmail(second.accountUrl).ensureAccount();
    const found = await noEmail().ensureAccount();
    assert.equal(second.accountUrl, first.accountUrl);
    assert.equal(third.accountUrl, first.accountUrl);
    assert.equal(found.accountUrl, first.accountUrl);
    // With an email configured later, the same account gets the contact.
    const withEmail = await client({ accountKeyPem: key, accountUrl: first.accountUrl }).ensureAccount();
    assert.equal(withEmail.accountUrl, first.accountUrl);
  });

  void it('reads back the same order by URL after a restart (new client, same account key) and completes it', async () => {
    const names = ['resume.certfleet.test'];
    await pebble.addA(names[0]!, CHALLENGE_IP);
    const key = await generateAccountKey();
    const before = client({ accountKeyPem: key });
    const { accountUrl } = await before.ensureAccount();
    const placed = await before.placeOrder(names);
    before.close();

    // "Restart": only the account key, account URL and order URL survived.
    const after = client({ accountKeyPem: key, accountUrl });
    const resumed = await after.getOrder(placed.url);
    assert.equal(resumed.url, placed.url);
    assert.equal(resumed.status, 'pending');
    assert.equal(resumed.finalizeUrl, placed.finalizeUrl);
    assert.deepEqual(resumed.identifiers, placed.identifiers);
    assert.deepEqual(
      resumed.authorizations.map((a) => [a.url, a.identifier.value, a.challenges.map((ch) => ch.token).sort()]),
      placed.authorizations.map((a) => [a.url, a.identifier.value, a.challenges.map((ch) => ch.token).sort()]),
    );
    const { certPem } = await issue(after, resumed, names, challenges);
    assert.deepEqual(sans(certPem), names);
  });

  void it('issues three certificates over one kept-alive connection, signing with the nonces the CA’s answers carry (no newNonce per request)', async () => {
    // A TCP relay in front of Pebble counts the connections the client opens. Pebble names
    // the relay in every URL it hands out (it builds them from the Host header), so every
    // request of the client goes through it. Before: 8 connections per certificate (each
    // HEAD newNonce, which Pebble answers and closes) and a newNonce before every signed
    // request.
    const upstream = new URL(pebble.directoryUrl);
    let connections = 0;
    const relay = net.createServer((down) => {
      connections++;
      const up = net.connect(Number(upstream.port), upstream.hostname);
      down.pipe(up).pipe(down);
      down.on('error', () => up.destroy());
      up.on('error', () => down.destroy());
    });
    relay.listen(0, '127.0.0.1');
    await once(relay, 'listening');
    const endpoints: string[] = [];
    observeAcmeRequests((r) => endpoints.push(r.endpoint));
    try {
      const c = client({ accountKeyPem: await generateAccountKey(), directoryUrl: `https://127.0.0.1:${(relay.address() as net.AddressInfo).port}${upstream.pathname}` });
      await c.ensureAccount();
      for (let i = 0; i < 3; i++) {
        const names = [`keepalive${i}.certfleet.test`];
        await pebble.addA(names[0]!, CHALLENGE_IP);
        const { certPem } = await issue(c, await c.placeOrder(names), names, challenges);
        assert.deepEqual(sans(certPem), names);
      }
      assert.equal(connections, 1, 'one TCP (and TLS) connection for the account and three issuances');
      assert.equal(endpoints.filter((e) => e === 'newNonce').length, 1, `only the first signed request asks newNonce: ${endpoints.join(' ')}`);
    } finally {
      observeAcmeRequests(undefined);
      relay.close();
    }
  });

  void it('looks at an authorization first after the first poll delay on its clock, not at once after the challenge is accepted', async () => {
    const clock = new ManualClock();
    const c = createAcmeClient({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, accountKeyPem: await generateAccountKey(), log, clock, pollMinDelayMs: 250 });
    clients.push(c);
    await c.ensureAccount();
    await pebble.addA('first-poll.certfleet.test', CHALLENGE_IP);
    const order = await c.placeOrder(['first-poll.certfleet.test']);
    const authz = order.authorizations[0]!;
    const ch = authz.challenges.find((x) => x.type === 'http-01')!;
    challenges.keyAuths.set(ch.token, await c.keyAuthorization(ch.token));
    await c.acceptChallenge(ch.url);
    // Let the CA finish validating (real time), so that the one look the wait makes finds it valid.
    while ((await c.getOrder(order.url)).authorizations[0]!.status === 'pending') await systemClock.sleep(20);
    const looks: string[] = [];
    observeAcmeRequests((r) => {
      if (r.url === authz.url) looks.push(r.endpoint);
    });
    try {
      let settled = false;
      const waiting = c.waitForAuthorization(authz.url).finally(() => (settled = true));
      for (let i = 0; i < 200 && !settled && clock.pendingTimers === 0; i++) await new Promise((r) => setImmediate(r));
      assert.deepEqual(looks, [], 'no request before the first delay');
      assert.equal(settled, false);
      assert.equal(clock.nextDue(), clock.now() + 250, 'waiting for the first poll delay on the injected clock');
      clock.advance(250);
      await waiting;
      assert.deepEqual(looks, ['authz'], 'one look, after the delay');
    } finally {
      observeAcmeRequests(undefined);
    }
  });

  void it('waits for the last authorization through the order and finalizes the ready order without reading it again', async () => {
    const names = ['order-wait.certfleet.test'];
    await pebble.addA(names[0]!, CHALLENGE_IP);
    const c = client({ accountKeyPem: await generateAccountKey() });
    await c.ensureAccount();
    const order = await c.placeOrder(names);
    const authz = order.authorizations[0]!;
    const ch = authz.challenges.find((x) => x.type === 'http-01')!;
    challenges.keyAuths.set(ch.token, await c.keyAuthorization(ch.token));
    const requests: string[] = [];
    let atReady = -1;
    observeAcmeRequests((r) => requests.push(`${r.method} ${r.endpoint}`));
    try {
      await c.acceptChallenge(ch.url);
      const ready = await c.waitForOrder(order, AbortSignal.timeout(30_000));
      assert.equal(ready.status, 'ready');
      assert.equal(ready.authorizations, order.authorizations, 'the authorizations as passed (not read again)');
      atReady = requests.length;
      const finalized = await c.finalize(ready, await createCsr(await generateKey('ecdsa-p256'), names));
      assert.equal(finalized.status, 'valid');
      const { certPem } = await c.downloadCertificate(finalized);
      assert.deepEqual(sans(certPem), names);
    } finally {
      observeAcmeRequests(undefined);
    }
    assert.ok(!requests.includes('post authz'), `the authorization is not polled: ${requests.join(', ')}`);
    // Before finalize: the challenge, then looks at the order only.
    assert.deepEqual(
      requests.slice(0, atReady).filter((r) => r !== 'post order'),
      ['post challenge'],
      `only the challenge and order looks before finalize: ${requests.join(', ')}`,
    );
    assert.ok(atReady >= 2, `the order was looked at: ${requests.join(', ')}`);
    // The look that found it ready is not repeated: finalize is the next request.
    assert.equal(requests[atReady], 'post finalize', `finalize right after the ready look: ${requests.join(', ')}`);
  });

  void it('reports a failed validation found through the order as ACME_PROBLEM with the challenge’s problem, like the authorization wait', async () => {
    const name = 'unserved-order.certfleet.test';
    await pebble.addA(name, '127.0.0.3'); // nothing listens there
    const c = client({ accountKeyPem: await generateAccountKey() });
    await c.ensureAccount();
    const order = await c.placeOrder([name]);
    const authz = order.authorizations[0]!;
    await c.acceptChallenge(authz.challenges.find((x) => x.type === 'http-01')!.url);
    const err = await rejection(c.waitForOrder(order, AbortSignal.timeout(30_000)));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.equal(err.details['type'], 'urn:ietf:params:acme:error:connection');
    assert.equal(err.details['identifier'], name);
    assert.equal(err.details['challengeType'], 'http-01');
    assert.equal(err.details['url'], authz.url, 'names the failed authorization');
    assert.match(err.message, new RegExp(`authorization for ${name.replace(/\./g, '\\.')} failed: .+`));
    assert.equal(err.retryable, false);
  });

  void it('stops waiting for a pending authorization with ACME_TIMEOUT at the poll deadline or when aborted', async () => {
    const c = createAcmeClient({
      directoryUrl: pebble.directoryUrl,
      caPem: pebble.caPem,
      accountKeyPem: await generateAccountKey(),
      log,
      pollTimeoutMs: 300,
    });
    clients.push(c);
    await c.ensureAccount();
    // Nobody accepts the challenge, so the authorization stays pending.
    const order = await c.placeOrder(['never-accepted.certfleet.test']);
    const authzUrl = order.authorizations[0]!.url;
    const deadline = await rejection(c.waitForAuthorization(authzUrl));
    assert.ok(isCertfleetError(deadline, ErrorCode.AcmeTimeout), String(deadline));
    assert.equal(deadline.details['status'], 'pending');
    assert.equal(deadline.retryable, true);
    const ac = new AbortController();
    const waiting = rejection(c.waitForAuthorization(authzUrl, ac.signal));
    ac.abort();
    const aborted = await waiting;
    assert.ok(isCertfleetError(aborted, ErrorCode.AcmeTimeout), String(aborted));
    assert.equal(aborted.details['reason'], 'aborted');
  });

  void it('reports a failed validation as ACME_PROBLEM carrying the CA’s problem type', async () => {
    const name = 'unserved.certfleet.test';
    await pebble.addA(name, '127.0.0.3'); // nothing listens there
    const c = client({ accountKeyPem: await generateAccountKey() });
    await c.ensureAccount();
    const order = await c.placeOrder([name]);
    const authz = order.authorizations[0]!;
    const ch = authz.challenges.find((x) => x.type === 'http-01')!;
    await c.acceptChallenge(ch.url);
    const err = await rejection(c.waitForAuthorization(authz.url));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.equal(err.details['type'], 'urn:ietf:params:acme:error:connection');
    assert.equal(err.details['identifier'], name);
    assert.equal(err.retryable, false);
    // The order died with it: finalizing is refused with ACME_ORDER_INVALID.
    const fin = await rejection(c.finalize(order, await createCsr(await generateKey('ecdsa-p256'), [name])));
    assert.ok(isCertfleetError(fin, ErrorCode.AcmeOrderInvalid), String(fin));
  });

  void it('turns a problem document from the CA into ACME_PROBLEM with its type, status and detail', async () => {
    const c = client({ accountKeyPem: await generateAccountKey() });
    await c.ensureAccount();
    const err = await rejection(c.placeOrder(['not_a valid!name']));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.match(String(err.details['type']), /^urn:ietf:params:acme:error:/);
    assert.equal(err.details['status'], 400);
    assert.equal(typeof err.details['detail'], 'string');
    assert.equal(err.retryable, false);
  });

  void it('fails with ACME_TRANSPORT, not a TypeError, when the CA’s certificate is not from the pinned CA', async () => {
    // Pebble's issuing root is a real CA certificate, just not the one behind its HTTPS.
    const c = client({ accountKeyPem: await generateAccountKey(), caPem: await pebble.rootsPem() });
    const err = await rejection(c.ensureAccount());
    assert.ok(!(err instanceof TypeError), `TypeError escaped: ${String(err)}`);
    assert.ok(isCertfleetError(err, ErrorCode.AcmeTransport), String(err));
    assert.equal(err.retryable, true);
    assert.ok(err.cause instanceof Error);
    assert.equal(typeof err.details['errno'], 'string');
  });

  void it('fails with ACME_TRANSPORT at once when nothing listens at the directory URL', async () => {
    const port = await freePort();
    const c = client({ accountKeyPem: await generateAccountKey(), directoryUrl: `https://127.0.0.1:${port}/dir` });
    const err = await rejection(c.ensureAccount());
    assert.ok(isCertfleetError(err, ErrorCode.AcmeTransport), String(err));
    assert.equal(err.details['errno'], 'ECONNREFUSED');
  });
});

void describe('ACME adapter against a CA that forgets its accounts while the client runs', () => {
  let challenges: ChallengeServer;
  let pebble: PebbleHandle;
  let c: AcmeClient | undefined;
  before(async () => {
    challenges = await startChallengeServer();
    pebble = await startPebble({ httpPort: challenges.port });
  });
  after(async () => {
    c?.close();
    await pebble?.stop();
    await challenges?.close();
  });

  void it('registers the same key again on accountDoesNotExist, reports the new URL, and the order that found out goes through', async () => {
    const names = ['forgotten.certfleet.test'];
    await pebble.addA(names[0]!, CHALLENGE_IP);
    const changed: string[] = [];
    c = createAcmeClient({
      directoryUrl: pebble.directoryUrl,
      caPem: pebble.caPem,
      accountKeyPem: await generateAccountKey(),
      log,
      onAccountChanged: (url) => {
        changed.push(url);
      },
    });
    const { accountUrl } = await c.ensureAccount();
    assert.ok(accountUrl);
    // Pebble keeps accounts in memory: after a restart it answers accountDoesNotExist.
    await pebble.restart();
    const order = await c.placeOrder(names);
    assert.equal(order.status, 'pending');
    assert.equal(changed.length, 1, 'the new account URL was reported once');
    const { certPem } = await issue(c, order, names, challenges);
    assert.deepEqual(sans(certPem), names);
  });
});

void describe('ACME adapter against Pebble rejecting half of all nonces', () => {
  let challenges: ChallengeServer;
  let pebble: PebbleHandle;
  let c: AcmeClient | undefined;
  before(async () => {
    challenges = await startChallengeServer();
    pebble = await startPebble({ httpPort: challenges.port, nonceReject: 50 });
  });
  after(async () => {
    c?.close();
    await pebble?.stop();
    await challenges?.close();
  });

  void it('still issues: badNonce answers are retried with the fresh nonce', async () => {
    const names = ['nonce.certfleet.test'];
    await pebble.addA(names[0]!, CHALLENGE_IP);
    c = createAcmeClient({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, accountKeyPem: await generateAccountKey(), log });
    await c.ensureAccount();
    const order = await c.placeOrder(names);
    const { certPem } = await issue(c, order, names, challenges);
    assert.deepEqual(sans(certPem), names);
  });
});

/**
 * A CA double for answers Pebble never gives. Plain http; the account step succeeds,
 * newOrder answers whatever `orderAnswer` says, and every request is counted.
 */
void describe('ACME adapter against a CA that refuses orders', () => {
  let server: http.Server;
  let base: string;
  let orderAnswer: { status: number; headers: Record<string, string>; body: unknown } = { status: 500, headers: {}, body: {} };
  let badNonceAlways = false;
  const counts = { newOrder: 0, newAccount: 0 };
  let c: AcmeClient | undefined;
  let nonce = 0;

  before(async () => {
    server = http.createServer((req, res) => {
      const headers = { 'replay-nonce': `nonce-${++nonce}` };
      const path = req.url ?? '';
      req.resume();
      if (path === '/dir') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ newNonce: `${base}/nonce`, newAccount: `${base}/acct`, newOrder: `${base}/order` }),
        );
      } else if (path === '/nonce') {
        res.writeHead(200, headers).end();
      } else if (badNonceAlways) {
        res
          .writeHead(400, { ...headers, 'content-type': 'application/problem+json' })
          .end(JSON.stringify({ type: 'urn:ietf:params:acme:error:badNonce', detail: 'JWS has an invalid anti-replay nonce', status: 400 }));
      } else if (path === '/acct') {
        counts.newAccount++;
        res.writeHead(201, { ...headers, location: `${base}/acct/1`, 'content-type': 'application/json' }).end(JSON.stringify({ status: 'valid' }));
      } else if (path === '/order') {
        counts.newOrder++;
        res.writeHead(orderAnswer.status, { ...headers, 'content-type': 'application/problem+json', ...orderAnswer.headers }).end(JSON.stringify(orderAnswer.body));
      } else {
        res.writeHead(404).end();
      }
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const addr = server.address();
    assert.ok(addr !== null && typeof addr === 'object');
    base = `http://127.0.0.1:${addr.port}`;
    c = createAcmeClient({ directoryUrl: `${base}/dir`, accountKeyPem: await generateAccountKey(), log });
    await c.ensureAccount();
  });
  after(async () => {
    c?.close();
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });

  void it('reports rateLimited as ACME_RATE_LIMITED with Retry-After in ms, after one request and no sleep', async () => {
    counts.newOrder = 0;
    orderAnswer = {
      status: 429,
      headers: { 'retry-after': '3600' },
      body: { type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many certificates for this exact set of identifiers', status: 429 },
    };
    const err = await rejection(c!.placeOrder(['x.certfleet.test']));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeRateLimited), String(err));
    assert.equal(err.retryable, true);
    assert.equal(err.retryAfterMs, 3_600_000);
    assert.equal(err.details['type'], 'urn:ietf:params:acme:error:rateLimited');
    assert.match(String(err.details['detail']), /exact set/);
    assert.equal(counts.newOrder, 1, 'the adapter must not retry on its own');
  });

  void it('reports a 503 problem as retryable ACME_PROBLEM without retrying it', async () => {
    counts.newOrder = 0;
    orderAnswer = {
      status: 503,
      headers: { 'retry-after': '7' },
      body: { type: 'urn:ietf:params:acme:error:serverInternal', detail: 'down for maintenance', status: 503 },
    };
    const err = await rejection(c!.placeOrder(['x.certfleet.test']));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.equal(err.retryable, true);
    assert.equal(err.retryAfterMs, 7000);
    assert.equal(err.details['status'], 503);
    assert.equal(counts.newOrder, 1);
  });

  void it('gives up on endless badNonce answers with a retryable ACME_PROBLEM of type badNonce', async () => {
    badNonceAlways = true;
    try {
      const err = await rejection(c!.placeOrder(['x.certfleet.test']));
      assert.ok(err instanceof CertfleetError && err.code === ErrorCode.AcmeProblem, String(err));
      assert.equal(err.details['type'], 'urn:ietf:params:acme:error:badNonce');
      assert.equal(err.retryable, true);
    } finally {
      badNonceAlways = false;
    }
  });
});

/**
 * ACME profiles (draft-ietf-acme-profiles) against a real CA: Debian's Pebble 2.4 has no
 * profiles, so test/harness/acme-proxy.ts advertises them in the directory, refuses an
 * unknown one with invalidProfile and echoes the profile in the order objects, as a CA
 * with the extension does; Pebble still issues the certificate. The no-profiles side is
 * Pebble itself. HTTP-01 is answered by a throwaway server on 127.0.0.2.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import {
  PROBLEM_INVALID_PROFILE,
  createAcmeClient,
  createCsr,
  generateAccountKey,
  generateKey,
  profileProblems,
  type AcmeClient,
  type AcmeOrder,
} from '../../controller/acme/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { freePort } from '../harness/process.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../harness/acme-proxy.js';

const CHALLENGE_IP = '127.0.0.2';
const PROFILES = { classic: 'The same profile you are used to', shortlived: 'Like classic, valid for days' };
const log = silentLogger();

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail('expected a rejection');
}

void describe('ACME profiles through a profile-advertising proxy in front of Pebble', () => {
  let pebble: PebbleHandle;
  let proxy: AcmeProxy;
  let challengeServer: http.Server;
  const keyAuths = new Map<string, string>();
  const clients: AcmeClient[] = [];
  let accountKeyPem: string;

  const client = (directoryUrl: string, caPem: string): AcmeClient => {
    const c = createAcmeClient({ directoryUrl, caPem, accountKeyPem, log });
    clients.push(c);
    return c;
  };

  async function complete(c: AcmeClient, o: AcmeOrder, names: string[]): Promise<AcmeOrder> {
    for (const authz of o.authorizations) {
      const ch = authz.challenges.find((x) => x.type === 'http-01');
      assert.ok(ch, 'no http-01 challenge');
      keyAuths.set(ch.token, await c.keyAuthorization(ch.token));
      await c.acceptChallenge(ch.url);
    }
    await Promise.all(o.authorizations.map((a) => c.waitForAuthorization(a.url, AbortSignal.timeout(30_000))));
    return c.finalize(o, await createCsr(await generateKey('ecdsa-p256'), names));
  }

  before(async () => {
    const port = await freePort(CHALLENGE_IP);
    challengeServer = http.createServer((req, res) => {
      const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '')?.[1];
      const answer = token === undefined ? undefined : keyAuths.get(token);
      if (answer === undefined) res.writeHead(404).end();
      else res.writeHead(200).end(answer);
    });
    challengeServer.listen(port, CHALLENGE_IP);
    await once(challengeServer, 'listening');
    pebble = await startPebble({ httpPort: port });
    proxy = await startAcmeProxy({ pebble, profiles: PROFILES });
    accountKeyPem = await generateAccountKey();
    await client(proxy.directoryUrl, proxy.caPem).ensureAccount();
  });
  after(async () => {
    for (const c of clients) c.close();
    await proxy?.stop();
    await pebble?.stop();
    challengeServer?.closeAllConnections();
    challengeServer?.close();
  });

  void it('reads the profiles the directory advertises, and none from bare Pebble 2.4', async () => {
    assert.deepEqual(await client(proxy.directoryUrl, proxy.caPem).profiles(), PROFILES);
    assert.equal(await client(pebble.directoryUrl, pebble.caPem).profiles(), undefined);
  });

  void it('sends the profile in newOrder and reads it back from the order objects through to the valid order', async () => {
    const c = client(proxy.directoryUrl, proxy.caPem);
    await c.ensureAccount();
    const names = ['profile-short.certfleet.test'];
    await pebble.addA(names[0]!, CHALLENGE_IP);
    const before = proxy.newOrders().length;
    const order = await c.placeOrder(names, { profile: 'shortlived' });
    const sent = proxy.newOrders().slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]?.profile, 'shortlived');
    assert.equal(sent[0]?.status, 201);
    assert.equal(order.profile, 'shortlived');
    assert.equal((await c.getOrder(order.url)).profile, 'shortlived');
    const valid = await complete(c, order, names);
    assert.equal(valid.status, 'valid');
    assert.equal(valid.profile, 'shortlived');
    assert.ok((await c.downloadCertificate(valid)).certPem.includes('BEGIN CERTIFICATE'));
  });

  void it('sends no profile when none is asked for', async () => {
    const c = client(proxy.directoryUrl, proxy.caPem);
    await c.ensureAccount();
    const before = proxy.newOrders().length;
    const order = await c.placeOrder(['profile-none.certfleet.test']);
    assert.equal(order.profile, undefined);
    const sent = proxy.newOrders().slice(before);
    assert.equal(sent.length, 1);
    assert.equal('profile' in (sent[0]?.payload ?? {}), false);
  });

  void it('a profile the CA does not offer is refused with invalidProfile, a permanent error naming the profile', async () => {
    const c = client(proxy.directoryUrl, proxy.caPem);
    await c.ensureAccount();
    const err = await rejection(c.placeOrder(['profile-bad.certfleet.test'], { profile: 'forever' }));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.equal(err.details['type'], PROBLEM_INVALID_PROFILE);
    assert.equal(err.details['profile'], 'forever');
    assert.equal(err.retryable, false);
    assert.match(err.message, /refused certificate profile "forever"/);
    assert.equal(proxy.createdOrders().some((o) => o.profile === 'forever'), false, 'no order was created');
  });

  void it('checks configured profiles against what each directory advertises', async () => {
    const wishes = [
      { name: 'web', profile: 'shortlived' },
      { name: 'api', profile: 'forever' },
      { name: 'mail' },
    ];
    const withProfiles = profileProblems(await client(proxy.directoryUrl, proxy.caPem).profiles(), wishes);
    assert.deepEqual(withProfiles, ['certificate api: profile "forever" is not offered by the CA (it offers: classic, shortlived)']);
    const bare = profileProblems(await client(pebble.directoryUrl, pebble.caPem).profiles(), wishes);
    assert.equal(bare.length, 2, bare.join('\n'));
    assert.match(bare[0] ?? '', /^certificate web: profile "shortlived" is set, but the CA advertises no profiles/);
  });
});

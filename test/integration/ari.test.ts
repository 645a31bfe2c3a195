/**
 * ARI (RFC 9773) against a real CA: Debian's Pebble 2.4, which has no renewalInfo, behind
 * test/harness/acme-proxy.ts, which adds one and records every newOrder payload. The
 * no-ARI side is Pebble itself. HTTP-01 is answered by a throwaway server on 127.0.0.2.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import {
  ARI_ERROR_RETRY_MS,
  ARI_JITTER_FRACTION,
  ARI_MIN_RETRY_MS,
  ariCertId,
  createAcmeClient,
  createCsr,
  generateAccountKey,
  generateKey,
  type AcmeClient,
  type AcmeOrder,
} from '../../controller/acme/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { freePort } from '../harness/process.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../harness/acme-proxy.js';
import { tempDir } from '../harness/tmp.js';

const execFileAsync = promisify(execFile);
const CHALLENGE_IP = '127.0.0.2';
const HOUR = 3_600_000;
const log = silentLogger();

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail('expected a rejection');
}

/**
 * The RFC 9773 identifier computed independently of certfleet's DER reader, from what
 * the openssl CLI prints: the AKI keyIdentifier hex, and the serial as a hex number — to
 * which the DER rule adds a 00 byte when the first byte has its high bit set.
 */
async function certIdWithOpenssl(certPem: string): Promise<{ id: string; serialHex: string }> {
  const dir = tempDir('certfleet-ari-openssl-');
  const file = path.join(dir, 'cert.pem');
  fs.writeFileSync(file, certPem);
  const { stdout } = await execFileAsync('openssl', ['x509', '-in', file, '-noout', '-ext', 'authorityKeyIdentifier', '-serial']);
  const aki = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-Fa-f:]+)/.exec(stdout)?.[1];
  const serial = /^serial=([0-9A-Fa-f]+)$/m.exec(stdout)?.[1];
  assert.ok(aki && serial, `unexpected openssl output:\n${stdout}`);
  let serialHex = serial.length % 2 === 1 ? `0${serial}` : serial;
  if (parseInt(serialHex.slice(0, 2), 16) >= 0x80) serialHex = `00${serialHex}`;
  const b64 = (h: string): string => Buffer.from(h.replace(/:/g, ''), 'hex').toString('base64url');
  return { id: `${b64(aki)}.${b64(serialHex)}`, serialHex };
}

void describe('ARI through an ARI-adding proxy in front of Pebble', () => {
  let pebble: PebbleHandle;
  let proxy: AcmeProxy;
  let challengeServer: http.Server;
  const keyAuths = new Map<string, string>();
  const clients: AcmeClient[] = [];
  let account: { accountKeyPem: string; accountUrl: string };

  const proxied = (extra: { accountKeyPem?: string; accountUrl?: string; random?: () => number } = {}): AcmeClient => {
    const c = createAcmeClient({
      directoryUrl: proxy.directoryUrl,
      caPem: proxy.caPem,
      accountKeyPem: extra.accountKeyPem ?? account.accountKeyPem,
      ...(extra.accountUrl === undefined ? {} : { accountUrl: extra.accountUrl }),
      ...(extra.random === undefined ? {} : { random: extra.random }),
      log,
    });
    clients.push(c);
    return c;
  };

  /** Places (or takes) an order through `c` and drives it to a certificate. */
  async function issue(c: AcmeClient, names: string[], order?: AcmeOrder): Promise<string> {
    for (const n of names) await pebble.addA(n, CHALLENGE_IP);
    const o = order ?? (await c.placeOrder(names));
    for (const authz of o.authorizations) {
      // Pebble sometimes hands out an authorization it already validated (RFC 8555 allows
      // reuse; PEBBLE_AUTHZREUSE=0 does not always prevent it): nothing to answer then.
      if (authz.status === 'valid') continue;
      const ch = authz.challenges.find((x) => x.type === 'http-01');
      assert.ok(ch, 'no http-01 challenge');
      keyAuths.set(ch.token, await c.keyAuthorization(ch.token));
      await c.acceptChallenge(ch.url);
    }
    await Promise.all(o.authorizations.map((a) => c.waitForAuthorization(a.url, AbortSignal.timeout(30_000))));
    const keyPem = await generateKey('ecdsa-p256');
    const finalized = await c.finalize(o, await createCsr(keyPem, names));
    return (await c.downloadCertificate(finalized)).certPem;
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
    proxy = await startAcmeProxy({ pebble });
    const accountKeyPem = await generateAccountKey();
    const c = proxied({ accountKeyPem });
    account = { accountKeyPem, accountUrl: (await c.ensureAccount()).accountUrl };
  });
  after(async () => {
    for (const c of clients) c.close();
    await proxy?.stop();
    await pebble?.stop();
    challengeServer?.closeAllConnections();
    challengeServer?.close();
  });

  void it('finds renewalInfo in the directory through the proxy, and none on bare Pebble 2.4', async () => {
    assert.equal(await proxied().renewalInfoUrl(), proxy.renewalInfoUrl);
    assert.ok(account.accountUrl.startsWith(new URL(proxy.directoryUrl).origin), `account URL ${account.accountUrl} does not name the proxy`);

    const bare = createAcmeClient({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, accountKeyPem: account.accountKeyPem, log });
    clients.push(bare);
    assert.equal(await bare.renewalInfoUrl(), undefined);
    const err = await rejection(bare.getRenewalInfo('aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE'));
    assert.ok(isCertfleetError(err, ErrorCode.AcmeProblem), String(err));
    assert.equal(err.details['reason'], 'renewalInfoUnsupported');
    assert.equal(err.retryable, false);
  });

  void it('issues through the proxy a certificate whose ARI identifier matches what openssl’s fields give, and reads the window set for it', async () => {
    const c = proxied({ accountUrl: account.accountUrl, random: () => 0.5 });
    const certPem = await issue(c, ['ari-first.certfleet.test']);
    const id = ariCertId(certPem);
    const viaOpenssl = await certIdWithOpenssl(certPem);
    assert.equal(id, viaOpenssl.id);
    // Node drops a leading 00; ours must not (whichever case Pebble's random serial hit).
    assert.equal(Buffer.from(id.split('.')[1]!, 'base64url').toString('hex').toUpperCase(), viaOpenssl.serialHex.toUpperCase());

    const start = Date.UTC(2030, 0, 2, 4);
    const end = Date.UTC(2030, 0, 3, 4);
    proxy.setWindow(id, { start, end, explanationUrl: 'https://ca.example/why', retryAfter: '7200' });
    const before = proxy.renewalInfoRequests(id);
    const byPem = await c.getRenewalInfo(certPem);
    assert.deepEqual(byPem.window, { start, end });
    assert.equal(byPem.explanationUrl, 'https://ca.example/why');
    // Retry-After 7200 s, jittered later by half of the 10 % allowance.
    assert.equal(byPem.retryAfterMs, 2 * HOUR + Math.floor(2 * HOUR * ARI_JITTER_FRACTION * 0.5));
    const byId = await c.getRenewalInfo(id);
    assert.deepEqual(byId.window, { start, end });
    assert.equal(proxy.renewalInfoRequests(id), before + 2, 'each call is one GET to the CA');
  });

  void it('clamps a one-minute Retry-After to an hour and treats a missing one as a six-hour long-term error', async () => {
    const c = proxied({ random: () => 0 });
    proxy.setWindow('AQID.AQ', { start: Date.UTC(2030, 0, 1), end: Date.UTC(2030, 0, 2), retryAfter: '60' });
    assert.equal((await c.getRenewalInfo('AQID.AQ')).retryAfterMs, ARI_MIN_RETRY_MS);
    proxy.setWindow('AQID.AQ', { start: Date.UTC(2030, 0, 1), end: Date.UTC(2030, 0, 2), retryAfter: null });
    assert.equal((await c.getRenewalInfo('AQID.AQ')).retryAfterMs, ARI_ERROR_RETRY_MS);
  });

  void it('turns an invalid window and an unknown certificate into retryable ACME_PROBLEMs to retry in about six hours', async () => {
    const c = proxied({ random: () => 0 });
    proxy.setWindow('AQID.Ag', { start: '2030-01-02T00:00:00Z', end: '2030-01-01T00:00:00Z' });
    const invalid = await rejection(c.getRenewalInfo('AQID.Ag'));
    assert.ok(isCertfleetError(invalid, ErrorCode.AcmeProblem), String(invalid));
    assert.equal(invalid.details['reason'], 'invalidRenewalInfo');
    assert.equal(invalid.retryable, true);
    assert.equal(invalid.retryAfterMs, ARI_ERROR_RETRY_MS);

    const unknown = await rejection(c.getRenewalInfo('AQID.Aw'));
    assert.ok(isCertfleetError(unknown, ErrorCode.AcmeProblem), String(unknown));
    assert.equal(unknown.details['status'], 404);
    assert.equal(unknown.retryable, true);
    assert.equal(unknown.retryAfterMs, ARI_ERROR_RETRY_MS);

    const malformed = await rejection(c.getRenewalInfo('not an id'));
    assert.ok(isCertfleetError(malformed, ErrorCode.UsageInvalid), String(malformed));
  });

  void it('sends replaces in the newOrder payload, and Pebble 2.4 still issues the renewal', async () => {
    const c = proxied({ accountUrl: account.accountUrl });
    const names = ['ari-renew.certfleet.test'];
    const oldPem = await issue(c, names);
    const oldId = ariCertId(oldPem);
    const seen = proxy.newOrders().length;

    const order = await c.placeOrder(names, { replaces: oldId });
    const sent = proxy.newOrders().slice(seen);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.replaces, oldId);
    assert.deepEqual(sent[0]!.identifiers, [{ type: 'dns', value: names[0] }]);
    // Pebble 2.4 ignores the field: it accepts the order and does not echo it (RFC 9773
    // §5 says an ARI CA MUST); certfleet only reports what the CA reflects.
    assert.equal(order.replaces, undefined);

    const newPem = await issue(c, names, order);
    assert.notEqual(ariCertId(newPem), oldId);
    assert.deepEqual(new X509Certificate(newPem).subjectAltName, `DNS:${names[0]}`);

    // A plain order carries no replaces.
    await c.placeOrder(['ari-plain.certfleet.test']);
    const plain = proxy.newOrders().at(-1);
    assert.equal(plain?.replaces, undefined);
    assert.equal('replaces' in (plain?.payload ?? {}), false);
  });

  void it('counts a resumed order as no new newOrder: getOrder and finalize after a restart place none', async () => {
    const names = ['ari-resume.certfleet.test'];
    const first = proxied({ accountUrl: account.accountUrl });
    const placed = await first.placeOrder(names);
    const count = proxy.newOrders().length;
    first.close();
    const restarted = proxied({ accountUrl: account.accountUrl });
    const resumed = await restarted.getOrder(placed.url);
    const certPem = await issue(restarted, names, resumed);
    assert.deepEqual(new X509Certificate(certPem).subjectAltName, `DNS:${names[0]}`);
    assert.equal(proxy.newOrders().length, count);
  });

  void it('refuses a malformed replaces before sending anything', async () => {
    const c = proxied({ accountUrl: account.accountUrl });
    const count = proxy.newOrders().length;
    const err = await rejection(c.placeOrder(['x.certfleet.test'], { replaces: 'not an id' }));
    assert.ok(isCertfleetError(err, ErrorCode.UsageInvalid), String(err));
    assert.equal(proxy.newOrders().length, count);
  });
});

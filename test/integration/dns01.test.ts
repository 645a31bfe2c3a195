/**
 * DNS-01 end to end against real servers: BIND `named` with TSIG-protected dynamic zones
 * (test/harness/bind.ts) and Debian's Pebble resolving through a second BIND acting as a
 * recursive resolver in front of it, so every validation below really read the TXT
 * records our provider wrote. Records are checked
 * with `dig`, not with certfleet's own DNS code.
 *
 * Zones: example.test (key certfleet-key), validation.test (key validation-key: the
 * target of the delegated `_acme-challenge` CNAME), lagging.test (served by this BIND and
 * a second, static BIND on another port that never receives the update).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { createAcmeClient, createCsr, generateAccountKey, generateKey, type AcmeClient } from '../../controller/acme/index.js';
import {
  Dns01Solver,
  ExecProvider,
  MemoryDns01Journal,
  Rfc2136Provider,
  dns01Value,
  janitor,
  parseServer,
  type Dns01Challenge,
  type Dns01Journal,
  type Dns01JournalEntry,
  type DnsProvider,
} from '../../controller/solvers/dns01/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { freePort } from '../harness/process.js';
import { startBind, type BindHandle } from '../harness/bind.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { tempDir } from '../harness/tmp.js';

const log = silentLogger();

/** A journal in a JSON file: what survives a crash is what a new process reads back. */
class FileJournal implements Dns01Journal {
  constructor(private readonly file: string) {}
  private read(): Dns01JournalEntry[] {
    return fs.existsSync(this.file) ? (JSON.parse(fs.readFileSync(this.file, 'utf8')) as Dns01JournalEntry[]) : [];
  }
  add(entry: Dns01JournalEntry): Promise<void> {
    fs.writeFileSync(this.file, JSON.stringify([...this.read().filter((e) => e.id !== entry.id), entry]));
    return Promise.resolve();
  }
  remove(id: string): Promise<void> {
    fs.writeFileSync(this.file, JSON.stringify(this.read().filter((e) => e.id !== id)));
    return Promise.resolve();
  }
  list(): Promise<Dns01JournalEntry[]> {
    return Promise.resolve(this.read());
  }
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

function sans(certPem: string): string[] {
  return (new X509Certificate(certPem).subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, '')).sort();
}

void describe('DNS-01 with BIND and Pebble', () => {
  let bind: BindHandle;
  let staleSecondary: BindHandle;
  let resolver: BindHandle;
  let pebble: PebbleHandle;
  let acme: AcmeClient;

  const rfc2136 = (name: string, keyName: string, secret?: Buffer): Rfc2136Provider => {
    const k = bind.key(keyName);
    return new Rfc2136Provider({
      name,
      server: { host: bind.address, port: bind.port },
      key: { name: k.name, algorithm: k.algorithm, secret: secret ?? Buffer.from(k.secret, 'base64') },
      ttl: 30,
      clock: systemClock,
      log,
    });
  };

  const solver = (journal: Dns01Journal, providers: DnsProvider[], extra: { propagationTimeoutMs?: number; nameservers?: string[] } = {}): Dns01Solver =>
    new Dns01Solver({
      providers: new Map(providers.map((p) => [p.name, p])),
      zones: [
        { zone: 'example.test', provider: 'bind' },
        { zone: 'validation.test', provider: 'validation' },
        { zone: 'lagging.test', provider: 'bind' },
      ],
      journal,
      // BIND is both the "resolver" for discovery and every zone's nameserver.
      lookup: { resolvers: [{ host: bind.address, port: bind.port }], nameserverPort: bind.port, queryTimeoutMs: 1000 },
      ...(extra.nameservers ? { nameservers: extra.nameservers.map((s) => parseServer(s)) } : {}),
      propagationTimeoutMs: extra.propagationTimeoutMs ?? 15_000,
      propagationIntervalMs: 100,
      clock: systemClock,
      log,
    });

  /**
   * Orders `names`, answers every authorization with DNS-01 through `s`, and returns the
   * certificate. `afterPresent` runs between present and acceptChallenge.
   */
  async function issueDns01(s: Dns01Solver, cert: string, names: string[], afterPresent?: () => Promise<void>, provider?: string): Promise<string> {
    const order = await acme.placeOrder(names);
    const challenges: Dns01Challenge[] = [];
    const urls: Array<{ authz: string; challenge: string }> = [];
    for (const authz of order.authorizations) {
      const ch = authz.challenges.find((c) => c.type === 'dns-01');
      assert.ok(ch, `no dns-01 challenge for ${authz.identifier.value}`);
      challenges.push({
        cert,
        identifier: authz.wildcard ? `*.${authz.identifier.value}` : authz.identifier.value,
        keyAuthorization: await acme.keyAuthorization(ch.token),
        ...(provider === undefined ? {} : { provider }),
      });
      urls.push({ authz: authz.url, challenge: ch.url });
    }
    const presented = await s.present(challenges);
    try {
      await afterPresent?.();
      for (const u of urls) await acme.acceptChallenge(u.challenge);
      await Promise.all(urls.map((u) => acme.waitForAuthorization(u.authz, AbortSignal.timeout(30_000))));
    } finally {
      await s.cleanup(presented);
    }
    const keyPem = await generateKey('ecdsa-p256');
    const finalized = await acme.finalize(order, await createCsr(keyPem, names));
    return (await acme.downloadCertificate(finalized)).certPem;
  }

  before(async () => {
    const lagging = { name: 'lagging.test', updateKey: 'certfleet-key' };
    bind = await startBind({
      keys: [
        { name: 'certfleet-key', algorithm: 'hmac-sha256' },
        { name: 'validation-key', algorithm: 'hmac-sha512' },
      ],
      zones: [
        // _acme-challenge.delegated.example.test is an alias into the validation zone.
        { name: 'example.test', updateKey: 'certfleet-key', records: ['_acme-challenge.delegated IN CNAME delegated.validation.test.'] },
        { name: 'validation.test', updateKey: 'validation-key' },
        lagging,
      ],
    });
    // A secondary that never gets the update: the same zone, static, on another port.
    staleSecondary = await startBind({ keys: [], zones: [{ name: 'lagging.test' }] });
    // Pebble validates through a recursive resolver in front of the authoritative BIND,
    // like a real CA: only a resolver follows the delegation CNAME into validation.test.
    resolver = await startBind({ keys: [], zones: [], forward: { server: bind.server, zones: ['example.test', 'validation.test', 'lagging.test'] } });
    pebble = await startPebble({ httpPort: await freePort(), dnsServer: resolver.server });
    acme = createAcmeClient({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, accountKeyPem: await generateAccountKey(), log });
    await acme.ensureAccount();
  });

  after(async () => {
    acme?.close();
    await pebble?.stop();
    await staleSecondary?.stop();
    await resolver?.stop();
    await bind?.stop();
  });

  void it('issues a wildcard + apex certificate with both TXT values present at once, then removes both', async () => {
    const journal = new MemoryDns01Journal();
    const s = solver(journal, [rfc2136('bind', 'certfleet-key')]);
    let seenDuringValidation: string[] = [];
    const certPem = await issueDns01(s, 'wild', ['example.test', '*.example.test'], async () => {
      seenDuringValidation = await bind.txt('_acme-challenge.example.test');
    });
    assert.deepEqual(sans(certPem), ['*.example.test', 'example.test']);
    assert.equal(seenDuringValidation.length, 2, `both values at _acme-challenge.example.test: ${seenDuringValidation.join(', ')}`);
    assert.notEqual(seenDuringValidation[0], seenDuringValidation[1]);
    assert.deepEqual(await bind.txt('_acme-challenge.example.test'), []);
    assert.equal(journal.entries.size, 0);
  });

  void it('issues for an internal-only name that has no address anywhere (DNS-01 needs none)', async () => {
    const s = solver(new MemoryDns01Journal(), [rfc2136('bind', 'certfleet-key')]);
    const name = 'db.internal.example.test';
    const certPem = await issueDns01(s, 'internal', [name]);
    assert.deepEqual(sans(certPem), [name]);
    assert.deepEqual(await bind.txt(`_acme-challenge.${name}`), []);
  });

  void it('follows an _acme-challenge CNAME and writes the record in the validation zone with that zone’s key only', async () => {
    // The provider for example.test has the WRONG secret: any write there would fail, so
    // success proves the record went to validation.test with validation-key.
    const journal = new MemoryDns01Journal();
    const s = solver(journal, [rfc2136('bind', 'certfleet-key', Buffer.alloc(32, 3)), rfc2136('validation', 'validation-key')]);
    let atTarget: string[] = [];
    const certPem = await issueDns01(s, 'delegated', ['delegated.example.test'], async () => {
      atTarget = await bind.txt('delegated.validation.test');
      const entries = await journal.list();
      assert.deepEqual(entries.map((e) => [e.provider, e.fqdn]), [['validation', 'delegated.validation.test.']]);
    });
    assert.deepEqual(sans(certPem), ['delegated.example.test']);
    assert.equal(atTarget.length, 1);
    assert.deepEqual(await bind.txt('delegated.validation.test'), []);
  });

  void it('refuses a wrong TSIG key with a clear error before the CA is asked to validate anything', async () => {
    const journal = new MemoryDns01Journal();
    const s = solver(journal, [rfc2136('bind', 'certfleet-key', Buffer.alloc(32, 7))]);
    const order = await acme.placeOrder(['wrongkey.example.test']);
    const authz = order.authorizations[0];
    const ch = authz?.challenges.find((c) => c.type === 'dns-01');
    assert.ok(authz && ch);
    const err = await rejection(s.present([{ cert: 'wrongkey', identifier: 'wrongkey.example.test', keyAuthorization: await acme.keyAuthorization(ch.token) }]));
    assert.equal(err.code, ErrorCode.DnsCredentialsRejected);
    assert.equal(err.retryable, false);
    assert.match(err.message, /TSIG key certfleet-key rejected: BADSIG/);
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${bind.port}`));
    // Nothing was validated: the authorization and its challenge are still pending.
    const again = await acme.getOrder(order.url);
    assert.equal(again.authorizations[0]?.status, 'pending');
    assert.equal(again.authorizations[0]?.challenges.find((c) => c.type === 'dns-01')?.status, 'pending');
    assert.deepEqual(await bind.txt('_acme-challenge.wrongkey.example.test'), []);
    // The record we tried to create is still journalled (its cleanup needs a working key too).
    assert.equal((await journal.list()).length, 1);
  });

  void it('names the nameserver that lags when one authoritative server never shows the value, and removes the record', async () => {
    const journal = new MemoryDns01Journal();
    // The zone's servers as configured (propagation.nameservers): the primary and the stale one.
    const s = solver(journal, [rfc2136('bind', 'certfleet-key')], { propagationTimeoutMs: 1500, nameservers: [bind.server, staleSecondary.server] });
    const err = await rejection(s.present([{ cert: 'lag', identifier: 'www.lagging.test', keyAuthorization: 'tok.thumb' }]));
    assert.equal(err.code, ErrorCode.DnsPropagationTimeout);
    assert.equal(err.retryable, true);
    assert.match(err.message, new RegExp(`on: 127\\.0\\.0\\.1:${staleSecondary.port} for _acme-challenge\\.www\\.lagging\\.test\\.: NXDOMAIN$`));
    assert.doesNotMatch(err.message, new RegExp(`:${bind.port}`), 'the primary had the record and is not named');
    assert.deepEqual(await bind.txt('_acme-challenge.www.lagging.test'), [], 'cleaned up after the failure');
    assert.equal(journal.entries.size, 0);
  });

  void it('after a crash between present and cleanup, the janitor of a new process removes the record the journal remembers', async () => {
    const file = path.join(tempDir('certfleet-dns01-journal-'), 'journal.json');
    const other = dns01Value('someone-else.thumb');
    // A value nobody journalled at the same name: the janitor must leave it.
    await rfc2136('bind', 'certfleet-key').present('_acme-challenge.crash.example.test.', other);
    await solver(new FileJournal(file), [rfc2136('bind', 'certfleet-key')]).present([{ cert: 'crash', identifier: 'crash.example.test', keyAuthorization: 'tok.thumb' }]);
    // ... the controller dies here: no cleanup.
    assert.deepEqual((await bind.txt('_acme-challenge.crash.example.test')).sort(), [dns01Value('tok.thumb'), other].sort());

    const restarted = new FileJournal(file);
    const report = await janitor(restarted, new Map([['bind', rfc2136('bind', 'certfleet-key')]]), { log, clock: systemClock });
    assert.deepEqual(report.removed.map((e) => [e.fqdn, e.value]), [['_acme-challenge.crash.example.test.', dns01Value('tok.thumb')]]);
    assert.deepEqual(report.failed, []);
    assert.deepEqual(await bind.txt('_acme-challenge.crash.example.test'), [other]);
    assert.deepEqual(await restarted.list(), []);
  });

  void it('the janitor leaves young entries alone and keeps an entry whose provider cannot remove it', async () => {
    const journal = new MemoryDns01Journal();
    const entry = { id: 'x1', provider: 'bind', fqdn: '_acme-challenge.young.example.test.', value: 'v', cert: 'c', identifier: 'young.example.test', createdAt: new Date().toISOString() };
    await journal.add(entry);
    await journal.add({ ...entry, id: 'x2', provider: 'gone' , createdAt: '2020-01-01T00:00:00.000Z' });
    const report = await janitor(journal, new Map([['bind', rfc2136('bind', 'certfleet-key')]]), { log, clock: systemClock, minAgeMs: 60_000 });
    assert.deepEqual(report.removed, []);
    assert.deepEqual(report.failed.map((e) => e.id), ['x2']);
    assert.deepEqual((await journal.list()).map((e) => e.id).sort(), ['x1', 'x2']);
  });

  void it('drives BIND through the exec provider (a script running nsupdate), per certificate, and issues with it', async () => {
    const dir = tempDir('certfleet-dns01-exec-');
    const k = bind.key('certfleet-key');
    const keyFile = path.join(dir, 'tsig.key');
    fs.writeFileSync(keyFile, `key "${k.name}" { algorithm ${k.algorithm}; secret "${k.secret}"; };\n`, { mode: 0o600 });
    const script = path.join(dir, 'dns-hook.sh');
    fs.writeFileSync(
      script,
      [
        '#!/bin/sh',
        'set -eu',
        'action=$1 fqdn=$2 value=$3',
        'case "$action" in present) op="update add $fqdn 30 TXT \\"$value\\"" ;; cleanup) op="update delete $fqdn TXT \\"$value\\"" ;; *) exit 2 ;; esac',
        `printf 'server ${bind.address} ${bind.port}\\nzone example.test\\n%s\\nsend\\n' "$op" | nsupdate -k ${keyFile}`,
        '',
      ].join('\n'),
      { mode: 0o700 },
    );
    const exec = new ExecProvider({ name: 'hook', command: [script], timeoutMs: 10_000, env: { PATH: '/usr/bin:/bin' }, log });
    await exec.check();
    // The zone routes say "bind" (which here would fail); the certificate's own provider wins.
    const s = solver(new MemoryDns01Journal(), [exec, rfc2136('bind', 'certfleet-key', Buffer.alloc(32, 5))]);
    const certPem = await issueDns01(s, 'exec', ['exec.example.test'], undefined, 'hook');
    assert.deepEqual(sans(certPem), ['exec.example.test']);
    assert.deepEqual(await bind.txt('_acme-challenge.exec.example.test'), []);
  });

  void it('reports an exec command that fails or hangs with DNS_PROVIDER_FAILED and the tail of its output', async () => {
    const dir = tempDir('certfleet-dns01-exec-');
    const script = path.join(dir, 'broken.sh');
    fs.writeFileSync(script, '#!/bin/sh\necho "calling API for $2"\necho "401: API token expired" >&2\nexit 3\n', { mode: 0o700 });
    const broken = new ExecProvider({ name: 'broken', command: [script], env: { PATH: '/usr/bin:/bin' }, log });
    const failed = await rejection(broken.present('_acme-challenge.x.example.test.', 'v'));
    assert.equal(failed.code, ErrorCode.DnsProviderFailed);
    assert.match(failed.message, /exec provider "broken": present _acme-challenge\.x\.example\.test\. exited with 3: calling API for _acme-challenge\.x\.example\.test\.\n401: API token expired/);

    const hang = new ExecProvider({ name: 'hang', command: ['/bin/sh', '-c', 'sleep 30', 'hang'], timeoutMs: 200, env: { PATH: '/usr/bin:/bin' }, log });
    const hung = await rejection(hang.cleanup('_acme-challenge.x.example.test.', 'v'));
    assert.equal(hung.code, ErrorCode.DnsProviderFailed);
    assert.match(hung.message, /timed out after 200 ms/);

    const missing = new ExecProvider({ name: 'missing', command: ['no-such-dns-hook'], env: { PATH: '/usr/bin:/bin' }, log });
    assert.ok(isCertfleetError(await rejection(missing.check()), ErrorCode.DnsProviderFailed));
  });

  void it('checks rfc2136 credentials at start-up with a signed query: a good key passes, a wrong or unknown key fails clearly', async () => {
    await rfc2136('bind', 'certfleet-key').check();
    const wrong = await rejection(rfc2136('bind', 'certfleet-key', Buffer.alloc(32, 9)).check());
    assert.equal(wrong.code, ErrorCode.DnsCredentialsRejected);
    assert.match(wrong.message, /BADSIG/);
    const unknown = new Rfc2136Provider({
      name: 'u',
      server: { host: bind.address, port: bind.port },
      key: { name: 'no-such-key', algorithm: 'hmac-sha256', secret: Buffer.alloc(32, 1) },
      clock: systemClock,
      log,
    });
    assert.match((await rejection(unknown.check())).message, /TSIG key no-such-key rejected: BADKEY/);
    // A key allowed on validation.test only may not write example.test.
    const refused = await rejection(rfc2136('validation', 'validation-key').present('_acme-challenge.x.example.test.', 'v'));
    assert.equal(refused.code, ErrorCode.DnsCredentialsRejected);
    assert.match(refused.message, /REFUSED/);
  });
});

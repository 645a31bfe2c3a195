/**
 * `certfleet check` for DNS-01 certificates against a real BIND: the check writes a TXT
 * record with a random value at `_acme-challenge.<name>` through the certificate's
 * provider (rfc2136 with TSIG), waits until BIND serves it, removes it, and says so per
 * name; a provider with a wrong TSIG secret fails the check with the provider's code, and
 * a name in a zone nobody serves fails it at the lookup. Nothing is left in the zone.
 * Records are read back with `dig` (the harness), not with certfleet's DNS code.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Dns01Solver, MemoryDns01Journal, Rfc2136Provider, type DnsProvider } from '../../controller/solvers/dns01/index.js';
import { checkCertificate } from '../../controller/operator/index.js';
import type { CertificateConfig } from '../../controller/config/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { startBind, type BindHandle } from '../harness/bind.js';

const log = silentLogger();

void describe('the DNS-01 challenge check with BIND', () => {
  let bind: BindHandle;

  const rfc2136 = (name: string, secret?: Buffer): Rfc2136Provider => {
    const k = bind.key('certfleet-key');
    return new Rfc2136Provider({
      name,
      server: { host: bind.address, port: bind.port },
      key: { name: k.name, algorithm: k.algorithm, secret: secret ?? Buffer.from(k.secret, 'base64') },
      ttl: 30,
      clock: systemClock,
      log,
    });
  };

  const solver = (journal: MemoryDns01Journal, providers: DnsProvider[]): Dns01Solver =>
    new Dns01Solver({
      providers: new Map(providers.map((p) => [p.name, p])),
      zones: [{ zone: 'example.test', provider: 'bind' }],
      journal,
      lookup: { resolvers: [{ host: bind.address, port: bind.port }], nameserverPort: bind.port, queryTimeoutMs: 1000 },
      propagationTimeoutMs: 15_000,
      propagationIntervalMs: 100,
      clock: systemClock,
      log,
    });

  /** A dns-01 certificate as the controller configuration gives it. */
  const cert = (names: string[]): CertificateConfig => ({ name: 'int', names, agents: '', challenge: 'dns-01', keyType: 'ecdsa-p256' }) as unknown as CertificateConfig;
  /** HTTP-01 is not asked for a dns-01 certificate. */
  const noHttp01 = { selfCheck: () => Promise.reject(new Error('HTTP-01 must not be checked for a dns-01 certificate')) };

  before(async () => {
    bind = await startBind({
      keys: [{ name: 'certfleet-key', algorithm: 'hmac-sha256' }],
      zones: [{ name: 'example.test', updateKey: 'certfleet-key' }],
    });
  });

  after(async () => {
    await bind?.stop();
  });

  void it('writes, sees and removes a record per name (a wildcard and its apex share one name), leaving nothing', async () => {
    const journal = new MemoryDns01Journal();
    const checks = await checkCertificate(cert(['db.example.test', '*.example.test']), { http01: noHttp01, dns01: solver(journal, [rfc2136('bind')]) }, systemClock);
    assert.deepEqual(
      checks.map((c) => [c.certificate, c.check, c.identifier, c.agent, c.ok, c.detail]),
      [
        ['int', 'dns-01', 'db.example.test', '', true, 'TXT written at _acme-challenge.db.example.test. via bind, seen on every authoritative server, removed'],
        ['int', 'dns-01', '*.example.test', '', true, 'TXT written at _acme-challenge.example.test. via bind, seen on every authoritative server, removed'],
      ],
    );
    assert.deepEqual(await bind.txt('_acme-challenge.db.example.test'), []);
    assert.deepEqual(await bind.txt('_acme-challenge.example.test'), []);
    assert.equal(journal.entries.size, 0);
  });

  void it('fails with the provider code when the TSIG secret is wrong, when the zone of the name is not served, and without a provider', async () => {
    const journal = new MemoryDns01Journal();
    const wrong = await checkCertificate(cert(['www.example.test']), { http01: noHttp01, dns01: solver(journal, [rfc2136('bind', Buffer.alloc(32, 9))]) }, systemClock);
    assert.equal(wrong.length, 1);
    assert.equal(wrong[0]?.ok, false);
    assert.match(wrong[0]?.detail ?? '', /^DNS_CREDENTIALS_REJECTED: /);
    assert.deepEqual(await bind.txt('_acme-challenge.www.example.test'), []);
    // As with a real challenge: the removal fails with the same key, so the journal keeps
    // the entry for the janitor (the record itself was never written).
    assert.deepEqual([...journal.entries.values()].map((e) => [e.fqdn, e.cert]), [['_acme-challenge.www.example.test.', 'int']]);

    // A name in a zone nobody serves: the check fails where a real challenge would, at the lookup.
    const unserved = await checkCertificate(cert(['www.other.test']), { http01: noHttp01, dns01: solver(new MemoryDns01Journal(), [rfc2136('bind')]) }, systemClock);
    assert.equal(unserved[0]?.ok, false);
    assert.match(unserved[0]?.detail ?? '', /^DNS_LOOKUP_FAILED: cannot look up _acme-challenge\.www\.other\.test\. /);

    const none = await checkCertificate(cert(['www.example.test']), { http01: noHttp01 }, systemClock);
    assert.match(none[0]?.detail ?? '', /^CONFIG_INVALID: the certificate uses dns-01 but no DNS provider is configured$/);
  });
});

/**
 * The CertStore contract as a reusable suite: every backend (file store, Vault KV v2
 * store, its HTTP double) runs these same tests through certStoreContract(). Only
 * behaviour promised by the CertStore interface is checked here; layout, file modes
 * and crash leftovers are backend-specific and tested beside each backend.
 */
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import type { CertStore, VersionInput } from '../../controller/store/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';

export interface StoreUnderTest {
  store: CertStore;
  /** Closes the store and removes whatever it created. */
  cleanup(): Promise<void>;
}

/** A version input for `name` whose material is tagged with `tag`, so tests can tell versions apart. */
export function versionInput(name: string, tag: string): VersionInput {
  return {
    certPem: `-----BEGIN CERTIFICATE-----\n${tag}-cert\n-----END CERTIFICATE-----\n`,
    chainPem: `-----BEGIN CERTIFICATE-----\n${tag}-chain\n-----END CERTIFICATE-----\n`,
    keyPem: `-----BEGIN PRIVATE KEY-----\n${tag}-key\n-----END PRIVATE KEY-----\n`,
    meta: {
      name,
      serial: `0a${Buffer.from(tag).toString('hex')}`,
      fingerprint: Buffer.from(tag.padEnd(32, '0')).toString('hex').slice(0, 64),
      names: [`${name}.example.test`, `www.${name}.example.test`],
      notBefore: '2026-01-01T00:00:00.000Z',
      notAfter: '2026-04-01T00:00:00.000Z',
      issuedAt: '2026-01-01T00:05:00.000Z',
      keyType: 'ecdsa-p256',
    },
  };
}

function hasCode(code: string) {
  return (err: unknown): boolean => {
    assert.ok(isCertfleetError(err), `expected a CertfleetError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

/** Registers the contract tests for one backend. `makeStore` gives a fresh, empty store. */
export function certStoreContract(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  void describe(`CertStore contract: ${name}`, () => {
    let sut: StoreUnderTest;
    let store: CertStore;
    beforeEach(async () => {
      sut = await makeStore();
      store = sut.store;
    });
    afterEach(async () => {
      await sut.cleanup();
    });

    void it('an empty store answers null and empty lists, not errors', async () => {
      assert.equal(await store.latest('web'), null);
      assert.equal(await store.getVersion('web', 1), null);
      assert.deepEqual(await store.listVersions('web'), []);
      assert.deepEqual(await store.listNames(), []);
      assert.equal(await store.getObject('pki/ca'), null);
      assert.deepEqual(await store.listObjects(''), []);
      assert.equal(await store.deleteObject('pki/ca'), false);
    });

    void it('versions are numbered 1, 2, 3 and read back exactly as written', async () => {
      const m1 = await store.putVersion('web', versionInput('web', 'one'), 0);
      const m2 = await store.putVersion('web', versionInput('web', 'two'), 1);
      const m3 = await store.putVersion('web', versionInput('web', 'three'), 2);
      assert.deepEqual([m1.version, m2.version, m3.version], [1, 2, 3]);
      assert.deepEqual(m2, { ...versionInput('web', 'two').meta, version: 2 });

      const b2 = await store.getVersion('web', 2);
      const input = versionInput('web', 'two');
      assert.deepEqual(b2, {
        meta: { ...input.meta, version: 2 },
        certPem: input.certPem,
        chainPem: input.chainPem,
        keyPem: input.keyPem,
      });
      assert.deepEqual(await store.latest('web'), m3);
      assert.deepEqual(
        (await store.listVersions('web')).map((m) => [m.version, m.serial]),
        [
          [1, m1.serial],
          [2, m2.serial],
          [3, m3.serial],
        ],
      );
      assert.equal(await store.getVersion('web', 4), null);
    });

    void it('the ACME profile of a version is kept when it has one, and absent when it has none', async () => {
      const input = versionInput('web', 'one');
      const m1 = await store.putVersion('web', { ...input, meta: { ...input.meta, profile: 'shortlived' } }, 0);
      assert.equal(m1.profile, 'shortlived');
      assert.equal((await store.getVersion('web', 1))?.meta.profile, 'shortlived');
      assert.equal((await store.latest('web'))?.profile, 'shortlived');
      const m2 = await store.putVersion('web', versionInput('web', 'two'), 1);
      assert.equal('profile' in m2, false);
      assert.equal('profile' in ((await store.listVersions('web'))[1] ?? {}), false);
    });

    void it('an empty chain is stored and returned as an empty string', async () => {
      await store.putVersion('bare', { ...versionInput('bare', 'x'), chainPem: '' }, 0);
      assert.equal((await store.getVersion('bare', 1))?.chainPem, '');
    });

    void it('putVersion with a stale or future expectedLatest is a conflict and writes nothing', async () => {
      await store.putVersion('web', versionInput('web', 'one'), 0);
      await assert.rejects(store.putVersion('web', versionInput('web', 'stale'), 0), hasCode(ErrorCode.StoreConflict));
      await assert.rejects(store.putVersion('web', versionInput('web', 'future'), 5), hasCode(ErrorCode.StoreConflict));
      assert.deepEqual(
        (await store.listVersions('web')).map((m) => m.version),
        [1],
      );
      assert.equal((await store.getVersion('web', 1))?.certPem, versionInput('web', 'one').certPem);
    });

    void it('of concurrent writers expecting the same latest version exactly one wins', async () => {
      const tags = ['a', 'b', 'c', 'd', 'e'];
      const results = await Promise.allSettled(tags.map((t) => store.putVersion('race', versionInput('race', t), 0)));
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [tags[i]] : []));
      assert.equal(won.length, 1, `winners: ${won.join(',')}`);
      for (const r of results) {
        if (r.status === 'rejected') hasCode(ErrorCode.StoreConflict)(r.reason);
      }
      const stored = await store.getVersion('race', 1);
      assert.equal(stored?.certPem, versionInput('race', won[0] ?? '').certPem);
      assert.deepEqual(
        (await store.listVersions('race')).map((m) => m.version),
        [1],
      );
    });

    void it('a stored version is immutable: later writes and changes to returned objects do not alter it', async () => {
      await store.putVersion('web', versionInput('web', 'one'), 0);
      const first = await store.getVersion('web', 1);
      assert.ok(first);
      first.meta.names.push('evil.example.test');
      first.keyPem = 'tampered';
      await store.putVersion('web', versionInput('web', 'two'), 1);
      const again = await store.getVersion('web', 1);
      assert.deepEqual(again?.meta.names, versionInput('web', 'one').meta.names);
      assert.equal(again?.keyPem, versionInput('web', 'one').keyPem);
    });

    void it('the caller cannot choose the version number or store meta for another name', async () => {
      const input = versionInput('web', 'one');
      const sneaky = { ...input, meta: { ...input.meta, version: 7, extra: 'ignored' } } as VersionInput;
      const stored = await store.putVersion('web', sneaky, 0);
      assert.equal(stored.version, 1);
      assert.deepEqual(stored, { ...input.meta, version: 1 });
      assert.deepEqual(await store.latest('web'), stored);
      await assert.rejects(store.putVersion('api', versionInput('web', 'x'), 0), hasCode(ErrorCode.UsageInvalid));
      await assert.rejects(
        store.putVersion('api', { ...versionInput('api', 'x'), keyPem: '' }, 0),
        hasCode(ErrorCode.UsageInvalid),
      );
    });

    void it('names that are not valid certificate names are refused, not used as paths', async () => {
      for (const bad of ['../web', 'Web', '', 'a/b', '-web', 'web.', '.']) {
        await assert.rejects(store.putVersion(bad, versionInput(bad, 'x'), 0), hasCode(ErrorCode.UsageInvalid), bad);
        await assert.rejects(store.getVersion(bad, 1), hasCode(ErrorCode.UsageInvalid), bad);
        await assert.rejects(store.latest(bad), hasCode(ErrorCode.UsageInvalid), bad);
      }
      for (const badVersion of [0, -1, 1.5, Number.NaN]) {
        await assert.rejects(store.getVersion('web', badVersion), hasCode(ErrorCode.UsageInvalid), String(badVersion));
      }
      await assert.rejects(store.putVersion('web', versionInput('web', 'x'), -1), hasCode(ErrorCode.UsageInvalid));
    });

    void it('listNames returns every name with a version, sorted', async () => {
      await store.putVersion('zeta', versionInput('zeta', 'z'), 0);
      await store.putVersion('alpha', versionInput('alpha', 'a'), 0);
      await store.putVersion('mid-1', versionInput('mid-1', 'm'), 0);
      await store.putVersion('alpha', versionInput('alpha', 'a2'), 1);
      assert.deepEqual(await store.listNames(), ['alpha', 'mid-1', 'zeta']);
    });

    void it('objects round-trip as JSON, are replaced by a later put and removed by delete', async () => {
      const doc = { url: 'https://ca.test/acct/1', nested: { list: [1, 'two', null], flag: true } };
      await store.putObject('acme/account/pebble', doc);
      assert.deepEqual(await store.getObject('acme/account/pebble'), doc);
      await store.putObject('acme/account/pebble', { url: 'replaced' });
      assert.deepEqual(await store.getObject('acme/account/pebble'), { url: 'replaced' });
      assert.equal(await store.deleteObject('acme/account/pebble'), true);
      assert.equal(await store.getObject('acme/account/pebble'), null);
      assert.equal(await store.deleteObject('acme/account/pebble'), false);
    });

    void it('of concurrent deletes of one object exactly one reports that it removed it', async () => {
      await store.putObject('enroll/abc', { agent: 'edge-1' });
      const results = await Promise.all([1, 2, 3, 4].map(() => store.deleteObject('enroll/abc')));
      assert.equal(results.filter(Boolean).length, 1, JSON.stringify(results));
    });

    void it('listObjects filters by prefix, including a partial last segment, and sorts', async () => {
      for (const key of ['agents/web-2', 'agents/web-1', 'agents/db', 'agents-archive/x', 'pki/ca', 'enroll/ff00']) {
        await store.putObject(key, { key });
      }
      assert.deepEqual(await store.listObjects('agents/'), ['agents/db', 'agents/web-1', 'agents/web-2']);
      assert.deepEqual(await store.listObjects('agents/web'), ['agents/web-1', 'agents/web-2']);
      assert.deepEqual(await store.listObjects('agents'), [
        'agents-archive/x',
        'agents/db',
        'agents/web-1',
        'agents/web-2',
      ]);
      assert.deepEqual(await store.listObjects('nothing/'), []);
      assert.deepEqual((await store.listObjects('')).length, 6);
      // Objects and certificate versions are separate namespaces.
      assert.deepEqual(await store.listNames(), []);
    });

    void it('object keys outside [a-z0-9_.-] segments, or with "..", are refused', async () => {
      for (const bad of ['../etc/passwd', 'a/../b', '/abs', 'trail/', 'a//b', 'Upper', '.hidden', 'a/.b', 'sp ace', '']) {
        await assert.rejects(store.putObject(bad, {}), hasCode(ErrorCode.UsageInvalid), bad);
        await assert.rejects(store.getObject(bad), hasCode(ErrorCode.UsageInvalid), bad);
        await assert.rejects(store.deleteObject(bad), hasCode(ErrorCode.UsageInvalid), bad);
      }
      await assert.rejects(store.listObjects('../'), hasCode(ErrorCode.UsageInvalid));
      await assert.rejects(store.putObject('pki/nothing', undefined), hasCode(ErrorCode.UsageInvalid));
    });

    void it('after close every call fails with STORE_UNAVAILABLE, and close can be repeated', async () => {
      await store.close();
      await store.close();
      await assert.rejects(store.latest('web'), hasCode(ErrorCode.StoreUnavailable));
      await assert.rejects(store.getObject('pki/ca'), hasCode(ErrorCode.StoreUnavailable));
    });
  });
}

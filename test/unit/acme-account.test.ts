/**
 * The controller's ACME account set-up (controller/acme account.ts), without a CA: the
 * ACME client is replaced by a stand-in that records what it was built with, so these
 * tests prove what the controller keeps in its store and hands to the client. The
 * protocol half (POST-as-GET lookup, registration, re-registration on
 * accountDoesNotExist) runs against Pebble in test/integration/acme.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { accountId, openAcmeAccount, type AccountDoc } from '../../controller/acme/index.js';
import type { AcmeClient, AcmeClientOptions } from '../../controller/acme/index.js';
import { FileStore, ObjectKey } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

const DIRECTORY = 'https://127.0.0.1:14000/dir';

interface Stand {
  built: AcmeClientOptions[];
  closed: number;
  /** What ensureAccount does for the next client built. */
  ensure: (opts: AcmeClientOptions) => Promise<{ accountUrl: string }>;
}

function standIn(): { stand: Stand; createClient: (o: AcmeClientOptions) => AcmeClient } {
  const stand: Stand = { built: [], closed: 0, ensure: () => Promise.resolve({ accountUrl: 'https://ca/acct/1' }) };
  const createClient = (o: AcmeClientOptions): AcmeClient => {
    stand.built.push(o);
    return { directoryUrl: o.directoryUrl, ensureAccount: () => stand.ensure(o), close: () => void stand.closed++ } as unknown as AcmeClient;
  };
  return { stand, createClient };
}

async function setup() {
  const store = await FileStore.open({ dir: path.join(tempDir('certfleet-acme-account-'), 'store'), log: silentLogger() });
  const { stand, createClient } = standIn();
  const open = () => openAcmeAccount({ directoryUrl: DIRECTORY, store, clock: new ManualClock(), log: silentLogger(), createClient });
  const key = ObjectKey.acmeAccount(accountId(DIRECTORY));
  return { store, stand, open, key };
}

void describe('acme account set-up', () => {
  void it('the account id is the first 16 hex digits of SHA-256 of the directory URL, as stored by earlier controllers', () => {
    const expected = crypto.createHash('sha256').update(DIRECTORY).digest('hex').slice(0, 16);
    assert.equal(accountId(DIRECTORY), expected);
    assert.match(accountId(DIRECTORY), /^[0-9a-f]{16}$/);
    assert.notEqual(accountId('https://acme-v02.api.letsencrypt.org/directory'), accountId('https://acme-staging-v02.api.letsencrypt.org/directory'));
  });

  void it('a first start stores a new key before the CA hears of it, then the account URL', async () => {
    const t = await setup();
    let storedWhenContacted: AccountDoc | null = null;
    t.stand.ensure = async () => {
      storedWhenContacted = await t.store.getObject<AccountDoc>(t.key);
      return { accountUrl: 'https://ca/acct/1' };
    };
    await t.open();
    assert.ok(storedWhenContacted, 'the key is in the store before ensureAccount');
    const doc = await t.store.getObject<AccountDoc>(t.key);
    assert.equal(doc?.accountUrl, 'https://ca/acct/1');
    assert.equal(doc?.directoryUrl, DIRECTORY);
    assert.equal(doc?.keyPem, t.stand.built[0]?.accountKeyPem);
    assert.equal(t.stand.built[0]?.accountUrl, undefined, 'no URL yet: the client registers');
  });

  void it('a restart reuses the stored key and hands the client the known account URL', async () => {
    const t = await setup();
    await t.open();
    await t.open();
    assert.equal(t.stand.built.length, 2);
    assert.equal(t.stand.built[1]?.accountKeyPem, t.stand.built[0]?.accountKeyPem);
    assert.equal(t.stand.built[1]?.accountUrl, 'https://ca/acct/1');
  });

  void it('a new account URL the client reports (the CA forgot the account) is written back', async () => {
    const t = await setup();
    await t.open();
    t.stand.ensure = async (o) => {
      await o.onAccountChanged?.('https://ca/acct/2'); // re-registered at start
      return { accountUrl: 'https://ca/acct/2' };
    };
    await t.open();
    assert.equal((await t.store.getObject<AccountDoc>(t.key))?.accountUrl, 'https://ca/acct/2');
    // And while running: the client calls back again.
    await t.stand.built[1]?.onAccountChanged?.('https://ca/acct/3');
    assert.equal((await t.store.getObject<AccountDoc>(t.key))?.accountUrl, 'https://ca/acct/3');
  });

  void it('a failed set-up closes the client and keeps the key for the next attempt', async () => {
    const t = await setup();
    t.stand.ensure = () => Promise.reject(new CertfleetError(ErrorCode.AcmeTransport, 'CA down'));
    await assert.rejects(t.open(), (err: unknown) => isCertfleetError(err, ErrorCode.AcmeTransport));
    assert.equal(t.stand.closed, 1);
    const kept = await t.store.getObject<AccountDoc>(t.key);
    t.stand.ensure = () => Promise.resolve({ accountUrl: 'https://ca/acct/1' });
    await t.open();
    assert.equal(t.stand.built[1]?.accountKeyPem, kept?.keyPem);
  });

  void it('a malformed account document is STORE_CORRUPT, not a silently new account', async () => {
    const t = await setup();
    await t.store.putObject(t.key, { directoryUrl: DIRECTORY, accountUrl: 'https://ca/acct/1' });
    await assert.rejects(t.open(), (err: unknown) => isCertfleetError(err, ErrorCode.StoreCorrupt));
    assert.equal(t.stand.built.length, 0);
  });
});

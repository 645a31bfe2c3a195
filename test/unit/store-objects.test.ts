/**
 * The object-key registry (controller/store objects.ts) spells exactly the keys earlier
 * controllers wrote, so a fleet upgraded onto it finds every document where it left it
 * (no migration). The expected strings below are the literals the modules used before
 * the registry; a change here is a change of the stored layout.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FileStore, ObjectKey, ObjectPrefix, checkObjectKey, checkObjectPrefix } from '../../controller/store/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

const HASH = 'ab'.repeat(32);

/** [what, registry key, the literal the stores hold]. */
const LAYOUT: Array<[string, string, string]> = [
  ['controller CA', ObjectKey.controllerCa, 'pki/ca'],
  ['signing key ring', ObjectKey.signingKeys, 'pki/signing-keys'],
  ['NATS authority', ObjectKey.natsAuthority, 'nats/authority'],
  ['ACME account', ObjectKey.acmeAccount('0123456789abcdef'), 'acme/account/0123456789abcdef'],
  ['agent registration', ObjectKey.agent('edge-1'), 'agents/edge-1'],
  ['enrolment token', ObjectKey.enrollToken(HASH), `enroll/${HASH}`],
  ['redeemed token marker', ObjectKey.enrollUsed(HASH), `enroll-used/${HASH}`],
  ['operator', ObjectKey.operator('alice'), 'operators/alice'],
  ['agent NATS user', ObjectKey.natsUser('edge-1'), 'nats/users/edge-1'],
  ['record generation', ObjectKey.signingGeneration('web'), 'signing/generations/web'],
  ['order in flight', ObjectKey.order('web'), 'orders/web'],
  ['rollback pin', ObjectKey.pin('web'), 'pins/web'],
  ['ARI window', ObjectKey.ari('web'), 'ari/web'],
  ['DNS-01 journal entry', ObjectKey.dns01(HASH), `dns01/${HASH}`],
  ['renewal intent', ObjectKey.renewal('web'), 'renewals/web'],
  ['certbot import record', ObjectKey.importRecord('web'), 'imports/web'],
  ['revocation mark', ObjectKey.revocation('web', 2), 'revocations/web/2'],
];

void describe('store object keys', () => {
  for (const [what, key, literal] of LAYOUT) {
    void it(`the ${what} is stored at ${literal}`, () => {
      assert.equal(key, literal);
      checkObjectKey(key); // and the stores accept it
    });
  }

  void it('every prefix is a valid listing prefix ending in "/", and the keys of a family start with it', () => {
    for (const prefix of Object.values(ObjectPrefix)) {
      assert.ok(prefix.endsWith('/'), prefix);
      checkObjectPrefix(prefix);
    }
    assert.ok(ObjectKey.agent('x').startsWith(ObjectPrefix.agents));
    assert.ok(ObjectKey.enrollToken('x').startsWith(ObjectPrefix.enrollTokens));
    // `enroll/` must not list the used-token markers (a different family).
    assert.ok(!ObjectKey.enrollUsed('x').startsWith(ObjectPrefix.enrollTokens));
  });

  void it('the file store keeps a registry key as objects/<key>.json, the path earlier controllers wrote', async () => {
    const dir = path.join(tempDir('certfleet-objects-'), 'store');
    const store = await FileStore.open({ dir, log: silentLogger() });
    try {
      await store.putObject(ObjectKey.agent('edge-1'), { name: 'edge-1' });
      await store.putObject(ObjectKey.acmeAccount('0123456789abcdef'), { keyPem: 'x' });
      assert.ok(fs.existsSync(path.join(dir, 'objects', 'agents', 'edge-1.json')));
      assert.ok(fs.existsSync(path.join(dir, 'objects', 'acme', 'account', '0123456789abcdef.json')));
      assert.deepEqual(await store.listObjects(ObjectPrefix.agents), ['agents/edge-1']);
    } finally {
      await store.close();
    }
  });
});

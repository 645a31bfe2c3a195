/**
 * External account binding (issue #15): a CA that requires it (Pebble with
 * externalAccountBindingRequired) refuses a controller without it with a message that says
 * what to set, refuses a wrong HMAC key, and issues through a controller configured with
 * `acme.eab` (the HMAC key from a file), end to end to nginx. The HMAC key never appears
 * in any log.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { openAcmeAccount } from '../../controller/acme/index.js';
import { systemClock } from '../../shared/clock/index.js';
import type { CertfleetError} from '../../shared/errors/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { startPebble, type PebbleHandle } from '../harness/pebble.js';
import { freePort } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';
import { servedCertificate } from '../harness/tls.js';

const KID = 'kid-certfleet';
const HMAC = randomBytes(32).toString('base64url');

function memoryStore() {
  const objects = new Map<string, unknown>();
  return {
    getObject: <T>(key: string) => Promise.resolve((objects.get(key) as T | undefined) ?? null),
    putObject: (key: string, value: unknown) => {
      objects.set(key, structuredClone(value));
      return Promise.resolve();
    },
  };
}

describe('ACME external account binding against a CA that requires it', { timeout: 300_000 }, () => {
  let pebble: PebbleHandle;
  before(async () => {
    pebble = await startPebble({ httpPort: await freePort(), eabKeys: { [KID]: HMAC } });
  });
  after(async () => {
    await pebble?.stop();
  });

  const open = (eab?: { kid: string; hmacKey: string }) =>
    openAcmeAccount({ directoryUrl: pebble.directoryUrl, caPem: pebble.caPem, store: memoryStore(), clock: systemClock, log: silentLogger(), externalAccountBinding: eab });

  test('without a binding the controller is refused with a message that says what to set', async () => {
    await assert.rejects(open(), (err: CertfleetError) => {
      assert.equal(err.code, ErrorCode.AcmeProblem);
      assert.equal(err.retryable, false);
      assert.match(err.message, /requires external account binding: set acme\.eab\.keyId and acme\.eab\.hmacKeyFile/);
      return true;
    });
  });

  test('a wrong HMAC key is refused, and says so', async () => {
    await assert.rejects(open({ kid: KID, hmacKey: randomBytes(32).toString('base64url') }), (err: CertfleetError) => {
      assert.equal(err.code, ErrorCode.AcmeProblem);
      assert.match(err.message, /external account binding|eab/i);
      return true;
    });
  });

  test('with the right binding the account is registered', async () => {
    const client = await open({ kid: KID, hmacKey: HMAC });
    client.close();
  });
});

describe('a fleet issuing through a CA that requires external account binding', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  before(async () => {
    const secrets = tempDir('certfleet-eab-');
    const keyFile = path.join(secrets, 'eab-hmac');
    fs.writeFileSync(keyFile, `${HMAC}\n`, { mode: 0o600 });
    fleet = await startFleet({
      pebbleEabKeys: { [KID]: HMAC },
      acmeYaml: ['  eab:', `    keyId: ${KID}`, `    hmacKeyFile: ${keyFile}`],
      certificates: [{ name: 'web', names: ['web.example.test'], agents: 'role=web' }],
      agents: [{ name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] }],
      dns: { 'web.example.test': '127.0.0.2' },
    });
  });
  after(async () => {
    await fleet?.stop();
  });

  test('the certificate is issued, installed and served; the HMAC key is in no log', async () => {
    await fleet.waitUntilReady(1);
    const served = await servedCertificate({ host: '127.0.0.2', port: fleet.tlsPort, servername: 'web.example.test' });
    assert.ok(served.fingerprint.length > 0);
    assert.equal(fleet.logs().includes(HMAC), false, 'HMAC key in a log');
  });
});

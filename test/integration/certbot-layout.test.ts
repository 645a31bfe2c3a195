/**
 * The certbot-compatible layout (issue 11): an nginx configuration written for certbot's
 * `live/<name>/` paths works unchanged on the agent's store, and hooks get a
 * RENEWED_LINEAGE whose basename is the certificate's name, with or without a live tree.
 * Real nginx, real hook processes, the real Installer.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Installer } from '../../agent/install/index.js';
import { hookEnvironment, hookGroupKey, runHook } from '../../agent/hooks/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { makeBundle } from '../harness/certs.js';
import { startNginx, writeNginxConfig } from '../harness/nginx.js';
import { freePort } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';
import { tempDir } from '../harness/tmp.js';

test('nginx configured with certbot live/ paths serves each new version and a rollback after a reload', async () => {
  const stateDir = tempDir();
  const liveDir = path.join(tempDir(), 'letsencrypt', 'live');
  const inst = new Installer({ stateDir, clock: new ManualClock(Date.now()), log: silentLogger(), liveDir });
  const v1 = await makeBundle({ name: 'web', version: 1, names: ['web.example.test'] });
  const first = await inst.install(v1);
  assert.equal(first.lineageDir, path.join(liveDir, 'web'));
  for (const f of ['cert.pem', 'chain.pem', 'fullchain.pem', 'privkey.pem']) {
    const link = path.join(liveDir, 'web', f);
    assert.ok(fs.lstatSync(link).isSymbolicLink(), `${f} is a symlink, as in certbot's live/`);
    assert.equal(fs.realpathSync(link), path.join(fs.realpathSync(stateDir), 'certs', 'web', 'versions', '1', f));
  }

  // The server block a certbot user already has, paths unchanged.
  const prefix = tempDir();
  const port = await freePort();
  const conf = writeNginxConfig({
    prefix,
    servers: [{ listen: `127.0.0.1:${port}`, serverNames: ['web.example.test'], certFile: path.join(liveDir, 'web', 'fullchain.pem'), keyFile: path.join(liveDir, 'web', 'privkey.pem') }],
  });
  const nginx = await startNginx(conf, prefix);
  try {
    const served = async (): Promise<string> => (await servedCertificate({ host: '127.0.0.1', port, servername: 'web.example.test' })).fingerprint;
    assert.equal(await served(), v1.meta.fingerprint);

    const v2 = await makeBundle({ name: 'web', version: 2, names: ['web.example.test'] });
    const second = await inst.install(v2);
    assert.equal(second.lineageDir, path.join(liveDir, 'web'));
    await nginx.reload();
    assert.equal(await served(), v2.meta.fingerprint, 'the live/ links follow the new version');

    await inst.activate('web', 1);
    await nginx.reload();
    assert.equal(await served(), v1.meta.fingerprint, 'and a rollback');
  } finally {
    await nginx.stop();
  }
});

test('a certbot deploy hook sees RENEWED_LINEAGE named after the certificate and reads its files there, with and without a live tree', async () => {
  const hook = 'echo "$(basename "$RENEWED_LINEAGE")"; openssl x509 -noout -fingerprint -sha256 -in "$RENEWED_LINEAGE/cert.pem"; test -s "$RENEWED_LINEAGE/privkey.pem" && test -s "$RENEWED_LINEAGE/fullchain.pem" && test -s "$RENEWED_LINEAGE/chain.pem"';
  for (const liveDir of [undefined, path.join(tempDir(), 'live')]) {
    const inst = new Installer({ stateDir: tempDir(), clock: new ManualClock(Date.now()), log: silentLogger(), ...(liveDir ? { liveDir } : {}) });
    const bundle = await makeBundle({ name: 'shop-api', version: 3, names: ['api.shop.example.test'] });
    const result = await inst.install(bundle);
    const outcome = await runHook({ command: hook, timeoutMs: 10_000 }, hookEnvironment(bundle.meta, result.lineageDir));
    assert.equal(outcome.exitCode, 0, outcome.outputTail);
    const [name, fp] = outcome.outputTail.trim().split('\n');
    assert.equal(name, 'shop-api', `basename of ${result.lineageDir}`);
    assert.equal(fp?.split('=')[1]?.replaceAll(':', '').toLowerCase(), bundle.meta.fingerprint);
  }
});

test('per-certificate hooks are never shared; once hooks are shared by command', () => {
  const once = { command: 'systemctl reload nginx' };
  const each = { command: 'systemctl reload nginx', mode: 'per-certificate' as const };
  assert.equal(hookGroupKey('a', once), hookGroupKey('b', once));
  assert.equal(hookGroupKey('a', { ...once, mode: 'once' }), hookGroupKey('b', once));
  assert.notEqual(hookGroupKey('a', each), hookGroupKey('b', each));
  assert.notEqual(hookGroupKey('a', each), hookGroupKey('a', once));
  assert.notEqual(hookGroupKey('a', undefined), hookGroupKey('b', undefined));
});

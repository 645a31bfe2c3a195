/** The pure parts of the HAProxy runtime-API client (agent/hooks/haproxy.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hookGroupKey, parseShowSslCert, pemPayload, scrubPem } from '../../agent/hooks/index.js';

test('a PEM payload has no blank line, which would end it early on the CLI', () => {
  assert.equal(pemPayload('-----BEGIN CERTIFICATE-----\r\nAAA\r\n\r\n-----END CERTIFICATE-----\n\n  \n-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n'), '-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----');
});

test('PEM blocks, even a cut one, are removed from text that may be logged', () => {
  assert.equal(scrubPem('bad: -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\nok'), 'bad: [PEM removed]\nok');
  assert.equal(scrubPem('cut -----BEGIN EC PRIVATE KEY-----\nMHcC'), 'cut [PEM removed]');
});

test('show ssl cert: the open transaction and the loaded files, or null for any other answer', () => {
  assert.deepEqual(parseShowSslCert('# transaction\n*/etc/haproxy/certs/b.pem\n# filename\n/etc/haproxy/certs/a.pem\n/etc/haproxy/certs/b.pem\n\n'), {
    transaction: '/etc/haproxy/certs/b.pem',
    files: ['/etc/haproxy/certs/a.pem', '/etc/haproxy/certs/b.pem'],
  });
  assert.deepEqual(parseShowSslCert('# filename\n/etc/haproxy/certs/a.pem\n\n'), { transaction: null, files: ['/etc/haproxy/certs/a.pem'] });
  assert.equal(parseShowSslCert("Can't allocate memory!\n\n"), null);
  assert.equal(parseShowSslCert('Permission denied\n\n'), null);
});

test('a HAProxy hook naming one crtFile is never shared; one using the crt directory is shared like a command', () => {
  const dir = { command: 'systemctl reload haproxy', haproxy: { socket: '/run/haproxy/admin.sock', master: false } };
  assert.equal(hookGroupKey('a', dir), hookGroupKey('b', dir));
  const file = { haproxy: { socket: '/run/haproxy/admin.sock', master: false, crtFile: '/etc/haproxy/site.pem' } };
  assert.notEqual(hookGroupKey('a', file), hookGroupKey('b', file));
  assert.notEqual(hookGroupKey('a', dir), hookGroupKey('a', { command: 'systemctl reload haproxy' }));
});

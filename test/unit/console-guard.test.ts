/**
 * Who may talk to `certfleet console` (cli/console/guard.ts): pure decisions on Host,
 * secret, method and Origin. The same rules are exercised over HTTP against a real fleet
 * in test/e2e/console.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allowedHosts, checkRequest, cookieName, isMutation, readCookie, sameSecret, type GuardRequest } from '../../cli/console/index.js';

const PORT = 8765;
const TOKEN = 'sEcReT-token_0123456789';
const opts = { hosts: allowedHosts('127.0.0.1', PORT), token: TOKEN, port: PORT };
const cookie = `${cookieName(PORT)}=${TOKEN}`;

function req(over: Partial<GuardRequest> & { headers?: Record<string, string> }): GuardRequest {
  return { method: 'GET', path: '/api/certs', queryToken: undefined, ...over, headers: { host: `127.0.0.1:${PORT}`, cookie, ...over.headers } };
}

void test('the console answers under its own address and localhost only', () => {
  assert.deepEqual(allowedHosts('127.0.0.1', PORT), ['127.0.0.1:8765', 'localhost:8765']);
  assert.deepEqual(allowedHosts('::1', PORT), ['[::1]:8765', 'localhost:8765']);
  assert.deepEqual(allowedHosts('127.0.0.2', PORT), ['127.0.0.2:8765']);
});

const cases: Array<[string, GuardRequest, string]> = [
  ['a read with the cookie is allowed', req({}), 'allow'],
  ['a read under localhost is allowed', req({ headers: { host: `localhost:${PORT}` } }), 'allow'],
  ['a rebinding page (foreign Host) is refused even with the secret', req({ headers: { host: `evil.example:${PORT}` } }), 'refuse 403'],
  ['the right host on another port is refused', req({ headers: { host: '127.0.0.1:80' } }), 'refuse 403'],
  ['no secret is refused', req({ headers: { cookie: '' } }), 'refuse 401'],
  ['a wrong secret is refused', req({ headers: { cookie: `${cookieName(PORT)}=${TOKEN}x` } }), 'refuse 401'],
  ["another console's cookie (other port) is refused", req({ headers: { cookie: `${cookieName(9999)}=${TOKEN}` } }), 'refuse 401'],
  ['the page with ?token= sets the cookie and redirects', req({ path: '/', queryToken: TOKEN, headers: { cookie: '' } }), 'set-cookie /'],
  ['an API call may carry ?token= instead of the cookie', req({ queryToken: TOKEN, headers: { cookie: '' } }), 'allow'],
  ['a change from the console page is allowed', req({ method: 'POST', path: '/api/certs/web/rollback', headers: { origin: `http://127.0.0.1:${PORT}`, 'content-type': 'application/json' } }), 'allow'],
  ['a change from another origin is refused (CSRF)', req({ method: 'POST', path: '/api/certs/web/rollback', headers: { origin: 'http://evil.example', 'content-type': 'application/json' } }), 'refuse 403'],
  ['a change without an Origin is refused', req({ method: 'POST', path: '/api/certs/web/renew', headers: { 'content-type': 'application/json' } }), 'refuse 403'],
  ['a change as a form post is refused', req({ method: 'POST', path: '/api/certs/web/release', headers: { origin: `http://127.0.0.1:${PORT}`, 'content-type': 'application/x-www-form-urlencoded' } }), 'refuse 400'],
  ['a change by GET is refused', req({ path: '/api/certs/web/rollback' }), 'refuse 405'],
  ['a POST to a read is refused', req({ method: 'POST', path: '/api/certs', headers: { origin: `http://127.0.0.1:${PORT}` } }), 'refuse 405'],
];

for (const [name, request, want] of cases) {
  void test(name, () => {
    const d = checkRequest(request, opts);
    const got = d.kind === 'refuse' ? `refuse ${d.status}` : d.kind === 'set-cookie' ? `set-cookie ${d.location}` : 'allow';
    assert.equal(got, want, d.kind === 'refuse' ? d.reason : '');
  });
}

void test('changes are the renew, rollback and release paths of one certificate', () => {
  assert.equal(isMutation('/api/certs/web/rollback'), true);
  assert.equal(isMutation('/api/certs/web/renew'), true);
  assert.equal(isMutation('/api/certs/web/release'), true);
  assert.equal(isMutation('/api/certs/web/history'), false);
  assert.equal(isMutation('/api/certs/web'), false);
});

void test('cookies are read by exact name; secrets compare only when equal', () => {
  assert.equal(readCookie('a=1; certfleet_console_8765=xyz; b=2', 'certfleet_console_8765'), 'xyz');
  assert.equal(readCookie('xcertfleet_console_8765=xyz', 'certfleet_console_8765'), undefined);
  assert.equal(readCookie(undefined, 'x'), undefined);
  assert.equal(sameSecret(TOKEN, TOKEN), true);
  assert.equal(sameSecret(TOKEN.slice(1), TOKEN), false);
  assert.equal(sameSecret('', TOKEN), false);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { PassThrough } from 'node:stream';
import { Http01Responder } from '../../agent/http01/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import { createRootLogger, silentLogger } from '../../shared/log/index.js';
import { freePort } from '../harness/process.js';

const TOKEN = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA';
const KEY_AUTH = `${TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI`;

interface Reply {
  status: number;
  type: string | undefined;
  body: string;
}

function get(host: string, port: number, path: string, options: { hostHeader?: string; method?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path, method: options.method ?? 'GET', headers: { Host: options.hostHeader ?? 'www.example.test', Connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function started(host: string, log = silentLogger()): Promise<{ responder: Http01Responder; port: number }> {
  const port = await freePort(host);
  const responder = new Http01Responder({ log });
  await responder.start({ host, port });
  return { responder, port };
}

void test('a real GET for a known token returns its key authorization as text/plain, whatever the Host header', async () => {
  const host = '127.0.0.2';
  const { responder, port } = await started(host);
  try {
    responder.set(TOKEN, KEY_AUTH);
    for (const hostHeader of ['www.example.test', 'other.example.test', `${host}:${port}`]) {
      const reply = await get(host, port, `/.well-known/acme-challenge/${TOKEN}`, { hostHeader });
      assert.deepEqual(reply, { status: 200, type: 'text/plain', body: KEY_AUTH });
    }
    assert.deepEqual(responder.tokens(), [TOKEN]);
  } finally {
    await responder.stop();
  }
});

void test('unknown tokens, malformed tokens, other paths and deleted tokens get 404; POST gets 405', async () => {
  const host = '127.0.0.3';
  const { responder, port } = await started(host);
  try {
    responder.set(TOKEN, KEY_AUTH);
    assert.equal((await get(host, port, '/.well-known/acme-challenge/unknownToken')).status, 404);
    assert.equal((await get(host, port, '/.well-known/acme-challenge/../../etc/passwd')).status, 404);
    assert.equal((await get(host, port, `/.well-known/acme-challenge/${TOKEN}/extra`)).status, 404);
    assert.equal((await get(host, port, '/.well-known/acme-challenge/')).status, 404);
    assert.equal((await get(host, port, `/${TOKEN}`)).status, 404);
    assert.equal((await get(host, port, `/.well-known/acme-challenge/${TOKEN}`, { method: 'POST' })).status, 405);
    assert.equal(responder.delete(TOKEN), true);
    assert.equal((await get(host, port, `/.well-known/acme-challenge/${TOKEN}`)).status, 404);
    assert.deepEqual(responder.tokens(), []);
  } finally {
    await responder.stop();
  }
});

void test('set refuses a token that is not base64url and a key authorization for another token', () => {
  const responder = new Http01Responder({ log: silentLogger() });
  assert.throws(() => responder.set('bad/token', 'bad/token.abc'), (err) => isCertfleetError(err, 'USAGE_INVALID'));
  assert.throws(() => responder.set('tok=', 'tok=.abc'), (err) => isCertfleetError(err, 'USAGE_INVALID'));
  assert.throws(() => responder.set(TOKEN, 'otherToken.abc'), (err) => isCertfleetError(err, 'USAGE_INVALID'));
  assert.deepEqual(responder.tokens(), []);
});

void test('each challenge request is logged at debug with its token', async () => {
  const host = '127.0.0.4';
  const lines = new PassThrough();
  let logged = '';
  lines.on('data', (c: Buffer) => (logged += c.toString('utf8')));
  const { responder, port } = await started(host, createRootLogger({ name: 'agent', level: 'debug', destination: lines }));
  try {
    responder.set(TOKEN, KEY_AUTH);
    await get(host, port, `/.well-known/acme-challenge/${TOKEN}`);
    const hit = logged.split('\n').filter((l) => l.includes('challenge request')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(hit.length, 1);
    assert.equal(hit[0]?.['challengeToken'], TOKEN);
    assert.equal(hit[0]?.['found'], true);
    assert.equal(hit[0]?.['level'], 20);
  } finally {
    await responder.stop();
  }
});

void test('start on an address already in use rejects with a retryable error; stop frees the port for a new responder', async () => {
  const host = '127.0.0.5';
  const { responder, port } = await started(host);
  const second = new Http01Responder({ log: silentLogger() });
  await assert.rejects(second.start({ host, port }), (err) => isCertfleetError(err) && err.retryable && err.details['errno'] === 'EADDRINUSE');
  await assert.rejects(responder.start({ host, port }), (err) => isCertfleetError(err, 'USAGE_INVALID'));
  await responder.stop();
  await second.start({ host, port });
  second.set(TOKEN, KEY_AUTH);
  assert.equal((await get(host, port, `/.well-known/acme-challenge/${TOKEN}`)).body, KEY_AUTH);
  await second.stop();
  await second.stop();
});

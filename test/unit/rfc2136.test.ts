/**
 * The DNS wire encoding and TSIG signatures of the rfc2136 provider, byte for byte
 * against independent implementations:
 *
 * - NSUPDATE_*: datagrams BIND 9.18's `nsupdate -y <alg>:<key>:<secret>` sent to a UDP
 *   socket (commands: `zone`, `update add ... 60 TXT "..."`, `update delete ... TXT
 *   "old-value"`, `send`). Our encoder, given the same ID and time, must produce the very
 *   same bytes — MAC included.
 * - BIND_*: our signed UPDATE sent to BIND 9.18 `named`, and the signed answer it sent back
 *   (and a BADSIG answer to a query signed with a wrong secret).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  challengeName,
  dns01ConfigSchema,
  createDns01Providers,
  dns01Value,
  parseTsigSecret,
  readTsig,
  signMessage,
  verifyResponse,
  parseServer,
  type TsigKey,
} from '../../controller/solvers/dns01/index.js';
import { RRClass, RRType, WireError, buildQuery, buildTxtUpdate, encodeTxt, parseMessage, readName, txtValue } from '../../controller/solvers/dns01/wire.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';

const SECRET = 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ='; // "secret-secret-secret-secret-1234"
const VALUE = 'LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0';
const hex = (s: string): Buffer => Buffer.from(s, 'hex');

const NSUPDATE_SHA256 = hex(
  'da3228000001000000020001076578616d706c65047465737400000600010f5f61636d652d6368616c6c656e676503777777076578616d706c65047465737400001000010000003c002c2b4c6f71586359563871354f4e624a5178626d52375343544e6f337469415844666f77796a78416a45755830c01e001000fe00000000000a096f6c642d76616c75650d63657274666c6565742d6b65790000fa00ff00000000003d0b686d61632d7368613235360000006b0a2e97012c00201e43b8e84a7f09d6ef306ac9137a307888a65b752900aaa895839fe92bf191eada3200000000',
);
const NSUPDATE_SHA512 = hex(
  '9e75280000010000000200010a76616c69646174696f6e047465737400000600010f5f61636d652d6368616c6c656e6765037777770a76616c69646174696f6e047465737400001000010000003c002c2b4c6f71586359563871354f4e624a5178626d52375343544e6f337469415844666f77796a78416a45755830c021001000fe00000000000a096f6c642d76616c75650e76616c69646174696f6e2d6b65790000fa00ff00000000005d0b686d61632d7368613531320000006b0a2ecd012c0040985c65d37d8aa58871fec77219a9b6ea5fc196cd7fdb731a59879daf5e5fdd28c5d13371fb774aaeac21faf8dd107a37f8318775c715e506631802d7373b71d69e7500000000',
);
const BIND_TIME = 1795829452;
const BIND_REQUEST = hex(
  '123428000001000000010001076578616d706c65047465737400000600010f5f61636d652d6368616c6c656e676503777777076578616d706c65047465737400001000010000003c002c2b4c6f71586359563871354f4e624a5178626d52375343544e6f337469415844666f77796a78416a457558300d63657274666c6565742d6b65790000fa00ff00000000003d0b686d61632d7368613235360000006b0a2ecc012c0020cdba4de6013efd94862c2c8f2cf57c7a5d30ca52ea5a318274fc54799a0cf1e7123400000000',
);
const BIND_REQUEST_MAC = hex('cdba4de6013efd94862c2c8f2cf57c7a5d30ca52ea5a318274fc54799a0cf1e7');
const BIND_RESPONSE = hex(
  '1234a8000001000000000001076578616d706c65047465737400000600010d63657274666c6565742d6b65790000fa00ff00000000003d0b686d61632d7368613235360000006b0a2ecc012c002099100a4d1ef1f14e3a3b97ba54e3a1ac9506031db09e99cb6fb2d20b62e57a5c123400000000',
);
const BIND_BADSIG_RESPONSE = hex(
  '432180090001000000000001076578616d706c65047465737400000600010d63657274666c6565742d6b65790000fa00ff00000000001d0b686d61632d7368613235360000006b0a2ecc012c0000432100100000',
);

const sha256Key: TsigKey = { name: 'certfleet-key', algorithm: 'hmac-sha256', secret: Buffer.from(SECRET, 'base64') };
const sha512Key: TsigKey = { name: 'validation-key', algorithm: 'hmac-sha512', secret: Buffer.from(SECRET, 'base64') };

/** Our rendering of the update nsupdate sent: add VALUE, delete "old-value", zone `zone`. */
function ourUpdate(id: number, zone: string, key: TsigKey, time: number): Buffer {
  const name = `_acme-challenge.www.${zone}.`;
  const unsigned = buildTxtUpdate(id, zone, [
    { op: 'add', name, value: VALUE, ttl: 60 },
    { op: 'delete', name, value: 'old-value', ttl: 0 },
  ]);
  return signMessage(unsigned, key, time).message;
}

test('a TSIG hmac-sha256 signed UPDATE is byte-identical to the one nsupdate sends', () => {
  const tsig = readTsig(NSUPDATE_SHA256);
  assert.ok(tsig);
  assert.equal(ourUpdate(NSUPDATE_SHA256.readUInt16BE(0), 'example.test', sha256Key, tsig.timeSigned).toString('hex'), NSUPDATE_SHA256.toString('hex'));
});

test('a TSIG hmac-sha512 signed UPDATE is byte-identical to the one nsupdate sends', () => {
  const tsig = readTsig(NSUPDATE_SHA512);
  assert.ok(tsig);
  assert.equal(tsig.mac.length, 64);
  assert.equal(ourUpdate(NSUPDATE_SHA512.readUInt16BE(0), 'validation.test', sha512Key, tsig.timeSigned).toString('hex'), NSUPDATE_SHA512.toString('hex'));
});

test('a different secret or time gives a different MAC than nsupdate, so the byte test can fail', () => {
  const tsig = readTsig(NSUPDATE_SHA256);
  assert.ok(tsig);
  const id = NSUPDATE_SHA256.readUInt16BE(0);
  assert.notDeepEqual(ourUpdate(id, 'example.test', { ...sha256Key, secret: Buffer.alloc(32, 1) }, tsig.timeSigned), NSUPDATE_SHA256);
  assert.notDeepEqual(ourUpdate(id, 'example.test', sha256Key, tsig.timeSigned + 1), NSUPDATE_SHA256);
});

test('the decoder reads nsupdate\'s UPDATE: zone section, add with class IN and TTL, delete of one value with class NONE', () => {
  const msg = parseMessage(NSUPDATE_SHA256);
  assert.equal(msg.opcode, 5);
  assert.deepEqual(msg.questions, [{ name: 'example.test.', type: RRType.SOA, klass: RRClass.IN }]);
  // RFC 2136 reuses the authority section as the update section.
  const [add, del] = msg.authority;
  assert.ok(add && del);
  assert.deepEqual([add.name, add.type, add.klass, add.ttl, txtValue(add)], ['_acme-challenge.www.example.test.', RRType.TXT, RRClass.IN, 60, VALUE]);
  // The second owner name is a compression pointer back to the first.
  assert.deepEqual([del.name, del.type, del.klass, del.ttl, txtValue(del)], ['_acme-challenge.www.example.test.', RRType.TXT, RRClass.NONE, 0, 'old-value']);
  const tsig = readTsig(NSUPDATE_SHA256);
  assert.deepEqual(
    { keyName: tsig?.keyName, algorithm: tsig?.algorithm, fudge: tsig?.fudge, originalId: tsig?.originalId, error: tsig?.error },
    { keyName: 'certfleet-key.', algorithm: 'hmac-sha256.', fudge: 300, originalId: 0xda32, error: 0 },
  );
});

test('BIND\'s signed answer to our UPDATE verifies against our request MAC', () => {
  assert.deepEqual(verifyResponse(BIND_RESPONSE, sha256Key, BIND_REQUEST_MAC, BIND_TIME + 10), { ok: true });
  // And the request we sent was what we sign today.
  const tsig = readTsig(BIND_REQUEST);
  assert.ok(tsig);
  const unsigned = buildTxtUpdate(0x1234, 'example.test', [{ op: 'add', name: '_acme-challenge.www.example.test.', value: VALUE, ttl: 60 }]);
  const again = signMessage(unsigned, sha256Key, tsig.timeSigned);
  assert.deepEqual(again.message, BIND_REQUEST);
  assert.deepEqual(again.mac, BIND_REQUEST_MAC);
});

test('an answer that was altered, signed with another secret, chained to another request or too old is refused', () => {
  const flipped = Buffer.from(BIND_RESPONSE);
  flipped[3] = (flipped[3] ?? 0) ^ 0x01; // rcode NOERROR -> FORMERR
  assert.equal(verifyResponse(flipped, sha256Key, BIND_REQUEST_MAC, BIND_TIME).ok, false);
  assert.deepEqual(verifyResponse(flipped, sha256Key, BIND_REQUEST_MAC, BIND_TIME), {
    ok: false,
    reason: 'bad-mac',
    detail: 'the response MAC does not match (wrong secret or altered message)',
  });
  const wrongSecret = verifyResponse(BIND_RESPONSE, { ...sha256Key, secret: Buffer.alloc(32, 1) }, BIND_REQUEST_MAC, BIND_TIME);
  assert.equal(wrongSecret.ok ? 'ok' : wrongSecret.reason, 'bad-mac');
  const otherRequest = verifyResponse(BIND_RESPONSE, sha256Key, Buffer.alloc(32, 9), BIND_TIME);
  assert.equal(otherRequest.ok ? 'ok' : otherRequest.reason, 'bad-mac');
  const late = verifyResponse(BIND_RESPONSE, sha256Key, BIND_REQUEST_MAC, BIND_TIME + 301);
  assert.equal(late.ok ? 'ok' : late.reason, 'bad-time');
  const otherKey = verifyResponse(BIND_RESPONSE, sha512Key, BIND_REQUEST_MAC, BIND_TIME);
  assert.equal(otherKey.ok ? 'ok' : otherKey.reason, 'wrong-key');
});

test('an unsigned answer to a signed request is refused', () => {
  const unsigned = Buffer.from(BIND_RESPONSE.subarray(0, readTsig(BIND_RESPONSE)?.offset));
  unsigned.writeUInt16BE(0, 10);
  const verdict = verifyResponse(unsigned, sha256Key, BIND_REQUEST_MAC, BIND_TIME);
  assert.equal(verdict.ok ? 'ok' : verdict.reason, 'unsigned');
});

test('BIND\'s NOTAUTH answer to a wrong secret is read as TSIG error BADSIG from the server', () => {
  const msg = parseMessage(BIND_BADSIG_RESPONSE);
  assert.equal(msg.rcode, 9);
  const verdict = verifyResponse(BIND_BADSIG_RESPONSE, sha256Key, Buffer.alloc(32), BIND_TIME);
  assert.deepEqual(verdict.ok ? null : { reason: verdict.reason, error: verdict.error }, { reason: 'server-error', error: 16 });
});

test('a query is encoded with its name as given (case kept) and with or without recursion desired', () => {
  // 07 "Example" 04 "TEST" 00, type SOA, class IN
  assert.equal(buildQuery(0xabcd, 'Example.TEST', RRType.SOA, false).toString('hex'), 'abcd00000001000000000000074578616d706c6504544553540000060001');
  assert.equal(buildQuery(1, 'example.test.', RRType.TXT, true).readUInt16BE(2), 0x0100);
});

test('TXT values longer than 255 bytes are split into character-strings and joined when read', () => {
  const long = 'a'.repeat(300);
  const rdata = encodeTxt(long);
  assert.deepEqual([rdata[0], rdata[256]], [255, 45]);
  assert.equal(txtValue({ name: 'x.', type: RRType.TXT, klass: 1, ttl: 0, rdata, rdataOffset: 0, offset: 0 }), long);
});

test('malformed names are rejected: pointer loops, labels past the end, labels over 63 bytes', () => {
  assert.throws(() => readName(Buffer.from([0xc0, 0x00]), 0), WireError);
  assert.throws(() => readName(Buffer.from([5, 0x61, 0x62]), 0), WireError);
  assert.throws(() => buildQuery(1, `${'a'.repeat(64)}.test`, RRType.TXT, false), WireError);
  assert.throws(() => parseMessage(BIND_RESPONSE.subarray(0, 40)), WireError);
});

test('the DNS-01 value is base64url(SHA-256(key authorization)) and the record name drops a wildcard', () => {
  // Reference: printf %s token-abc.thumbprint-xyz | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d =
  assert.equal(dns01Value('token-abc.thumbprint-xyz'), 'e4poW-EBoq21JA9OrAOs8Izzml-1iB5kE5hWbN2FDkM');
  assert.equal(challengeName('*.Example.com'), '_acme-challenge.example.com.');
  assert.equal(challengeName('example.com'), '_acme-challenge.example.com.');
});

test('a TSIG secret is read from plain base64 or from tsig-keygen output, and junk is refused', () => {
  const keygen = 'key "demo-key" {\n\talgorithm hmac-sha256;\n\tsecret "GGFk4VWgvM7yMO/0oEEwxA+FdKbhIUAQL0Hci0vItog=";\n};\n';
  assert.equal(parseTsigSecret(keygen)?.toString('base64'), 'GGFk4VWgvM7yMO/0oEEwxA+FdKbhIUAQL0Hci0vItog=');
  assert.equal(parseTsigSecret(`${SECRET}\n`)?.toString('base64'), SECRET);
  assert.equal(parseTsigSecret('not base64!'), null);
  assert.equal(parseTsigSecret('c2hvcnQ='), null); // 5 bytes: too short to be a real key
});

test('DNS server addresses parse with and without ports, IPv6 in brackets', () => {
  assert.deepEqual(parseServer('192.0.2.1'), { host: '192.0.2.1', port: 53 });
  assert.deepEqual(parseServer('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
  assert.deepEqual(parseServer('[::1]:5353'), { host: '::1', port: 5353 });
  assert.deepEqual(parseServer('::1'), { host: '::1', port: 53 });
});

test('the dns01 schema requires exactly one secret source, a known algorithm and addresses for servers', () => {
  const bad = dns01ConfigSchema.safeParse({
    providers: {
      both: { type: 'rfc2136', server: '127.0.0.1', keyName: 'k', secretFile: '/x', secretEnv: 'X' },
      none: { type: 'rfc2136', server: 'ns1.example.com:53', keyName: 'k' },
      md5: { type: 'rfc2136', server: '127.0.0.1', keyName: 'k', secretEnv: 'X', algorithm: 'hmac-md5' },
    },
  });
  assert.equal(bad.success, false);
  const paths = (bad.error?.issues ?? []).map((i) => i.path.join('.')).sort();
  assert.deepEqual(paths, ['providers.both.secretFile', 'providers.md5.algorithm', 'providers.none.secretFile', 'providers.none.server']);
  const unknown = dns01ConfigSchema.safeParse({ providers: {}, zones: [{ zone: 'Example.com.', provider: 'missing' }] });
  assert.deepEqual((unknown.error?.issues ?? []).map((i) => [i.path.join('.'), i.message]), [['zones.0.provider', 'unknown provider "missing"']]);
  const good = dns01ConfigSchema.parse({ providers: { bind: { type: 'rfc2136', server: '192.0.2.53', keyName: 'certfleet-key', secretEnv: 'TSIG' } } });
  assert.deepEqual(
    { algorithm: good.providers['bind']?.type === 'rfc2136' ? good.providers['bind'].algorithm : '', ttl: good.providers['bind']?.type === 'rfc2136' ? good.providers['bind'].ttl : 0, timeout: good.propagation.timeout, port: good.propagation.nameserverPort },
    { algorithm: 'hmac-sha256', ttl: 60, timeout: 120_000, port: 53 },
  );
});

test('missing and malformed secrets are all reported at once, without the secret text', () => {
  const okProvider = { type: 'rfc2136', server: '192.0.2.53', keyName: 'k', secretEnv: 'GOOD_TSIG' };
  const cfg = dns01ConfigSchema.parse({
    providers: {
      unset: { type: 'rfc2136', server: '192.0.2.53', keyName: 'k', secretEnv: 'UNSET_TSIG' },
      junk: { type: 'rfc2136', server: '192.0.2.53', keyName: 'k', secretEnv: 'JUNK_TSIG' },
      nofile: { type: 'rfc2136', server: '192.0.2.53', keyName: 'k', secretFile: '/nonexistent/tsig.key' },
      ok: okProvider,
    },
  });
  const env = { JUNK_TSIG: 'hunter2-is-not-base64!', GOOD_TSIG: SECRET };
  let err: unknown;
  try {
    createDns01Providers(cfg, { env, clock: new ManualClock(), log: silentLogger() });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof CertfleetError);
  assert.equal(err.code, ErrorCode.ConfigInvalid);
  assert.match(err.message, /3 problems/);
  assert.match(err.message, /dns01\.providers\.unset\.secretEnv: environment variable UNSET_TSIG is not set/);
  assert.match(err.message, /dns01\.providers\.junk\.secretEnv: not a base64 TSIG secret/);
  assert.match(err.message, /dns01\.providers\.nofile\.secretFile: cannot read \/nonexistent\/tsig\.key: ENOENT/);
  assert.doesNotMatch(JSON.stringify({ m: err.message, d: err.details }), /hunter2|c2VjcmV0/);
  const providers = createDns01Providers(dns01ConfigSchema.parse({ providers: { ok: okProvider } }), { env, clock: new ManualClock(), log: silentLogger() });
  assert.deepEqual([...providers.keys()], ['ok']);
});

/**
 * AWS Signature Version 4 against AWS's published test vectors: the
 * aws-sig-v4-test-suite cases (credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
 * region us-east-1, service "service", 2015-08-30T12:36:00Z), with the expected
 * Authorization headers as AWS ships them in its own SDK's copy of the suite
 * (aws/aws-sdk-js-v3, packages/signature-v4/src/suite.fixture.ts). The route53 provider
 * signs every request with this code, so a wrong byte here is a 403 from AWS.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { signV4, amzDate, uriEncode } from '../../controller/solvers/dns01/index.js';

const creds = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const scope = { region: 'us-east-1', service: 'service', at: new Date('2015-08-30T12:36:00Z') };
const base = { host: 'example.amazonaws.com', 'x-amz-date': '20150830T123600Z' };
const CRED = 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request';

const vectors: Array<{ name: string; method: string; path: string; query?: Array<[string, string]>; headers?: Record<string, string>; body?: string; authorization: string }> = [
  { name: 'get-vanilla', method: 'GET', path: '/', authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31` },
  {
    name: 'get-vanilla-query-order-key-case',
    method: 'GET',
    path: '/',
    query: [['Param2', 'value2'], ['Param1', 'value1']],
    authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500`,
  },
  {
    name: 'get-vanilla-query-unreserved',
    method: 'GET',
    path: '/',
    query: [['-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', '-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz']],
    authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197`,
  },
  { name: 'get-vanilla-utf8-query', method: 'GET', path: '/', query: [['ሴ', 'bar']], authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04` },
  { name: 'get-utf8', method: 'GET', path: '/ሴ', authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85` },
  {
    name: 'get-unreserved',
    method: 'GET',
    path: '/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz',
    authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f`,
  },
  {
    name: 'get-header-value-trim',
    method: 'GET',
    path: '/',
    headers: { 'my-header1': 'value1', 'my-header2': '"a   b   c"' },
    authorization: `${CRED}, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736`,
  },
  {
    name: 'post-header-value-case',
    method: 'POST',
    path: '/',
    headers: { 'My-Header1': 'VALUE1' },
    authorization: `${CRED}, SignedHeaders=host;my-header1;x-amz-date, Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d`,
  },
  { name: 'post-vanilla-query', method: 'POST', path: '/', query: [['Param1', 'value1']], authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11` },
  {
    name: 'post-vanilla-query-nonunreserved',
    method: 'POST',
    path: '/',
    query: [['@#$%^', ''], ['+', '/,?><`";:\\|][{}']],
    authorization: `${CRED}, SignedHeaders=host;x-amz-date, Signature=66c82657c86e26fb25238d0e69f011edc4c6df5ae71119d7cb98ed9b87393c1e`,
  },
  {
    name: 'post-x-www-form-urlencoded',
    method: 'POST',
    path: '/',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'Param1=value1',
    authorization: `${CRED}, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a`,
  },
];

for (const v of vectors) {
  void test(`SigV4 suite vector ${v.name} gives AWS's Authorization header`, () => {
    const signed = signV4(
      { method: v.method, url: `https://example.amazonaws.com${v.path}`, ...(v.query ? { query: v.query } : {}), headers: { ...base, ...v.headers }, body: v.body ?? '' },
      creds,
      scope,
    );
    assert.equal(signed.authorization, v.authorization);
  });
}

void test('SigV4 canonical request of get-vanilla-query-order-key-case sorts the query by name (the suite’s .creq)', () => {
  const signed = signV4({ method: 'GET', url: 'https://example.amazonaws.com/', query: [['Param2', 'value2'], ['Param1', 'value1']], headers: { ...base }, body: '' }, creds, scope);
  assert.equal(
    signed.canonicalRequest,
    ['GET', '/', 'Param1=value1&Param2=value2', 'host:example.amazonaws.com', 'x-amz-date:20150830T123600Z', '', 'host;x-amz-date', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'].join('\n'),
  );
  assert.equal(signed.url, 'https://example.amazonaws.com/?Param1=value1&Param2=value2');
});

void test('SigV4 adds host and x-amz-date itself, and signs a session token', () => {
  const signed = signV4({ method: 'GET', url: 'https://route53.amazonaws.com/2013-04-01/hostedzonesbyname', headers: {}, body: '' }, { ...creds, sessionToken: 'SESSION' }, { ...scope, service: 'route53' });
  assert.equal(signed.headers['host'], 'route53.amazonaws.com');
  assert.equal(signed.headers['x-amz-date'], amzDate(scope.at));
  assert.equal(signed.headers['x-amz-security-token'], 'SESSION');
  assert.match(signed.authorization, /SignedHeaders=host;x-amz-date;x-amz-security-token, /);
  assert.equal(uriEncode("a!'()*b"), 'a%21%27%28%29%2Ab');
});

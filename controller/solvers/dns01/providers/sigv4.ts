/**
 * AWS Signature Version 4 (the `Authorization: AWS4-HMAC-SHA256 ...` header), written
 * out here instead of pulling in the AWS SDK for one service. Pure: the same request,
 * credentials and time always give the same headers. Checked against the published
 * aws-sig-v4-test-suite vectors in test/unit/sigv4.test.ts.
 *
 * Scope: header signing of requests whose paths need no normalisation (Route 53's
 * `/2013-04-01/...`); no presigned URLs, no S3 payload rules, no SigV4a.
 */
import crypto from 'node:crypto';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** Temporary credentials (STS): sent as X-Amz-Security-Token and signed. */
  sessionToken?: string;
}

export interface SigV4Request {
  method: string;
  /** `https://host[:port]/path` without a query string. */
  url: string;
  /** Query parameters in any order (unencoded). */
  query?: ReadonlyArray<readonly [string, string]>;
  /** Header names in any case; `host` and `x-amz-date` are added when missing. */
  headers: Record<string, string>;
  body: string;
}

export interface SigV4Scope {
  region: string;
  service: string;
  /** Signing time. */
  at: Date;
}

export interface SignedRequest {
  /** Every header to send, `authorization` included (lower-case names). */
  headers: Record<string, string>;
  /** The URL with its canonical (encoded, sorted) query string. */
  url: string;
  canonicalRequest: string;
  stringToSign: string;
  authorization: string;
}

/** RFC 3986 encoding: everything but A-Z a-z 0-9 - _ . ~ (encodeURIComponent leaves !'()* alone). */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function sha256Hex(data: string): string {
  return crypto.createHash('sha256').update(data, 'utf8').digest('hex');
}

function hmac(key: Buffer | string, data: string): Buffer {
  return crypto.createHmac('sha256', key).update(data, 'utf8').digest();
}

/** `20150830T123600Z` */
export function amzDate(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

/** Signs `req` (header signing, SigV4). */
export function signV4(req: SigV4Request, creds: AwsCredentials, scope: SigV4Scope): SignedRequest {
  const url = new URL(req.url);
  const date = amzDate(scope.at);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = v;
  headers['host'] ??= url.host;
  headers['x-amz-date'] ??= date;
  if (creds.sessionToken !== undefined) headers['x-amz-security-token'] = creds.sessionToken;

  const canonicalUri = url.pathname.split('/').map((seg) => uriEncode(decodeURIComponent(seg))).join('/') || '/';
  const query = (req.query ?? [])
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const names = Object.keys(headers).sort();
  const canonicalHeaders = names.map((n) => `${n}:${(headers[n] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const signedHeaders = names.join(';');
  const canonicalRequest = [req.method.toUpperCase(), canonicalUri, query, canonicalHeaders, signedHeaders, sha256Hex(req.body)].join('\n');

  const day = date.slice(0, 8);
  const credentialScope = `${day}/${scope.region}/${scope.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', date, credentialScope, sha256Hex(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${creds.secretAccessKey}`, day), scope.region), scope.service), 'aws4_request');
  const signature = crypto.createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
  const authorization = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${credentialScope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return {
    headers: { ...headers, authorization },
    url: `${url.origin}${url.pathname}${query === '' ? '' : `?${query}`}`,
    canonicalRequest,
    stringToSign,
    authorization,
  };
}

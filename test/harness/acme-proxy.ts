/**
 * ARI in front of Pebble. Debian's Pebble 2.4 has no renewalInfo (RFC 9773), so tests
 * of the ARI path talk to this HTTPS reverse proxy instead, on a free 127.0.0.1 port:
 *
 *   client ──https──► proxy ──https, same Host header──► Pebble
 *                      ├─ GET  /dir             Pebble's directory + "renewalInfo"
 *                      ├─ GET  /renewal-info/ID the window the test set for ID
 *                      ├─ POST <newOrder>       payload (and Pebble's status) recorded, then forwarded
 *                      ├─ certificate downloads  leaf fingerprint recorded while passed through
 *                      └─ problem documents      counted by type while passed through
 *
 * Why this works without touching a single JWS: Pebble builds every URL it hands out
 * (directory entries, Location, order/authz/finalize/certificate URLs, Link headers)
 * from the request's Host header, and checks a JWS's protected `url` against
 * `https://` + Host + path. The proxy forwards every request byte for byte *with the
 * client's Host header* (127.0.0.1:<proxy port>), so Pebble names the proxy in all its
 * URLs, the client signs proxy URLs, and Pebble's check compares proxy URLs with proxy
 * URLs. The client never learns Pebble's own address. (Rewriting URLs in bodies, or
 * re-signing JWS, is therefore unnecessary; the directory rewrite below is only a guard
 * in case a Pebble build stops echoing Host.)
 *
 * ACME profiles (draft-ietf-acme-profiles): Pebble 2.4 has none either. With `profiles`
 * set, the proxy simulates the protocol half of a CA that has them: the directory's
 * `meta.profiles` lists them, a newOrder asking for another profile is answered 400
 * `invalidProfile` (not forwarded), and the order objects of an order placed with a
 * profile (newOrder, order and finalize answers) carry `profile`, as the draft says a CA
 * that accepted it responds. What it cannot simulate is the profile's effect on the
 * certificate: Pebble issues every certificate with one validity
 * (`certificateValidityPeriod`) and one set of extensions, whatever the order asked for;
 * a test of a "shortlived" profile sets Pebble's validity to match. Without `profiles`
 * the field is forwarded and Pebble ignores it, as a CA without the extension would.
 *
 * The proxy's TLS certificate (IP SAN 127.0.0.1) comes from a throwaway CA made here;
 * `caPem` is what an AcmeClient must trust. Pebble's own HTTPS CA is trusted only by the
 * proxy's upstream agent.
 */
import 'reflect-metadata';
import https from 'node:https';
import type http from 'node:http';
import { once } from 'node:events';
import { createHash, webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { makeTestCa, privateKeyPem } from './certs.js';
import { freePort } from './process.js';
import type { PebbleHandle } from './pebble.js';

x509.cryptoProvider.set(webcrypto as never);

/** A time for a window edge: a Date, epoch ms, or a string served as is (to test bad ones). */
export type WindowEdge = Date | number | string;

export interface ProxyWindow {
  start: WindowEdge;
  end: WindowEdge;
  /** Served as `explanationURL`. */
  explanationUrl?: string;
  /** The Retry-After header to send; null sends none. Default: the proxy's `retryAfter`. */
  retryAfter?: string | null;
}

/** One newOrder request as Pebble received it (decoded JWS payload). */
export interface RecordedNewOrder {
  identifiers: Array<{ type: string; value: string }>;
  replaces?: string;
  /** The `profile` field (draft-ietf-acme-profiles), when the order asked for one. */
  profile?: string;
  /** The whole decoded payload, for fields not named above. */
  payload: Record<string, unknown>;
  /** Pebble's HTTP status for it (201: created; 400 badNonce, ...); undefined until it answered. */
  status?: number;
}

/** A certificate chain the CA handed out through the proxy (a certificate download). */
export interface DownloadedCertificate {
  /** Lower-case hex SHA-256 of the leaf's DER (the project's fingerprint format). */
  fingerprint: string;
  /** DNS names of the leaf, lower case. */
  names: string[];
}

export interface AcmeProxyOptions {
  pebble: Pick<PebbleHandle, 'directoryUrl' | 'caPem'>;
  /** Retry-After (seconds or HTTP-date) for renewal-info answers. Default '21600' (six hours, as RFC 9773's example). */
  retryAfter?: string;
  /**
   * Window for identifiers the test did not set, or a function choosing one per identifier
   * (for certificates the test cannot know in advance); default none (404 malformed
   * problem, as an unknown certificate).
   */
  defaultWindow?: ProxyWindow | ((certId: string) => ProxyWindow | undefined);
  /**
   * ACME profiles to advertise (name → description) in the directory's `meta.profiles`;
   * a newOrder asking for another one is refused with `invalidProfile`. Default none
   * (Pebble 2.4's directory, unchanged). See the module comment for what is simulated.
   */
  profiles?: Record<string, string>;
}

export interface AcmeProxy {
  /** The directory to give an AcmeClient: https://127.0.0.1:PORT/<Pebble's directory path>. */
  directoryUrl: string;
  /** The `renewalInfo` URL the directory advertises. */
  renewalInfoUrl: string;
  /** CA of the proxy's HTTPS certificate: the `caPem` an AcmeClient must trust. */
  caPem: string;
  /** Serves `window` for `certId` from now on (replacing any earlier one). */
  setWindow(certId: string, window: ProxyWindow): void;
  /** How many renewal-info GETs arrived for `certId` (any identifier when omitted). */
  renewalInfoRequests(certId?: string): number;
  /** Every newOrder Pebble was sent through the proxy, oldest first. */
  newOrders(): RecordedNewOrder[];
  /**
   * While `match` is set, requests it matches are held: not forwarded until the hold is
   * lifted (`setHold(undefined)`), then forwarded only if their client is still there.
   * A hook point for killing the client at an exact step of an order.
   */
  setHold(match: ((req: { method: string; path: string }) => boolean) | undefined): void;
  /** How many requests were held so far (released or not). */
  heldCount(): number;
  /**
   * Cuts the connection of every request held right now (never forwarded: the client sees
   * its connection reset) and returns how many. For a client that cannot go away itself,
   * e.g. a SIGSTOPped process whose held request must not reach the CA when the hold lifts.
   */
  dropHeld(): number;
  /** While true, every request is answered 503 serverInternal: a CA that is down. */
  setDown(down: boolean): void;
  /**
   * The newOrders Pebble accepted (201), oldest first: requests it refused (a badNonce
   * the client retries, say) created no order.
   */
  createdOrders(): RecordedNewOrder[];
  /** Every certificate downloaded through the proxy, oldest first (one per download). */
  downloadedCertificates(): DownloadedCertificate[];
  /** How many problem documents Pebble answered, by type (e.g. `urn:ietf:params:acme:error:badNonce`). */
  problems(): Record<string, number>;
  /** Closes the listener and its connections. */
  stop(): Promise<void>;
}

const RENEWAL_INFO_PATH = '/renewal-info';
const PROBLEM_INVALID_PROFILE = 'urn:ietf:params:acme:error:invalidProfile';
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'te', 'trailer']);

/** Starts the proxy in front of a running Pebble; resolves once it listens. */
export async function startAcmeProxy(opts: AcmeProxyOptions): Promise<AcmeProxy> {
  const upstream = new URL(opts.pebble.directoryUrl);
  const upstreamAgent = new https.Agent({ keepAlive: true, ca: opts.pebble.caPem });
  // Pebble's newOrder path, from its own directory (it is "/order-plz" in 2.4, but ask).
  const pebbleDir = JSON.parse((await get(opts.pebble.directoryUrl, upstreamAgent)).toString('utf8')) as Record<string, unknown>;
  const newOrderPath = new URL(String(pebbleDir['newOrder'])).pathname;

  const port = await freePort();
  const origin = `https://127.0.0.1:${port}`;
  const tlsMaterial = await serverCertificate();
  const windows = new Map<string, ProxyWindow>();
  const hits = new Map<string, number>();
  const orders: RecordedNewOrder[] = [];
  const downloads: DownloadedCertificate[] = [];
  const problemCounts: Record<string, number> = {};
  // Paths of order and finalize URLs whose answers carry the order's profile.
  const orderProfiles = new Map<string, string>();
  const defaultRetryAfter = opts.retryAfter ?? '21600';
  let hold: ((req: { method: string; path: string }) => boolean) | undefined;
  let heldTotal = 0;
  let waiting: Array<() => void> = [];
  // Held requests by their release function, to cut them (dropHeld).
  const heldResponses = new Map<() => void, { res: http.ServerResponse; drop: () => void }>();
  let down = false;

  const serveRenewalInfo = (certId: string, res: http.ServerResponse): void => {
    hits.set(certId, (hits.get(certId) ?? 0) + 1);
    const w = windows.get(certId) ?? (typeof opts.defaultWindow === 'function' ? opts.defaultWindow(certId) : opts.defaultWindow);
    if (w === undefined) {
      res
        .writeHead(404, { 'content-type': 'application/problem+json' })
        .end(JSON.stringify({ type: 'urn:ietf:params:acme:error:malformed', detail: `no renewal info for ${certId}`, status: 404 }));
      return;
    }
    const retryAfter = w.retryAfter === undefined ? defaultRetryAfter : w.retryAfter;
    const body: Record<string, unknown> = { suggestedWindow: { start: edge(w.start), end: edge(w.end) } };
    if (w.explanationUrl !== undefined) body['explanationURL'] = w.explanationUrl;
    res.writeHead(200, { 'content-type': 'application/json', ...(retryAfter === null ? {} : { 'retry-after': retryAfter }) }).end(JSON.stringify(body));
  };

  const server = https.createServer({ key: tlsMaterial.keyPem, cert: tlsMaterial.certPem }, (req, res) => {
    void (async () => {
      const path = req.url ?? '/';
      if (req.method === 'GET' && path.startsWith(`${RENEWAL_INFO_PATH}/`)) {
        req.resume();
        serveRenewalInfo(decodeURIComponent(path.slice(RENEWAL_INFO_PATH.length + 1)), res);
        return;
      }
      const body = await readBody(req);
      if (down) {
        res
          .writeHead(503, { 'content-type': 'application/problem+json' })
          .end(JSON.stringify({ type: 'urn:ietf:params:acme:error:serverInternal', detail: 'acme-proxy: the CA is down', status: 503 }));
        return;
      }
      if (hold?.({ method: req.method ?? '', path })) {
        heldTotal += 1;
        let gone = false;
        res.on('close', () => (gone = true));
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          heldResponses.set(resolve, {
            res,
            drop: () => {
              gone = true;
              res.socket?.destroy();
              resolve();
            },
          });
        });
        for (const [r, h] of heldResponses) if (h.res === res) heldResponses.delete(r);
        if (gone) return;
      }
      const recorded = req.method === 'POST' && path === newOrderPath ? decodeNewOrder(body) : undefined;
      if (recorded) orders.push(recorded);
      if (recorded?.profile !== undefined && opts.profiles !== undefined && !(recorded.profile in opts.profiles)) {
        // As a CA with profiles answers (draft-ietf-acme-profiles §4); Pebble never sees it.
        recorded.status = 400;
        problemCounts[PROBLEM_INVALID_PROFILE] = (problemCounts[PROBLEM_INVALID_PROFILE] ?? 0) + 1;
        res
          .writeHead(400, { 'content-type': 'application/problem+json' })
          .end(JSON.stringify({ type: PROBLEM_INVALID_PROFILE, detail: `profile "${recorded.profile}" is not offered (offered: ${Object.keys(opts.profiles).join(', ')})`, status: 400 }));
        return;
      }
      const headers: http.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) headers[k] = v;
      // Host stays the client's (127.0.0.1:<proxy port>): see the module comment.
      if (body.length > 0 || req.method === 'POST') headers['content-length'] = body.length;
      const up = https.request({
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path,
        headers,
        agent: upstreamAgent,
        servername: '', // Pebble's certificate is for the IP; no SNI from the forwarded Host.
      });
      up.on('response', (ur) => {
        if (recorded) recorded.status = ur.statusCode ?? 0;
        if ((ur.statusCode ?? 0) === 200 && String(ur.headers['content-type'] ?? '').startsWith('application/pem-certificate-chain')) {
          // Teed, not buffered: the client still gets the bytes as they come.
          const chunks: Buffer[] = [];
          ur.on('data', (c: Buffer) => chunks.push(c));
          ur.on('end', () => {
            const leaf = leafOf(Buffer.concat(chunks).toString('utf8'));
            if (leaf) downloads.push(leaf);
          });
        }
        if (String(ur.headers['content-type'] ?? '').startsWith('application/problem+json')) {
          const chunks: Buffer[] = [];
          ur.on('data', (c: Buffer) => chunks.push(c));
          ur.on('end', () => {
            let type = '(unreadable)';
            try {
              const t = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type?: unknown }).type;
              type = typeof t === 'string' ? t : '(none)';
            } catch {
              // counted as unreadable
            }
            problemCounts[type] = (problemCounts[type] ?? 0) + 1;
          });
        }
        const outHeaders: http.OutgoingHttpHeaders = {};
        for (const [k, v] of Object.entries(ur.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) outHeaders[k] = v;
        const echo = recorded?.profile ?? (req.method === 'POST' ? orderProfiles.get(path) : undefined);
        if (opts.profiles !== undefined && echo !== undefined && String(ur.headers['content-type'] ?? '').startsWith('application/json')) {
          void readBody(ur).then((raw) => {
            const order = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
            order['profile'] = echo;
            const location = ur.headers['location'];
            if (recorded && typeof location === 'string') orderProfiles.set(new URL(location, origin).pathname, echo);
            if (typeof order['finalize'] === 'string') orderProfiles.set(new URL(order['finalize'], origin).pathname, echo);
            delete outHeaders['content-length'];
            res.writeHead(ur.statusCode ?? 502, outHeaders).end(JSON.stringify(order));
          });
          return;
        }
        if (req.method === 'GET' && path === upstream.pathname && (ur.statusCode ?? 0) === 200) {
          void readBody(ur).then((raw) => {
            const dir = rewriteDirectory(raw, upstream.origin, origin);
            delete outHeaders['content-length'];
            res.writeHead(200, outHeaders).end(dir);
          });
          return;
        }
        res.writeHead(ur.statusCode ?? 502, outHeaders);
        ur.pipe(res);
      });
      up.on('error', (err) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`acme-proxy: upstream failed: ${err.message}`);
      });
      up.end(body);
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`acme-proxy: ${String(err)}`);
    });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');

  return {
    directoryUrl: `${origin}${upstream.pathname}`,
    renewalInfoUrl: `${origin}${RENEWAL_INFO_PATH}`,
    caPem: tlsMaterial.caPem,
    setWindow(certId, window) {
      windows.set(certId, window);
    },
    renewalInfoRequests(certId) {
      if (certId !== undefined) return hits.get(certId) ?? 0;
      let n = 0;
      for (const v of hits.values()) n += v;
      return n;
    },
    newOrders: () => orders.map((o) => ({ ...o, identifiers: [...o.identifiers] })),
    setHold(match) {
      hold = match;
      if (match === undefined) {
        const release = waiting;
        waiting = [];
        for (const r of release) r();
      }
    },
    heldCount: () => heldTotal,
    dropHeld() {
      const held = [...heldResponses.entries()];
      heldResponses.clear();
      waiting = waiting.filter((r) => !held.some(([release]) => release === r));
      for (const [, h] of held) h.drop();
      return held.length;
    },
    setDown(d) {
      down = d;
    },
    createdOrders: () => orders.filter((o) => o.status === 201).map((o) => ({ ...o, identifiers: [...o.identifiers] })),
    downloadedCertificates: () => downloads.map((d) => ({ ...d, names: [...d.names] })),
    problems: () => ({ ...problemCounts }),
    async stop() {
      for (const r of waiting) r();
      waiting = [];
      upstreamAgent.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };

  function rewriteDirectory(raw: Buffer, from: string, to: string): string {
    const dir = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
    for (const [k, v] of Object.entries(dir)) if (typeof v === 'string' && v.startsWith(from)) dir[k] = to + v.slice(from.length);
    dir['renewalInfo'] = `${to}${RENEWAL_INFO_PATH}`;
    if (opts.profiles !== undefined) {
      const meta = typeof dir['meta'] === 'object' && dir['meta'] !== null ? (dir['meta'] as Record<string, unknown>) : {};
      dir['meta'] = { ...meta, profiles: { ...opts.profiles } };
    }
    return JSON.stringify(dir, null, 2);
  }
}

/** The first certificate of a PEM chain, as a fingerprint and its DNS names; undefined when unreadable. */
function leafOf(pem: string): DownloadedCertificate | undefined {
  const first = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(pem)?.[0];
  if (first === undefined) return undefined;
  try {
    const cert = new X509Certificate(first);
    const names = (cert.subjectAltName ?? '')
      .split(', ')
      .filter((e) => e.startsWith('DNS:'))
      .map((e) => e.slice(4).toLowerCase());
    return { fingerprint: createHash('sha256').update(cert.raw).digest('hex'), names };
  } catch {
    return undefined;
  }
}

function edge(e: WindowEdge): string {
  return typeof e === 'string' ? e : new Date(e).toISOString();
}

/** The JWS (flattened JSON serialization) payload of a newOrder, decoded. */
function decodeNewOrder(body: Buffer): RecordedNewOrder {
  const jws = JSON.parse(body.toString('utf8')) as { payload?: string };
  const payload = JSON.parse(Buffer.from(jws.payload ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
  const identifiers = Array.isArray(payload['identifiers']) ? (payload['identifiers'] as Array<{ type: string; value: string }>) : [];
  return {
    identifiers,
    ...(typeof payload['replaces'] === 'string' ? { replaces: payload['replaces'] } : {}),
    ...(typeof payload['profile'] === 'string' ? { profile: payload['profile'] } : {}),
    payload,
  };
}

async function readBody(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks);
}

function get(url: string, agent: https.Agent): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { agent }, (res) => {
        readBody(res).then((b) => {
          if ((res.statusCode ?? 0) !== 200) reject(new Error(`GET ${url}: HTTP ${res.statusCode ?? 0}`));
          else resolve(b);
        }, reject);
      })
      .on('error', reject);
  });
}

/** A throwaway CA and a certificate for 127.0.0.1 signed by it. */
async function serverCertificate(): Promise<{ caPem: string; certPem: string; keyPem: string }> {
  const ca = await makeTestCa({ commonName: 'certfleet test ACME proxy CA' });
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: 'CN=127.0.0.1',
    issuer: ca.cert.subject,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + 7 * 86_400_000),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
      ]),
    ],
  });
  return { caPem: ca.certPem, certPem: `${cert.toString('pem')}\n`, keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * How acme-client's HTTP requests are sent: trust, timeouts, and error translation.
 *
 * acme-client (5.4) sends every request through one module-global axios instance
 * (`acme.axios`). Out of the box its response interceptor
 *   - retries 429/5xx/network errors itself, sleeping the whole Retry-After (hours, for a
 *     rate limit) and then drops the problem document, and
 *   - after its last attempt on a network error calls `validateStatus(undefined)`, so a
 *     refused connection or a TLS failure surfaces as `TypeError: Cannot read properties
 *     of undefined (reading 'config')`.
 * We replace that interceptor (once per process) with {@link onResponseRejected}: no
 * retry here (the controller's work loop is the one place that retries), and every
 * failure becomes a CertfleetError. acme-client's request interceptor stays: it sets
 * `validateStatus` to reject everything, so every response — 2xx included — arrives in
 * our rejected handler, which hands non-errors back as the resolved response.
 *
 * Trust and timeouts are per client, not global: {@link hookHttpClient} replaces one
 * acme-client HttpClient's `request` with a node:https request on that client's
 * https.Agent (axios is no longer on the path of a hooked client; the same translation
 * applies), so two clients for different CAs (or a Pebble CA and the public roots) never
 * share trust.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import * as acme from 'acme-client';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { systemClock, type Clock } from '../../shared/clock/index.js';
import { errorFromResponse, isBadNonce, transportError, type HttpResponseLike } from './problem.js';

/**
 * acme-client retries badNonce itself (RFC 8555 §6.5) with the nonce from the error
 * answer; its default of 5 retries fails ~1.5% of requests when a CA rejects half of
 * all nonces (Pebble's PEBBLE_WFE_NONCEREJECT=50). Each retry is immediate and cheap.
 */
export const MAX_BAD_NONCE_RETRIES = 20;

let installed = false;
let clockForHeaders: Clock = systemClock;

/** One ACME HTTP request, as {@link observeAcmeRequests} reports it. */
export interface AcmeRequestObservation {
  url: string;
  /** As acme-client sends it (lower case: get, head, post). */
  method: string;
  /**
   * The ACME resource: `directory`, a directory entry (`newNonce`, `newAccount`,
   * `newOrder`, `revokeCert`, `keyChange`, `renewalInfo`), or an object URL learnt from
   * earlier answers (`account`, `order`, `authz`, `challenge`, `finalize`, `cert`);
   * `other` for a URL not seen announced.
   */
  endpoint: string;
  /** HTTP status; null when no answer came. */
  status: number | null;
  seconds: number;
}

/** Called once per HTTP request of every hooked client (metrics). Must not throw. */
export type AcmeRequestObserver = (r: AcmeRequestObservation) => void;

let observer: AcmeRequestObserver | undefined;

/**
 * Reports every ACME HTTP request from now on to `fn` (one observer per process, as the
 * HTTP layer it hooks is; the controller's metrics). `undefined` stops reporting.
 */
export function observeAcmeRequests(fn: AcmeRequestObserver | undefined): void {
  observer = fn;
}

/** Directory entries named as the `endpoint` of their requests. */
const DIRECTORY_ENTRIES = ['newNonce', 'newAccount', 'newOrder', 'revokeCert', 'keyChange', 'renewalInfo'] as const;

/** At most this many object URLs are remembered per client (oldest forgotten first). */
const MAX_KNOWN_URLS = 10_000;

/**
 * Names the ACME resource of each URL a client requests, from what the CA announced:
 * the directory's entries, and the object URLs in account, order and authorization
 * answers. Bounded, so a long-running controller does not grow with every order.
 */
export class EndpointNamer {
  private readonly known = new Map<string, string>();
  private renewalInfoBase: string | undefined;

  constructor(private readonly directoryUrl: string) {}

  /** The endpoint of a request to `url`. */
  name(url: string): string {
    if (url === this.directoryUrl) return 'directory';
    const hit = this.known.get(url);
    if (hit !== undefined) return hit;
    if (this.renewalInfoBase !== undefined && url.startsWith(this.renewalInfoBase)) return 'renewalInfo';
    return 'other';
  }

  /** Learns the URLs an answer announces. `endpoint` is what the request was. */
  learn(endpoint: string, resp: HttpResponseLike): void {
    const data = (typeof resp.data === 'object' && resp.data !== null ? resp.data : {}) as Record<string, unknown>;
    if (endpoint === 'directory') {
      for (const entry of DIRECTORY_ENTRIES) {
        const u = data[entry];
        if (typeof u !== 'string') continue;
        if (entry === 'renewalInfo') this.renewalInfoBase = u;
        else this.remember(u, entry);
      }
      return;
    }
    const location = (resp.headers as Record<string, unknown> | undefined)?.['location'];
    if (typeof location === 'string') {
      if (endpoint === 'newAccount') this.remember(location, 'account');
      if (endpoint === 'newOrder') this.remember(location, 'order');
    }
    if (Array.isArray(data['authorizations'])) {
      for (const a of data['authorizations']) if (typeof a === 'string') this.remember(a, 'authz');
      if (typeof data['finalize'] === 'string') this.remember(data['finalize'], 'finalize');
      if (typeof data['certificate'] === 'string') this.remember(data['certificate'], 'cert');
    }
    if (Array.isArray(data['challenges'])) {
      for (const c of data['challenges']) {
        const u = (c as { url?: unknown } | null)?.url;
        if (typeof u === 'string') this.remember(u, 'challenge');
      }
    }
  }

  private remember(url: string, endpoint: string): void {
    if (this.known.get(url) === endpoint) return;
    this.known.delete(url);
    this.known.set(url, endpoint);
    if (this.known.size > MAX_KNOWN_URLS) {
      const oldest = this.known.keys().next().value;
      if (oldest !== undefined) this.known.delete(oldest);
    }
  }
}

/** The HTTP status a failed request carries (our CertfleetError details, or axios'), if any. */
function statusOf(err: unknown): number | null {
  if (err instanceof CertfleetError && typeof err.details['status'] === 'number') return err.details['status'];
  const s = (err as { response?: { status?: unknown } } | null)?.response?.status;
  return typeof s === 'number' && s > 0 ? s : null;
}

/**
 * Replaces acme-client's response interceptors with ours. Idempotent; the clock reads
 * HTTP-date Retry-After values (the first caller's clock wins, as the axios instance is
 * shared by the whole process).
 */
export function installTransport(clock: Clock): void {
  if (installed) return;
  installed = true;
  clockForHeaders = clock;
  acme.axios.interceptors.response.clear();
  acme.axios.interceptors.response.use(undefined, onResponseRejected);
}

interface RejectedLike {
  response?: HttpResponseLike;
  config?: { url?: string };
}

/**
 * Every response and every failure passes here (see the module comment).
 * - no response: ACME_TRANSPORT (retryable);
 * - status < 400: the response, as acme-client expects;
 * - badNonce: the response, so acme-client's HttpClient.signedRequest retries it;
 * - other errors: the CA's problem as ACME_RATE_LIMITED / ACME_PROBLEM.
 */
export function onResponseRejected(error: unknown): HttpResponseLike {
  if (error instanceof CertfleetError) throw error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as RejectedLike;
  const url = e.config?.url;
  const resp = e.response;
  if (resp === undefined || typeof resp.status !== 'number' || resp.status === 0) throw transportError(error, url);
  if (resp.status < 400) return resp;
  if (isBadNonce(resp)) return resp;
  throw errorFromResponse(resp, url, clockForHeaders.now());
}

/** The parts of acme-client's (internal) HttpClient we wrap. Checked at runtime. */
interface HttpClientInternals {
  request(url: string, method: string, opts?: Record<string, unknown>): Promise<HttpResponseLike>;
  signedRequest(url: string, payload: unknown, opts?: Record<string, unknown>, attempts?: number): Promise<HttpResponseLike>;
  getNonce(): Promise<string>;
  getResourceUrl(resource: string): Promise<string>;
  getJwk(): unknown;
  /** PEM (Buffer) as acme-client keeps it; we swap in the parsed KeyObject. */
  accountKey: Buffer | crypto.KeyObject;
  maxBadNonceRetries: number;
}

/** At most this many unused nonces are kept per client (the newest; older ones may have expired). */
export const MAX_POOLED_NONCES = 64;

/**
 * Nonces the CA handed out in its answers, for the next signed requests (RFC 8555 §7.2:
 * every answer to a signed request carries a fresh Replay-Nonce). acme-client asks
 * newNonce for one before every signed request: twice the requests, and each HEAD
 * newNonce costs a new TLS connection where the CA closes it after a body-less answer
 * (Pebble does). Newest first; bounded. A stale nonce is answered badNonce, which
 * acme-client retries with the nonce of that answer.
 */
export class NoncePool {
  private readonly nonces: string[] = [];

  /** Keeps `nonce` for a later request. */
  put(nonce: string): void {
    this.nonces.push(nonce);
    if (this.nonces.length > MAX_POOLED_NONCES) this.nonces.shift();
  }

  /** The newest unused nonce, or undefined. Each nonce is handed out once. */
  take(): string | undefined {
    return this.nonces.pop();
  }

  get size(): number {
    return this.nonces.length;
  }
}

/** What acme-client's own requests said they were (its axios instance's User-Agent). */
const USER_AGENT = `node-acme-client/5 certfleet`;

/**
 * One HTTP request straight through node:https on the client's agent, answered in the
 * shape acme-client reads from axios (`status`, lower-case `headers`, `data`: the JSON
 * body parsed, else its text). axios and follow-redirects cost about a tenth of the
 * controller's thread per request (issue #13); ACME needs none of what they add (no
 * redirects, no proxies: acme-client set its own agent, so the environment's proxy
 * variables never applied cleanly either). Rejects with the socket's error; a request
 * idle for `timeoutMs` is aborted with code ECONNABORTED (a real-time socket timeout,
 * as axios had: the socket is not on the injected clock).
 */
function send(url: string, method: string, o: { data?: unknown; headers?: Record<string, unknown> }, agent: https.Agent, timeoutMs: number): Promise<HttpResponseLike> {
  const body = o.data === undefined || o.data === null ? undefined : Buffer.from(typeof o.data === 'string' ? o.data : JSON.stringify(o.data), 'utf8');
  const target = new URL(url);
  // As acme-client's request sets it, on every request (RFC 8555 §6.2 wants it on POSTs).
  const headers: Record<string, string | number> = { accept: 'application/json, text/plain, */*', 'user-agent': USER_AGENT, 'content-type': 'application/jose+json' };
  for (const [k, v] of Object.entries(o.headers ?? {})) if (typeof v === 'string' || typeof v === 'number') headers[k.toLowerCase()] = v;
  if (body !== undefined) headers['content-length'] = body.length;
  return new Promise((resolve, reject) => {
    const onAnswer = (res: http.IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let data: unknown = text;
        if (text !== '') {
          try {
            data = JSON.parse(text);
          } catch {
            // not JSON (a PEM chain): the text
          }
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, data });
      });
    };
    const req =
      target.protocol === 'http:'
        ? http.request(target, { method: method.toUpperCase(), headers, timeout: timeoutMs }, onAnswer)
        : https.request(target, { method: method.toUpperCase(), headers, agent, timeout: timeoutMs }, onAnswer);
    req.on('timeout', () => req.destroy(Object.assign(new Error(`timeout of ${timeoutMs}ms exceeded`), { code: 'ECONNABORTED' })));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The translation {@link onResponseRejected} makes of an answer: below 400 and badNonce
 * answers are returned (acme-client retries a badNonce), other errors thrown as the CA's
 * problem (ACME_RATE_LIMITED / ACME_PROBLEM).
 */
function answer(resp: HttpResponseLike, url: string): HttpResponseLike {
  if (resp.status === 0) throw transportError(new Error('no HTTP status'), url);
  if (resp.status < 400 || isBadNonce(resp)) return resp;
  throw errorFromResponse(resp, url, clockForHeaders.now());
}

export interface TransportOptions {
  /** PEM CA(s) to trust exclusively for the CA's HTTPS; default Node's trust store. */
  caPem?: string;
  /** Per-request timeout. */
  timeoutMs: number;
  /** The CA's directory URL (names the `endpoint` of each request for the observer). */
  directoryUrl?: string;
  /** Times requests for the observer; default the system clock. */
  clock?: Clock;
}

/**
 * Wraps one acme-client Client's HttpClient so its requests use our agent (kept-alive
 * connections, one TLS context) and timeout, its signed requests use the nonces the CA's
 * answers carry ({@link NoncePool}) instead of asking newNonce each time, and an
 * exhausted badNonce retry ends as a CertfleetError (acme-client would return the 400 and
 * throw a plain Error). Returns the agent, to destroy on close.
 *
 * Without `caPem` the agent trusts Node's default store (its bundled Mozilla roots, plus
 * NODE_EXTRA_CA_CERTS when the operator set it). With `caPem` it trusts only that PEM —
 * the extra bundle does not leak in, so a wrong pin fails instead of passing.
 */
export function hookHttpClient(client: acme.Client, opts: TransportOptions): https.Agent {
  const http = (client as unknown as { http?: Partial<HttpClientInternals> }).http;
  if (
    http === undefined ||
    typeof http.request !== 'function' ||
    typeof http.signedRequest !== 'function' ||
    typeof http.getNonce !== 'function' ||
    typeof http.getResourceUrl !== 'function' ||
    typeof http.getJwk !== 'function' ||
    !Buffer.isBuffer(http.accountKey) ||
    typeof http.maxBadNonceRetries !== 'number'
  ) {
    // acme-client's internals changed shape: fail loudly instead of sending requests
    // without the pinned trust or with the library's own retries.
    throw new CertfleetError(ErrorCode.Internal, 'acme-client internals changed: cannot install certfleet transport');
  }
  const internals = http as HttpClientInternals;
  // One TLS context for every connection to this CA: given only `ca`, each new connection
  // would build (and parse the PEM into) a context of its own. Connections are kept alive
  // and TLS sessions resumed (the agent's session cache) when one must be opened again.
  const secureContext = tls.createSecureContext(opts.caPem === undefined ? {} : { ca: opts.caPem });
  const agent = new https.Agent({ keepAlive: true, secureContext, ...(opts.caPem === undefined ? {} : { ca: opts.caPem }) });
  const nonces = new NoncePool();

  const namer = new EndpointNamer(opts.directoryUrl ?? '');
  const clock = opts.clock ?? systemClock;
  internals.request = async (url, method, requestOpts = {}) => {
    const endpoint = namer.name(url);
    const started = clock.now();
    const report = (status: number | null): void => observer?.({ url, method, endpoint, status, seconds: Math.max(0, clock.now() - started) / 1000 });
    let resp: HttpResponseLike;
    try {
      resp = answer(await send(url, method, requestOpts, agent, opts.timeoutMs), url);
    } catch (err) {
      report(statusOf(err));
      throw err instanceof CertfleetError ? err : transportError(err, url);
    }
    report(resp.status);
    namer.learn(endpoint, resp);
    // Pool the nonce of every good answer. Not of an error: acme-client retries a badNonce
    // with that answer's nonce itself, and a nonce must be used once. Not of newNonce:
    // getNonce below hands that one out directly.
    const nonce = resp.headers['replay-nonce'];
    if (typeof nonce === 'string' && nonce !== '' && resp.status < 400 && endpoint !== 'newNonce') nonces.put(nonce);
    return resp;
  };

  // A pooled nonce when there is one; else GET newNonce (RFC 8555 §7.2 lets a client use
  // GET or HEAD; a 204 keeps the connection open where some CAs close it after a HEAD).
  internals.getNonce = async () => {
    const pooled = nonces.take();
    if (pooled !== undefined) return pooled;
    const resp = await internals.request(await internals.getResourceUrl('newNonce'), 'get');
    const nonce = resp.headers['replay-nonce'];
    if (typeof nonce !== 'string' || nonce === '') {
      throw new CertfleetError(ErrorCode.AcmeProblem, 'the CA answered newNonce without a Replay-Nonce', { retryable: true, details: { status: resp.status } });
    }
    return nonce;
  };

  // acme-client signs every request with the account key as PEM, which Node parses again
  // for each signature (most of the 0.6 ms a JWS took). The JWK is derived (and cached by
  // acme-client) from the PEM first; signing then uses the key parsed once. A key that does
  // not parse is left to fail as before (createAcmeClient checks it first).
  internals.getJwk();
  try {
    internals.accountKey = crypto.createPrivateKey(internals.accountKey as Buffer);
  } catch {
    // unchanged: acme-client reports it on the first signature
  }

  internals.maxBadNonceRetries = MAX_BAD_NONCE_RETRIES;
  // acme-client's signedRequest recurses through `this.signedRequest` on badNonce, so
  // this wrapper sees every level; only the last level returns a badNonce answer.
  const signedRequest = internals.signedRequest.bind(internals);
  internals.signedRequest = async (url, payload, requestOpts, attempts) => {
    const resp = await signedRequest(url, payload, requestOpts, attempts);
    if (isBadNonce(resp)) throw errorFromResponse(resp, url, clockForHeaders.now());
    return resp;
  };
  return agent;
}

/**
 * The HTTP edge the cloud DNS providers share: one request with a time limit, rate-limit
 * answers retried with backoff on the injected clock, and the mapping of HTTP failures
 * onto the DnsProvider error contract.
 *
 * Why this leaf retries at all (STYLE.md rule 5 says leaf code does not loop): a 429 or a
 * Throttling answer means "this request was not processed, send it again in a moment" —
 * pacing inside one call, not a failed attempt. Waiting here keeps one burst of record
 * changes (an order with many names) from failing an order the CA has already opened.
 * After `maxAttempts` answers like that the error is thrown, retryable, with the
 * service's Retry-After, and the work loop takes over. Every other failure is thrown at
 * once (a POST that failed on the network is never resent here: it may have been applied).
 */
import { CertfleetError, ErrorCode } from '../../../../shared/errors/index.js';
import type { Clock } from '../../../../shared/clock/index.js';

/** An answer, read whole (the services answer with small JSON or XML documents). */
export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
}

export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface HttpClientOptions {
  /** For messages: `cloudflare provider "cf"`. */
  describe: string;
  provider: string;
  clock: Clock;
  /** Per request. */
  timeoutMs: number;
  /** Rate-limited answers before giving up. Default 5. */
  maxAttempts?: number;
  /** Whether an answer says "slow down" (429 always does; Route 53 also answers 400 Throttling). */
  rateLimited?: (answer: HttpAnswer) => boolean;
}

/** First pause after a rate-limited answer without Retry-After; doubles, capped at 30 s. */
const BACKOFF_START_MS = 1000;
const BACKOFF_CAP_MS = 30_000;

/** Retry-After in ms: delta-seconds or an HTTP date (RFC 9110 §10.2.3); undefined when absent or unreadable. */
export function retryAfterMs(headers: Headers, now: number): number | undefined {
  const v = headers.get('retry-after');
  if (v === null || v.trim() === '') return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Sends requests for one provider. Never puts credentials in messages: callers pass them only in headers. */
export class HttpClient {
  constructor(private readonly opts: HttpClientOptions) {}

  /**
   * Sends `req`; rate-limited answers are retried after Retry-After (else 1 s, 2 s, 4 s ...
   * capped at 30 s) on the clock. Returns any other answer, whatever its status.
   * Throws DNS_PROVIDER_FAILED (retryable) on a network error or timeout, and when the
   * service is still rate-limiting after `maxAttempts` answers.
   */
  async send(req: HttpRequest, what: string): Promise<HttpAnswer> {
    const max = this.opts.maxAttempts ?? 5;
    let backoff = BACKOFF_START_MS;
    for (let attempt = 1; ; attempt++) {
      const answer = await this.once(req, what);
      const limited = answer.status === 429 || (this.opts.rateLimited?.(answer) ?? false);
      if (!limited) return answer;
      const wait = Math.min(retryAfterMs(answer.headers, this.opts.clock.now()) ?? backoff, BACKOFF_CAP_MS * 4);
      if (attempt >= max) {
        throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.opts.describe}: ${what}: still rate-limited after ${attempt} attempts (HTTP ${answer.status})`, {
          retryable: true,
          retryAfterMs: wait,
          details: { provider: this.opts.provider, status: answer.status, attempts: attempt },
        });
      }
      backoff = Math.min(backoff * 2, BACKOFF_CAP_MS);
      await this.opts.clock.sleep(wait);
    }
  }

  private async once(req: HttpRequest, what: string): Promise<HttpAnswer> {
    try {
      // A real-time limit on purpose: it bounds a socket, and a manual clock in a test
      // must not abort a request that is in flight on the loopback.
      const res = await fetch(req.url, {
        method: req.method,
        ...(req.headers ? { headers: req.headers } : {}),
        ...(req.body === undefined ? {} : { body: req.body }),
        signal: AbortSignal.timeout(this.opts.timeoutMs),
        redirect: 'error',
      });
      return { status: res.status, headers: res.headers, text: await res.text() };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${this.opts.timeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
      throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.opts.describe}: ${what}: ${why} (${new URL(req.url).origin})`, {
        retryable: true,
        cause: err,
        details: { provider: this.opts.provider, url: new URL(req.url).origin },
      });
    }
  }
}

/**
 * The error for a failed answer: 401/403 (or `rejected`) is DNS_CREDENTIALS_REJECTED (not
 * retryable); 5xx is DNS_PROVIDER_FAILED retryable; anything else DNS_PROVIDER_FAILED
 * not retryable (the request is wrong and stays wrong). `detail` is the service's own
 * words from its error body.
 */
export function answerError(describe: string, provider: string, what: string, answer: HttpAnswer, detail: string, rejected = false): CertfleetError {
  const creds = rejected || answer.status === 401 || answer.status === 403;
  return new CertfleetError(
    creds ? ErrorCode.DnsCredentialsRejected : ErrorCode.DnsProviderFailed,
    `${describe}: ${what}: ${creds ? 'credentials rejected: ' : ''}HTTP ${answer.status}${detail === '' ? '' : `: ${detail}`}`,
    { retryable: !creds && answer.status >= 500, details: { provider, status: answer.status, detail } },
  );
}

/** Parses a JSON answer body; a body that is not JSON is DNS_PROVIDER_FAILED (retryable: a proxy's error page). */
export function parseJson<T>(describe: string, provider: string, what: string, answer: HttpAnswer): T {
  try {
    return JSON.parse(answer.text) as T;
  } catch {
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${describe}: ${what}: HTTP ${answer.status} with a body that is not JSON: ${answer.text.slice(0, 200)}`, {
      retryable: true,
      details: { provider, status: answer.status },
    });
  }
}

/** `example.com` for `example.com.` (the APIs name zones and records without the root dot). */
export function bare(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** The candidate zone names for `fqdn`, longest first: a.b.example.com, b.example.com, example.com, com. */
export function zoneCandidates(fqdn: string): string[] {
  const parts = bare(fqdn).split('.');
  const out: string[] = [];
  for (let i = 0; i < parts.length; i++) out.push(parts.slice(i).join('.'));
  return out;
}

/**
 * Runs `fn` for `key` after every earlier call for the same key has settled. The cloud
 * APIs replace a TXT record set as a whole, so two values added to one name at once
 * (a wildcard and its bare name) must not read-modify-write over each other.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

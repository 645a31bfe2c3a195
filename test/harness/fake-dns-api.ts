/**
 * What the fake cloud DNS APIs (fake-cloudflare.ts, fake-route53.ts, fake-gcloud.ts,
 * fake-acmedns.ts) share: an HTTP server on 127.0.0.1 with a free port, a request log,
 * a switch that answers the next N requests "rate limited", and the TXT data itself
 * with an optional mirror — a callback told every value added or removed, which an
 * end-to-end test uses to copy the records into a real BIND that Pebble asks.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as the fake received it. */
export interface LoggedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number;
}

/** Told every TXT value the fake's API adds or removes (absolute name, with the dot). */
export type TxtMirror = (op: 'add' | 'remove', fqdn: string, value: string) => Promise<void>;

export interface FakeAnswer {
  status: number;
  headers?: Record<string, string>;
  body: string;
}

/** `example.com` */
export function bare(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** TXT values per name, mirrored on change. */
export class TxtData {
  readonly names = new Map<string, string[]>();
  ttls = new Map<string, number>();
  constructor(private readonly mirror?: TxtMirror) {}

  get(name: string): string[] {
    return [...(this.names.get(bare(name)) ?? [])];
  }

  /** Replaces the values at `name`, telling the mirror the difference. */
  async set(name: string, values: string[], ttl = 60): Promise<void> {
    const key = bare(name);
    const before = this.get(key);
    if (values.length === 0) {
      this.names.delete(key);
      this.ttls.delete(key);
    } else {
      this.names.set(key, [...values]);
      this.ttls.set(key, ttl);
    }
    for (const v of values.filter((v) => !before.includes(v))) await this.mirror?.('add', `${key}.`, v);
    for (const v of before.filter((v) => !values.includes(v))) await this.mirror?.('remove', `${key}.`, v);
  }
}

/** An HTTP server on 127.0.0.1 that logs requests and can be told to rate-limit. */
export abstract class FakeApi {
  readonly requests: LoggedRequest[] = [];
  /** Rate-limited answers given so far. */
  rateLimited = 0;
  private server: http.Server | undefined;
  private limitNext = 0;
  port = 0;

  /** The next `n` requests get the service's rate-limit answer. */
  rateLimitNext(n: number): void {
    this.limitNext = n;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async listen(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const url = new URL(req.url ?? '/', 'http://fake');
        const respond = (a: FakeAnswer): void => {
          this.requests.push({ method: req.method ?? '', path: url.pathname + url.search, headers: req.headers, body, status: a.status });
          res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
          res.end(a.body);
        };
        if (this.limitNext > 0 && this.countsForLimit(url)) {
          this.limitNext--;
          this.rateLimited++;
          respond(this.rateLimitAnswer());
          return;
        }
        this.handle(req.method ?? 'GET', url, req.headers, body).then(respond, (err: Error) => respond({ status: 500, body: JSON.stringify({ fakeError: err.message }) }));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** Whether a request may be rate-limited (a token endpoint may be excluded). */
  protected countsForLimit(_url: URL): boolean {
    return true;
  }

  protected abstract rateLimitAnswer(): FakeAnswer;
  protected abstract handle(method: string, url: URL, headers: http.IncomingHttpHeaders, body: string): Promise<FakeAnswer>;
}

/**
 * The HTTP endpoint Prometheus scrapes, for either binary: `GET /metrics` (and `HEAD`),
 * plain HTTP on the configured address only. What a scrape answers is the caller's
 * `scrape()`, called once per request; there is no cache.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { LogKey } from '../log/index.js';

/** The Content-Type of the text exposition format (0.0.4), as prom-client writes it. */
export const TEXT_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** The path metrics are served on. */
export const METRICS_PATH = '/metrics';

export interface EndpointOptions {
  /** Where to listen; port 0 picks a free port (see {@link MetricsEndpoint.port}). */
  listen: { host: string; port: number };
  /** The text exposition of one scrape. A rejection answers 500 (logged). */
  scrape(): Promise<string>;
  /** Names the binary in the 500 answer ("see the controller log"). */
  owner: string;
  log: Logger;
}

/** A running metrics endpoint. */
export interface MetricsEndpoint {
  /** The bound port. */
  port: number;
  /** Stops listening and drops open connections; resolves when closed. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts the endpoint; resolves once bound. Rejects with CONFIG_INVALID naming
 * `metrics.listen` when the address cannot be bound (in use, not local, no permission).
 * A scrape that fails answers 500 and is logged; it never stops the process.
 */
export async function startMetricsEndpoint(opts: EndpointOptions): Promise<MetricsEndpoint> {
  const { log } = opts;
  const server = http.createServer((req, res) => {
    const pathname = (req.url ?? '/').split('?', 1)[0];
    if (pathname !== METRICS_PATH) return reply(res, 404, 'text/plain; charset=utf-8', `not found; metrics are at ${METRICS_PATH}\n`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return reply(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    opts.scrape().then(
      (body) => reply(res, 200, TEXT_CONTENT_TYPE, req.method === 'HEAD' ? '' : body, Buffer.byteLength(body)),
      (err: unknown) => {
        log.error({ [LogKey.err]: err }, 'metrics scrape failed');
        reply(res, 500, 'text/plain; charset=utf-8', `metrics scrape failed; see the ${opts.owner} log\n`);
      },
    );
  });
  // Scrapes are small; a slow or idle client must not hold sockets open.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  const address = `${opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host}:${opts.listen.port}`;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.listen.port, opts.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new CertfleetError(ErrorCode.ConfigInvalid, `metrics.listen: cannot listen on ${address}: ${code}`, { cause: err, details: { address, errno: code } });
  }
  server.on('error', (err) => log.error({ [LogKey.err]: err }, 'metrics server error'));
  const port = (server.address() as AddressInfo).port;
  log.info({ address, port }, 'metrics listening');

  let closed: Promise<void> | undefined;
  return {
    port,
    stop() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

function reply(res: http.ServerResponse, status: number, contentType: string, body: string, length = Buffer.byteLength(body)): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', length);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

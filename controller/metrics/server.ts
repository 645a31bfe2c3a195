/**
 * The HTTP endpoint Prometheus scrapes: `GET /metrics` (and `HEAD`), plain HTTP on the
 * configured address only. Every scrape computes the gauges from the controller's state
 * at that moment (no background loop, no cache of values), then appends the counters,
 * histograms and process metrics of the instruments' registry.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { LogKey } from '../../shared/log/index.js';
import { collect } from './collect.js';
import { EXPOSITION_CONTENT_TYPE, renderExposition } from './exposition.js';
import { SnapshotGatherer, type MetricsSources } from './gather.js';
import type { MetricsRegistry } from '../../shared/metrics/index.js';

/** The path metrics are served on. */
export const METRICS_PATH = '/metrics';

export interface MetricsServerOptions {
  /** Where to listen; port 0 picks a free port (see {@link MetricsServer.port}). */
  listen: { host: string; port: number };
  sources: MetricsSources;
  /** Counters, histograms and process metrics served after the gauges (instruments.ts); absent: gauges only. */
  registry?: MetricsRegistry;
  log: Logger;
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** The bound port. */
  port: number;
  /** Stops listening and drops open connections; resolves when closed. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts the endpoint; resolves once bound. Rejects with CONFIG_INVALID when the address
 * cannot be bound (in use, not local, no permission), like `api.listen`.
 * A scrape that fails answers 500 and is logged; it never stops the controller.
 */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { log } = opts;
  const gatherer = new SnapshotGatherer(opts.sources, log);
  const scrape = async (): Promise<string> => renderExposition(collect(await gatherer.snapshot())) + ((await opts.registry?.text()) ?? '');

  const server = http.createServer((req, res) => {
    const pathname = (req.url ?? '/').split('?', 1)[0];
    if (pathname !== METRICS_PATH) return reply(res, 404, 'text/plain; charset=utf-8', `not found; metrics are at ${METRICS_PATH}\n`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return reply(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    scrape().then(
      (body) => reply(res, 200, EXPOSITION_CONTENT_TYPE, req.method === 'HEAD' ? '' : body, Buffer.byteLength(body)),
      (err: unknown) => {
        log.error({ [LogKey.err]: err }, 'metrics scrape failed');
        reply(res, 500, 'text/plain; charset=utf-8', 'metrics scrape failed; see the controller log\n');
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

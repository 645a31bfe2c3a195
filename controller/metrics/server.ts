/**
 * The controller's metrics endpoint (shared/metrics startMetricsEndpoint): every scrape
 * computes the gauges from the controller's state at that moment (no background loop, no
 * cache of values), then appends the counters, histograms and process metrics of the
 * instruments' registry.
 */
import type { Logger } from 'pino';
import { METRICS_PATH, startMetricsEndpoint, type MetricsEndpoint, type MetricsRegistry } from '../../shared/metrics/index.js';
import { collect } from './collect.js';
import { renderExposition } from './exposition.js';
import { SnapshotGatherer, type MetricsSources } from './gather.js';

export { METRICS_PATH };

export interface MetricsServerOptions {
  /** Where to listen; port 0 picks a free port (see {@link MetricsServer.port}). */
  listen: { host: string; port: number };
  sources: MetricsSources;
  /** Counters, histograms and process metrics served after the gauges (instruments.ts); absent: gauges only. */
  registry?: MetricsRegistry;
  log: Logger;
}

/** A running metrics endpoint. */
export type MetricsServer = MetricsEndpoint;

/**
 * Starts the endpoint; resolves once bound. Rejects with CONFIG_INVALID when the address
 * cannot be bound (in use, not local, no permission), like `api.listen`.
 * A scrape that fails answers 500 and is logged; it never stops the controller.
 */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const gatherer = new SnapshotGatherer(opts.sources, opts.log);
  return startMetricsEndpoint({
    listen: opts.listen,
    owner: 'controller',
    log: opts.log,
    scrape: async () => renderExposition(collect(await gatherer.snapshot())) + ((await opts.registry?.text()) ?? ''),
  });
}

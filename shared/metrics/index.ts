/**
 * shared/metrics — the prom-client adapter (the only module that imports prom-client) and
 * the HTTP endpoint Prometheus scrapes, for the controller and the agent alike.
 *
 * Counters and histograms (things that happen between scrapes: ACME requests, work-loop
 * passes, agent installs) live in a {@link MetricsRegistry} (registry.ts); each binary makes
 * one and serves its text on its endpoint (endpoint.ts). Gauges computed from state at
 * scrape time stay with their owner (controller/metrics renders them itself) or use
 * {@link MetricsRegistry.gauge}. The registry also carries prom-client's default process
 * metrics (`process_*`, `nodejs_*`).
 *
 * Names, types, labels and help come from the caller's vocabulary file (one per binary:
 * controller/metrics/names.ts, agent/metrics/names.ts); nothing here invents a name.
 */
export {
  createMetricsRegistry,
  DURATION_BUCKETS,
  type MetricsRegistry,
  type RegistryOptions,
  type InstrumentDef,
  type Labels,
  type CounterInstrument,
  type HistogramInstrument,
  type GaugeInstrument,
} from './registry.js';
export { startMetricsEndpoint, METRICS_PATH, TEXT_CONTENT_TYPE, type EndpointOptions, type MetricsEndpoint } from './endpoint.js';

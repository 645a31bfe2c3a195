/**
 * Prometheus metrics: the names (names.ts, the one place they are defined), the text
 * exposition (exposition.ts), what each metric means (collect.ts, pure), the snapshot
 * of the controller's state a scrape reads (gather.ts), the counters and histograms of
 * ACME requests and the work loop (instruments.ts, prom-client through shared/metrics)
 * and the HTTP endpoint (server.ts).
 * Optional: the controller starts the endpoint only when `metrics.listen` is configured.
 */
export {
  Metric,
  METRIC_NAMES,
  READY_CONDITIONS,
  CERTIFICATE_STATES,
  Instrument,
  INSTRUMENT_NAMES,
  SYNC_ACTIONS,
  ORDER_OUTCOMES,
  type MetricDef,
  type MetricId,
  type MetricType,
  type InstrumentDef,
} from './names.js';
export { createControllerInstruments, type ControllerInstruments, type AcmeRequestFacts, type LoopCounters } from './instruments.js';
export { renderExposition, escapeLabelValue, escapeHelp, formatValue, EXPOSITION_CONTENT_TYPE, type Family, type Sample } from './exposition.js';
export { collect, type MetricsSnapshot, type CertificateFacts, type AgentFacts, type AssignmentFacts, type BudgetFacts } from './collect.js';
export { SnapshotGatherer, type MetricsSources } from './gather.js';
export { startMetricsServer, METRICS_PATH, type MetricsServer, type MetricsServerOptions } from './server.js';

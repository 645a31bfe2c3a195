/**
 * Prometheus metrics: the names (names.ts, the one place they are defined), the text
 * exposition (exposition.ts), what each metric means (collect.ts, pure), the snapshot
 * of the controller's state a scrape reads (gather.ts) and the HTTP endpoint (server.ts).
 * Optional: the controller starts the endpoint only when `metrics.listen` is configured.
 */
export { Metric, METRIC_NAMES, READY_CONDITIONS, CERTIFICATE_STATES, type MetricDef, type MetricId, type MetricType } from './names.js';
export { renderExposition, escapeLabelValue, escapeHelp, formatValue, EXPOSITION_CONTENT_TYPE, type Family, type Sample } from './exposition.js';
export { collect, type MetricsSnapshot, type CertificateFacts, type AgentFacts, type AssignmentFacts, type BudgetFacts } from './collect.js';
export { SnapshotGatherer, type MetricsSources } from './gather.js';
export { startMetricsServer, METRICS_PATH, type MetricsServer, type MetricsServerOptions } from './server.js';

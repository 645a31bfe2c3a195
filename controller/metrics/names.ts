/**
 * The metric vocabulary: every metric the controller exposes, with its type, labels and
 * help text, defined here and nowhere else. docs/metrics.md, the alert rules
 * (deploy/prometheus/alerts.yml) and the dashboard (deploy/grafana/certfleet.json) use
 * these names; test/unit/metrics-deploy.test.ts fails when they use a name not listed here.
 *
 * Names follow cert-manager's where the meaning is the same
 * (`certificate_expiration_timestamp_seconds`, `..._renewal_timestamp_seconds`,
 * `..._ready_status`), so dashboards and alerts written for it carry over. Renaming a
 * metric breaks every operator's alerts: treat a change here as a protocol change.
 *
 * {@link Metric} lists the gauges, computed at scrape time from the controller's state;
 * {@link Instrument} the counters and histograms of things that happen between scrapes
 * (ACME requests, work-loop passes, orders), kept in a prom-client registry
 * (shared/metrics). Labels:
 * `name` is a certificate name (controller `certificates[].name`), `agent` an enrolled
 * agent's name. No label or value ever carries key material: names, versions, dates,
 * counts only.
 */

/** Prometheus metric types used here (text exposition `# TYPE`). */
export type MetricType = 'gauge';

/** One metric family. */
export interface MetricDef {
  /** The metric name, `certfleet_` prefixed, base units in the name (`_seconds`). */
  readonly name: string;
  readonly type: MetricType;
  /** One line for `# HELP`: what a sample means, when it is absent. */
  readonly help: string;
  /** Label names, in the order they are written. */
  readonly labels: readonly string[];
}

/** Every metric, keyed by a short identifier used in code. */
export const Metric = {
  controllerInfo: {
    name: 'certfleet_controller_info',
    type: 'gauge',
    help: 'Always 1; the controller version as a label.',
    labels: ['version'],
  },
  certificateExpiration: {
    name: 'certfleet_certificate_expiration_timestamp_seconds',
    type: 'gauge',
    help: 'notAfter of the desired (current) version of the certificate, Unix seconds. Absent until a first version is published.',
    labels: ['name'],
  },
  certificateNotBefore: {
    name: 'certfleet_certificate_not_before_timestamp_seconds',
    type: 'gauge',
    help: 'notBefore of the desired version of the certificate, Unix seconds (with the expiration, its lifetime). Absent until a first version is published.',
    labels: ['name'],
  },
  certificateRenewal: {
    name: 'certfleet_certificate_renewal_timestamp_seconds',
    type: 'gauge',
    help: 'When the controller plans the next renewal attempt (ARI window or share of the lifetime, jitter, backoff or budget deferral included), Unix seconds. Absent before the first check.',
    labels: ['name'],
  },
  certificateReady: {
    name: 'certfleet_certificate_ready_status',
    type: 'gauge',
    help: 'cert-manager style readiness: 1 on the sample whose condition holds. Ready means issued, published and installed on every assigned agent.',
    labels: ['name', 'condition'],
  },
  certificateState: {
    name: 'certfleet_certificate_state',
    type: 'gauge',
    help: 'The state `certfleet certs` shows: 1 on the current state (pending, issuing, ready, failed, rolling-out, halted), 0 on the others.',
    labels: ['name', 'state'],
  },
  certificateVersion: {
    name: 'certfleet_certificate_version',
    type: 'gauge',
    help: 'The desired version of the certificate (what agents must serve). Absent until a first version is published.',
    labels: ['name'],
  },
  certificatePublished: {
    name: 'certfleet_certificate_published_timestamp_seconds',
    type: 'gauge',
    help: 'When the desired pointer of the certificate last changed (new version, rollout wave, rollback), Unix seconds.',
    labels: ['name'],
  },
  certificatePinned: {
    name: 'certfleet_certificate_pinned',
    type: 'gauge',
    help: '1 while an operator rollback pins the desired version, else 0.',
    labels: ['name'],
  },
  certificateAgentsAssigned: {
    name: 'certfleet_certificate_agents_assigned',
    type: 'gauge',
    help: 'Enrolled agents the certificate selector selects (online or not).',
    labels: ['name'],
  },
  certificateAgentsCurrent: {
    name: 'certfleet_certificate_agents_current',
    type: 'gauge',
    help: 'Assigned agents that report the version desired for them installed.',
    labels: ['name'],
  },
  certificateDeferred: {
    name: 'certfleet_certificate_deferred',
    type: 'gauge',
    help: '1 while a rate-limit budget holds the next order of the certificate back, else 0.',
    labels: ['name'],
  },
  issuanceFailures: {
    name: 'certfleet_issuance_failures',
    type: 'gauge',
    help: 'Consecutive failed issuance attempts of the certificate; 0 after a success.',
    labels: ['name'],
  },
  agentInfo: {
    name: 'certfleet_agent_info',
    type: 'gauge',
    help: 'Always 1 per enrolled agent; the agent software version it last reported as a label ("" before its first report).',
    labels: ['agent', 'agent_version'],
  },
  agentOnline: {
    name: 'certfleet_agent_online',
    type: 'gauge',
    help: '1 when the agent reported within api.agentOfflineAfter, else 0.',
    labels: ['agent'],
  },
  agentLastSeen: {
    name: 'certfleet_agent_last_seen_timestamp_seconds',
    type: 'gauge',
    help: 'When the agent last reported, Unix seconds. Absent before its first report.',
    labels: ['agent'],
  },
  http01AgentSkipped: {
    name: 'certfleet_http01_agent_skipped_timestamp_seconds',
    type: 'gauge',
    help: 'When an HTTP-01 challenge of the certificate last went ahead without this selected agent because it was offline (http01.offlineAgents), Unix seconds. Absent until that happens (since the controller started).',
    labels: ['name', 'agent'],
  },
  agentCertificateVersion: {
    name: 'certfleet_agent_certificate_version',
    type: 'gauge',
    help: 'The version of the certificate the agent reports installed (0: none yet), per assigned agent.',
    labels: ['agent', 'name'],
  },
  agentCertificateDesiredVersion: {
    name: 'certfleet_agent_certificate_desired_version',
    type: 'gauge',
    help: 'The version the agent must serve (its rollout wave decides during a staged rollout); 0 before the first publication.',
    labels: ['agent', 'name'],
  },
  agentCertificateCurrent: {
    name: 'certfleet_agent_certificate_current',
    type: 'gauge',
    help: '1 when the agent reports the version desired for it installed, else 0.',
    labels: ['agent', 'name'],
  },
  agentCertificateVerified: {
    name: 'certfleet_agent_certificate_verified',
    type: 'gauge',
    help: '1 when the agent checked that its local listeners serve the installed version (agent certificates.<name>.verify), else 0 (also when it has no verify endpoint).',
    labels: ['agent', 'name'],
  },
  agentRecordsRefused: {
    name: 'certfleet_agent_records_refused',
    type: 'gauge',
    help: 'SECURITY: records the agent refused since it started (unsigned, unknown-key, bad-signature, replay, malformed, expired, not-assigned, fingerprint-mismatch), per reason. Absent while it refused none.',
    labels: ['agent', 'reason'],
  },
  budgetAvailable: {
    name: 'certfleet_budget_available',
    type: 'gauge',
    help: 'Whole tokens left in a rate-limit bucket (emergency reserve included). A bucket back at capacity is not listed, except the per-account one.',
    labels: ['limit', 'key'],
  },
  budgetCapacity: {
    name: 'certfleet_budget_capacity',
    type: 'gauge',
    help: 'Capacity of a rate-limit bucket (the CA limit count).',
    labels: ['limit', 'key'],
  },
  budgetReserved: {
    name: 'certfleet_budget_reserved',
    type: 'gauge',
    help: 'Tokens of a rate-limit bucket only emergency renewals may use (budgets.emergencyReserve).',
    labels: ['limit', 'key'],
  },
} as const satisfies Record<string, MetricDef>;

/** Identifier of a metric in {@link Metric}. */
export type MetricId = keyof typeof Metric;

/** Every gauge name, in the order they are exposed. */
export const METRIC_NAMES: readonly string[] = Object.values(Metric).map((m) => m.name);

/** A counter or histogram: counted as things happen, not computed at scrape time. */
export interface InstrumentDef {
  readonly name: string;
  readonly type: 'counter' | 'histogram';
  readonly help: string;
  readonly labels: readonly string[];
}

/**
 * Every counter and histogram of the controller. The ACME pair mirrors cert-manager's
 * `http_acme_client_request_count` / `..._duration_seconds` label set (scheme, host, path,
 * method, status), with two differences: the counter ends in `_total` (as `promtool check
 * metrics` requires of counters), and `path` is the ACME resource the request went to
 * (`directory`, `newNonce`, `newAccount`, `newOrder`, `order`, `authz`, `challenge`,
 * `finalize`, `cert`, `renewalInfo`, `revokeCert`, `keyChange`, `account`, `other`), not
 * the URL path, so no order or authorization id becomes a series and the values are the
 * same at every CA. `status` is the HTTP status code, `none` when no answer came.
 */
export const Instrument = {
  acmeRequests: {
    name: 'certfleet_acme_client_requests_total',
    type: 'counter',
    help: 'HTTP requests the ACME client sent, by CA (scheme, host), ACME resource (path), method and HTTP status ("none": no answer).',
    labels: ['scheme', 'host', 'path', 'method', 'status'],
  },
  acmeRequestDuration: {
    name: 'certfleet_acme_client_request_duration_seconds',
    type: 'histogram',
    help: 'Time from sending an ACME request to its answer (or failure), seconds; labels as certfleet_acme_client_requests_total.',
    labels: ['scheme', 'host', 'path', 'method', 'status'],
  },
  reconcilePasses: {
    name: 'certfleet_reconcile_passes_total',
    type: 'counter',
    help: 'Passes of the work loop over every configured certificate.',
    labels: [],
  },
  reconcileSyncs: {
    name: 'certfleet_reconcile_syncs_total',
    type: 'counter',
    help: 'Certificates looked at by the work loop, by what the pass decided (wait, order, defer, queued, busy) or error (the store or NATS could not be read).',
    labels: ['action'],
  },
  orders: {
    name: 'certfleet_orders_total',
    type: 'counter',
    help: 'Issuances the work loop started and how they ended: started, issued, failed, spooled (issued, waiting in the spool for the store).',
    labels: ['outcome'],
  },
  orderFailures: {
    name: 'certfleet_order_failures_total',
    type: 'counter',
    help: 'Failed issuances by error code (docs/errors.md), e.g. ACME_RATE_LIMITED, CHALLENGE_NOT_SERVED.',
    labels: ['code'],
  },
} as const satisfies Record<string, InstrumentDef>;

/** Every counter and histogram name, in the order they are exposed (after the gauges). */
export const INSTRUMENT_NAMES: readonly string[] = Object.values(Instrument).map((m) => m.name);

/** The values of `certfleet_reconcile_syncs_total`'s `action` label. */
export const SYNC_ACTIONS = ['wait', 'order', 'defer', 'queued', 'busy', 'error'] as const;

/** The values of `certfleet_orders_total`'s `outcome` label. */
export const ORDER_OUTCOMES = ['started', 'issued', 'failed', 'spooled'] as const;

/** The values of `certfleet_certificate_ready_status`'s `condition` label (cert-manager's). */
export const READY_CONDITIONS = ['True', 'False'] as const;

/** The values of `certfleet_certificate_state`'s `state` label: the states of `certfleet certs`. */
export const CERTIFICATE_STATES = ['pending', 'issuing', 'ready', 'failed', 'rolling-out', 'halted'] as const;

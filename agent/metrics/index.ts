/**
 * The agent's metrics: what its installs, reload hooks and served-certificate checks did
 * (names.ts), counted by agent/apply through {@link ApplyMetrics}, and the optional
 * endpoint (`metrics.listen`) that serves them with the process metrics. prom-client
 * stays behind shared/metrics.
 */
import type { Logger } from 'pino';
import { createMetricsRegistry, startMetricsEndpoint, type MetricsEndpoint, type MetricsRegistry } from '../../shared/metrics/index.js';
import type { CertStatus, HookOutcome } from '../../shared/model/index.js';
import { AgentMetric, type InstallOutcome } from './names.js';

export { AgentMetric, AGENT_METRIC_NAMES, INSTALL_OUTCOMES, type AgentMetricDef, type InstallOutcome } from './names.js';

/** What agent/apply reports. Implementations must not throw. */
export interface ApplyMetrics {
  /** A new version's install ended (after its hook, verification and any rollback). */
  install(cert: string, outcome: InstallOutcome): void;
  /** A reload hook ran (`rollback`: to restore a previous version). */
  hook(outcome: HookOutcome, rollback: boolean): void;
  /** The configured listeners of `cert` were checked. */
  verify(cert: string, served: boolean): void;
}

/** The agent's instruments in one registry (with the process metrics). */
export class AgentInstruments implements ApplyMetrics {
  readonly registry: MetricsRegistry;
  private readonly installs;
  private readonly hooks;
  private readonly verifications;
  private readonly installed;
  private readonly seen = new Set<string>();

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.registry = createMetricsRegistry({ defaultMetrics: opts.defaultMetrics ?? true });
    this.installs = this.registry.counter(AgentMetric.installs);
    this.hooks = this.registry.histogram(AgentMetric.hookDuration);
    this.verifications = this.registry.counter(AgentMetric.verifications);
    this.installed = this.registry.gauge(AgentMetric.installedVersion);
  }

  install(cert: string, outcome: InstallOutcome): void {
    this.installs.inc({ cert, outcome });
  }

  hook(outcome: HookOutcome, rollback: boolean): void {
    if (!outcome.ran) return;
    const result = outcome.timedOut ? 'timeout' : outcome.exitCode === 0 ? 'ok' : 'failed';
    this.hooks.observe({ result, rollback: String(rollback) }, outcome.durationMs / 1000);
  }

  verify(cert: string, served: boolean): void {
    this.verifications.inc({ cert, result: served ? 'served' : 'not-served' });
  }

  /** Sets the installed-version gauge from the statuses (a certificate no longer held loses its series). */
  observeStatuses(statuses: readonly CertStatus[]): void {
    const now = new Set<string>();
    for (const s of statuses) {
      now.add(s.name);
      this.installed.set({ cert: s.name }, s.version);
    }
    for (const cert of this.seen) if (!now.has(cert)) this.installed.remove({ cert });
    this.seen.clear();
    for (const cert of now) this.seen.add(cert);
  }
}

/**
 * Serves `instruments` on `listen` (GET /metrics); `statuses` is read at each scrape for
 * the installed versions. Rejects with CONFIG_INVALID naming metrics.listen when the
 * address cannot be bound.
 */
export function startAgentMetrics(opts: { listen: { host: string; port: number }; instruments: AgentInstruments; statuses: () => readonly CertStatus[]; log: Logger }): Promise<MetricsEndpoint> {
  return startMetricsEndpoint({
    listen: opts.listen,
    owner: 'agent',
    log: opts.log,
    scrape: () => {
      opts.instruments.observeStatuses(opts.statuses());
      return opts.instruments.registry.text();
    },
  });
}

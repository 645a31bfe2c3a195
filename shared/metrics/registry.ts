/**
 * The prom-client registry behind {@link MetricsRegistry} (see index.ts).
 *
 * Counters and histograms (things that happen between scrapes: ACME requests, work-loop
 * passes, agent installs) live in a {@link MetricsRegistry}; each binary makes one and
 * serves {@link MetricsRegistry.text} on its metrics endpoint. Gauges computed from state
 * at scrape time stay with their owner (controller/metrics renders them itself) or use
 * {@link MetricsRegistry.gauge}. The registry also carries prom-client's default process
 * metrics (`process_*`, `nodejs_*`) when asked.
 *
 * Names, types, labels and help come from the caller's vocabulary file (one per binary:
 * controller/metrics/names.ts, agent/metrics/names.ts); nothing here invents a name.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One instrument's definition, as the vocabulary files write it. */
export interface InstrumentDef {
  readonly name: string;
  readonly help: string;
  readonly labels: readonly string[];
  /** Histogram bucket upper bounds, seconds; only read for histograms. */
  readonly buckets?: readonly number[];
}

/** Label values by label name. */
export type Labels = Readonly<Record<string, string>>;

/** A monotonically increasing count. */
export interface CounterInstrument {
  /** Adds `by` (default 1; must be >= 0) to the series `labels`. */
  inc(labels: Labels, by?: number): void;
}

/** A distribution of observed values (durations in seconds). */
export interface HistogramInstrument {
  observe(labels: Labels, value: number): void;
}

/** A value that goes up and down, set by the owner. */
export interface GaugeInstrument {
  set(labels: Labels, value: number): void;
  /** Drops the series `labels` (the thing it described is gone). */
  remove(labels: Labels): void;
}

/** One binary's instruments and default metrics. */
export interface MetricsRegistry {
  counter(def: InstrumentDef): CounterInstrument;
  histogram(def: InstrumentDef): HistogramInstrument;
  gauge(def: InstrumentDef): GaugeInstrument;
  /** The text exposition of every instrument (and the default metrics). */
  text(): Promise<string>;
}

export interface RegistryOptions {
  /** Also expose prom-client's process and Node.js runtime metrics. Default true. */
  defaultMetrics?: boolean;
}

/** Default metrics of prom-client that `promtool check metrics` refuses (see createMetricsRegistry). */
const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Default histogram buckets for request and hook durations, seconds. */
export const DURATION_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * A new registry, independent of prom-client's global one (two registries in one process
 * — a test running a controller and an agent — never share series). Defining the same
 * name twice throws (prom-client's own check): instruments are made once, at start.
 */
export function createMetricsRegistry(opts: RegistryOptions = {}): MetricsRegistry {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // prom-client (15.1) exposes these three as gauges named `_total`, which `promtool
    // check metrics` rejects (a gauge must not end in _total). Their by-type twins
    // nodejs_active_{handles,requests,resources} stay; sum them for the totals.
    for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name);
  }
  return {
    counter(def) {
      const c = new Counter({ name: def.name, help: def.help, labelNames: [...def.labels], registers: [registry] });
      return { inc: (labels, by = 1) => c.inc({ ...labels }, by) };
    },
    histogram(def) {
      const h = new Histogram({ name: def.name, help: def.help, labelNames: [...def.labels], buckets: [...(def.buckets ?? DURATION_BUCKETS)], registers: [registry] });
      return { observe: (labels, value) => h.observe({ ...labels }, value) };
    },
    gauge(def) {
      const g = new Gauge({ name: def.name, help: def.help, labelNames: [...def.labels], registers: [registry] });
      return { set: (labels, value) => g.set({ ...labels }, value), remove: (labels) => g.remove({ ...labels }) };
    },
    text: () => registry.metrics(),
  };
}

/**
 * The controller's counters and histograms (names.ts {@link Instrument}) in one
 * prom-client registry (shared/metrics), with prom-client's process and Node.js metrics.
 * Made once at start whether or not `metrics.listen` is set, so the work loop and the
 * ACME transport can count from the first request; the endpoint serves
 * {@link ControllerInstruments.registry} after the scrape-time gauges.
 */
import { createMetricsRegistry, type MetricsRegistry } from '../../shared/metrics/index.js';
import { Instrument, ORDER_OUTCOMES, SYNC_ACTIONS } from './names.js';

/** One ACME HTTP request as the transport saw it (controller/acme AcmeRequestObserver). */
export interface AcmeRequestFacts {
  url: string;
  method: string;
  /** The ACME resource (names.ts: the `path` label). */
  endpoint: string;
  /** HTTP status; null when no answer came (refused, timed out, TLS failure). */
  status: number | null;
  seconds: number;
}

/** What the work loop counts (controller/reconcile LoopMetrics). */
export interface LoopCounters {
  pass(): void;
  sync(action: string): void;
  order(outcome: string, code?: string): void;
}

/** The controller's instruments. */
export interface ControllerInstruments {
  readonly registry: MetricsRegistry;
  /** Counts and times one ACME request; wire to controller/acme observeAcmeRequests. */
  acmeRequest(r: AcmeRequestFacts): void;
  readonly loop: LoopCounters;
}

/**
 * A new registry with every instrument. `defaultMetrics` (default true) adds `process_*`
 * and `nodejs_*`. Known label values start at 0, so `rate()` and `increase()` see the
 * first event instead of a series appearing at 1.
 */
export function createControllerInstruments(opts: { defaultMetrics?: boolean } = {}): ControllerInstruments {
  const registry = createMetricsRegistry({ defaultMetrics: opts.defaultMetrics ?? true });
  const requests = registry.counter(Instrument.acmeRequests);
  const duration = registry.histogram(Instrument.acmeRequestDuration);
  const passes = registry.counter(Instrument.reconcilePasses);
  const syncs = registry.counter(Instrument.reconcileSyncs);
  const orders = registry.counter(Instrument.orders);
  const failures = registry.counter(Instrument.orderFailures);
  passes.inc({}, 0);
  for (const action of SYNC_ACTIONS) syncs.inc({ action }, 0);
  for (const outcome of ORDER_OUTCOMES) orders.inc({ outcome }, 0);
  return {
    registry,
    acmeRequest(r) {
      let scheme = '';
      let host = '';
      try {
        const u = new URL(r.url);
        scheme = u.protocol.replace(/:$/, '');
        host = u.host;
      } catch {
        // Not a URL (never seen from acme-client): counted with empty scheme and host.
      }
      const labels = { scheme, host, path: r.endpoint, method: r.method.toUpperCase(), status: r.status === null ? 'none' : String(r.status) };
      requests.inc(labels);
      duration.observe(labels, r.seconds);
    },
    loop: {
      pass: () => passes.inc({}),
      sync: (action) => syncs.inc({ action }),
      order(outcome, code) {
        orders.inc({ outcome });
        if (outcome === 'failed' && code !== undefined) failures.inc({ code });
      },
    },
  };
}

/**
 * Takes the snapshot a scrape reports from the controller's live state, through narrow
 * read-only views the runtime hands in. Nothing here runs between scrapes.
 */
import type { Logger } from 'pino';
import { LogKey } from '../../shared/log/index.js';
import type { pb } from '../../shared/grpc/index.js';
import type { DesiredRecord, VersionMeta } from '../../shared/model/index.js';
import { desiredFor } from '../../shared/rollout/index.js';
import { matches, parseSelector } from '../../shared/selector/index.js';
import type { BucketLevel } from '../budget/index.js';
import type { AgentView } from '../fleet/index.js';
import type { CertRuntime } from '../reconcile/index.js';
import type { AgentFacts, CertificateFacts, MetricsSnapshot } from './collect.js';

/** Read-only views of the controller's state that the metrics are computed from. */
export interface MetricsSources {
  /** Reported as `certfleet_controller_info{version}`. */
  controllerVersion: string;
  /** The configured certificates, in configuration order. */
  certificates: ReadonlyArray<{ name: string; agents: string }>;
  /** One certificate as `certfleet certs` shows it (the runtime's certificateSummary). */
  summary(name: string): pb.CertificateSummary;
  /** The work loop's state of a certificate (Reconciler.status). */
  runtime(name: string): CertRuntime | undefined;
  /** The desired record of a certificate (DesiredState.get). */
  desired(name: string): DesiredRecord | undefined;
  /** Every enrolled agent with its last report (Fleet.agents). */
  agents(): AgentView[];
  /** Offline agents HTTP-01 went ahead without (Http01Solver.skips); absent: none reported. */
  http01Skips?(): Array<{ cert: string; agent: string; at: number }>;
  /** Rate-limit bucket levels now (BudgetKeeper.levels). */
  budgets(): BucketLevel[];
  /** Every stored version's metadata (CertStore.listVersions); only asked when the desired version changes. */
  versions(name: string): Promise<VersionMeta[]>;
  /** Now, epoch ms (the controller's clock). */
  now(): number;
}

const parseTime = (iso: string | undefined): number | null => {
  if (iso === undefined || iso === '') return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
};

/**
 * Builds snapshots. Keeps the metadata of each certificate's desired version between
 * scrapes: versions are immutable, so (name, version) → notBefore never goes stale, and
 * the store is read only when the desired version changes (not once per scrape).
 */
export class SnapshotGatherer {
  private readonly metas = new Map<string, VersionMeta>();

  constructor(
    private readonly sources: MetricsSources,
    private readonly log: Logger,
  ) {}

  /**
   * The state now. Never rejects: a store that cannot be read only leaves the affected
   * certificate's notBefore out (logged), since a scrape must still report the rest.
   */
  async snapshot(): Promise<MetricsSnapshot> {
    const src = this.sources;
    const now = src.now();
    const certificates: CertificateFacts[] = [];
    for (const c of src.certificates) {
      const d = src.desired(c.name);
      const rt = src.runtime(c.name);
      const summary = src.summary(c.name);
      certificates.push({
        name: c.name,
        state: summary.state ?? 'pending',
        desiredVersion: d?.version ?? 0,
        notBefore: d ? await this.notBefore(c.name, d.version, rt?.latest ?? null) : null,
        notAfter: parseTime(d?.notAfter),
        publishedAt: parseTime(d?.updatedAt),
        pinned: d?.pinned ?? false,
        nextRenewal: rt && rt.nextCheck > 0 ? rt.nextCheck : null,
        failures: rt?.failures ?? 0,
        deferred: rt !== undefined && rt.deferredUntil > now,
        agentsAssigned: summary.agentsAssigned ?? 0,
        agentsCurrent: summary.agentsCurrent ?? 0,
      });
    }
    // Parsed once per scrape, not once per agent (the config validated them already).
    const selectors = src.certificates.map((c) => ({ name: c.name, selector: parseSelector(c.agents) }));
    const agents: AgentFacts[] = src.agents().map((a) => {
      const labels = a.registration.labels;
      const reported = a.report?.certificates ?? [];
      const assignments = selectors
        .filter((c) => matches(c.selector, labels))
        .map((c) => {
          const d = src.desired(c.name);
          const want = d === undefined ? 0 : desiredFor(d, labels).version;
          const s = reported.find((x) => x.name === c.name);
          const installed = s !== undefined && s.state === 'installed';
          return {
            name: c.name,
            version: s?.version ?? 0,
            desiredVersion: want,
            // The same test as certificateSummary's agentsCurrent, so the two agree.
            current: installed && want > 0 && s.version === want,
            verified: s?.servedVerified ?? false,
          };
        });
      const refusals = a.report?.refusals?.byReason;
      return { name: a.registration.name, agentVersion: a.report?.agentVersion ?? '', online: a.online, lastSeen: parseTime(a.report?.lastSeen), assignments, ...(refusals ? { refusals } : {}) };
    });
    const budgets = src.budgets().map((b) => ({ limit: b.limit, key: b.key, available: b.available, capacity: b.capacity, reserved: b.reserved }));
    return { controllerVersion: src.controllerVersion, certificates, agents, budgets, http01Skips: src.http01Skips?.() ?? [] };
  }

  private async notBefore(name: string, version: number, latest: VersionMeta | null): Promise<number | null> {
    let meta = this.metas.get(name);
    if (meta?.version !== version) {
      meta = latest?.version === version ? latest : undefined;
      if (!meta) {
        try {
          meta = (await this.sources.versions(name)).find((v) => v.version === version);
        } catch (err) {
          this.log.warn({ [LogKey.cert]: name, [LogKey.version]: version, [LogKey.err]: err }, 'version metadata unreadable; notBefore left out');
          return null;
        }
      }
      if (!meta) return null;
      this.metas.set(name, meta);
    }
    return parseTime(meta.notBefore);
  }
}

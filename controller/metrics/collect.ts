/**
 * From a snapshot of the controller's state to metric families. Pure: the snapshot is
 * plain data taken at scrape time (see gather.ts), so what each metric means can be
 * tested without a controller.
 */
import { CERTIFICATE_STATES, Metric, READY_CONDITIONS, type MetricDef } from './names.js';
import type { Family, Sample } from './exposition.js';

/** What the metrics say about one configured certificate. Times are epoch milliseconds. */
export interface CertificateFacts {
  name: string;
  /** As `certfleet certs` shows it (pending, issuing, ready, failed, rolling-out, halted). */
  state: string;
  /** The desired version; 0 before the first publication. */
  desiredVersion: number;
  /** Validity of the desired version; null before the first publication (notBefore: or when unknown). */
  notBefore: number | null;
  notAfter: number | null;
  /** When the desired pointer last changed; null before the first publication. */
  publishedAt: number | null;
  pinned: boolean;
  /** Next planned renewal; null before the first check. */
  nextRenewal: number | null;
  failures: number;
  deferred: boolean;
  agentsAssigned: number;
  agentsCurrent: number;
}

/** One (agent, certificate) assignment. */
export interface AssignmentFacts {
  name: string;
  /** Reported installed version; 0 when none. */
  version: number;
  /** The version desired for this agent (rollout wave); 0 before the first publication. */
  desiredVersion: number;
  current: boolean;
  verified: boolean;
}

/** One enrolled agent. */
export interface AgentFacts {
  name: string;
  agentVersion: string;
  online: boolean;
  /** Last report; null before the first. */
  lastSeen: number | null;
  /** The certificates assigned to it, by name. */
  assignments: AssignmentFacts[];
  /** Records it refused since it started, per reason (absent: none reported). */
  refusals?: Readonly<Record<string, number>>;
}

/** One rate-limit bucket. */
export interface BudgetFacts {
  limit: string;
  key: string;
  available: number;
  capacity: number;
  reserved: number;
}

/** Everything one scrape reports. */
export interface MetricsSnapshot {
  controllerVersion: string;
  certificates: CertificateFacts[];
  agents: AgentFacts[];
  budgets: BudgetFacts[];
  /** HTTP-01 challenges that went ahead without an offline agent: latest time (epoch ms) per certificate and agent. */
  http01Skips?: Array<{ cert: string; agent: string; at: number }>;
}

const seconds = (ms: number): number => ms / 1000;
const bit = (b: boolean): number => (b ? 1 : 0);

/** Every family of {@link Metric}, in its order, with the samples `snap` gives it. */
export function collect(snap: MetricsSnapshot): Family[] {
  const out = new Map<MetricDef, Sample[]>(Object.values(Metric).map((def) => [def, []]));
  const add = (def: MetricDef, labels: Record<string, string>, value: number): void => {
    out.get(def)?.push({ labels, value });
  };

  add(Metric.controllerInfo, { version: snap.controllerVersion }, 1);
  for (const c of snap.certificates) {
    const name = { name: c.name };
    if (c.desiredVersion > 0) {
      add(Metric.certificateVersion, name, c.desiredVersion);
      add(Metric.certificatePinned, name, bit(c.pinned));
    }
    if (c.notAfter !== null) add(Metric.certificateExpiration, name, seconds(c.notAfter));
    if (c.notBefore !== null) add(Metric.certificateNotBefore, name, seconds(c.notBefore));
    if (c.publishedAt !== null) add(Metric.certificatePublished, name, seconds(c.publishedAt));
    if (c.nextRenewal !== null) add(Metric.certificateRenewal, name, seconds(c.nextRenewal));
    const ready = c.state === 'ready';
    for (const condition of READY_CONDITIONS) add(Metric.certificateReady, { name: c.name, condition }, bit((condition === 'True') === ready));
    // A state the list does not know still shows (as itself), rather than vanish.
    const states: readonly string[] = (CERTIFICATE_STATES as readonly string[]).includes(c.state) ? CERTIFICATE_STATES : [...CERTIFICATE_STATES, c.state];
    for (const state of states) add(Metric.certificateState, { name: c.name, state }, bit(state === c.state));
    add(Metric.certificateAgentsAssigned, name, c.agentsAssigned);
    add(Metric.certificateAgentsCurrent, name, c.agentsCurrent);
    add(Metric.certificateDeferred, name, bit(c.deferred));
    add(Metric.issuanceFailures, name, c.failures);
  }
  for (const a of snap.agents) {
    const agent = { agent: a.name };
    add(Metric.agentInfo, { agent: a.name, agent_version: a.agentVersion }, 1);
    add(Metric.agentOnline, agent, bit(a.online));
    if (a.lastSeen !== null) add(Metric.agentLastSeen, agent, seconds(a.lastSeen));
    for (const s of a.assignments) {
      const labels = { agent: a.name, name: s.name };
      add(Metric.agentCertificateVersion, labels, s.version);
      add(Metric.agentCertificateDesiredVersion, labels, s.desiredVersion);
      add(Metric.agentCertificateCurrent, labels, bit(s.current));
      add(Metric.agentCertificateVerified, labels, bit(s.verified));
    }
    for (const [reason, count] of Object.entries(a.refusals ?? {})) add(Metric.agentRecordsRefused, { agent: a.name, reason }, count);
  }
  for (const k of snap.http01Skips ?? []) add(Metric.http01AgentSkipped, { name: k.cert, agent: k.agent }, seconds(k.at));
  for (const b of snap.budgets) {
    const labels = { limit: b.limit, key: b.key };
    add(Metric.budgetAvailable, labels, b.available);
    add(Metric.budgetCapacity, labels, b.capacity);
    add(Metric.budgetReserved, labels, b.reserved);
  }
  return [...out].map(([def, samples]) => ({ def, samples }));
}

/**
 * The agent's metric vocabulary: every metric its endpoint (`metrics.listen`) exposes
 * besides prom-client's process and Node.js metrics, defined here and nowhere else.
 * docs/metrics.md lists them ("Agent metrics"); test/unit/metrics.test.ts checks the two
 * agree. Labels: `cert` is a certificate name. No label or value carries key material.
 */

/** One metric of the agent. */
export interface AgentMetricDef {
  readonly name: string;
  readonly type: 'counter' | 'histogram' | 'gauge';
  readonly help: string;
  readonly labels: readonly string[];
}

/** Every metric of the agent, keyed by a short identifier used in code. */
export const AgentMetric = {
  installs: {
    name: 'certfleet_agent_installs_total',
    type: 'counter',
    help: 'Installs of a new version by outcome: installed (hook ran, served if verified), failed (refused, or failed with nothing to restore), rolled-back (failed, previous version serves again), restore-failed.',
    labels: ['cert', 'outcome'],
  },
  hookDuration: {
    name: 'certfleet_agent_hook_duration_seconds',
    type: 'histogram',
    help: 'Run time of reload hooks, seconds, by result (ok, failed, timeout) and whether the run restored a previous version (rollback "true"/"false").',
    labels: ['result', 'rollback'],
  },
  verifications: {
    name: 'certfleet_agent_verify_total',
    type: 'counter',
    help: 'Checks that the local listeners serve the installed version (certificates.<cert>.verify), by result: served, not-served.',
    labels: ['cert', 'result'],
  },
  installedVersion: {
    name: 'certfleet_agent_installed_version',
    type: 'gauge',
    help: 'The version of the certificate installed now (current), per certificate this agent holds; 0 when none yet.',
    labels: ['cert'],
  },
} as const satisfies Record<string, AgentMetricDef>;

/** Every agent metric name, in the order they are exposed. */
export const AGENT_METRIC_NAMES: readonly string[] = Object.values(AgentMetric).map((m) => m.name);

/** The values of `certfleet_agent_installs_total`'s `outcome` label. */
export const INSTALL_OUTCOMES = ['installed', 'failed', 'rolled-back', 'restore-failed'] as const;
export type InstallOutcome = (typeof INSTALL_OUTCOMES)[number];

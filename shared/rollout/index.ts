/**
 * Staged rollout: which version of a certificate one agent should serve while a new
 * version moves through waves. Pure, and shared: the agent applies it to what it reads
 * from NATS, the controller to what it answers over gRPC and to its fleet view, so both
 * sides always agree.
 *
 * A rollout lists waves as label selectors. Wave i gets the new version once waves
 * 0..i-1 all run it; agents matched by no wave come last. `released` counts the groups
 * that have it (1 = the first wave only). A halted rollout stays where it is.
 */
import type { DesiredRecord, RolloutState } from '../model/index.js';
import { selects } from '../selector/index.js';

/** Index of the group an agent belongs to: its first matching wave, else the last group. */
export function waveOf(waves: readonly string[], labels: Readonly<Record<string, string>>): number {
  const i = waves.findIndex((w) => selects(w, labels));
  return i === -1 ? waves.length : i;
}

/** Whether the group of `labels` already has the new version. */
export function hasNewVersion(rollout: RolloutState, labels: Readonly<Record<string, string>>): boolean {
  return waveOf(rollout.waves, labels) < rollout.released;
}

/**
 * The desired record as one agent must apply it: during a rollout, agents whose wave
 * is not released yet keep the previous version.
 */
export function desiredFor(record: DesiredRecord, labels: Readonly<Record<string, string>>): DesiredRecord {
  const r = record.rollout;
  if (!r || hasNewVersion(r, labels)) return record;
  return { ...record, version: r.from.version, fingerprint: r.from.fingerprint, notAfter: r.from.notAfter, names: r.from.names };
}

/** Whether every group has the new version (the rollout is over). */
export function rolloutComplete(r: RolloutState): boolean {
  return r.released > r.waves.length;
}

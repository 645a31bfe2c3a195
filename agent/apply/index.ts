/**
 * How the agent applies what is desired: install, reload hook, verify, roll back, report.
 * What is desired comes from agent/desired; agent/sync wires the two.
 *
 * For each desired certificate whose version is not installed (see {@link Applier.converge}):
 * take it from the local archive (versions/<N>, re-validated) or fetch the bundle
 * (gRPC, mTLS) → install (validated before any disk write) → reload hook
 * → verify served fingerprint → report.
 *
 * Rollback on the node: when the hook fails (non-zero exit, timeout) or an endpoint
 * does not serve the new certificate, the previous version is activated again, the
 * hook rerun and the endpoints verified again. The report then says both things:
 *
 *   state "failed", errorCode HOOK_FAILED | HOOK_TIMEOUT | NOT_SERVED  (the new version)
 *   failedVersion = the new version, version/fingerprint = what is installed now
 *   rollback = "restored" (the previous version serves again) | "restore-failed"
 *
 *   install vN ─▶ hook ─ok─▶ verify ─ok─▶ installed
 *                   │fail          │fail
 *                   ▼              ▼
 *             activate previous ─▶ hook ─▶ verify ─▶ failed + restored | restore-failed
 *
 * With no previous version (first install) there is nothing to restore: the failure is
 * reported with rollback "" and the new version stays in place (a server that needs
 * several certificates before it can start is the usual reason, see converge()).
 *
 * A failure is reported (state "failed" with a stable code) and retried when the caller
 * says so (`retryFailed`: at every resynchronisation), not in a tight loop. A version that
 * was rolled back from is retried too — from the local archive — because the usual cause
 * is on the node (a broken server configuration) and an operator may have fixed it; each
 * retry that fails rolls back again.
 *
 * After a (re)start nothing is reported until every installed certificate is proven:
 * the agent may have been killed between the `current` swap and the reload hook, and
 * then the server still runs the old version (issue #8). See {@link Applier.recheckInstalled}.
 *
 * The hook runner, the verifier, the bundle source and the reporter are injected (real
 * ones in agent/sync), so this loop runs in a unit test on a manual clock.
 */
import { isoAt, type Clock, type Timer } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError, toCertfleetError } from '../../shared/errors/index.js';
import type { Bundle, CertStatus, DesiredRecord, HookOutcome, RecordRefusals, VersionMeta } from '../../shared/model/index.js';
import { reloadHookFor, type AgentConfig, type HookConfig } from '../config/index.js';
import { hookEnvironment, hookGroupKey, type HookRunner } from '../hooks/index.js';
import type { Installer } from '../install/index.js';
import type { ApplyMetrics } from '../metrics/index.js';
import { LogKey, type Logger } from '../log/index.js';
import type { Trust } from '../trust/index.js';
import type { Endpoint, Verifier } from '../verify/index.js';

export const AGENT_VERSION = '0.1.0';

/** First retry delay of a failed status report; doubles per failure up to the report interval. */
export const REPORT_RETRY_MIN_MS = 500;

/** Where bundles come from (the controller link). Rejects with a CertfleetError when it cannot. */
export interface BundleSource {
  fetchBundle(name: string, version: number): Promise<Bundle>;
}

/** What a status report carries. */
export interface StatusReport {
  http01Address: string;
  agentVersion: string;
  certificates: CertStatus[];
  refusals?: RecordRefusals;
}

/** Where status reports go (the controller link). May reject; the applier logs it. */
export interface StatusReporter {
  reportStatus(report: StatusReport): Promise<void>;
}

export interface ApplyOptions {
  /** Reload hooks and verify endpoints per certificate; the HTTP-01 address reported. */
  config: AgentConfig;
  installer: Installer;
  bundles: BundleSource;
  reporter: StatusReporter;
  hooks: HookRunner;
  verifier: Verifier;
  /** Counts a fetched bundle that is not the signed one; its refusals go into reports. */
  trust: Pick<Trust, 'refuse' | 'refusals'>;
  clock: Clock;
  log: Logger;
  /** Counts installs, hook runs and verifications (agent/metrics); absent: not counted. */
  metrics?: ApplyMetrics;
}

/** A version installed in this pass (or earlier, awaiting its hook). */
interface Installed {
  desired: DesiredRecord;
  meta: VersionMeta;
  lineageDir: string;
  /** The version `current` named before this pass made it `meta.version`; null: none to restore. */
  previous: number | null;
  /** This certificate's unit of work: cert and version bound. */
  log: Logger;
}

/** Why one member of a hook group failed, before any rollback. */
interface Failure {
  member: Installed;
  code: string;
  error: string;
  hook: HookOutcome | null;
}

/** A failed member whose previous version was activated again. */
interface Restored {
  failure: Failure;
  meta: VersionMeta;
  /** The rollback's unit of work: cert, failed version and restored version bound. */
  log: Logger;
}

/** Installs, hooks, verifies, rolls back and reports; keeps the status of every certificate. */
export class Applier {
  private readonly status = new Map<string, CertStatus>();
  private stopped = false;
  /** The last report send queued or in flight (see {@link report}). */
  private reportTail: Promise<void> = Promise.resolve();
  /** A send queued behind the one in flight, not yet started: later calls join it. */
  private reportQueued: Promise<void> | undefined;
  /** Consecutive failed sends, for the retry's backoff. */
  private reportFailures = 0;
  private reportRetry: Timer | undefined;

  constructor(private readonly opts: ApplyOptions) {}

  /**
   * Status of every assigned or installed certificate, as reported, by name. Names are
   * lowercase ASCII (shared/wire CERT_NAME_PATTERN), so code-unit order is their order;
   * localeCompare would load ICU's collation tables (~2–3 MiB of RSS) into every agent
   * for nothing (issue #13, docs/performance.md Footprint).
   */
  statuses(): CertStatus[] {
    return [...this.status.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Ends the current pass at its next certificate; no new pass installs anything. */
  stop(): void {
    this.stopped = true;
    this.reportRetry?.stop();
    this.reportRetry = undefined;
  }

  /**
   * After a (re)start, before the first report: what `current` names is on disk, but
   * whether it was ever loaded is not known — the previous process may have been killed
   * between the `current` swap and its reload hook. For each installed certificate:
   *
   *   endpoints configured:  served fingerprint == current's?  yes → installed, verified
   *                                                            no  → rerun the hook
   *   no endpoints:          loaded marker names current?      yes → installed (unverified)
   *                                                            no  → rerun the hook
   *
   * A rerun goes through the normal path (grouped hook → verify → rollback to the last
   * loaded version on failure), so the first report already tells the truth. Without
   * endpoints a restart cannot prove the hook ran; running it once more when the install
   * was not recorded as completed is the honest choice (a reload is harmless). Agents
   * upgraded from a version without the marker therefore reload once at their first start.
   */
  async recheckInstalled(): Promise<void> {
    const installer = this.opts.installer;
    const rerun: Installed[] = [];
    for (const name of await this.installedNames()) {
      const meta = await installer.current(name);
      if (!meta) continue;
      const log = this.opts.log.child({ [LogKey.cert]: name, [LogKey.version]: meta.version });
      const loaded = await installer.loaded(name);
      const loadedCurrent = loaded !== null && loaded.version === meta.version && loaded.fingerprint === meta.fingerprint;
      // Stands in for the desired record until the controller is heard from.
      const d: DesiredRecord = { name, version: meta.version, fingerprint: meta.fingerprint, names: meta.names, notAfter: meta.notAfter, selector: '', updatedAt: '' };
      const endpoints = this.endpoints(d);
      if (endpoints.length > 0) {
        // One probe, no settling: a server nobody reloaded will not change by waiting.
        const bad = (await this.opts.verifier.verify(endpoints, meta.fingerprint, 0)).filter((c) => !c.ok);
        if (bad.length === 0) {
          this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'installed', servedVerified: true, desiredVersion: 0 });
          if (!loadedCurrent) await this.markLoaded(name, meta, log);
          continue;
        }
        log.warn({ [LogKey.err]: bad.map((c) => `${c.address}: ${c.error}`).join('; ') }, 'current version not served after a restart; running the reload hook again');
      } else if (loadedCurrent) {
        this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'installed', desiredVersion: 0 });
        continue;
      } else {
        log.warn({ [LogKey.loaded]: loaded?.version ?? null }, 'install of the current version not recorded as completed; running the reload hook again');
      }
      this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'pending', desiredVersion: 0 });
      // The last version known loaded is what a failure restores (as after a fresh install).
      const previous = loaded !== null && loaded.version !== meta.version && (await installer.hasVersion(name, loaded.version)) ? loaded.version : null;
      rerun.push({ desired: d, meta, lineageDir: installer.lineageDir(name), previous, log });
    }
    if (rerun.length > 0) await this.runHooks(rerun);
    // The stand-in records said desiredVersion = installed; the controller has not spoken yet.
    for (const item of rerun) {
      const st = this.status.get(item.desired.name);
      if (st) st.desiredVersion = 0;
    }
  }

  /**
   * One pass: install every pending version of `desired`, then run reload hooks, then
   * verify, then report when anything changed. `retryFailed`: also retry versions that
   * failed (the caller says so at a resynchronisation); otherwise a failed version waits.
   *
   * Hooks run after the installs and once per distinct command: when several
   * certificates change together on a load balancer, it reloads once, and a server
   * whose configuration names several certificates can start only once all of them
   * exist. A hook's success counts for every certificate sharing it, including one
   * that failed earlier only because that hook failed (typically: the server could not
   * start before its other certificates were installed).
   */
  async converge(desired: ReadonlyMap<string, DesiredRecord>, retryFailed: boolean): Promise<void> {
    let changed = false;
    const installed: Installed[] = [];
    for (const d of desired.values()) {
      if (this.stopped) return;
      const st = this.status.get(d.name);
      if (st && st.version === d.version && st.state === 'installed') {
        if (st.desiredVersion !== d.version) {
          st.desiredVersion = d.version;
          changed = true;
        }
        continue;
      }
      if (st && st.desiredVersion === d.version && st.state === 'failed' && !retryFailed) continue;
      changed = true;
      const done = await this.installOne(d);
      if (done) installed.push(done);
    }
    // Certificates installed earlier whose only problem was a failed hook ride along.
    // Only those left in place (nothing to restore): a version that was rolled back from
    // waits for the next resynchronisation like any other failure.
    for (const st of this.status.values()) {
      const d = desired.get(st.name);
      const hookOnly = st.errorCode === ErrorCode.HookFailed || st.errorCode === ErrorCode.HookTimeout;
      if (d && st.state === 'failed' && st.version === d.version && st.rollback === '' && hookOnly) {
        if (!installed.some((i) => i.desired.name === st.name)) {
          const meta = await this.opts.installer.current(st.name);
          if (meta && meta.version === d.version) {
            const log = this.opts.log.child({ [LogKey.cert]: st.name, [LogKey.version]: meta.version });
            installed.push({ desired: d, meta, lineageDir: this.opts.installer.lineageDir(st.name), previous: null, log });
          }
        }
      }
    }
    if (installed.length > 0) await this.runHooks(installed);
    if (changed || installed.length > 0) await this.report();
  }

  /**
   * Sends the status report (also the agent's heartbeat). Never throws; resolves once a
   * report taken after this call was sent (or failed).
   *
   * Reports go one at a time: a call while one is in flight queues one more send (however
   * many calls), which takes the statuses when it starts. Two reports in flight at once
   * could be handled by the controller in either order, and a heartbeat carrying the
   * state from before an install, taken last, hid the install until the next heartbeat
   * (30 s; issue #13, fan-out at 100 agents). A report that fails is sent again after a
   * backoff ({@link REPORT_RETRY_MIN_MS} doubling, at most the report interval) instead
   * of waiting for the next heartbeat; any later send replaces that retry.
   */
  report(): Promise<void> {
    if (this.reportQueued) return this.reportQueued;
    const next: Promise<void> = this.reportTail.then(() => {
      if (this.reportQueued === next) this.reportQueued = undefined;
      return this.sendReport();
    });
    this.reportQueued = next;
    this.reportTail = next;
    return next;
  }

  private async sendReport(): Promise<void> {
    this.reportRetry?.stop();
    this.reportRetry = undefined;
    const http01 = this.opts.config.http01;
    try {
      await this.opts.reporter.reportStatus({
        http01Address: http01 ? (http01.advertise ?? http01.listen) : '',
        agentVersion: AGENT_VERSION,
        certificates: this.statuses(),
        refusals: this.opts.trust.refusals(),
      });
      this.reportFailures = 0;
    } catch (err) {
      this.reportFailures++;
      if (this.stopped) return;
      const ceiling = Math.min(this.opts.config.reportInterval, REPORT_RETRY_MIN_MS * 2 ** Math.min(this.reportFailures - 1, 16));
      // Jittered, so a fleet that lost its controller at once does not come back in step.
      const delay = Math.round(ceiling * (0.75 + Math.random() * 0.25));
      this.opts.log.warn({ [LogKey.err]: (err as Error).message, [LogKey.failures]: this.reportFailures, [LogKey.retryInMs]: delay }, 'status report failed');
      // A later send (heartbeat, pass) would replace the retry and stop this timer.
      if (this.reportRetry === undefined && this.reportQueued === undefined) {
        this.reportRetry = this.opts.clock.after(delay, () => void this.report()).unref();
      }
    }
  }

  private async installedNames(): Promise<string[]> {
    try {
      return await this.opts.installer.installedNames();
    } catch (err) {
      this.opts.log.warn({ [LogKey.err]: (err as Error).message }, 'installed certificates cannot be listed');
      return [];
    }
  }

  /** Records `meta` as loaded; a failure is logged (the next start reruns the hook). */
  private async markLoaded(name: string, meta: VersionMeta, log: Logger): Promise<void> {
    try {
      await this.opts.installer.markLoaded(name, meta, isoAt(this.opts.clock.now()));
    } catch (err) {
      log.warn({ [LogKey.err]: (err as Error).message }, 'loaded marker not written');
    }
  }

  /**
   * Makes `d` current: from the local archive when versions/<N> holds it with the desired
   * fingerprint (no controller needed: a rollback the controller ordered, or a retry),
   * else fetched over gRPC. Records a failure and returns undefined when it cannot.
   */
  private async installOne(d: DesiredRecord): Promise<Installed | undefined> {
    const log = this.opts.log.child({ [LogKey.cert]: d.name, [LogKey.version]: d.version });
    try {
      const local = await this.fromArchive(d, log);
      if (local) return local;
      const bundle = await this.opts.bundles.fetchBundle(d.name, d.version);
      if (bundle.meta.fingerprint !== d.fingerprint || bundle.meta.version !== d.version) {
        // The pointer is signed; a bundle that is not the one it names is not installed.
        const message = `fetched v${bundle.meta.version} (${bundle.meta.fingerprint.slice(0, 12)}) is not the signed v${d.version} (${d.fingerprint.slice(0, 12)})`;
        this.opts.trust.refuse('fingerprint-mismatch', { [LogKey.source]: 'FetchBundle', [LogKey.cert]: d.name, [LogKey.version]: d.version }, message);
        throw new CertfleetError(ErrorCode.BundleFingerprintMismatch, message);
      }
      await this.opts.installer.forgetLoaded(d.name, bundle.meta.version);
      const result = await this.opts.installer.install(bundle, { requiredNames: d.names });
      log.info({ [LogKey.changed]: result.changed }, 'certificate installed');
      this.setPending(d, bundle.meta);
      return { desired: d, meta: bundle.meta, lineageDir: result.lineageDir, previous: result.changed ? result.previousVersion : null, log };
    } catch (err) {
      const cf = toCertfleetError(err, ErrorCode.InstallFailed);
      log.warn({ [LogKey.code]: cf.code, [LogKey.err]: cf.message }, 'install refused');
      this.opts.metrics?.install(d.name, 'failed');
      this.setStatus(d, { state: 'failed', error: cf.message, errorCode: cf.code });
      return undefined;
    }
  }

  /**
   * Activates `d` from versions/<N> when it is there. Undefined when it is not (or was
   * pruned meanwhile), or when the archived copy has another fingerprint than the
   * desired pointer: versions are immutable, so that copy is stale (a controller whose
   * store was reset reused the number) and the fetch path reports the conflict. A copy
   * that no longer validates (expired) throws: the fetched one would be the same.
   */
  private async fromArchive(d: DesiredRecord, log: Logger): Promise<Installed | undefined> {
    const installer = this.opts.installer;
    if (!(await installer.hasVersion(d.name, d.version))) return undefined;
    try {
      const archived = await installer.load(d.name, d.version);
      if (archived.meta.fingerprint !== d.fingerprint) {
        log.warn({ [LogKey.got]: archived.meta.fingerprint, [LogKey.want]: d.fingerprint }, 'archived version differs from the desired pointer; fetching');
        return undefined;
      }
      await installer.forgetLoaded(d.name, d.version);
      const result = await installer.activate(d.name, d.version, { requiredNames: d.names });
      log.info({ [LogKey.changed]: result.changed, [LogKey.previousVersion]: result.previousVersion }, 'certificate activated from the local archive');
      this.setPending(d, result.meta);
      return { desired: d, meta: result.meta, lineageDir: installer.lineageDir(d.name), previous: result.changed ? result.previousVersion : null, log };
    } catch (err) {
      if (isCertfleetError(err, ErrorCode.NotFound)) return undefined;
      throw err;
    }
  }

  /** Groups the installed versions by reload hook and applies each group. */
  private async runHooks(installed: Installed[]): Promise<void> {
    const groups = new Map<string, { spec: HookConfig | undefined; members: Installed[] }>();
    for (const item of installed) {
      const spec = reloadHookFor(this.opts.config, item.desired.name);
      const key = hookGroupKey(item.desired.name, spec);
      const group = groups.get(key) ?? { spec, members: [] };
      group.members.push(item);
      groups.set(key, group);
    }
    for (const { spec, members } of groups.values()) await this.applyGroup(spec, members);
  }

  /**
   * Runs the group's hook once, verifies every member, and rolls back the members that
   * failed. A failed hook fails every member (which certificate broke the server cannot
   * be told); a wrong served certificate fails only the members not served.
   */
  private async applyGroup(spec: HookConfig | undefined, members: Installed[]): Promise<void> {
    const failures: Failure[] = [];
    const log = this.opts.log.child({ [LogKey.certs]: members.map((m) => m.desired.name) });
    const hook = spec ? await this.runGroupHook(spec, members, false) : null;
    const hookError = spec && hook ? hookFailure(spec, hook) : null;
    if (hookError) {
      log.warn({ [LogKey.code]: hookError.code, [LogKey.outputTail]: hook?.outputTail }, 'reload hook failed');
      for (const m of members) failures.push({ member: m, ...hookError, hook });
    } else {
      if (hook) log.info({ [LogKey.durationMs]: hook.durationMs }, 'reload hook succeeded');
      for (const m of members) {
        const check = await this.verify(m.desired, m.meta);
        const facts = { version: m.meta.version, fingerprint: m.meta.fingerprint, hook };
        if (check.ok) {
          this.setStatus(m.desired, { ...facts, state: 'installed', servedVerified: check.verified });
          this.opts.metrics?.install(m.desired.name, 'installed');
          await this.markLoaded(m.desired.name, m.meta, m.log);
        } else {
          m.log.warn({ [LogKey.err]: check.error }, 'served certificate does not match');
          failures.push({ member: m, code: ErrorCode.NotServed, error: `not served: ${check.error}`, hook });
        }
      }
    }
    if (failures.length > 0) await this.rollBack(spec, failures);
  }

  /**
   * Restores the previous version of every failed member that has one, reruns the hook
   * once for them, verifies them again, and records both outcomes. A member with nothing
   * to restore keeps the new version and is reported failed with rollback ''.
   */
  private async rollBack(spec: HookConfig | undefined, failures: Failure[]): Promise<void> {
    const restored: Restored[] = [];
    for (const f of failures) {
      const { desired: d, meta, previous } = f.member;
      const base = { version: meta.version, fingerprint: meta.fingerprint, state: 'failed' as const, hook: f.hook, errorCode: f.code };
      if (previous === null) {
        this.setStatus(d, { ...base, error: f.error });
        this.opts.metrics?.install(d.name, 'failed');
        continue;
      }
      const log = f.member.log.child({ [LogKey.restore]: previous });
      try {
        await this.opts.installer.forgetLoaded(d.name, previous);
        const back = await this.opts.installer.activate(d.name, previous, { requiredNames: d.names });
        log.warn({ [LogKey.code]: f.code }, 'previous version restored');
        restored.push({ failure: f, meta: back.meta, log });
      } catch (err) {
        // Expired, pruned or unreadable: the new version stays in place, reported as such.
        const cf = toCertfleetError(err, ErrorCode.InstallFailed);
        log.error({ [LogKey.code]: cf.code, [LogKey.err]: cf.message }, 'previous version cannot be restored');
        this.setStatus(d, { ...base, error: `${f.error}; restoring v${previous} failed: ${cf.message}`, failedVersion: meta.version, rollback: 'restore-failed' });
        this.opts.metrics?.install(d.name, 'restore-failed');
      }
    }
    if (restored.length === 0) return;

    const members = restored.map((r): Installed => ({ ...r.failure.member, meta: r.meta, previous: null }));
    const hook = spec ? await this.runGroupHook(spec, members, true) : null;
    const hookError = spec && hook ? hookFailure(spec, hook) : null;
    for (const r of restored) {
      const f = r.failure;
      const facts = { version: r.meta.version, fingerprint: r.meta.fingerprint, state: 'failed' as const, hook: f.hook, errorCode: f.code, failedVersion: f.member.meta.version };
      const tried = `${f.error}; rolled back to v${r.meta.version}`;
      if (hookError) {
        r.log.error({ [LogKey.code]: hookError.code, [LogKey.outputTail]: hook?.outputTail }, 'reload hook failed after rollback');
        this.setStatus(f.member.desired, { ...facts, error: `${tried}, but ${hookError.error}`, rollback: 'restore-failed' });
        this.opts.metrics?.install(f.member.desired.name, 'restore-failed');
        continue;
      }
      const check = await this.verify(f.member.desired, r.meta);
      if (!check.ok) {
        r.log.error({ [LogKey.err]: check.error }, 'restored version not served');
        this.setStatus(f.member.desired, { ...facts, error: `${tried}, but it is not served: ${check.error}`, rollback: 'restore-failed' });
        this.opts.metrics?.install(f.member.desired.name, 'restore-failed');
        continue;
      }
      r.log.warn('rolled back');
      await this.markLoaded(f.member.desired.name, r.meta, r.log);
      this.setStatus(f.member.desired, { ...facts, error: `${tried}${check.verified ? ', served again' : ''}`, servedVerified: check.verified, rollback: 'restored' });
      this.opts.metrics?.install(f.member.desired.name, 'rolled-back');
    }
  }

  /** Runs `spec` once for `members` (the first one's facts, CERTFLEET_CERTS naming all). */
  private async runGroupHook(spec: HookConfig, members: Installed[], rollback: boolean): Promise<HookOutcome | null> {
    const first = members[0];
    if (!first) return null;
    const env: Record<string, string> = {
      ...hookEnvironment(first.meta, first.lineageDir),
      CERTFLEET_CERTS: members.map((m) => m.desired.name).join(' '),
      // Lets a hook tell a restore from a new version (e.g. to skip a notification).
      CERTFLEET_ROLLBACK: rollback ? '1' : '0',
    };
    const outcome = await this.opts.hooks.run(spec, members.map((m) => m.desired.name), env);
    this.opts.metrics?.hook(outcome, rollback);
    return outcome;
  }

  /**
   * Checks the configured endpoints of `d` serve `meta`. `verified` is false when no
   * endpoint is configured (nothing to prove, not a failure).
   */
  private async verify(d: DesiredRecord, meta: VersionMeta): Promise<{ ok: boolean; verified: boolean; error: string }> {
    const endpoints = this.endpoints(d);
    if (endpoints.length === 0) return { ok: true, verified: false, error: '' };
    const bad = (await this.opts.verifier.verify(endpoints, meta.fingerprint)).filter((c) => !c.ok);
    this.opts.metrics?.verify(d.name, bad.length === 0);
    if (bad.length === 0) return { ok: true, verified: true, error: '' };
    return { ok: false, verified: false, error: bad.map((c) => `${c.address}: ${c.error}`).join('; ') };
  }

  /** The configured listeners that must serve `d` (SNI defaulted from its names). */
  private endpoints(d: DesiredRecord): Endpoint[] {
    return (this.opts.config.certificates[d.name]?.verify ?? []).map((e) => ({ address: e.address, serverName: e.serverName ?? defaultServerName(d.names) }));
  }

  /**
   * Marks `d` in progress (installed, hook and verification to come). A retry of a version
   * that failed keeps the failure on record until the retry's outcome is known: a heartbeat
   * sent in between would otherwise show the certificate `pending` with no error, and the
   * operator's view would flip between failed and pending at every resync.
   */
  private setPending(d: DesiredRecord, meta: VersionMeta): void {
    const prev = this.status.get(d.name);
    if (prev?.state === 'failed' && (prev.desiredVersion === d.version || prev.failedVersion === d.version)) return;
    this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'pending' });
  }

  /** Replaces the status of `d` with the given facts (others reset). */
  private setStatus(d: DesiredRecord, facts: Partial<CertStatus>): void {
    const prev = this.status.get(d.name);
    this.status.set(d.name, {
      name: d.name,
      version: prev?.version ?? 0,
      fingerprint: prev?.fingerprint ?? '',
      desiredVersion: d.version,
      state: 'pending',
      hook: null,
      servedVerified: false,
      error: '',
      errorCode: '',
      failedVersion: 0,
      rollback: '',
      ...facts,
      updatedAt: isoAt(this.opts.clock.now()),
    });
  }
}

/** The failure a hook outcome means (HOOK_TIMEOUT, HOOK_FAILED), or null when it succeeded. */
function hookFailure(spec: HookConfig, hook: HookOutcome): { code: string; error: string } | null {
  if (hook.timedOut) return { code: ErrorCode.HookTimeout, error: `reload hook timed out after ${spec.timeout} ms` };
  if (hook.exitCode !== 0) return { code: ErrorCode.HookFailed, error: `reload hook exited with ${hook.exitCode}${hook.signal ? ` (${hook.signal})` : ''}` };
  return null;
}

/**
 * SNI for the served-certificate check when the config names none: the first name that is
 * not a wildcard, else a host under the first wildcard (`*.example.com` is not a host
 * name a listener can be asked for).
 */
export function defaultServerName(names: readonly string[]): string {
  const plain = names.find((n) => !n.startsWith('*.'));
  if (plain !== undefined) return plain;
  const wild = names[0];
  return wild === undefined ? '' : `certfleet-verify.${wild.slice(2)}`;
}

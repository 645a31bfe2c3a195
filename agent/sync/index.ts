/**
 * The agent's work loop: converge the installed certificates on the desired versions.
 *
 * Inputs: the `desired` and `challenges` buckets watched over NATS (instant), and a
 * full resynchronisation over gRPC (GetAssignments) at start, every `resyncInterval`,
 * and every 30 s while NATS is unreachable — so an agent converges even with NATS down.
 *
 * For each assigned certificate whose desired version is not installed:
 *   take it from the local archive (versions/<N>, re-validated) or fetch the bundle
 *   (gRPC, mTLS) → install (validated before any disk write) → reload hook
 *   → verify served fingerprint → report.
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
 * A failure is reported (state "failed" with a stable code) and retried at the next
 * resynchronisation (every `resyncInterval`, and at start), not in a tight loop. A
 * version that was rolled back from is retried too — from the local archive — because
 * the usual cause is on the node (a broken server configuration) and an operator may
 * have fixed it; each retry that fails rolls back again. Reports also go out every
 * `reportInterval` as the agent's heartbeat.
 *
 * After a (re)start nothing is reported until every installed certificate is proven:
 * the agent may have been killed between the `current` swap and the reload hook, and
 * then the server still runs the old version (issue #8). A certificate with verify
 * endpoints is checked by handshake; one that does not serve `current` gets its hook
 * again (then verify, then the normal rollback on failure). A certificate without
 * endpoints cannot be proven: its hook is rerun unless `loaded.json` (./loaded.ts), written
 * only after hook and verify succeeded, names the current version. See recheckInstalled.
 *
 * Record intake (issue #9): a desired record, from NATS or from GetAssignments alike, is
 * acted on only when its signature verifies with a key the controller gave over mTLS and
 * its generation is not older than one already accepted (agent/trust); a challenge only
 * when signed, unexpired, and for a name of a certificate assigned to this agent. Anything
 * else is refused and reported, and the agent keeps what it has. A record signed with a
 * key not known yet, or a challenge for a certificate not known yet, makes the agent
 * resynchronise first (a key rotation, a new certificate) and is checked again after it.
 * A fetched bundle is installed only when its fingerprint is the signed one.
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError, toCertfleetError } from '../../shared/errors/index.js';
import type { CertStatus, ChallengeRecord, DesiredRecord, HookOutcome, VersionMeta } from '../../shared/model/index.js';
import { openKv, type KvWatch, type NatsHandle } from '../../shared/nats/index.js';
import { parseChallengeRecord, parseDesiredRecord } from '../../shared/records/index.js';
import { selects } from '../../shared/selector/index.js';
import { desiredFor } from '../../shared/rollout/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { reloadHookFor, type AgentConfig, type HookConfig } from '../config/index.js';
import { hookEnvironment, hookGroupKey, runReloadHook } from '../hooks/index.js';
import type { Http01Responder } from '../http01/index.js';
import type { Installer } from '../install/index.js';
import type { ControllerLink } from '../link/index.js';
import { challengeVerdict, desiredVerdict, type Trust } from '../trust/index.js';
import { verifyServed } from '../verify/index.js';
import { clearLoaded, readLoaded, writeLoaded } from './loaded.js';
import { CoalescingRunner } from '../../shared/runtime/index.js';

export const AGENT_VERSION = '0.1.0';

/** A version installed in this pass (or earlier, awaiting its hook). */
interface Installed {
  desired: DesiredRecord;
  meta: VersionMeta;
  lineageDir: string;
  /** The version `current` named before this pass made it `meta.version`; null: none to restore. */
  previous: number | null;
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
}
/** Resync period while NATS is unreachable. */
const OFFLINE_RESYNC_MS = 30_000;
/** Least time between resyncs asked for by records signed with an unknown key or for an unknown certificate. */
const REFRESH_MIN_MS = 10_000;
/** Records kept for a second look after such a resync. */
const MAX_RECHECK = 256;

export interface SyncOptions {
  config: AgentConfig;
  labels: Record<string, string>;
  link: ControllerLink;
  installer: Installer;
  nats: NatsHandle | null;
  http01: Http01Responder | null;
  /** Signing keys, generations and refusals (agent/trust). */
  trust: Trust;
  clock: Clock;
  log: Logger;
}

/** A record waiting for a resync before it is checked again. */
type Recheck = { kind: 'desired'; record: DesiredRecord } | { kind: 'challenge'; record: ChallengeRecord };

export class Sync {
  private readonly desired = new Map<string, DesiredRecord>();
  private readonly status = new Map<string, CertStatus>();
  private readonly watches: KvWatch[] = [];
  private timers: NodeJS.Timeout[] = [];
  private readonly runner: CoalescingRunner;
  private retryFailed = false;
  private stopped = false;
  private lastResync = 0;
  /** Names per certificate the controller assigns to this agent (GetAssignments). */
  private assignedNames = new Map<string, string[]>();
  /** Newest challenge generation accepted per certificate and identifier. */
  private readonly challengeGenerations = new Map<string, number>();
  private readonly challengeTimers = new Map<string, NodeJS.Timeout>();
  private readonly recheck = new Map<string, Recheck>();
  private lastRefresh = Number.NEGATIVE_INFINITY;

  constructor(private readonly opts: SyncOptions) {
    this.runner = new CoalescingRunner(() => this.converge(), opts.log, 'converge');
  }

  private assigned(selector: string): boolean {
    try {
      return selects(selector, this.opts.labels);
    } catch {
      return false;
    }
  }

  /**
   * Loads installed state and proves it (see {@link recheckInstalled}) before anything
   * is reported, then starts watches and timers, and converges once.
   */
  async start(): Promise<void> {
    await this.recheckInstalled();
    // Enrolled before records were signed: learn the keys over mTLS before reading NATS.
    if (!this.opts.trust.hasKeys()) await this.resync();
    if (this.opts.nats) await this.startWatches(this.opts.nats);
    await this.resync();
    const tick = (): void => {
      const offline = this.opts.nats !== null && !this.opts.nats.isConnected();
      const every = offline ? Math.min(OFFLINE_RESYNC_MS, this.opts.config.resyncInterval) : this.opts.config.resyncInterval;
      if (this.opts.clock.now() - this.lastResync >= every) void this.resync();
    };
    this.timers.push(setInterval(tick, 5_000));
    this.timers.push(setInterval(() => void this.report(), this.opts.config.reportInterval));
    for (const t of this.timers) t.unref();
  }

  /** Status of every assigned or installed certificate, as reported. */
  statuses(): CertStatus[] {
    return [...this.status.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * After a (re)start, before the first report: what `current` names is on disk, but
   * whether it was ever loaded is not known — the previous process may have been killed
   * between the `current` swap and its reload hook. For each installed certificate:
   *
   *   endpoints configured:  served fingerprint == current's?  yes → installed, verified
   *                                                            no  → rerun the hook
   *   no endpoints:          loaded.json names current?        yes → installed (unverified)
   *                                                            no  → rerun the hook
   *
   * A rerun goes through the normal path (grouped hook → verify → rollback to the last
   * loaded version on failure), so the first report already tells the truth. Without
   * endpoints a restart cannot prove the hook ran; running it once more when the install
   * was not recorded as completed is the honest choice (a reload is harmless). Agents
   * upgraded from a version without the marker therefore reload once at their first start.
   */
  private async recheckInstalled(): Promise<void> {
    const rerun: Installed[] = [];
    for (const name of await this.installedNames()) {
      const meta = await this.opts.installer.current(name);
      if (!meta) continue;
      const log = this.opts.log.child({ cert: name, version: meta.version });
      const certDir = this.opts.installer.certDir(name);
      const loaded = await readLoaded(certDir);
      const loadedCurrent = loaded !== null && loaded.version === meta.version && loaded.fingerprint === meta.fingerprint;
      // Stands in for the desired record until the controller is heard from.
      const d: DesiredRecord = { name, version: meta.version, fingerprint: meta.fingerprint, names: meta.names, notAfter: meta.notAfter, selector: '', updatedAt: '' };
      const endpoints = this.endpoints(d);
      if (endpoints.length > 0) {
        // One probe, no settling: a server nobody reloaded will not change by waiting.
        const bad = (await verifyServed(endpoints, meta.fingerprint, 0)).filter((c) => !c.ok);
        if (bad.length === 0) {
          this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'installed', servedVerified: true, desiredVersion: 0 });
          if (!loadedCurrent) await this.markLoaded(name, meta);
          continue;
        }
        log.warn({ error: bad.map((c) => `${c.address}: ${c.error}`).join('; ') }, 'current version not served after a restart; running the reload hook again');
      } else if (loadedCurrent) {
        this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'installed', desiredVersion: 0 });
        continue;
      } else {
        log.warn({ loaded: loaded?.version ?? null }, 'install of the current version not recorded as completed; running the reload hook again');
      }
      this.setStatus(d, { version: meta.version, fingerprint: meta.fingerprint, state: 'pending', desiredVersion: 0 });
      // The last version known loaded is what a failure restores (as after a fresh install).
      const previous = loaded !== null && loaded.version !== meta.version && (await this.opts.installer.hasVersion(name, loaded.version)) ? loaded.version : null;
      rerun.push({ desired: d, meta, lineageDir: this.opts.installer.lineageDir(name), previous });
    }
    if (rerun.length > 0) await this.runHooks(rerun);
    // The stand-in records said desiredVersion = installed; the controller has not spoken yet.
    for (const item of rerun) {
      const st = this.status.get(item.desired.name);
      if (st) st.desiredVersion = 0;
    }
  }

  /** Records `meta` as loaded; a failure is logged (the next start reruns the hook). */
  private async markLoaded(name: string, meta: VersionMeta): Promise<void> {
    try {
      await writeLoaded(this.opts.installer.certDir(name), meta, isoAt(this.opts.clock.now()));
    } catch (err) {
      this.opts.log.warn({ cert: name, err: (err as Error).message }, 'loaded marker not written');
    }
  }

  /** Before `current` switches to `version`: a marker naming it would claim a load that has not happened. */
  private async beforeSwitch(name: string, version: number): Promise<void> {
    const certDir = this.opts.installer.certDir(name);
    const loaded = await readLoaded(certDir);
    if (loaded !== null && loaded.version === version) await clearLoaded(certDir);
  }

  private async installedNames(): Promise<string[]> {
    try {
      return await this.opts.installer.installedNames();
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'installed certificates cannot be listed');
      return [];
    }
  }

  /** Counts a malformed value of a bucket only the controller writes as a refused record. */
  private refuseMalformed(bucket: string): (key: string, reason: string) => void {
    return (key, reason) => this.opts.trust.refuse('malformed', { bucket, key }, reason);
  }

  private async startWatches(nats: NatsHandle): Promise<void> {
    const desiredKv = await openKv<DesiredRecord>(nats, Bucket.desired, { create: false, parse: parseDesiredRecord, onMalformed: this.refuseMalformed(Bucket.desired) });
    const w1 = await desiredKv.watch((key, value) => {
      // A deletion only stops tracking; what is installed stays, and the next resync restores the pointer.
      if (value === null) {
        this.desired.delete(key);
        return;
      }
      if (this.takeDesired(value, Bucket.desired, true)) this.kick();
    });
    this.watches.push(w1);
    if (this.opts.http01) {
      const http01 = this.opts.http01;
      const challengesKv = await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false, parse: parseChallengeRecord, onMalformed: this.refuseMalformed(Bucket.challenges) });
      const w2 = await challengesKv.watch((key, value) => {
        if (value === null) {
          this.recheck.delete(`challenge/${key}`);
          this.stopServing(key);
          http01.delete(key);
        } else {
          this.takeChallenge(value, true);
        }
      });
      this.watches.push(w2);
    }
  }

  /**
   * Checks a desired record (from NATS or gRPC) and, when it passes, makes it this
   * agent's pointer for its certificate (or drops the certificate when it is not
   * assigned here). Returns whether the pointers changed. A refused record changes
   * nothing. `canWait`: a record signed with an unknown key waits for a resync.
   */
  private takeDesired(record: DesiredRecord, source: string, canWait: boolean): boolean {
    const trust = this.opts.trust;
    const verdict = desiredVerdict(record, trust.keys(), trust.highestFor(record.name));
    if (!verdict.ok) {
      if (verdict.reason === 'unknown-key' && canWait && this.waitForResync(`desired/${record.name}`, { kind: 'desired', record })) return false;
      trust.refuse(verdict.reason, { source, cert: record.name, generation: record.generation }, verdict.message);
      return false;
    }
    trust.accept(record.name, verdict.generation);
    if (!this.assigned(record.selector)) return this.desired.delete(record.name);
    // During a staged rollout, an agent of an unreleased wave keeps the previous version.
    this.desired.set(record.name, desiredFor(record, this.opts.labels));
    return true;
  }

  /** Names of `cert` as assigned to this agent: from the controller's list, or its desired record. */
  private namesOf(cert: string): string[] | undefined {
    const listed = this.assignedNames.get(cert);
    const fromDesired = this.desired.get(cert)?.names;
    if (listed === undefined) return fromDesired;
    return fromDesired === undefined ? listed : [...new Set([...listed, ...fromDesired])];
  }

  /** Checks a challenge and serves it when it passes (see challengeVerdict in agent/trust). */
  private takeChallenge(record: ChallengeRecord, canWait: boolean): void {
    const http01 = this.opts.http01;
    if (!http01) return;
    const trust = this.opts.trust;
    const idKey = `${record.cert}\n${record.identifier}`;
    // Signature first: a forged record is refused whatever selector it claims.
    const verdict = challengeVerdict(record, trust.keys(), this.opts.clock.now(), this.assigned(record.selector) ? this.namesOf(record.cert) : [], this.challengeGenerations.get(idKey) ?? 0);
    const forged = !verdict.ok && (verdict.reason === 'unsigned' || verdict.reason === 'unknown-key' || verdict.reason === 'bad-signature');
    if (!forged && !this.assigned(record.selector)) return; // signed, for other agents
    if (!verdict.ok) {
      const waits = verdict.reason === 'unknown-key' || verdict.reason === 'not-assigned';
      if (waits && canWait && this.waitForResync(`challenge/${record.token}`, { kind: 'challenge', record })) return;
      trust.refuse(verdict.reason, { bucket: Bucket.challenges, key: record.token, cert: record.cert, identifier: record.identifier, generation: record.generation }, verdict.message);
      this.stopServing(record.token);
      http01.delete(record.token);
      return;
    }
    this.challengeGenerations.set(idKey, verdict.generation);
    http01.set(record.token, record.keyAuthorization);
    this.opts.log.info({ cert: record.cert, identifier: record.identifier, generation: verdict.generation }, 'challenge served');
    // Served until its cleanup, or its expiry if the cleanup never comes.
    this.stopServing(record.token);
    const ms = Math.max(0, Date.parse(record.expiresAt ?? '') - this.opts.clock.now());
    const timer = setTimeout(() => {
      this.challengeTimers.delete(record.token);
      http01.delete(record.token);
    }, Math.min(ms, 2 ** 31 - 1));
    timer.unref();
    this.challengeTimers.set(record.token, timer);
  }

  private stopServing(token: string): void {
    const t = this.challengeTimers.get(token);
    if (t) clearTimeout(t);
    this.challengeTimers.delete(token);
  }

  /**
   * Keeps `item` for a second look after a resync and asks for one (at most every
   * 10 s). False when the item cannot wait (too many waiting): refuse it now.
   */
  private waitForResync(key: string, item: Recheck): boolean {
    if (!this.recheck.has(key) && this.recheck.size >= MAX_RECHECK) return false;
    this.recheck.set(key, item);
    const now = this.opts.clock.now();
    if (now - this.lastRefresh >= REFRESH_MIN_MS) {
      this.lastRefresh = now;
      void this.resync();
    }
    return true;
  }

  /**
   * Full resynchronisation over gRPC: the signing keys, the assigned certificates, and
   * the signed desired records (checked like NATS records); failed installs are retried.
   * A record refused here leaves the certificate's current pointer as it was.
   */
  async resync(): Promise<void> {
    this.lastResync = this.opts.clock.now();
    try {
      const a = await this.opts.link.assignments();
      await this.opts.trust.setKeys(a.signingKeys);
      this.assignedNames = new Map(a.assigned.map((c) => [c.name, c.names]));
      const names = new Set<string>();
      for (const raw of a.desired) {
        const name = typeof raw === 'object' && raw !== null && typeof (raw as { name?: unknown }).name === 'string' ? (raw as { name: string }).name : '';
        let record: DesiredRecord;
        try {
          record = parseDesiredRecord(raw, name);
        } catch (err) {
          this.opts.trust.refuse('malformed', { source: 'GetAssignments', cert: name === '' ? undefined : name }, err instanceof Error ? err.message : 'invalid');
          if (name !== '') names.add(name);
          continue;
        }
        names.add(record.name);
        this.takeDesired(record, 'GetAssignments', false);
      }
      for (const name of [...this.desired.keys()]) if (!names.has(name)) this.desired.delete(name);
      // Records that waited for fresh keys or assignments get their second, final look.
      const waiting = [...this.recheck.values()];
      this.recheck.clear();
      for (const item of waiting) {
        if (item.kind === 'desired') this.takeDesired(item.record, Bucket.desired, false);
        else this.takeChallenge(item.record, false);
      }
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'resync failed');
    }
    this.retryFailed = true;
    this.kick();
  }

  /** Converges soon (coalesced). */
  kick(): void {
    this.runner.kick();
  }

  /**
   * One pass: install every pending version, then run reload hooks, then verify.
   *
   * Hooks run after the installs and once per distinct command: when several
   * certificates change together on a load balancer, it reloads once, and a server
   * whose configuration names several certificates can start only once all of them
   * exist. A hook's success counts for every certificate sharing it, including one
   * that failed earlier only because that hook failed (typically: the server could not
   * start before its other certificates were installed).
   */
  private async converge(): Promise<void> {
    // The generations accepted are on disk before anything is installed from them.
    await this.opts.trust.saved();
    const retryFailed = this.retryFailed;
    this.retryFailed = false;
    let changed = false;
    const installed: Installed[] = [];
    for (const d of this.desired.values()) {
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
      const d = this.desired.get(st.name);
      const hookOnly = st.errorCode === ErrorCode.HookFailed || st.errorCode === ErrorCode.HookTimeout;
      if (d && st.state === 'failed' && st.version === d.version && st.rollback === '' && hookOnly) {
        if (!installed.some((i) => i.desired.name === st.name)) {
          const meta = await this.opts.installer.current(st.name);
          if (meta && meta.version === d.version) installed.push({ desired: d, meta, lineageDir: this.opts.installer.lineageDir(st.name), previous: null });
        }
      }
    }
    if (installed.length > 0) await this.runHooks(installed);
    if (changed || installed.length > 0) await this.report();
  }

  /**
   * Makes `d` current: from the local archive when versions/<N> holds it with the desired
   * fingerprint (no controller needed: a rollback the controller ordered, or a retry),
   * else fetched over gRPC. Records a failure and returns undefined when it cannot.
   */
  private async installOne(d: DesiredRecord): Promise<Installed | undefined> {
    const log = this.opts.log.child({ cert: d.name, version: d.version });
    try {
      const local = await this.fromArchive(d, log);
      if (local) return local;
      const bundle = await this.opts.link.fetchBundle(d.name, d.version);
      if (bundle.meta.fingerprint !== d.fingerprint || bundle.meta.version !== d.version) {
        // The pointer is signed; a bundle that is not the one it names is not installed.
        const message = `fetched v${bundle.meta.version} (${bundle.meta.fingerprint.slice(0, 12)}) is not the signed v${d.version} (${d.fingerprint.slice(0, 12)})`;
        this.opts.trust.refuse('fingerprint-mismatch', { source: 'FetchBundle', cert: d.name, version: d.version }, message);
        throw new CertfleetError(ErrorCode.BundleFingerprintMismatch, message);
      }
      await this.beforeSwitch(d.name, bundle.meta.version);
      const result = await this.opts.installer.install(bundle, { requiredNames: d.names });
      log.info({ changed: result.changed }, 'certificate installed');
      this.setPending(d, bundle.meta);
      return { desired: d, meta: bundle.meta, lineageDir: result.lineageDir, previous: result.changed ? result.previousVersion : null };
    } catch (err) {
      const cf = toCertfleetError(err, ErrorCode.InstallFailed);
      log.warn({ code: cf.code, err: cf.message }, 'install refused');
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
        log.warn({ got: archived.meta.fingerprint, want: d.fingerprint }, 'archived version differs from the desired pointer; fetching');
        return undefined;
      }
      await this.beforeSwitch(d.name, d.version);
      const result = await installer.activate(d.name, d.version, { requiredNames: d.names });
      log.info({ changed: result.changed, previousVersion: result.previousVersion }, 'certificate activated from the local archive');
      this.setPending(d, result.meta);
      return { desired: d, meta: result.meta, lineageDir: installer.lineageDir(d.name), previous: result.changed ? result.previousVersion : null };
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
    const hook = spec ? await this.runGroupHook(spec, members, false) : null;
    const hookError = spec && hook ? hookFailure(spec, hook) : null;
    if (hookError) {
      this.opts.log.warn({ code: hookError.code, certs: members.map((m) => m.desired.name), outputTail: hook?.outputTail }, 'reload hook failed');
      for (const m of members) failures.push({ member: m, ...hookError, hook });
    } else {
      if (hook) this.opts.log.info({ certs: members.map((m) => m.desired.name), durationMs: hook.durationMs }, 'reload hook succeeded');
      for (const m of members) {
        const check = await this.verify(m.desired, m.meta);
        const facts = { version: m.meta.version, fingerprint: m.meta.fingerprint, hook };
        if (check.ok) {
          this.setStatus(m.desired, { ...facts, state: 'installed', servedVerified: check.verified });
          await this.markLoaded(m.desired.name, m.meta);
        } else {
          this.opts.log.warn({ cert: m.desired.name, error: check.error }, 'served certificate does not match');
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
        continue;
      }
      const log = this.opts.log.child({ cert: d.name, version: meta.version, restore: previous });
      try {
        await this.beforeSwitch(d.name, previous);
        const back = await this.opts.installer.activate(d.name, previous, { requiredNames: d.names });
        log.warn({ code: f.code }, 'previous version restored');
        restored.push({ failure: f, meta: back.meta });
      } catch (err) {
        // Expired, pruned or unreadable: the new version stays in place, reported as such.
        const cf = toCertfleetError(err, ErrorCode.InstallFailed);
        log.error({ code: cf.code, err: cf.message }, 'previous version cannot be restored');
        this.setStatus(d, { ...base, error: `${f.error}; restoring v${previous} failed: ${cf.message}`, failedVersion: meta.version, rollback: 'restore-failed' });
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
        this.opts.log.error({ cert: f.member.desired.name, code: hookError.code, outputTail: hook?.outputTail }, 'reload hook failed after rollback');
        this.setStatus(f.member.desired, { ...facts, error: `${tried}, but ${hookError.error}`, rollback: 'restore-failed' });
        continue;
      }
      const check = await this.verify(f.member.desired, r.meta);
      if (!check.ok) {
        this.opts.log.error({ cert: f.member.desired.name, error: check.error }, 'restored version not served');
        this.setStatus(f.member.desired, { ...facts, error: `${tried}, but it is not served: ${check.error}`, rollback: 'restore-failed' });
        continue;
      }
      this.opts.log.warn({ cert: f.member.desired.name, failedVersion: f.member.meta.version, version: r.meta.version }, 'rolled back');
      await this.markLoaded(f.member.desired.name, r.meta);
      this.setStatus(f.member.desired, { ...facts, error: `${tried}${check.verified ? ', served again' : ''}`, servedVerified: check.verified, rollback: 'restored' });
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
    return await runReloadHook(spec, members.map((m) => m.desired.name), env);
  }

  /**
   * Checks the configured endpoints of `d` serve `meta`. `verified` is false when no
   * endpoint is configured (nothing to prove, not a failure).
   */
  private async verify(d: DesiredRecord, meta: VersionMeta): Promise<{ ok: boolean; verified: boolean; error: string }> {
    const endpoints = this.endpoints(d);
    if (endpoints.length === 0) return { ok: true, verified: false, error: '' };
    const bad = (await verifyServed(endpoints, meta.fingerprint)).filter((c) => !c.ok);
    if (bad.length === 0) return { ok: true, verified: true, error: '' };
    return { ok: false, verified: false, error: bad.map((c) => `${c.address}: ${c.error}`).join('; ') };
  }

  /** The configured listeners that must serve `d` (SNI defaulted from its names). */
  private endpoints(d: DesiredRecord): Array<{ address: string; serverName: string }> {
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

  /** Sends the status report (heartbeat). Never throws. */
  async report(): Promise<void> {
    const http01 = this.opts.config.http01;
    try {
      await this.opts.link.reportStatus({
        http01Address: http01 ? (http01.advertise ?? http01.listen) : '',
        agentVersion: AGENT_VERSION,
        certificates: this.statuses(),
        refusals: this.opts.trust.refusals(),
      });
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'status report failed');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const token of [...this.challengeTimers.keys()]) this.stopServing(token);
    for (const w of this.watches) await w.stop();
    await this.runner.stop();
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

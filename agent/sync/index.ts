/**
 * The agent's work loop: converge the installed certificates on the desired versions.
 *
 * Inputs: the `desired` and `challenges` buckets watched over NATS (instant), and a
 * full resynchronisation over gRPC (GetAssignments) at start, every `resyncInterval`,
 * and every 30 s while NATS is unreachable — so an agent converges even with NATS down.
 *
 * For each assigned certificate whose desired version is not installed:
 *   fetch bundle (gRPC, mTLS) → install (validated before any disk write) → reload hook
 *   → verify served fingerprint → report.
 * A failure is reported (state "failed" with a stable code) and retried at the next
 * resynchronisation, not in a tight loop. Reports also go out every `reportInterval`
 * as the agent's heartbeat.
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { ErrorCode, toCertfleetError } from '../../shared/errors/index.js';
import type { CertStatus, ChallengeRecord, DesiredRecord, HookOutcome, VersionMeta } from '../../shared/model/index.js';
import { openKv, type KvWatch, type NatsHandle } from '../../shared/nats/index.js';
import { selects } from '../../shared/selector/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { reloadHookFor, type AgentConfig, type HookConfig } from '../config/index.js';
import { hookEnvironment, runHook } from '../hooks/index.js';
import type { Http01Responder } from '../http01/index.js';
import type { Installer } from '../install/index.js';
import type { ControllerLink } from '../link/index.js';
import { verifyServed } from '../verify/index.js';
import { CoalescingRunner } from '../../shared/runtime/index.js';

export const AGENT_VERSION = '0.1.0';

/** A version installed in this pass (or earlier, awaiting its hook). */
interface Installed {
  desired: DesiredRecord;
  meta: VersionMeta;
  lineageDir: string;
}
/** Resync period while NATS is unreachable. */
const OFFLINE_RESYNC_MS = 30_000;

export interface SyncOptions {
  config: AgentConfig;
  labels: Record<string, string>;
  link: ControllerLink;
  installer: Installer;
  nats: NatsHandle | null;
  http01: Http01Responder | null;
  clock: Clock;
  log: Logger;
}

export class Sync {
  private readonly desired = new Map<string, DesiredRecord>();
  private readonly status = new Map<string, CertStatus>();
  private readonly watches: KvWatch[] = [];
  private timers: NodeJS.Timeout[] = [];
  private readonly runner: CoalescingRunner;
  private retryFailed = false;
  private stopped = false;
  private lastResync = 0;

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

  /** Loads installed state, starts watches and timers, and converges once. */
  async start(): Promise<void> {
    await this.loadInstalled();
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

  private async loadInstalled(): Promise<void> {
    for (const name of await this.installedNames()) {
      const meta = await this.opts.installer.current(name);
      if (!meta) continue;
      this.status.set(name, {
        name,
        version: meta.version,
        fingerprint: meta.fingerprint,
        desiredVersion: 0,
        state: 'installed',
        hook: null,
        servedVerified: false,
        error: '',
        errorCode: '',
        updatedAt: isoAt(this.opts.clock.now()),
      });
    }
  }

  private async installedNames(): Promise<string[]> {
    const fs = await import('node:fs/promises');
    const path = await import('node:path');
    try {
      return await fs.readdir(path.join(this.opts.config.stateDir, 'certs'));
    } catch {
      return [];
    }
  }

  private async startWatches(nats: NatsHandle): Promise<void> {
    const desiredKv = await openKv<DesiredRecord>(nats, Bucket.desired, { create: false });
    const w1 = await desiredKv.watch((key, value) => {
      if (value === null || !this.assigned(value.selector)) {
        this.desired.delete(key);
        return;
      }
      this.desired.set(key, value);
      this.kick();
    });
    this.watches.push(w1);
    const http01 = this.opts.http01;
    if (http01) {
      const challengesKv = await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false });
      const w2 = await challengesKv.watch((key, value) => {
        if (value === null) {
          http01.delete(key);
        } else if (this.assigned(value.selector)) {
          http01.set(value.token, value.keyAuthorization);
          this.opts.log.info({ cert: value.cert, identifier: value.identifier }, 'challenge served');
        }
      });
      this.watches.push(w2);
    }
  }

  /** Full resynchronisation over gRPC; failed installs are retried. */
  async resync(): Promise<void> {
    this.lastResync = this.opts.clock.now();
    try {
      const list = await this.opts.link.assignments();
      const names = new Set(list.map((d) => d.name));
      for (const d of list) this.desired.set(d.name, d);
      for (const name of [...this.desired.keys()]) if (!names.has(name)) this.desired.delete(name);
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
    for (const st of this.status.values()) {
      const d = this.desired.get(st.name);
      if (d && st.state === 'failed' && st.version === d.version && (st.errorCode === ErrorCode.HookFailed || st.errorCode === ErrorCode.HookTimeout)) {
        if (!installed.some((i) => i.desired.name === st.name)) {
          const meta = await this.opts.installer.current(st.name);
          if (meta && meta.version === d.version) installed.push({ desired: d, meta, lineageDir: this.opts.installer.lineageDir(st.name) });
        }
      }
    }
    if (installed.length > 0) await this.runHooks(installed);
    if (changed || installed.length > 0) await this.report();
  }

  /** Fetches and installs one version; records a failure and returns undefined when it cannot. */
  private async installOne(d: DesiredRecord): Promise<Installed | undefined> {
    const log = this.opts.log.child({ cert: d.name, version: d.version });
    try {
      const bundle = await this.opts.link.fetchBundle(d.name, d.version);
      if (bundle.meta.fingerprint !== d.fingerprint) {
        log.warn({ got: bundle.meta.fingerprint, want: d.fingerprint }, 'fetched version differs from the desired pointer');
      }
      const result = await this.opts.installer.install(bundle, { requiredNames: d.names });
      log.info({ changed: result.changed }, 'certificate installed');
      this.setStatus(d, { version: bundle.meta.version, fingerprint: bundle.meta.fingerprint, state: 'pending' });
      return { desired: d, meta: bundle.meta, lineageDir: result.lineageDir };
    } catch (err) {
      const cf = toCertfleetError(err, ErrorCode.InstallFailed);
      log.warn({ code: cf.code, err: cf.message }, 'install refused');
      this.setStatus(d, { state: 'failed', error: cf.message, errorCode: cf.code });
      return undefined;
    }
  }

  /** Runs each distinct reload hook once for the certificates it serves, then verifies them. */
  private async runHooks(installed: Installed[]): Promise<void> {
    const groups = new Map<string, { spec: HookConfig | undefined; members: Installed[] }>();
    for (const item of installed) {
      const spec = reloadHookFor(this.opts.config, item.desired.name);
      const key = spec === undefined ? `none:${item.desired.name}` : JSON.stringify(spec.command);
      const group = groups.get(key) ?? { spec, members: [] };
      group.members.push(item);
      groups.set(key, group);
    }
    for (const { spec, members } of groups.values()) {
      let hook: HookOutcome | null = null;
      const first = members[0];
      if (spec && first) {
        const env = { ...hookEnvironment(first.meta, first.lineageDir), CERTFLEET_CERTS: members.map((m) => m.desired.name).join(' ') };
        hook = await runHook({ command: spec.command, timeoutMs: spec.timeout }, env);
        if (hook.exitCode !== 0 || hook.timedOut) {
          const code = hook.timedOut ? ErrorCode.HookTimeout : ErrorCode.HookFailed;
          const why = hook.timedOut ? `reload hook timed out after ${spec.timeout} ms` : `reload hook exited with ${hook.exitCode}${hook.signal ? ` (${hook.signal})` : ''}`;
          this.opts.log.warn({ code, certs: members.map((m) => m.desired.name), outputTail: hook.outputTail }, 'reload hook failed');
          for (const m of members) this.setStatus(m.desired, { version: m.meta.version, fingerprint: m.meta.fingerprint, state: 'failed', hook, error: why, errorCode: code });
          continue;
        }
        this.opts.log.info({ certs: members.map((m) => m.desired.name), durationMs: hook.durationMs }, 'reload hook succeeded');
      }
      for (const m of members) await this.verifyOne(m, hook);
    }
  }

  /** Checks the configured endpoints serve the installed version; records the outcome. */
  private async verifyOne(m: Installed, hook: HookOutcome | null): Promise<void> {
    const d = m.desired;
    const endpoints = (this.opts.config.certificates[d.name]?.verify ?? []).map((e) => ({ address: e.address, serverName: e.serverName ?? d.names[0] ?? '' }));
    const facts = { version: m.meta.version, fingerprint: m.meta.fingerprint, hook };
    if (endpoints.length === 0) {
      this.setStatus(d, { ...facts, state: 'installed' });
      return;
    }
    const checks = await verifyServed(endpoints, m.meta.fingerprint);
    const bad = checks.filter((c) => !c.ok);
    if (bad.length > 0) {
      const why = bad.map((c) => `${c.address}: ${c.error}`).join('; ');
      this.opts.log.warn({ cert: d.name, endpoints: bad }, 'served certificate does not match');
      this.setStatus(d, { ...facts, state: 'failed', error: `not served: ${why}`, errorCode: ErrorCode.NotServed });
      return;
    }
    this.setStatus(d, { ...facts, state: 'installed', servedVerified: true });
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
      });
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'status report failed');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const w of this.watches) await w.stop();
    await this.runner.stop();
  }
}

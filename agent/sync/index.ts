/**
 * The agent's work loop: converge the installed certificates on the desired versions.
 *
 *   agent/desired   NATS watches, periodic resync, HTTP-01 challenges
 *        │          → one checked pointer per certificate ("X should be at version N")
 *        ▼ onChange (coalesced: one pass at a time, one more after a burst)
 *   agent/apply     install → reload hook → verify → roll back → report
 *
 * This file only wires the two: it owns the single-flight runner, the heartbeat report
 * every `reportInterval`, and the start order. At start the apply side first proves what
 * is installed (a restart may have interrupted an install before its hook; see
 * Applier.recheckInstalled), so nothing is reported before that, then the desired side
 * starts and its first resynchronisation triggers the first pass. A failed version is
 * retried at the next resynchronisation, not in a tight loop. A fetched bundle is
 * installed only when its fingerprint is the signed one.
 */
import type { ApplyMetrics } from '../metrics/index.js';
import type { Clock, Timer } from '../../shared/clock/index.js';
import type { CertStatus } from '../../shared/model/index.js';
import type { NatsHandle } from '../../shared/nats/index.js';
import { CoalescingRunner } from '../../shared/runtime/index.js';
import { Applier } from '../apply/index.js';
import type { AgentConfig } from '../config/index.js';
import { DesiredFeed } from '../desired/index.js';
import { processHookRunner, type HookRunner } from '../hooks/index.js';
import type { Http01Responder } from '../http01/index.js';
import type { Installer } from '../install/index.js';
import type { ControllerLink } from '../link/index.js';
import { componentLogger, type Logger } from '../log/index.js';
import type { Trust } from '../trust/index.js';
import { tlsVerifier, type Verifier } from '../verify/index.js';

export { AGENT_VERSION, defaultServerName } from '../apply/index.js';

export interface SyncOptions {
  config: AgentConfig;
  labels: Record<string, string>;
  link: Pick<ControllerLink, 'assignments' | 'fetchBundle' | 'reportStatus'>;
  installer: Installer;
  /** See agent/desired DesiredOptions.nats (a promise: NATS still being tried). */
  nats: NatsHandle | null | Promise<NatsHandle | null>;
  http01: Pick<Http01Responder, 'set' | 'delete'> | null;
  /** Signing keys, generations and refusals (agent/trust). */
  trust: Trust;
  clock: Clock;
  /** The agent's logger, without a component: each part adds its own. */
  log: Logger;
  /** Reload hooks; default child processes and the HAProxy runtime API on `clock`. */
  hooks?: HookRunner;
  /** Served-certificate checks; default TLS handshakes on `clock`. */
  verifier?: Verifier;
  /** Counts installs, hooks and verifications (agent/metrics); absent: not counted. */
  metrics?: ApplyMetrics;
}

export class Sync {
  private readonly feed: DesiredFeed;
  private readonly applier: Applier;
  private readonly runner: CoalescingRunner;
  private heartbeat: Timer | undefined;
  private retryFailed = false;

  constructor(private readonly opts: SyncOptions) {
    const clock = opts.clock;
    this.applier = new Applier({
      config: opts.config,
      installer: opts.installer,
      bundles: opts.link,
      reporter: opts.link,
      hooks: opts.hooks ?? processHookRunner(clock),
      verifier: opts.verifier ?? tlsVerifier(clock),
      trust: opts.trust,
      clock,
      log: componentLogger(opts.log, 'apply'),
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
    });
    this.feed = new DesiredFeed({
      labels: opts.labels,
      resyncInterval: opts.config.resyncInterval,
      source: opts.link,
      nats: opts.nats,
      http01: opts.http01,
      trust: opts.trust,
      clock,
      log: componentLogger(opts.log, 'desired'),
      onChange: (resynced) => {
        if (resynced) this.retryFailed = true;
        this.runner.kick();
      },
    });
    this.runner = new CoalescingRunner(() => this.converge(), componentLogger(opts.log, 'sync'), 'converge');
  }

  /**
   * Proves what is installed (before anything is reported), then starts the desired side
   * (keys, watches, the first resynchronisation, which triggers the first pass) and the
   * heartbeat.
   */
  async start(): Promise<void> {
    await this.applier.recheckInstalled();
    await this.feed.start();
    this.heartbeat = this.opts.clock.every(this.opts.config.reportInterval, () => this.applier.report()).unref();
  }

  /** Status of every assigned or installed certificate, as reported. */
  statuses(): CertStatus[] {
    return this.applier.statuses();
  }

  /** Full resynchronisation over gRPC; failed versions are retried in the pass it triggers. */
  async resync(): Promise<void> {
    await this.feed.resync();
  }

  /** Converges soon (coalesced). */
  kick(): void {
    this.runner.kick();
  }

  /** Sends the status report (heartbeat). Never throws. */
  async report(): Promise<void> {
    await this.applier.report();
  }

  async stop(): Promise<void> {
    this.applier.stop();
    this.heartbeat?.stop();
    this.heartbeat = undefined;
    await this.feed.stop();
    await this.runner.stop();
  }

  private async converge(): Promise<void> {
    // The generations accepted are on disk before anything is installed from them.
    await this.opts.trust.saved();
    const retryFailed = this.retryFailed;
    this.retryFailed = false;
    await this.applier.converge(this.feed.records(), retryFailed);
  }
}

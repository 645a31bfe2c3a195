/**
 * The agent binary's entries: `certfleet agent --config FILE` (runAgent) and
 * `certfleet agent enroll --config FILE --token T` (enrollAgent).
 *
 * Start order: identity → gRPC link → NATS (with the credentials from enrolment unless
 * configured otherwise; optional at start: without it the agent still converges by gRPC
 * polling) → HTTP-01 responder → sync loop → identity renewal (at 2/3 of the client
 * certificate's lifetime, over the link, which then presents the new certificate; the
 * NATS credentials are renewed with it). Stops on SIGTERM or SIGINT.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../shared/errors/index.js';
import { splitHostPort } from '../shared/configfile/index.js';
import { componentLogger, createRootLogger } from '../shared/log/index.js';
import { LogKey } from './log/index.js';
import { createNotifier } from '../shared/notify/index.js';
import { runUntilSignal } from '../shared/runtime/index.js';
import { connectNats, connectNatsWhenUp, type NatsHandle } from '../shared/nats/index.js';
import { controllerAddresses, loadAgentConfig, notifyEnvironment, type AgentConfig } from './config/index.js';
import { enroll, loadIdentity, natsCredentialsFile, startIdentityRenewal, type AgentIdentity } from './enroll/index.js';
import { agentInboxPrefix } from '../shared/wire/index.js';
import { Http01Responder } from './http01/index.js';
import { Installer } from './install/index.js';
import { ControllerLink } from './link/index.js';
import { Sync } from './sync/index.js';
import { Trust } from './trust/index.js';

export { loadAgentConfig } from './config/index.js';

function readFile(file: string, field: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, `${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

/** What `agent enroll` reports. */
export interface Enrolled {
  name: string;
  labels: Record<string, string>;
  /**
   * The certificates the controller assigns this agent right after enrolment (what the
   * node will serve), or `{ error }` when that question failed (the enrolment stands).
   */
  serves: Array<{ name: string; names: string[] }> | { error: string };
}

/** Enrols this agent with a one-time token; returns its name, labels and assignments. */
export async function enrollAgent(opts: { configFile: string; token: string }): Promise<Enrolled> {
  const cfg = loadAgentConfig(opts.configFile);
  fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  const caPem = readFile(cfg.controller.caFile, 'controller.caFile');
  const serverName = cfg.controller.serverName === undefined ? {} : { serverName: cfg.controller.serverName };
  const addresses = controllerAddresses(cfg);
  const id = await enroll({ stateDir: cfg.stateDir, addresses, caPem, ...serverName, token: opts.token });
  const link = new ControllerLink({ addresses, caPem, certPem: id.certPem, keyPem: id.keyPem, ...serverName });
  let serves: Enrolled['serves'];
  try {
    serves = (await link.assignments()).assigned.map((a) => ({ name: a.name, names: [...a.names] }));
  } catch (err) {
    serves = { error: (err as Error).message };
  } finally {
    link.close();
  }
  return { name: id.name, labels: id.labels, serves };
}

/** A running agent. */
export interface Agent {
  /** The identity in use now (it changes when it is renewed). */
  readonly identity: AgentIdentity;
  sync: Sync;
  stop(): Promise<void>;
}

/** Starts an enrolled agent. */
export async function startAgent(cfg: AgentConfig, log: Logger, clock: Clock = systemClock): Promise<Agent> {
  fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  const identity = loadIdentity(cfg.stateDir);
  const alog = log.child({ [LogKey.agent]: identity.name });
  const linkLog = componentLogger(alog, 'link');
  const link = new ControllerLink({
    addresses: controllerAddresses(cfg),
    caPem: readFile(cfg.controller.caFile, 'controller.caFile'),
    certPem: identity.certPem,
    keyPem: identity.keyPem,
    ...(cfg.controller.serverName === undefined ? {} : { serverName: cfg.controller.serverName }),
    // One line per switch, naming the controller the agent talks to from now on.
    onSwitch: (sw) => linkLog.warn({ [LogKey.from]: sw.from, [LogKey.to]: sw.to, [LogKey.reason]: sw.reason }, 'controller switched'),
  });
  let nats: NatsHandle | null = null;
  // NATS unreachable at start: tried again in the background until it answers, so the
  // agent joins NATS later instead of polling over gRPC for the rest of its life.
  let natsLater: Promise<NatsHandle | null> | null = null;
  const natsGiveUp = new AbortController();
  // Configured credentials win; otherwise the ones the controller handed over at enrolment.
  const enrolledCreds = natsCredentialsFile(cfg.stateDir);
  const credentialsFile = cfg.nats.credentialsFile ?? (cfg.nats.tokenFile === undefined && fs.existsSync(enrolledCreds) ? enrolledCreds : undefined);
  const natsOptions = {
    servers: [...cfg.nats.servers],
    name: `certfleet-agent ${identity.name}`,
    // Its NATS user may subscribe only below this prefix.
    inboxPrefix: agentInboxPrefix(identity.name),
    ...(credentialsFile === undefined ? {} : { credentialsFile }),
    ...(cfg.nats.tokenFile === undefined ? {} : { token: readFile(cfg.nats.tokenFile, 'nats.tokenFile').trim() }),
    ...(cfg.nats.tlsCaFile === undefined ? {} : { tlsCaPem: readFile(cfg.nats.tlsCaFile, 'nats.tlsCaFile') }),
    clock,
    log: alog, // connectNats adds its component
  };
  try {
    nats = await connectNats(natsOptions);
  } catch (err) {
    // The agent's job is to keep certificates current: without NATS it still converges
    // over gRPC; it does not wait for NATS to come back before serving.
    alog.warn({ [LogKey.err]: (err as Error).message }, 'NATS unreachable at start; polling the controller over gRPC');
    natsLater = connectNatsWhenUp(natsOptions, natsGiveUp.signal).then((h) => (nats = h));
  }
  let http01: Http01Responder | null = null;
  if (cfg.http01) {
    http01 = new Http01Responder({ log: alog }); // it adds its component
    await http01.start(splitHostPort(cfg.http01.listen));
  }
  const installer = new Installer({
    stateDir: cfg.stateDir,
    keepVersions: cfg.keepVersions,
    clock,
    log: alog,
    ...(cfg.live ? { liveDir: cfg.live.dir } : {}),
    ...(cfg.haproxy ? { haproxyCrtDir: cfg.haproxy.crtDir } : {}),
  });
  const trust = Trust.open(cfg.stateDir, clock, componentLogger(alog, 'trust'));
  // prom-client and the endpoint are loaded only when the metrics endpoint is configured:
  // an idle agent without it does not carry them (issue #13, agent memory).
  const metricsModule = cfg.metrics ? await import('./metrics/index.js') : undefined;
  const instruments = metricsModule ? new metricsModule.AgentInstruments() : undefined;
  // Sync names its parts (desired, apply, sync); the installer names itself.
  const sync = new Sync({ config: cfg, labels: identity.labels, link, installer, nats: nats ?? natsLater, http01, trust, clock, log: alog, ...(instruments ? { metrics: instruments } : {}) });
  // Bound before the first pass, so a bad address fails the start and no install goes uncounted.
  const metrics =
    cfg.metrics && instruments && metricsModule
      ? await metricsModule.startAgentMetrics({ listen: splitHostPort(cfg.metrics.listen), instruments, statuses: () => sync.statuses(), log: componentLogger(alog, 'metrics') })
      : undefined;
  try {
    await sync.start();
  } catch (err) {
    await metrics?.stop();
    throw err;
  }
  const renewal = startIdentityRenewal({ stateDir: cfg.stateDir, link, identity, clock, log: componentLogger(alog, 'identity') });
  alog.info({ [LogKey.labels]: identity.labels, [LogKey.http01]: cfg.http01?.listen, [LogKey.server]: link.address }, 'agent ready');
  return {
    get identity() {
      return renewal.current();
    },
    sync,
    async stop() {
      renewal.stop();
      natsGiveUp.abort();
      await sync.stop();
      await http01?.stop();
      await metrics?.stop();
      await nats?.close();
      link.close();
    },
  };
}

/** One line for `systemctl status`: how many certificates are installed, failed, pending. */
function agentSummary(agent: Agent): string {
  const all = agent.sync.statuses();
  const count = (state: string): number => all.filter((s) => s.state === state).length;
  return `${all.length} certificates: ${count('installed')} installed, ${count('failed')} failed, ${count('pending')} pending`;
}

/**
 * Runs the agent until SIGTERM/SIGINT. Under systemd (Type=notify) it also sends
 * READY=1 once the first convergence pass has started, a STATUS summary when it
 * changes, STOPPING=1 on a signal, and WATCHDOG=1 pings from the event loop.
 */
export async function runAgent(opts: { configFile: string }): Promise<void> {
  const cfg = loadAgentConfig(opts.configFile);
  const log = createRootLogger({ name: 'agent', level: cfg.log.level });
  let agent: Agent | undefined;
  const notifier = createNotifier({
    settings: notifyEnvironment(),
    log: componentLogger(log, 'notify'),
    summary: () => (agent ? agentSummary(agent) : 'starting'),
    statusIntervalMs: 10_000,
  });
  try {
    try {
      notifier.status('starting: identity, controller link, NATS');
      agent = await startAgent(cfg, log);
    } catch (err) {
      notifier.status(`start failed: ${(err as Error).message}`);
      throw err;
    }
    const running = agent;
    notifier.ready(`ready: agent ${running.identity.name}, ${agentSummary(running)}`);
    // The agent's own timers are unref'd (they must not hold up a stop), and without NATS
    // (unreachable at start) nothing else is open between passes: node then ended the
    // process silently after its first pass. This timer keeps it until a signal.
    const alive = systemClock.every(3_600_000, () => undefined);
    try {
      await runUntilSignal(() => {
        notifier.stopping('stopping: letting a running hook finish');
        return running.stop();
      }, log);
    } finally {
      alive.stop();
    }
  } finally {
    notifier.close();
  }
}

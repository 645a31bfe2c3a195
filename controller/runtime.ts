/**
 * Wiring: builds every controller module from the configuration, in dependency order,
 * and takes them down in reverse. No decisions live here: what agents may do is
 * controller/agentservice, what operators may do controller/operator, the ACME account
 * controller/acme (account.ts).
 *
 * Start order: store → own CA, API certificate, admin credentials → NATS authority
 * (server include, own user) → NATS (buckets, stream) → ACME account → fleet, desired
 * state, solver, issuer → work loop → API → metrics endpoint (when configured) →
 * controller registry → leader lease → work loop started.
 *
 * Several controllers (issue #12, docs/high-availability.md): every controller runs the
 * leader lease (controller/lease), a single one too (with the file store `exclusive`: it
 * leads at once). Every controller serves agents and operators' reads; only the leader's
 * work loop, janitors, spool delivery and notifications act ({@link Leadership}). Every
 * work-loop write asks the lease's fence first: the store the loop's modules get is
 * fenced, and so are the desired pointers, challenges and budget writes.
 */
import fs from 'node:fs';
import net from 'node:net';
import { writeFileAtomic } from '../shared/files/index.js';
import path from 'node:path';
import type { Logger } from 'pino';
import { systemClock, isoAt, type Clock } from '../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../shared/errors/index.js';
import { splitHostPort } from '../shared/config/index.js';
import { connectNats, ensureFleetNats, openKv, pushAccountClaims, type NatsHandle } from '../shared/nats/index.js';
import { Bucket, EventType } from '../shared/wire/index.js';
import { accountId, observeAcmeRequests, openAcmeAccount, profileProblems, type AcmeClient } from './acme/index.js';
import { createAgentService } from './agentservice/index.js';
import { startApiServer, type ApiServer } from './api/index.js';
import { advertisedAddress, configEnvironment, issuerChain, issuersOf, storeConfigOf, type ControllerConfig, type IssuerConfig } from './config/index.js';
import { startIntents } from './intents/index.js';
import { ControllerRegistry, fencedStore, Leadership, LeaderLease, parseControllerRecord, parseLeaseRecord, type ControllerRecord, type LeaseRecord } from './lease/index.js';
import { Pins } from './rollback/index.js';
import { Spool } from './spool/index.js';
import { BudgetKeeper } from './budget/index.js';
import { AriTracker } from './ari/index.js';
import { createDns01Providers, createDns01Solver, janitor, StoreDns01Journal, type Dns01Solver } from './solvers/dns01/index.js';
import { Enrollment } from './enroll/index.js';
import { NatsAccess, NatsAuthority, writeServerConfigFile } from './natsauth/index.js';
import { Fleet } from './fleet/index.js';
import { Issuer } from './issuer/index.js';
import { OperatorRegistry } from './access/index.js';
import { certificateSerial, issueOperatorCertificate, issueServerCertificate, loadOrCreateControllerCa, verifyClientCertificate, type CaMaterial } from './pki/index.js';
import { DesiredState, EventPublisher, NatsChallengeBoard } from './publish/index.js';
import { RecordSigner } from './signing/index.js';
import { Reconciler } from './reconcile/index.js';
import { createOperations, lazyStaging, type StagingCa } from './operator/index.js';
import { createControllerInstruments, startMetricsServer } from './metrics/index.js';
import { fromReport, Notifier, type CertificateLife } from './notifications/index.js';
import { CHALLENGE_SWEEP_INTERVAL_MS, CHALLENGE_SWEEP_MIN_AGE_MS, CHALLENGE_SWEEP_START_MIN_AGE_MS, Http01Solver } from './solvers/index.js';
import { lockFileStore, openStore, type CertStore } from './store/index.js';
import { componentLogger, LogKey } from '../shared/log/index.js';

export const CONTROLLER_VERSION = '0.1.0';

/** File names inside `stateDir`. */
export const STATE_FILES = {
  /** The controller CA certificate (public): what agents and the CLI trust. */
  caCert: 'ca.pem',
  /** Operator credentials for the CLI (0600): CA, client certificate and key. */
  adminCredentials: 'admin-credentials.json',
} as const;

/** A running controller. */
export interface Controller {
  apiPort: number;
  /** The leader lease (tests, the follower → leader intents): `view()`, `isLeader()`, `fence()`. */
  lease: LeaderLease;
  /** Whether this controller's work loop may act now (leader, election steps done). */
  leading(): boolean;
  stop(): Promise<void>;
}


/**
 * Writes the CA and, once, the admin credentials into stateDir, and registers them as the
 * bootstrap `admin` operator (an upgraded controller's existing file included). A revoked
 * bootstrap admin gets no new file. Nor does a controller joining a shared store whose
 * bootstrap admin another controller already issued (issue #12): a new certificate would
 * replace that one's; the log says where the credentials are. With `api.peers` the
 * credentials list every controller (`servers`: this one first) for the CLI to fail over.
 */
async function writeStateFiles(cfg: ControllerConfig, ca: CaMaterial, operators: OperatorRegistry, clock: Clock, log: Logger): Promise<void> {
  fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path.join(cfg.stateDir, STATE_FILES.caCert), ca.certPem, 0o644);
  const credFile = path.join(cfg.stateDir, STATE_FILES.adminCredentials);
  if (fs.existsSync(credFile)) {
    const { certPem } = JSON.parse(fs.readFileSync(credFile, 'utf8')) as { certPem?: unknown };
    if (typeof certPem === 'string') await operators.ensureBootstrapAdmin({ ...certificateSerial(certPem), fresh: false });
    else log.warn({ file: credFile }, 'admin credentials without a certificate; not registered');
  } else if ((await operators.get('admin'))?.revoked === true) {
    log.warn({ file: credFile }, 'bootstrap admin is revoked; admin credentials not written');
  } else if ((await operators.get('admin')) !== null) {
    log.info({ file: credFile }, 'bootstrap admin exists in the shared store: admin credentials not written here (copy them from the controller that wrote them)');
  } else {
    const op = await issueOperatorCertificate(ca, { operator: 'admin', role: 'admin', now: clock.now() });
    const server = advertisedAddress(cfg);
    const dialHost = splitHostPort(server).host;
    // TLS sends no SNI for an IP address (RFC 6066) and Node warns when asked to: when
    // the CLI dials an IP, name a DNS host from the API certificate instead.
    const isIp = net.isIP(dialHost) !== 0;
    const dnsHost = cfg.api.hosts.find((h) => net.isIP(h) === 0);
    const creds = {
      server,
      ...(cfg.api.peers.length > 0 ? { servers: [server, ...cfg.api.peers.filter((p) => p !== server)] } : {}),
      serverName: isIp ? dnsHost : cfg.api.hosts.includes(dialHost) ? undefined : cfg.api.hosts[0],
      caPem: ca.certPem,
      certPem: op.certPem,
      keyPem: op.keyPem,
    };
    await writeFileAtomic(credFile, JSON.stringify(creds, null, 2) + '\n', 0o600);
    await operators.ensureBootstrapAdmin({ serial: op.serial, notAfter: op.notAfter, fresh: true });
    log.info({ file: credFile }, 'admin credentials written');
  }
}

function readFileOrConfigError(file: string, field: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, `${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

/**
 * The external account binding of an issuer's `eab`, its HMAC key read from the file or
 * the environment variable; CONFIG_INVALID naming the field when it is missing or not
 * base64url. The key is a secret: it goes to the ACME client only.
 */
function externalAccountBinding(iss: IssuerConfig): { kid: string; hmacKey: string } | undefined {
  const eab = iss.eab;
  if (eab === undefined) return undefined;
  const field = eab.hmacKeyFile !== undefined ? `${iss.field}.eab.hmacKeyFile` : `${iss.field}.eab.hmacKeyEnv`;
  const raw = eab.hmacKeyFile !== undefined ? readFileOrConfigError(eab.hmacKeyFile, field) : configEnvironment()[eab.hmacKeyEnv ?? ''];
  const hmacKey = (raw ?? '').trim();
  if (hmacKey === '') throw new CertfleetError(ErrorCode.ConfigInvalid, `${field}: no HMAC key (${eab.hmacKeyFile ?? `environment variable ${eab.hmacKeyEnv ?? ''}`} is empty or unset)`);
  if (!/^[A-Za-z0-9_-]+=*$/.test(hmacKey)) throw new CertfleetError(ErrorCode.ConfigInvalid, `${field}: the HMAC key is not base64url (as the CA hands it out)`);
  return { kid: eab.keyId, hmacKey };
}

/**
 * Refuses to start (CONFIG_INVALID, every certificate named at once with the profiles the
 * CA offers) when a certificate's `profile` is not in the CA's directory (controller/acme
 * profiles.ts says why a CA without profiles is refused too). Reads the directory only
 * when some certificate sets a profile.
 */
async function checkProfiles(cfg: ControllerConfig, acme: AcmeClient): Promise<void> {
  const wishes = cfg.certificates.map((c) => ({ name: c.name, profile: c.profile }));
  if (wishes.every((w) => w.profile === undefined)) return;
  const problems = profileProblems(await acme.profiles(), wishes);
  if (problems.length > 0) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, `certificates[].profile: ${problems.join('; ')}`, { details: { directoryUrl: issuersOf(cfg)[0]?.directoryUrl } });
  }
}

/** Where the nats-server include lives (config default: `<stateDir>/nats/auth.conf`). */
function natsServerConfigFile(cfg: ControllerConfig): string {
  return cfg.nats.serverConfigFile ?? path.join(cfg.stateDir, 'nats', 'auth.conf');
}

/**
 * `certfleet controller --config FILE --write-nats-config`: creates the NATS authority in
 * the store if it is missing and writes the nats-server include; returns its path. Run
 * before the first nats-server start (the controller rewrites it at every start).
 */
export async function writeNatsServerConfig(cfg: ControllerConfig, log: Logger): Promise<string> {
  if (cfg.nats.authority !== 'controller') {
    throw new CertfleetError(ErrorCode.ConfigInvalid, 'nats.authority is external: certfleet writes no NATS server configuration');
  }
  const store = await openStore(storeConfigOf(cfg), log);
  try {
    const authority = await NatsAuthority.open(store, systemClock, log);
    const file = natsServerConfigFile(cfg);
    await writeServerConfigFile(authority, file);
    return file;
  } finally {
    await store.close();
  }
}

/**
 * The controller's NATS connection. With `authority: controller`: the authority is opened
 * (created on first start), the server include rewritten, the controller connects with a
 * user minted for this process, and a system-account connection carries account updates
 * (revocations), the current account JWT pushed once now. Otherwise: the configured
 * credentials file or token, and no access object.
 */
async function openNats(
  cfg: ControllerConfig,
  store: CertStore,
  clock: Clock,
  log: Logger,
  cleanups: Array<() => Promise<void>>,
): Promise<{ nats: NatsHandle; access: NatsAccess | undefined }> {
  const nlog = componentLogger(log, 'nats');
  const base = {
    servers: [...cfg.nats.servers],
    ...(cfg.nats.tlsCaFile === undefined ? {} : { tlsCaPem: readFileOrConfigError(cfg.nats.tlsCaFile, 'nats.tlsCaFile') }),
    log, // connectNats binds the `nats` component itself
  };
  if (cfg.nats.authority !== 'controller') {
    const nats = await connectNats({
      ...base,
      name: 'certfleet-controller',
      ...(cfg.nats.credentialsFile === undefined ? {} : { credentialsFile: cfg.nats.credentialsFile }),
      ...(cfg.nats.tokenFile === undefined ? {} : { token: readFileOrConfigError(cfg.nats.tokenFile, 'nats.tokenFile').trim() }),
    });
    cleanups.push(() => nats.close());
    return { nats, access: undefined };
  }
  const authority = await NatsAuthority.open(store, clock, log);
  const file = natsServerConfigFile(cfg);
  await writeServerConfigFile(authority, file);
  const refused = (err: unknown): unknown =>
    isCertfleetError(err, ErrorCode.Unauthenticated)
      ? new CertfleetError(ErrorCode.Unauthenticated, `NATS refused the controller's user: include ${file} in the nats-server configuration (written by "certfleet controller --config FILE --write-nats-config") and restart it`, { cause: err })
      : err;
  const nats = await connectNats({ ...base, name: 'certfleet-controller', credentials: (await authority.controllerCredentials()).creds }).catch((err: unknown) => {
    throw refused(err);
  });
  cleanups.push(() => nats.close());
  const system = await connectNats({ ...base, name: 'certfleet-controller-system', credentials: (await authority.systemCredentials()).creds, checkJetStream: false }).catch((err: unknown) => {
    throw refused(err);
  });
  cleanups.push(() => system.close());
  const access = new NatsAccess({ authority, serverConfigFile: file, push: (id, jwt) => pushAccountClaims(system, id, jwt), log });
  await access.pushAccount().catch((err: unknown) => nlog.warn({ [LogKey.err]: err }, 'account update not pushed at start'));
  return { nats, access };
}

/** Starts a controller; resolves once the API accepts calls. */
export async function startController(cfg: ControllerConfig, log: Logger, clock: Clock = systemClock, env: NodeJS.ProcessEnv = configEnvironment()): Promise<Controller> {
  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        log.warn({ [LogKey.err]: err }, 'shutdown step failed');
      }
    }
  };
  try {
    // Modules that bind their own component (store, acme, enroll, access, natsauth, spool,
    // dns01) get the root logger: a second `component` in one line is noise.
    const storeConfig = storeConfigOf(cfg);
    const store = await openStore(storeConfig, log, clock);
    cleanups.push(() => store.close());
    if (storeConfig.type === 'file') {
      // One controller per file store: a second one refuses to start, naming the first.
      const lock = lockFileStore(storeConfig.path, new Date(clock.now()));
      cleanups.push(() => Promise.resolve(lock.release()));
    }

    const ca = await loadOrCreateControllerCa(store, clock.now());
    const operators = new OperatorRegistry(store, clock, log);
    await writeStateFiles(cfg, ca, operators, clock, log);
    const serverCert = await issueServerCertificate(ca, { hosts: [...cfg.api.hosts], now: clock.now() });

    const { nats, access: natsAccess } = await openNats(cfg, store, clock, log, cleanups);
    await ensureFleetNats(nats, { replicas: cfg.nats.replicas });

    // The leader lease: built now (the work loop's writes are fenced with it), started
    // once everything it gates exists. `exclusive` with the file store: its lock proves
    // no other controller runs, so a record an earlier process left is taken at once.
    const address = advertisedAddress(cfg);
    const startedAt = isoAt(clock.now());
    // Built once the modules it drives exist; the lease reaches it through this.
    const gate: { leadership?: Leadership } = {};
    const lease = new LeaderLease({
      kv: await openKv<LeaseRecord>(nats, Bucket.leader, { create: false, parse: parseLeaseRecord }),
      clock,
      log,
      name: cfg.ha.name,
      address,
      ttlMs: cfg.ha.leaseTtl,
      exclusive: storeConfig.type === 'file',
      onElected: (epoch) => gate.leadership?.elected(epoch),
      onDeposed: (why) => gate.leadership?.deposed(why),
    });
    const fence = (): number => lease.fence();
    // What the work loop's modules write the store with: every write asks the fence.
    const loopStore = fencedStore(store, fence);
    const leading = (): boolean => gate.leadership?.active() ?? false;

    // Counted from the first ACME request, whether or not metrics.listen serves them.
    const instruments = createControllerInstruments();
    observeAcmeRequests((r) => instruments.acmeRequest(r));
    cleanups.push(() => Promise.resolve(observeAcmeRequests(undefined)));
    // One ACME account per issuer. The first is opened now (a start against a CA that
    // refuses us fails loudly, as with one CA); the others when a certificate first needs
    // them, so a fallback CA that is down at start does not stop the controller.
    const issuers = issuersOf(cfg);
    const [primary] = issuers;
    if (primary === undefined) throw new CertfleetError(ErrorCode.ConfigInvalid, 'no issuer configured');
    const opened = new Map<string, Promise<AcmeClient>>();
    const openIssuer = (iss: IssuerConfig): Promise<AcmeClient> =>
      openAcmeAccount({
        directoryUrl: iss.directoryUrl,
        caPem: iss.caFile === undefined ? undefined : readFileOrConfigError(iss.caFile, `${iss.field}.caFile`),
        email: iss.email,
        externalAccountBinding: externalAccountBinding(iss),
        store,
        clock,
        log,
        pollTimeoutMs: cfg.http01.validationTimeout,
      });
    const accountOf = (name: string): Promise<AcmeClient> => {
      const known = opened.get(name);
      if (known) return known;
      const iss = issuers.find((i) => i.name === name);
      if (!iss) return Promise.reject(new CertfleetError(ErrorCode.ConfigInvalid, `unknown issuer "${name}"`));
      const p = Promise.resolve().then(() => openIssuer(iss));
      opened.set(name, p);
      // Not opened now (the CA is down): asked again on the next issuance.
      p.catch(() => {
        if (opened.get(name) === p) opened.delete(name);
      });
      return p;
    };
    cleanups.push(async () => {
      for (const p of opened.values()) (await p.catch(() => undefined))?.close();
    });
    const acme = await accountOf(primary.name);
    await checkProfiles(cfg, acme);

    const notifier = new Notifier({
      clock,
      log: componentLogger(log, 'notifications'),
      afterFailures: cfg.notifications.afterFailures,
      dedupWindowMs: cfg.notifications.dedupWindow,
      targets: cfg.notifications.webhooks.map((w) => ({ name: w.name, url: w.url, format: w.format, headers: w.headers, kinds: w.kinds ?? [], timeoutMs: w.timeout })),
    });
    cleanups.push(() => notifier.stop());
    const events = new EventPublisher(nats, clock, componentLogger(log, 'events'), (e) => notifier.event(e));
    const enrollment = new Enrollment(store, clock, log);
    // The loop is built after the fleet it depends on; the fleet reaches it through this.
    let onAgentOnline = (): void => undefined;
    const fleet = await Fleet.open({
      nats,
      enrollment,
      clock,
      log: componentLogger(log, 'fleet'),
      offlineAfterMs: cfg.api.agentOfflineAfter,
      onAgentOnline: () => onAgentOnline(),
      onRefusals: (agent, r) =>
        void events.emit(EventType.security, { agent, message: `agent ${agent} refused records: ${r.last}`, details: { total: r.total, byReason: r.byReason, lastAt: r.lastAt } }),
      // A newly failed install (hook, install, verification; rolled back or not) is an
      // event and, when configured, a notification.
      onCertificateReport: (agent, before, now) => {
        const n = fromReport(agent, before, now, isoAt(clock.now()));
        if (n === undefined) return;
        notifier.send(n);
        void events.emit(EventType.installFailed, { cert: now.name, agent, ...(n.version === undefined ? {} : { version: n.version }), message: n.summary, details: n.details });
      },
    });
    cleanups.push(() => fleet.close());
    const signer = await RecordSigner.open(store, clock, componentLogger(log, 'signing'));
    const desired = await DesiredState.open(nats, signer, clock, componentLogger(log, 'publish'), fence);
    cleanups.push(() => desired.close());
    const hlog = componentLogger(log, 'http01');
    const solver = new Http01Solver({
      // A challenge outlives the self-check and the CA's validation, then agents drop it.
      board: await NatsChallengeBoard.open(nats, signer, clock, cfg.http01.selfCheckTimeout + cfg.http01.validationTimeout + 60_000, fence),
      responders: (sel) => fleet.responders(sel),
      clock,
      log: hlog,
      selfCheckTimeoutMs: cfg.http01.selfCheckTimeout,
      offlinePolicy: { mode: cfg.http01.offlineAgents, graceMs: cfg.http01.offlineGrace },
      onSkipped: (skip) =>
        void events.emit(EventType.http01AgentSkipped, {
          cert: skip.cert,
          agent: skip.agent,
          message: `HTTP-01 for ${skip.identifier} proceeds without agent ${skip.agent}, offline since ${isoAt(skip.offlineSince)} (http01.offlineAgents: ${cfg.http01.offlineAgents})`,
          details: { identifier: skip.identifier, offlineSince: isoAt(skip.offlineSince), offlineForMs: skip.offlineForMs, policy: cfg.http01.offlineAgents },
        }),
    });
    // DNS-01: providers checked now (a rejected key fails the start, not the first renewal);
    // records a crash (or a previous leader) left behind are removed at each election,
    // before any new order.
    let dns01: Dns01Solver | undefined;
    let dnsJanitor = (): Promise<void> => Promise.resolve();
    if (Object.keys(cfg.dns01.providers).length > 0) {
      const dlog = componentLogger(log, 'dns01');
      const providers = createDns01Providers(cfg.dns01, { env, clock, log });
      for (const p of providers.values()) await p.check();
      const journal = new StoreDns01Journal(loopStore);
      dnsJanitor = async () => {
        const swept = await janitor(journal, providers, { log: dlog, clock });
        if (swept.removed.length + swept.failed.length > 0) dlog.info({ removed: swept.removed.length, failed: swept.failed.length }, 'leftover challenge records swept');
      };
      dns01 = createDns01Solver(cfg.dns01, providers, journal, { clock, log });
    }
    const spool = await Spool.open({ dir: path.join(cfg.stateDir, 'spool'), log, clock });
    const issuer = new Issuer({
      acme,
      accounts: accountOf,
      store: loopStore,
      spool,
      http01: solver,
      ...(dns01 ? { dns01 } : {}),
      clock,
      log: componentLogger(log, 'issuer'),
      onEvent: (e) => {
        switch (e.type) {
          case 'ordered':
            void events.emit(EventType.ordered, { cert: e.cert, message: e.resumed ? 'order resumed' : 'order placed', details: { order: e.order } });
            break;
          case 'issued':
            void events.emit(EventType.issued, {
              cert: e.cert,
              version: e.meta.version,
              message: `version ${e.meta.version} issued`,
              details: { serial: e.meta.serial, notAfter: e.meta.notAfter },
            });
            break;
          case 'spooled':
            void events.emit(EventType.spooled, { cert: e.cert, message: `issued certificate spooled: ${e.reason}`, details: { serial: e.serial } });
            break;
        }
      },
    });
    // HTTP-01 records a killed controller left on NATS would be served by agents for
    // ever: swept now (only those of saved orders stay, to be presented again when the
    // order resumes) and every CHALLENGE_SWEEP_INTERVAL_MS.
    const sweepChallenges = async (minAgeMs: number): Promise<void> => {
      try {
        const removed = await solver.sweep(await issuer.savedOrders(), minAgeMs);
        if (removed.length > 0) hlog.info({ removed: removed.length }, 'leftover challenge records swept');
      } catch (err) {
        hlog.warn({ [LogKey.err]: (err as Error).message }, 'challenge sweep failed');
      }
    };
    // The first sweep is an election step (below); later ones only while leading.
    const sweeper = clock.every(CHALLENGE_SWEEP_INTERVAL_MS, () => (leading() ? sweepChallenges(CHALLENGE_SWEEP_MIN_AGE_MS) : undefined)).unref();
    cleanups.push(() => Promise.resolve(sweeper.stop()));
    const pins = new Pins(store);
    // Budgets are per CA account: the same key reused against another CA is another
    // account. One keeper per issuer (each account its own state in NATS).
    const blog = componentLogger(log, 'budget');
    const keepers = new Map<string, BudgetKeeper>();
    for (const iss of issuers) keepers.set(iss.name, await BudgetKeeper.open(nats, iss.budgets, accountId(iss.directoryUrl), clock, issuers.length > 1 ? blog.child({ [LogKey.issuer]: iss.name }) : blog, fence));
    const budget = keepers.get(primary.name) as BudgetKeeper;
    const budgetOf = (name: string): BudgetKeeper => keepers.get(name) ?? budget;
    const ari = new AriTracker(loopStore, acme, clock, componentLogger(log, 'ari'));
    const loop = new Reconciler({
      pins,
      budget,
      ari,
      spread: cfg.renewal.spread,
      spooled: (name) => spool.pending().some((e) => e.name === name),
      selectedAgents: (sel) =>
        fleet.selected(sel).map((a) => ({ name: a.registration.name, labels: a.registration.labels, certificates: a.report?.certificates ?? [] })),
      certificates: cfg.certificates,
      store: loopStore,
      issuer,
      desired,
      events,
      clock,
      log: componentLogger(log, 'reconcile'),
      active: leading,
      intervalMs: cfg.renewal.checkInterval,
      concurrency: cfg.renewal.concurrency,
      metrics: instruments.loop,
      issuers: {
        chain: (c) => issuerChain(cfg, c),
        budget: budgetOf,
        fallbackAfter: () => cfg.renewal.fallbackAfter,
      },
    });
    onAgentOnline = () => loop.agentOnline();
    // Set below when notifications are configured; the first check is an election step.
    let lifeCheckNow = (): Promise<void> => Promise.resolve();

    // What a new leader does before it acts, and a deposed one after (controller/lease
    // leadership.ts). Saved orders are resumed by the first pass (the kick).
    const leadership = new Leadership({
      lease,
      log: componentLogger(log, 'leadership'),
      onElected: [
        { name: 'budgets reloaded', run: async () => { for (const k of keepers.values()) await k.reload(); } },
        { name: 'signing generations forgotten', run: () => signer.forgetGenerations() },
        { name: 'renewal intents forgotten', run: () => loop.forgetIntents() },
        { name: 'dns janitor', run: () => dnsJanitor() },
        { name: 'challenge sweep', run: () => sweepChallenges(CHALLENGE_SWEEP_START_MIN_AGE_MS) },
        { name: 'desired versions signed with the new epoch', run: async () => log.info({ count: await desired.republish() }, 'desired versions republished') },
      ],
      onActive: [
        { name: 'life check', run: () => void lifeCheckNow() },
        { name: 'work loop kicked', run: () => loop.kick() },
      ],
      onDeposed: [{ name: 'desired versions taken from NATS', run: () => desired.adoptBucket() }],
    });
    gate.leadership = leadership;
    // Released last at a graceful stop (after the loop stopped), so another controller
    // takes over at once instead of after a lease time.
    cleanups.push(async () => {
      await lease.stop();
      await leadership.settled();
    });
    cleanups.push(() => loop.stop());

    // A removal withdraws what else the agent holds: its NATS user, at once (the server
    // closes its connection and refuses reconnects).
    const onAgentRemoved = async (name: string): Promise<void> => {
      await natsAccess?.revokeAgentNatsUser(name);
    };
    // `renew --dry-run`: the staging account is opened on the first dry run, not at start
    // (a staging CA that is down must not stop the controller).
    const stagingCfg = cfg.acme?.staging;
    const staging: StagingCa | undefined =
      stagingCfg === undefined
        ? undefined
        : lazyStaging(stagingCfg.directoryUrl, async () => {
            const client = await openAcmeAccount({
              directoryUrl: stagingCfg.directoryUrl,
              caPem: stagingCfg.caFile === undefined ? undefined : readFileOrConfigError(stagingCfg.caFile, 'acme.staging.caFile'),
              email: cfg.acme?.email,
              store,
              clock,
              log,
              pollTimeoutMs: cfg.http01.validationTimeout,
            });
            cleanups.push(() => Promise.resolve(client.close()));
            // The same solvers as real issuances; no onEvent: a rehearsal announces nothing.
            return new Issuer({ acme: client, store, spool, http01: solver, ...(dns01 ? { dns01 } : {}), clock, log: componentLogger(log, 'dry-run') });
          });
    // Filled in once the registry runs (after the API, which status is served by).
    const haStatus: { registry?: ControllerRegistry } = {};
    const operations = createOperations({
      cfg, controllerVersion: CONTROLLER_VERSION, store, nats, fleet, desired, loop, pins, acme, enrollment, events, budget, clock, ca, operators, onAgentRemoved,
      issuerBudgets: issuers.map((i) => ({ issuer: i.name, keeper: budgetOf(i.name) })),
      accountOf,
      staging,
      challenges: { http01: solver, dns01 },
      ha: {
        self: cfg.ha.name,
        lease: () => lease.view(),
        controllers: () => haStatus.registry?.list(lease.view().leader?.epoch) ?? Promise.resolve([]),
      },
    });

    // Mutating operator calls on a follower are carried out by the leader (signed intents
    // in NATS, controller/intents); the leader takes them once its election steps are done.
    const intents = await startIntents({
      nats,
      signer,
      backend: operations.backend,
      leader: { isLeader: leading, fence, self: lease.self },
      clock,
      log,
    });
    cleanups.push(() => intents.stop());

    const api: ApiServer = await startApiServer({
      listen: splitHostPort(cfg.api.listen),
      caPem: ca.certPem,
      certPem: serverCert.certPem,
      keyPem: serverCert.keyPem,
      log: componentLogger(log, 'api'),
      clock,
      auth: {
        identify: (der) => verifyClientCertificate(ca, der, clock.now()),
        // The registry is read on every call: a revocation or role change holds at once.
        authorizeOperator: (id, method) => operators.check(id, method),
      },
      agents: createAgentService({
        certificates: cfg.certificates,
        identityValidityMs: cfg.api.agentIdentityValidity,
        ca,
        enrollment,
        fleet,
        desired,
        store,
        signer,
        nats: natsAccess,
        events,
        clock,
      }),
      operators: intents.backend,
    });
    cleanups.push(() => api.stop());


    if (cfg.metrics) {
      const metrics = await startMetricsServer({
        listen: splitHostPort(cfg.metrics.listen),
        log: componentLogger(log, 'metrics'),
        registry: instruments.registry,
        sources: {
          controllerVersion: CONTROLLER_VERSION,
          certificates: cfg.certificates,
          summary: (name) => operations.certificateSummary(name),
          runtime: (name) => loop.status(name),
          desired: (name) => desired.get(name),
          agents: () => fleet.agents().filter((a) => !a.removed),
          http01Skips: () => solver.skips(),
          budgets: () => budget.levels(),
          versions: (name) => store.listVersions(name),
          now: () => clock.now(),
        },
      });
      cleanups.push(() => metrics.stop());
    }

    if (notifier.enabled) {
      // Certificates in the last third of their life with no renewal: checked on the clock.
      const lifeCheck = async (): Promise<void> => {
        const lives: CertificateLife[] = [];
        for (const c of cfg.certificates) {
          const latest = await store.latest(c.name).catch(() => null);
          if (latest !== null) lives.push({ name: c.name, version: latest.version, notBefore: Date.parse(latest.notBefore), notAfter: Date.parse(latest.notAfter) });
        }
        notifier.life(lives);
      };
      lifeCheckNow = lifeCheck;
      // Only the leader notifies: one alert per fleet, not one per controller.
      const lifeTimer = clock.every(cfg.notifications.lifeCheckInterval, () => (leading() ? lifeCheck() : undefined));
      cleanups.push(() => Promise.resolve(lifeTimer.stop()));
    }

    const delivery = spool.startDelivery(loopStore, {
      active: leading,
      onDelivered: async (d) => {
        await events.emit(EventType.issued, {
          cert: d.name,
          version: d.meta.version,
          message: `version ${d.meta.version} delivered from the spool (${d.outcome})`,
          details: { serial: d.meta.serial, notAfter: d.meta.notAfter },
        });
        loop.kick();
      },
    });
    cleanups.push(() => delivery.stop());

    // The registry `status` lists: every controller writes its record every ttl/3.
    const probeName = cfg.certificates[0]?.name;
    const registry = new ControllerRegistry({
      kv: await openKv<ControllerRecord>(nats, Bucket.controllers, { create: false, parse: parseControllerRecord }),
      clock,
      log: componentLogger(log, 'registry'),
      ttlMs: cfg.ha.leaseTtl,
      record: async () => {
        const view = lease.view();
        let storeHealth = 'ok';
        if (probeName !== undefined) {
          await store.latest(probeName).catch((err: unknown) => {
            storeHealth = isCertfleetError(err) ? err.code : ErrorCode.StoreUnavailable;
          });
        }
        return {
          name: cfg.ha.name,
          self: lease.self,
          address,
          version: CONTROLLER_VERSION,
          role: view.role,
          epoch: view.epoch ?? 0,
          startedAt,
          nats: 'connected',
          store: storeHealth,
        };
      },
    });
    haStatus.registry = registry;
    await lease.start();
    await registry.start();
    cleanups.push(() => registry.stop());
    loop.start();
    log.info({ api: cfg.api.listen, port: api.port, certificates: cfg.certificates.length, controller: lease.self, role: lease.view().role }, 'controller ready');
    return { apiPort: api.port, lease, leading, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Wiring: builds every controller module from the configuration, in dependency order,
 * and takes them down in reverse. No decisions live here.
 *
 * Start order: store → own CA, API certificate, admin credentials → NATS authority
 * (server include, own user) → NATS (buckets, stream) → ACME account → fleet, desired
 * state, solver, issuer, leftover challenges swept → work loop → API →
 * metrics endpoint (when configured).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { writeFileAtomic } from '../shared/files/index.js';
import path from 'node:path';
import type { Logger } from 'pino';
import { systemClock, isoAt, type Clock } from '../shared/clock/index.js';
import { CertfleetError, ErrorCode, isCertfleetError } from '../shared/errors/index.js';
import { splitHostPort } from '../shared/config/index.js';
import { connectNats, ensureFleetNats, pushAccountClaims, type NatsHandle } from '../shared/nats/index.js';
import { EventType } from '../shared/wire/index.js';
import { createAcmeClient, generateAccountKey, type AcmeClient } from './acme/index.js';
import { startApiServer, type ApiServer, type CallerIdentity } from './api/index.js';
import { configEnvironment, storeConfigOf, type ControllerConfig } from './config/index.js';
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
import { certificateSerial, checkAgentCsr, issueOperatorCertificate, issueServerCertificate, loadOrCreateControllerCa, signAgentCsr, verifyClientCertificate, type CaMaterial } from './pki/index.js';
import { DesiredState, EventPublisher, NatsChallengeBoard } from './publish/index.js';
import { RecordSigner } from './signing/index.js';
import { Reconciler } from './reconcile/index.js';
import { createOperations } from './operator/index.js';
import { startMetricsServer } from './metrics/index.js';
import { CHALLENGE_SWEEP_INTERVAL_MS, CHALLENGE_SWEEP_MIN_AGE_MS, CHALLENGE_SWEEP_START_MIN_AGE_MS, Http01Solver } from './solvers/index.js';
import { openStore, type CertStore } from './store/index.js';
import { matches, parseSelector } from '../shared/selector/index.js';
import { desiredFor } from '../shared/rollout/index.js';

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
  stop(): Promise<void>;
}


/**
 * Writes the CA and, once, the admin credentials into stateDir, and registers them as the
 * bootstrap `admin` operator (an upgraded controller's existing file included). A revoked
 * bootstrap admin gets no new file.
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
  } else {
    const op = await issueOperatorCertificate(ca, { operator: 'admin', role: 'admin', now: clock.now() });
    const { host, port } = splitHostPort(cfg.api.listen);
    const dialHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    // TLS sends no SNI for an IP address (RFC 6066) and Node warns when asked to: when
    // the CLI dials an IP, name a DNS host from the API certificate instead.
    const isIp = net.isIP(dialHost) !== 0;
    const dnsHost = cfg.api.hosts.find((h) => net.isIP(h) === 0);
    const creds = {
      server: `${dialHost.includes(':') ? `[${dialHost}]` : dialHost}:${port}`,
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

interface AccountDoc {
  directoryUrl: string;
  keyPem: string;
  accountUrl: string;
}

/**
 * One account per CA, its key kept in the store and reused across restarts. The adapter
 * finds the account by its URL (POST-as-GET) and registers the same key again when the
 * CA forgot it (a test CA restarted, a staging reset), at start and while running; every
 * new URL is written back here.
 */
async function openAcmeAccount(cfg: ControllerConfig, store: CertStore, clock: Clock, log: Logger): Promise<AcmeClient> {
  const id = crypto.createHash('sha256').update(cfg.acme.directoryUrl).digest('hex').slice(0, 16);
  const key = `acme/account/${id}`;
  const saved = await store.getObject<AccountDoc>(key);
  const caPem = cfg.acme.caFile === undefined ? undefined : readFileOrConfigError(cfg.acme.caFile, 'acme.caFile');
  const keyPem = saved?.keyPem ?? (await generateAccountKey());
  if (!saved) await store.putObject(key, { directoryUrl: cfg.acme.directoryUrl, keyPem, accountUrl: '' } satisfies AccountDoc);
  const remember = async (accountUrl: string): Promise<void> => {
    await store.putObject(key, { directoryUrl: cfg.acme.directoryUrl, keyPem, accountUrl } satisfies AccountDoc);
    log.info({ accountUrl }, 'acme account registered');
  };
  const client = createAcmeClient({
    directoryUrl: cfg.acme.directoryUrl,
    accountKeyPem: keyPem,
    ...(caPem === undefined ? {} : { caPem }),
    ...(saved?.accountUrl ? { accountUrl: saved.accountUrl } : {}),
    ...(cfg.acme.email === undefined ? {} : { email: cfg.acme.email }),
    clock,
    log: log.child({ component: 'acme' }),
    pollTimeoutMs: cfg.http01.validationTimeout,
    onAccountChanged: remember,
  });
  try {
    const { accountUrl } = await client.ensureAccount();
    // A first registration (no URL saved yet) is not a change the adapter reports.
    if (!saved?.accountUrl) await remember(accountUrl);
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

function readFileOrConfigError(file: string, field: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, `${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
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
  const store = await openStore(storeConfigOf(cfg), log.child({ component: 'store' }));
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
  const nlog = log.child({ component: 'nats' });
  const base = {
    servers: [...cfg.nats.servers],
    ...(cfg.nats.tlsCaFile === undefined ? {} : { tlsCaPem: readFileOrConfigError(cfg.nats.tlsCaFile, 'nats.tlsCaFile') }),
    log: nlog,
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
  await access.pushAccount().catch((err: unknown) => nlog.warn({ err }, 'account update not pushed at start'));
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
        log.warn({ err }, 'shutdown step failed');
      }
    }
  };
  try {
    const store = await openStore(
      storeConfigOf(cfg),
      log.child({ component: 'store' }),
    );
    cleanups.push(() => store.close());

    const ca = await loadOrCreateControllerCa(store, clock.now());
    const operators = new OperatorRegistry(store, clock, log);
    await writeStateFiles(cfg, ca, operators, clock, log);
    const serverCert = await issueServerCertificate(ca, { hosts: [...cfg.api.hosts], now: clock.now() });

    const { nats, access: natsAccess } = await openNats(cfg, store, clock, log, cleanups);
    await ensureFleetNats(nats);

    const acme = await openAcmeAccount(cfg, store, clock, log);
    cleanups.push(() => Promise.resolve(acme.close()));

    const events = new EventPublisher(nats, clock, log.child({ component: 'events' }));
    const enrollment = new Enrollment(store, clock, log);
    // The loop is built after the fleet it depends on; the fleet reaches it through this.
    let onAgentOnline = (): void => undefined;
    const fleet = await Fleet.open({
      nats,
      enrollment,
      clock,
      log: log.child({ component: 'fleet' }),
      offlineAfterMs: cfg.api.agentOfflineAfter,
      onAgentOnline: () => onAgentOnline(),
      onRefusals: (agent, r) =>
        void events.emit(EventType.security, { agent, message: `agent ${agent} refused records: ${r.last}`, details: { total: r.total, byReason: r.byReason, lastAt: r.lastAt } }),
    });
    cleanups.push(() => fleet.close());
    const signer = await RecordSigner.open(store, clock, log.child({ component: 'signing' }));
    const desired = await DesiredState.open(nats, signer, clock, log.child({ component: 'publish' }));
    cleanups.push(() => desired.close());
    const solver = new Http01Solver({
      // A challenge outlives the self-check and the CA's validation, then agents drop it.
      board: await NatsChallengeBoard.open(nats, signer, clock, cfg.http01.selfCheckTimeout + cfg.http01.validationTimeout + 60_000),
      responders: (sel) => fleet.responders(sel),
      clock,
      log: log.child({ component: 'http01' }),
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
    // DNS-01: providers checked now (a rejected key fails the start, not the first renewal),
    // and records a crash left behind removed before any new order.
    let dns01: Dns01Solver | undefined;
    if (Object.keys(cfg.dns01.providers).length > 0) {
      const dlog = log.child({ component: 'dns01' });
      const providers = createDns01Providers(cfg.dns01, { env, clock, log: dlog });
      for (const p of providers.values()) await p.check();
      const journal = new StoreDns01Journal(store);
      const swept = await janitor(journal, providers, { log: dlog, clock });
      if (swept.removed.length + swept.failed.length > 0) dlog.info({ removed: swept.removed.length, failed: swept.failed.length }, 'leftover challenge records swept');
      dns01 = createDns01Solver(cfg.dns01, providers, journal, { clock, log: dlog });
    }
    const spool = await Spool.open({ dir: path.join(cfg.stateDir, 'spool'), log: log.child({ component: 'spool' }), clock });
    const issuer = new Issuer({
      acme,
      store,
      spool,
      http01: solver,
      ...(dns01 ? { dns01 } : {}),
      clock,
      log: log.child({ component: 'issuer' }),
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
        if (removed.length > 0) log.info({ component: 'http01', removed: removed.length }, 'leftover challenge records swept');
      } catch (err) {
        log.warn({ component: 'http01', err: (err as Error).message }, 'challenge sweep failed');
      }
    };
    await sweepChallenges(CHALLENGE_SWEEP_START_MIN_AGE_MS);
    const sweeper = setInterval(() => void sweepChallenges(CHALLENGE_SWEEP_MIN_AGE_MS), CHALLENGE_SWEEP_INTERVAL_MS);
    sweeper.unref();
    cleanups.push(() => Promise.resolve(clearInterval(sweeper)));
    const pins = new Pins(store);
    // Budgets are per CA account: the same key reused against another CA is another account.
    const accountId = crypto.createHash('sha256').update(acme.directoryUrl).digest('hex').slice(0, 16);
    const budget = await BudgetKeeper.open(nats, cfg.budgets, accountId, clock, log.child({ component: 'budget' }));
    const ari = new AriTracker(store, acme, clock, log.child({ component: 'ari' }));
    const loop = new Reconciler({
      pins,
      budget,
      ari,
      spread: cfg.renewal.spread,
      spooled: (name) => spool.pending().some((e) => e.name === name),
      selectedAgents: (sel) =>
        fleet.selected(sel).map((a) => ({ name: a.registration.name, labels: a.registration.labels, certificates: a.report?.certificates ?? [] })),
      certificates: cfg.certificates,
      store,
      issuer,
      desired,
      events,
      clock,
      log: log.child({ component: 'reconcile' }),
      intervalMs: cfg.renewal.checkInterval,
      concurrency: cfg.renewal.concurrency,
    });
    onAgentOnline = () => loop.agentOnline();
    cleanups.push(() => loop.stop());

    const certByName = new Map(cfg.certificates.map((c) => [c.name, c]));
    // The registry is read on every agent call: a removal holds from the agent's next call.
    const authenticateAgent = async (id: CallerIdentity): Promise<Record<string, string>> => {
      const reg = await enrollment.authenticateAgent(id.name, id.serial);
      fleet.registered(reg); // a renewed identity in use shows in the views
      return reg.labels;
    };
    const assignedTo = (labels: Record<string, string>, certName: string): boolean => {
      const c = certByName.get(certName);
      return c !== undefined && matches(parseSelector(c.agents), labels);
    };

    // A removal withdraws what else the agent holds: its NATS user, at once (the server
    // closes its connection and refuses reconnects).
    const onAgentRemoved = async (name: string): Promise<void> => {
      await natsAccess?.revokeAgentNatsUser(name);
    };
    const operations = createOperations({ cfg, controllerVersion: CONTROLLER_VERSION, store, nats, fleet, desired, loop, pins, enrollment, events, budget, clock, ca, operators, onAgentRemoved });

    const api: ApiServer = await startApiServer({
      listen: splitHostPort(cfg.api.listen),
      caPem: ca.certPem,
      certPem: serverCert.certPem,
      keyPem: serverCert.keyPem,
      log: log.child({ component: 'api' }),
      auth: {
        identify: (der) => verifyClientCertificate(ca, der, clock.now()),
        // The registry is read on every call: a revocation or role change holds at once.
        authorizeOperator: (id, method) => operators.check(id, method),
      },
      agents: {
        async enroll(token, csrPem) {
          // A malformed CSR must not use up the token: check it before redeeming.
          await checkAgentCsr(csrPem);
          const grant = await enrollment.redeem(token);
          const signed = await signAgentCsr(ca, csrPem, { agent: grant.agent, now: clock.now(), validityMs: cfg.api.agentIdentityValidity });
          const reg = await enrollment.recordAgent({
            name: grant.agent,
            labels: grant.labels,
            certSerial: signed.serial,
            enrolledAt: isoAt(clock.now()),
            certNotAfter: signed.notAfter,
          });
          fleet.registered(reg);
          // The NATS user rotates with the identity: it expires with this certificate, and
          // the user of a previous enrolment is revoked.
          const natsCredentials = natsAccess ? await natsAccess.credentialsForAgent(grant.agent, Date.parse(new crypto.X509Certificate(signed.certPem).validTo)) : '';
          await events.emit(EventType.enrolled, { agent: grant.agent, message: `agent ${grant.agent} enrolled`, details: { labels: grant.labels } });
          return { agent: grant.agent, labels: grant.labels, certificatePem: signed.certPem, caPem: ca.certPem, natsCredentials, signingKeys: signer.publicKeys() };
        },
        async assignments(id) {
          const labels = await authenticateAgent(id);
          const mine = desired.all().filter((d) => assignedTo(labels, d.name));
          return {
            desired: mine,
            // During a staged rollout each agent gets the version of its own wave.
            effective: mine.map((d) => desiredFor(d, labels)),
            signingKeys: signer.publicKeys(),
            assigned: cfg.certificates.filter((c) => matches(parseSelector(c.agents), labels)).map((c) => ({ name: c.name, names: [...c.names] })),
          };
        },
        async fetchBundle(id, name, version) {
          const labels = await authenticateAgent(id);
          if (!assignedTo(labels, name)) {
            throw new CertfleetError(ErrorCode.PermissionDenied, `certificate ${name} is not assigned to agent ${id.name}`);
          }
          const d = desired.get(name);
          const wanted = version === 0 ? (d ? desiredFor(d, labels).version : undefined) : version;
          const bundle = wanted === undefined ? null : await store.getVersion(name, wanted);
          if (!bundle) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} version ${wanted ?? 'desired'} does not exist`);
          return bundle;
        },
        async reportStatus(id, report) {
          await authenticateAgent(id);
          await fleet.report(id.name, report);
        },
        async renewIdentity(id, csrPem) {
          const reg = await enrollment.authenticateAgent(id.name, id.serial);
          const signed = await signAgentCsr(ca, csrPem, { agent: id.name, now: clock.now(), validityMs: cfg.api.agentIdentityValidity });
          fleet.registered(await enrollment.recordRenewal(id.name, reg.certSerial, signed.serial, signed.notAfter));
          await events.emit(EventType.identityRenewed, {
            agent: id.name,
            message: `agent ${id.name} renewed its identity (valid until ${signed.notAfter})`,
            details: { serial: signed.serial, notAfter: signed.notAfter },
          });
          // The NATS user rotates with the identity too: the new one expires with the new
          // certificate (a user tied to the old one would cut the agent off NATS, and so
          // off HTTP-01 duty, when the old certificate expires).
          const natsCredentials = natsAccess ? await natsAccess.credentialsForAgent(id.name, Date.parse(new crypto.X509Certificate(signed.certPem).validTo)) : '';
          return { certificatePem: signed.certPem, caPem: ca.certPem, notAfter: signed.notAfter, natsCredentials };
        },
      },
      operators: operations.backend,
    });
    cleanups.push(() => api.stop());


    if (cfg.metrics) {
      const metrics = await startMetricsServer({
        listen: splitHostPort(cfg.metrics.listen),
        log: log.child({ component: 'metrics' }),
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

    const delivery = spool.startDelivery(store, {
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
    loop.start();
    log.info({ api: cfg.api.listen, port: api.port, certificates: cfg.certificates.length }, 'controller ready');
    return { apiPort: api.port, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

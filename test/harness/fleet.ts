/**
 * A whole local fleet for end-to-end tests, from real parts: Pebble + challtestsrv,
 * nats-server with JetStream, the controller and agents as separate `certfleet`
 * processes (dist/cli/main.js), and one real nginx per agent reloaded by the agent's
 * hook. Everything listens on loopback; each agent has its own 127.0.0.x address.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startNats, type NatsServer } from './nats.js';
import { NatsAuthority } from '../../controller/natsauth/index.js';
import { openStore } from '../../controller/store/index.js';
import { loadControllerConfig } from '../../controller/config/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { nginxReloadCommand, stopNginx, writeNginxConfig } from './nginx.js';
import { startPebble, type PebbleHandle } from './pebble.js';
import { startAcmeProxy, type AcmeProxy, type AcmeProxyOptions } from './acme-proxy.js';
import { eventually, freePort, startProcess, waitForPort, type Started } from './process.js';
import { tempDir } from './tmp.js';

const execFileAsync = promisify(execFile);

/** dist/cli/main.js, found from this compiled file (dist/test/harness/fleet.js). */
export const CLI = fileURLToPath(new URL('../../cli/main.js', import.meta.url));

export interface FleetCertificate {
  name: string;
  names: string[];
  agents: string;
  /** Further fields of the certificate entry, as inline YAML (e.g. `rollout: { waves: [...] }`). */
  extra?: string;
  /**
   * Left out of controller.yaml (agents and nginx still serve it): the test declares it
   * itself in `beforeController`, e.g. with `certfleet import-certbot`.
   */
  undeclared?: boolean;
}

export interface FleetAgentSpec {
  name: string;
  ip: string;
  labels: Record<string, string>;
  /** Certificates this agent's nginx serves (must match what the selectors assign it). */
  serves: string[];
  /**
   * The agent's reload hook, given its directory and the real nginx reload command;
   * default: that command. For tests of hooks that fail or do not reload.
   */
  hook?: (ctx: { dir: string; reload: string }) => string;
  /** The agent's resyncInterval (a duration); default 5s. */
  resyncInterval?: string;
  /** Extra top-level agent.yaml lines (e.g. a `metrics:` section). */
  agentYaml?: string[];
}

export interface FleetAgent extends FleetAgentSpec {
  dir: string;
  configFile: string;
  stateDir: string;
  nginxPrefix: string;
  process: Started;
  /** The bootstrap token it enrolled with (already used). */
  token: string;
  /** The real nginx reload-or-start command (what the default hook runs). */
  reloadCommand: string;
  /** Starts the agent process again after `process.stop()` (same config and state). */
  restart(): void;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Fleet {
  root: string;
  pebble: PebbleHandle;
  /** The ACME proxy in front of Pebble (counts new orders, serves renewalInfo), when asked for. */
  proxy: AcmeProxy | undefined;
  nats: NatsServer;
  /**
   * A .creds text with every right in the certfleet account, minted from the controller's
   * own authority (undefined with natsAuth 'none'): for tests that read the buckets.
   */
  natsCreds: string | undefined;
  /** The controller process now (replaced by restartController). */
  controller: Started;
  /** Stops the controller (SIGKILL when `kill`) and starts it again on the same config. */
  restartController(opts?: { kill?: boolean }): Promise<void>;
  /** Stops the controller (SIGKILL when `kill`) and leaves it down (an outage); idempotent. */
  stopController(opts?: { kill?: boolean }): Promise<void>;
  /** Starts the controller again after `stopController`; resolves once its API listens. */
  startController(): Promise<void>;
  controllerConfig: string;
  controllerState: string;
  credentials: string;
  apiPort: number;
  /** Port of every nginx TLS listener (on each agent's own address). */
  tlsPort: number;
  /** Port of every agent's HTTP-01 responder (on its own address): where Pebble's VA connects. */
  httpPort: number;
  agents: Map<string, FleetAgent>;
  /** Runs the certfleet CLI with the admin credentials; never throws on a non-zero exit. */
  cli(args: string[], opts?: { credentials?: boolean }): Promise<CliResult>;
  /** Parses `certfleet <args> --json`. Throws with stderr when it fails. */
  cliJson<T>(args: string[]): Promise<T>;
  /** Everything the fleet's processes printed, for failure messages. */
  logs(): string;
  /** Enrols and starts the agents (already done unless `deferAgents`). */
  addAgents(): Promise<void>;
  /**
   * Waits until `certfleet certs` shows `count` certificates, each ready on every agent
   * it is assigned to; fails with every process's output.
   */
  waitUntilReady(count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Runs `node dist/cli/main.js ...`. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [CLI, ...args], { env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

function yamlList(items: string[]): string {
  return `[${items.map((i) => JSON.stringify(i)).join(', ')}]`;
}

export interface StartFleetOptions {
  certificates: FleetCertificate[];
  agents: FleetAgentSpec[];
  /** A record per name: the address Pebble's VA connects to for HTTP-01. */
  dns: Record<string, string>;
  validityPeriodSeconds?: number;
  /** Put the ACME proxy (test/harness/acme-proxy.ts) between the controller and Pebble, with these options. */
  proxy?: Omit<AcmeProxyOptions, 'pebble'>;
  /** Extra top-level controller.yaml lines (e.g. a `store:` section). */
  controllerYaml?: string[];
  /** `renewal:` section of controller.yaml; default `{ checkInterval: 1s }`. */
  renewalYaml?: string;
  /** `api:` fields besides `listen`, inline YAML; default `agentOfflineAfter: 30s`. `http01:` fields besides the two timeouts. */
  apiYaml?: string;
  http01Yaml?: string;
  /** Enrol and start the agents later, by calling `fleet.addAgents()`; default now. */
  deferAgents?: boolean;
  /** DNS server Pebble resolves through instead of challtestsrv (DNS-01 tests: a BIND resolver). */
  pebbleDnsServer?: string;
  /**
   * Called with the controller's state directory before it starts (to lay files in it,
   * or to rewrite controller.yaml); awaited. Pebble already runs.
   */
  beforeController?: (stateDir: string, ctx: { pebble: PebbleHandle; httpPort: number; controllerConfig: string }) => void | Promise<void>;
  /** Pebble requires external account binding with these keys (key id → base64url HMAC key). */
  pebbleEabKeys?: Record<string, string>;
  /** Extra lines inside the controller's `acme:` section (two-space indented), e.g. an `eab:` block. */
  acmeYaml?: string[];
  /** `acme.email` of the controller; null leaves it unset (as the quick start does). Default ops@example.test. */
  acmeEmail?: string | null;
  /**
   * 'controller' (default): NATS in operator mode from the include the controller writes
   * (`certfleet controller --write-nats-config`), as documented. 'none': nats-server
   * without authorization and `nats.authority: external`: a misconfigured deployment.
   */
  natsAuth?: 'controller' | 'none';
}

/** Starts everything and waits until each agent runs. */
export async function startFleet(opts: StartFleetOptions): Promise<Fleet> {
  const root = tempDir('certfleet-fleet-');
  const httpPort = await freePort('127.0.0.1');
  const tlsPort = await freePort('127.0.0.1');
  const apiPort = await freePort('127.0.0.1');
  const pebble = await startPebble({
    httpPort,
    ...(opts.validityPeriodSeconds === undefined ? {} : { validityPeriodSeconds: opts.validityPeriodSeconds }),
    ...(opts.pebbleDnsServer === undefined ? {} : { dnsServer: opts.pebbleDnsServer }),
    ...(opts.pebbleEabKeys === undefined ? {} : { eabKeys: opts.pebbleEabKeys }),
  });
  for (const [name, ip] of Object.entries(opts.dns)) await pebble.addA(name, ip);
  const natsPort = await freePort('127.0.0.1');
  const natsAuth = opts.natsAuth ?? 'controller';
  const proxy = opts.proxy ? await startAcmeProxy({ ...opts.proxy, pebble }) : undefined;

  const controllerState = path.join(root, 'controller');
  const pebbleCa = path.join(root, 'pebble-ca.pem');
  fs.writeFileSync(pebbleCa, proxy ? `${pebble.caPem}\n${proxy.caPem}` : pebble.caPem);
  const controllerConfig = path.join(root, 'controller.yaml');
  fs.writeFileSync(
    controllerConfig,
    [
      `stateDir: ${controllerState}`,
      'log: { level: debug }',
      `api: { listen: "127.0.0.1:${apiPort}", ${opts.apiYaml ?? 'agentOfflineAfter: 30s'} }`,
      `nats: { servers: ["nats://127.0.0.1:${natsPort}"]${natsAuth === 'none' ? ', authority: external' : ''} }`,
      'acme:',
      `  directoryUrl: ${proxy ? proxy.directoryUrl : pebble.directoryUrl}`,
      `  caFile: ${pebbleCa}`,
      ...(opts.acmeEmail === null ? [] : [`  email: ${opts.acmeEmail ?? 'ops@example.test'}`]),
      '  termsOfServiceAgreed: true',
      ...(opts.acmeYaml ?? []),
      `http01: { selfCheckTimeout: 20s, validationTimeout: 60s${opts.http01Yaml ? `, ${opts.http01Yaml}` : ''} }`,
      `renewal: ${opts.renewalYaml ?? '{ checkInterval: 1s }'}`,
      ...(opts.controllerYaml ?? []),
      ...(opts.certificates.some((c) => c.undeclared !== true) ? ['certificates:'] : ['certificates: []']),
      ...opts.certificates.filter((c) => c.undeclared !== true).map((c) => `  - { name: ${c.name}, names: ${yamlList(c.names)}, agents: ${JSON.stringify(c.agents)}${c.extra ? `, ${c.extra}` : ''} }`),
      '',
    ].join('\n'),
  );
  await opts.beforeController?.(controllerState, { pebble, httpPort, controllerConfig });
  let nats: NatsServer;
  let natsCreds: string | undefined;
  if (natsAuth === 'controller') {
    // The documented order: the controller writes the include, nats-server starts with it.
    const written = await runCli(['controller', '--config', controllerConfig, '--write-nats-config']);
    if (written.code !== 0) throw new Error(`certfleet controller --write-nats-config exited ${written.code}: ${written.stderr}`);
    nats = await startNats({ port: natsPort, auth: { include: written.stdout.trim() } });
    const cfg = loadControllerConfig(controllerConfig);
    const store = await openStore(cfg.store.type === 'file' ? { type: 'file', path: cfg.store.path ?? path.join(controllerState, 'store') } : cfg.store, silentLogger());
    try {
      natsCreds = (await (await NatsAuthority.open(store, systemClock)).controllerCredentials('test-observer')).creds;
    } finally {
      await store.close();
    }
  } else {
    nats = await startNats({ port: natsPort, auth: 'none' });
  }
  let controller = startProcess('controller', process.execPath, [CLI, 'controller', '--config', controllerConfig]);
  let controllerOutput = '';
  let controllerDown = false;
  const credentials = path.join(controllerState, 'admin-credentials.json');
  await waitForPort('127.0.0.1', apiPort, 30_000, controller);
  await eventually('admin credentials', () => fs.existsSync(credentials), 10_000);
  const adminEnv = { ...process.env, CERTFLEET_CREDENTIALS: credentials };

  const agents = new Map<string, FleetAgent>();
  const fleet: Fleet = {
    root,
    pebble,
    proxy,
    nats,
    natsCreds,
    get controller() {
      return controller;
    },
    async restartController(o = {}) {
      await fleet.stopController(o);
      await fleet.startController();
    },
    async stopController(o = {}) {
      if (controllerDown) return;
      controllerDown = true;
      if (o.kill) await controller.kill();
      else await controller.stop();
      controllerOutput += controller.output() + (o.kill ? '\n--- controller killed ---\n' : '\n--- controller stopped ---\n');
    },
    async startController() {
      controller = startProcess('controller', process.execPath, [CLI, 'controller', '--config', controllerConfig]);
      controllerDown = false;
      await waitForPort('127.0.0.1', apiPort, 30_000, controller);
    },
    controllerConfig,
    controllerState,
    credentials,
    apiPort,
    tlsPort,
    httpPort,
    agents,
    cli: (args, o = {}) => runCli(args, o.credentials === false ? { ...process.env, CERTFLEET_CREDENTIALS: '/nonexistent' } : adminEnv),
    async cliJson<T>(args: string[]): Promise<T> {
      const res = await runCli([...args, '--json'], adminEnv);
      if (res.code !== 0) throw new Error(`certfleet ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
      return JSON.parse(res.stdout) as T;
    },
    addAgents: () => Promise.resolve(),
    async waitUntilReady(count, timeoutMs = 150_000) {
      try {
        await eventually(
          `${count} certificates ready on every assigned agent`,
          async () => {
            const certs = await fleet.cliJson<{ certificates: Array<{ state: string; agentsCurrent: number; agentsAssigned: number }> }>(['certs']);
            return certs.certificates.length === count && certs.certificates.every((c) => c.state === 'ready' && c.agentsCurrent === c.agentsAssigned);
          },
          timeoutMs,
          500,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
      }
    },
    logs() {
      const parts = [`--- controller ---\n${controllerOutput}${controllerDown ? '' : controller.output()}`];
      for (const a of agents.values()) parts.push(`--- ${a.name} ---\n${a.process.output()}`);
      return parts.join('\n');
    },
    async stop() {
      for (const a of agents.values()) {
        await a.process.stop();
        await stopNginx(a.nginxPrefix);
      }
      await controller.stop();
      await proxy?.stop();
      await nats.stop();
      await pebble.stop();
    },
  };

  const addAgents = async (): Promise<void> => {
    const starters: Array<() => void> = [];
    for (const spec of opts.agents) {
      const dir = path.join(root, spec.name);
      const stateDir = path.join(dir, 'state');
      const nginxPrefix = path.join(dir, 'nginx');
      fs.mkdirSync(dir, { recursive: true });
      const certs = opts.certificates.filter((c) => spec.serves.includes(c.name));
      const conf = writeNginxConfig({
        prefix: nginxPrefix,
        servers: certs.map((c) => ({
          listen: `${spec.ip}:${tlsPort}`,
          serverNames: c.names,
          certFile: path.join(stateDir, 'certs', c.name, 'current', 'fullchain.pem'),
          keyFile: path.join(stateDir, 'certs', c.name, 'current', 'privkey.pem'),
        })),
      });
      const reloadCommand = nginxReloadCommand(conf, nginxPrefix);
      const hook = spec.hook ? spec.hook({ dir, reload: reloadCommand }) : reloadCommand;
      const configFile = path.join(dir, 'agent.yaml');
      fs.writeFileSync(
        configFile,
        [
          `stateDir: ${stateDir}`,
          'log: { level: debug }',
          `controller: { address: "127.0.0.1:${apiPort}", caFile: ${path.join(controllerState, 'ca.pem')}, serverName: localhost }`,
          `nats: { servers: ["${nats.url}"] }`,
          `http01: { listen: "${spec.ip}:${httpPort}" }`,
          `resyncInterval: ${spec.resyncInterval ?? '5s'}`,
          'reportInterval: 1s',
          ...(spec.agentYaml ?? []),
          `hooks: { reload: { command: ${JSON.stringify(hook)}, timeout: 30s } }`,
          'certificates:',
          ...certs.map((c) => `  ${c.name}: { verify: [{ address: "${spec.ip}:${tlsPort}" }] }`),
          '',
        ].join('\n'),
      );
      const labelArgs = Object.entries(spec.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]);
      const created = await fleet.cliJson<{ token: string }>(['token', 'create', spec.name, ...labelArgs]);
      const enrolled = await runCli(['agent', 'enroll', '--config', configFile, '--token', created.token]);
      if (enrolled.code !== 0) throw new Error(`enrolment of ${spec.name} failed (${enrolled.code}): ${enrolled.stderr}\n${fleet.logs()}`);
      const start = (): Started => startProcess(spec.name, process.execPath, [CLI, 'agent', '--config', configFile]);
      const agent: FleetAgent = {
        ...spec,
        dir,
        configFile,
        stateDir,
        nginxPrefix,
        // Started below, once every agent is enrolled: HTTP-01 is answered by every
        // enrolled agent a certificate selects, so one that enrolled later could miss a
        // challenge the CA sends to its address.
        process: undefined as unknown as Started,
        token: created.token,
        reloadCommand,
        restart() {
          // Keep what the stopped process printed: failure messages show both runs.
          const before = agent.process.output();
          const next = start();
          agent.process = { ...next, output: () => `${before}\n--- ${spec.name} restarted ---\n${next.output()}` };
        },
      };
      agents.set(spec.name, agent);
      starters.push(() => {
        agent.process = start();
      });
    }
    for (const s of starters) s();
  };
  fleet.addAgents = addAgents;
  if (!opts.deferAgents) await addAgents();
  return fleet;
}

/**
 * A fleet with several controllers, for the high-availability tests and bench/failover.ts
 * (docs/high-availability.md), from real parts:
 *
 *   Pebble + challtestsrv ── ACME proxy (counts orders, holds requests on demand)
 *   the Vault KV v2 double (in this process): the one store every controller shares
 *   three clustered nats-server nodes, operator mode from the include the controllers'
 *     store authority writes, every bucket and stream at 3 replicas
 *   two (or more) controller PROCESSES (dist/cli/main.js controller), so a test can
 *     SIGKILL, SIGSTOP and SIGCONT them, each with its own stateDir, ha.name and API port,
 *     `api.peers` naming the others
 *   agents as processes, each knowing every controller (`controller.addresses`) and every
 *     NATS node, each in front of its own nginx reloaded by the shipped deploy/nginx-reload.sh
 *
 * Everything on free loopback ports (each agent on its own 127.0.0.x), stopped by stop().
 */
import fs from 'node:fs';
import path from 'node:path';
import { NatsAuthority } from '../../controller/natsauth/index.js';
import { openStore } from '../../controller/store/index.js';
import { loadControllerConfig, storeConfigOf } from '../../controller/config/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { CLI, runCli, type CliResult, type FleetAgentSpec, type FleetCertificate } from './fleet.js';
import { startNatsCluster, type NatsCluster } from './nats-cluster.js';
import { nginxReloadCommand, stopNginx, writeNginxConfig } from './nginx.js';
import { startPebble, type PebbleHandle } from './pebble.js';
import { startAcmeProxy, type AcmeProxy } from './acme-proxy.js';
import { eventually, freePort, startProcess, waitForPort, type Started } from './process.js';
import { startVaultDouble, type VaultDouble } from './vault-double.js';
import { tempDir } from './tmp.js';

/** One controller process of the fleet. */
export interface HaController {
  /** Its `ha.name` (c1, c2, ...). */
  name: string;
  /** Its API port on 127.0.0.1 (also its advertised address). */
  port: number;
  /** `127.0.0.1:PORT`: how status and the lease name it. */
  address: string;
  configFile: string;
  stateDir: string;
  /** A credentials file naming this controller only (the admin's certificate): to talk to exactly it. */
  onlyCredentials: string;
  /** Whether its process runs (a SIGSTOPped one counts as running). */
  running(): boolean;
  /** Whether it is SIGSTOPped right now. */
  paused(): boolean;
  /** SIGKILL: its machine is gone. Idempotent. */
  kill(): Promise<void>;
  /** SIGTERM (graceful: it releases the lease). Idempotent. */
  stop(): Promise<void>;
  /** SIGSTOP: frozen, its sockets stay open. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Starts it again (same config and state); resolves once its API listens. */
  start(): Promise<void>;
  /** Everything every run of it printed. */
  output(): string;
  /** The current process (undefined while down). */
  process(): Started | undefined;
}

/** The status fields the HA tests read (`certfleet status --json`, docs/high-availability.md). */
export interface HaStatus {
  self: string;
  role: string;
  leader?: { holder: string; address: string; epoch: string | number; renewedAt: string } | null;
  controllers: Array<{ name: string; address: string; role: string; epoch: string | number; seenAt: string; health: string; version: string }>;
  nats: string;
  certificates: number;
  certificatesReady: number;
}

export interface HaFleetAgent extends FleetAgentSpec {
  dir: string;
  configFile: string;
  stateDir: string;
  nginxPrefix: string;
  process: Started;
  reloadCommand: string;
  restart(): void;
}

export interface HaFleet {
  root: string;
  pebble: PebbleHandle;
  /** The counting ACME proxy every controller talks to. */
  proxy: AcmeProxy;
  vault: VaultDouble;
  nats: NatsCluster;
  /** Credentials with every right in the certfleet account (from the shared store's authority), to read buckets. */
  natsCreds: string;
  controllers: HaController[];
  agents: Map<string, HaFleetAgent>;
  /** The admin credentials the first controller wrote (they list every controller). */
  credentials: string;
  tlsPort: number;
  httpPort: number;
  /** Lease ttl in ms, as configured. */
  leaseTtlMs: number;
  /** The CLI with the admin credentials (every controller, or only `via`); never throws on a non-zero exit. */
  cli(args: string[], opts?: { via?: HaController; timeoutMs?: number }): Promise<CliResult>;
  cliJson<T>(args: string[], opts?: { via?: HaController }): Promise<T>;
  /** `certfleet status --json` asked of one controller. */
  status(via: HaController): Promise<HaStatus>;
  /**
   * The controller every running, unpaused controller names as leader, once they agree
   * (and it is not `not`); rejects after `timeoutMs` with every status seen and the logs.
   */
  waitForLeader(opts?: { not?: HaController; timeoutMs?: number; epochAbove?: number }): Promise<{ leader: HaController; epoch: number }>;
  /** Waits until `certfleet certs` shows `count` certificates, each ready on every assigned agent. */
  waitUntilReady(count: number, timeoutMs?: number): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

export interface StartHaFleetOptions {
  certificates: FleetCertificate[];
  agents: FleetAgentSpec[];
  /** A record per name: the address Pebble's VA connects to for HTTP-01. */
  dns: Record<string, string>;
  /** How many controllers; default 2. */
  controllers?: number;
  /** `ha.leaseTtl`; default 6s (short, so a test waits seconds, not a quarter minute). */
  leaseTtl?: string;
  /** Extra top-level controller.yaml lines (e.g. a `budgets:` section), for every controller. */
  controllerYaml?: string[];
  /** `renewal:` section; default `{ checkInterval: 1s }`. */
  renewalYaml?: string;
  validityPeriodSeconds?: number;
  /** Controller log level; default debug. */
  logLevel?: string;
}

function yamlList(items: string[]): string {
  return `[${items.map((i) => JSON.stringify(i)).join(', ')}]`;
}

function durationMs(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`unsupported duration ${text}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** Starts everything; resolves once a leader is elected and every agent runs. */
export async function startHaFleet(opts: StartHaFleetOptions): Promise<HaFleet> {
  const root = tempDir('certfleet-ha-');
  const leaseTtl = opts.leaseTtl ?? '6s';
  const httpPort = await freePort('127.0.0.1');
  const tlsPort = await freePort('127.0.0.1');
  const pebble = await startPebble({
    httpPort,
    ...(opts.validityPeriodSeconds === undefined ? {} : { validityPeriodSeconds: opts.validityPeriodSeconds }),
  });
  for (const [name, ip] of Object.entries(opts.dns)) await pebble.addA(name, ip);
  const proxy = await startAcmeProxy({ pebble });
  const vault = await startVaultDouble();
  const tokenFile = path.join(root, 'vault-token');
  fs.writeFileSync(tokenFile, `${vault.rootToken}\n`, { mode: 0o600 });
  const pebbleCa = path.join(root, 'pebble-ca.pem');
  fs.writeFileSync(pebbleCa, `${pebble.caPem}\n${proxy.caPem}`);

  // NATS ports first: the controllers' configuration names every node.
  const count = opts.controllers ?? 2;
  const ports = await Promise.all(Array.from({ length: count }, () => freePort('127.0.0.1')));
  const names = ports.map((_, i) => `c${i + 1}`);
  const configFor = (i: number, natsUrls: string[]): string => {
    const stateDir = path.join(root, names[i]!);
    const peers = ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`);
    return [
      `stateDir: ${stateDir}`,
      `log: { level: ${opts.logLevel ?? 'debug'} }`,
      `ha: { name: ${names[i]}, leaseTtl: ${leaseTtl} }`,
      `api: { listen: "127.0.0.1:${ports[i]}", advertise: "127.0.0.1:${ports[i]}", peers: ${yamlList(peers)}, agentOfflineAfter: 30s }`,
      `nats: { servers: ${yamlList(natsUrls)}, replicas: 3 }`,
      `store: { type: vault, address: "${vault.addr}", auth: { method: token, tokenFile: ${tokenFile} } }`,
      'acme:',
      `  directoryUrl: ${proxy.directoryUrl}`,
      `  caFile: ${pebbleCa}`,
      '  email: ops@example.test',
      '  termsOfServiceAgreed: true',
      'http01: { selfCheckTimeout: 20s, validationTimeout: 60s }',
      `renewal: ${opts.renewalYaml ?? '{ checkInterval: 1s }'}`,
      ...(opts.controllerYaml ?? []),
      'certificates:',
      ...opts.certificates.map((c) => `  - { name: ${c.name}, names: ${yamlList(c.names)}, agents: ${JSON.stringify(c.agents)}${c.extra ? `, ${c.extra}` : ''} }`),
      '',
    ].join('\n');
  };

  // The documented order: a controller writes the NATS include from the shared store's
  // authority, every nats-server node starts with it. The URLs are not known before the
  // cluster starts, so the include is written from a configuration with a placeholder
  // server list (it only names the store).
  const bootstrapConfig = path.join(root, 'bootstrap.yaml');
  fs.writeFileSync(bootstrapConfig, configFor(0, ['nats://127.0.0.1:4222']));
  const written = await runCli(['controller', '--config', bootstrapConfig, '--write-nats-config']);
  if (written.code !== 0) throw new Error(`certfleet controller --write-nats-config exited ${written.code}: ${written.stderr}`);
  const nats = await startNatsCluster(3, { auth: { include: written.stdout.trim() } });
  const cfg = loadControllerConfig(bootstrapConfig);
  const store = await openStore(storeConfigOf(cfg), silentLogger());
  let natsCreds: string;
  try {
    natsCreds = (await (await NatsAuthority.open(store, systemClock)).controllerCredentials('test-observer')).creds;
  } finally {
    await store.close();
  }

  const controllers: HaController[] = names.map((name, i) => {
    const stateDir = path.join(root, name);
    const configFile = path.join(root, `${name}.yaml`);
    fs.writeFileSync(configFile, configFor(i, nats.urls));
    let proc: Started | undefined;
    let before = '';
    let isPaused = false;
    const address = `127.0.0.1:${ports[i]}`;
    const onlyCredentials = path.join(root, `credentials-${name}.json`);
    const down = async (how: 'kill' | 'stop'): Promise<void> => {
      const p = proc;
      if (!p) return;
      if (isPaused) p.child.kill('SIGCONT');
      isPaused = false;
      if (how === 'kill') await p.kill();
      else await p.stop();
      before += `${p.output()}\n--- ${name} ${how === 'kill' ? 'killed' : 'stopped'} ---\n`;
      proc = undefined;
    };
    const c: HaController = {
      name,
      port: ports[i]!,
      address,
      configFile,
      stateDir,
      onlyCredentials,
      running: () => proc !== undefined && proc.child.exitCode === null && proc.child.signalCode === null,
      paused: () => isPaused,
      kill: () => down('kill'),
      stop: () => down('stop'),
      pause() {
        if (!proc || isPaused) return;
        proc.child.kill('SIGSTOP');
        isPaused = true;
      },
      resume() {
        if (!proc || !isPaused) return;
        proc.child.kill('SIGCONT');
        isPaused = false;
      },
      async start() {
        if (c.running()) return;
        proc = startProcess(name, process.execPath, [CLI, 'controller', '--config', configFile]);
        await waitForPort('127.0.0.1', ports[i]!, 60_000, proc);
      },
      output: () => `${before}${proc?.output() ?? ''}`,
      process: () => proc,
    };
    return c;
  });

  // The first controller creates the CA and the bootstrap admin in the store and writes
  // the admin credentials; the others find the admin registered and write none.
  const first = controllers[0]!;
  await first.start();
  const credentials = path.join(first.stateDir, 'admin-credentials.json');
  await eventually('admin credentials', () => fs.existsSync(credentials), 30_000);
  for (const c of controllers.slice(1)) await c.start();
  const creds = JSON.parse(fs.readFileSync(credentials, 'utf8')) as Record<string, unknown>;
  for (const c of controllers) {
    const only: Record<string, unknown> = { ...creds, server: c.address };
    delete only['servers'];
    fs.writeFileSync(c.onlyCredentials, JSON.stringify(only, null, 2), { mode: 0o600 });
  }

  const leaseTtlMs = durationMs(leaseTtl);
  const agents = new Map<string, HaFleetAgent>();
  const credsEnv = (file: string): NodeJS.ProcessEnv => ({ ...process.env, CERTFLEET_CREDENTIALS: file });

  const fleet: HaFleet = {
    root,
    pebble,
    proxy,
    vault,
    nats,
    natsCreds,
    controllers,
    agents,
    credentials,
    tlsPort,
    httpPort,
    leaseTtlMs,
    cli: (args, o = {}) => runCli([...args, ...(o.timeoutMs === undefined ? [] : ['--timeout', `${o.timeoutMs}ms`])], credsEnv(o.via ? o.via.onlyCredentials : credentials)),
    async cliJson<T>(args: string[], o: { via?: HaController } = {}): Promise<T> {
      const res = await runCli([...args, '--json'], credsEnv(o.via ? o.via.onlyCredentials : credentials));
      if (res.code !== 0) throw new Error(`certfleet ${args.join(' ')}${o.via ? ` (via ${o.via.name})` : ''} exited ${res.code}: ${res.stderr}`);
      return JSON.parse(res.stdout) as T;
    },
    async status(via) {
      const res = await runCli(['status', '--json', '--timeout', '5s'], credsEnv(via.onlyCredentials));
      if (res.code !== 0) throw new Error(`certfleet status via ${via.name} exited ${res.code}: ${res.stderr}`);
      return JSON.parse(res.stdout) as HaStatus;
    },
    async waitForLeader(o = {}) {
      const seen: string[] = [];
      try {
        return await eventually(
          'one leader every controller agrees on',
          async () => {
            const live = controllers.filter((c) => c.running() && !c.paused());
            if (live.length === 0) return undefined;
            const views = await Promise.all(live.map((c) => fleet.status(c)));
            const addresses = new Set(views.map((v) => v.leader?.address ?? ''));
            seen.push(views.map((v, j) => `${live[j]!.name}: ${v.role}, leader ${v.leader?.holder ?? '-'} ${v.leader?.address ?? '-'} epoch ${String(v.leader?.epoch ?? '-')}`).join('; '));
            if (addresses.size !== 1) return undefined;
            const leader = controllers.find((c) => c.address === views[0]!.leader?.address);
            if (leader === undefined || leader === o.not || !live.includes(leader)) return undefined;
            const epoch = Number(views[0]!.leader?.epoch ?? 0);
            if (o.epochAbove !== undefined && epoch <= o.epochAbove) return undefined;
            // The leader says so itself, too.
            if (views[live.indexOf(leader)]!.role !== 'leader') return undefined;
            return { leader, epoch };
          },
          o.timeoutMs ?? 60_000,
          200,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}\nlast views:\n${seen.slice(-5).join('\n')}\n${fleet.logs()}`);
      }
    },
    async waitUntilReady(n, timeoutMs = 180_000) {
      try {
        await eventually(
          `${n} certificates ready on every assigned agent`,
          async () => {
            const certs = await fleet.cliJson<{ certificates: Array<{ state: string; agentsCurrent: number; agentsAssigned: number }> }>(['certs']);
            return certs.certificates.length === n && certs.certificates.every((c) => c.state === 'ready' && c.agentsCurrent === c.agentsAssigned);
          },
          timeoutMs,
          500,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${fleet.logs()}`);
      }
    },
    logs() {
      const parts = controllers.map((c) => `--- controller ${c.name} ---\n${c.output()}`);
      for (const a of agents.values()) parts.push(`--- ${a.name} ---\n${a.process.output()}`);
      return parts.join('\n');
    },
    async stop() {
      for (const a of agents.values()) {
        await a.process.stop();
        await stopNginx(a.nginxPrefix);
      }
      for (const c of controllers) await c.stop();
      await proxy.stop();
      await nats.stop();
      await vault.close();
      await pebble.stop();
    },
  };

  // Agents: every controller address and every NATS node in their configuration.
  const addresses = controllers.map((c) => c.address);
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
        `controller: { addresses: ${yamlList(addresses)}, caFile: ${path.join(first.stateDir, 'ca.pem')}, serverName: localhost }`,
        `nats: { servers: ${yamlList(nats.urls)} }`,
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
    const agent: HaFleetAgent = {
      ...spec,
      dir,
      configFile,
      stateDir,
      nginxPrefix,
      // Started once every agent is enrolled (HTTP-01 is answered by every selected agent).
      process: undefined as unknown as Started,
      reloadCommand,
      restart() {
        const earlier = agent.process.output();
        const next = start();
        agent.process = { ...next, output: () => `${earlier}\n--- ${spec.name} restarted ---\n${next.output()}` };
      },
    };
    agents.set(spec.name, agent);
    starters.push(() => {
      agent.process = start();
    });
  }
  for (const s of starters) s();
  return fleet;
}

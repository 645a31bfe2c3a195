/**
 * Fan-out benchmark (issue #13, item 3): how long a new version takes from the
 * controller's publish to every agent reporting it installed, and what the controller
 * spends per agent per new version.
 *
 *   npm run bench:fanout                              # K = 10, 50, 100 agents
 *   node dist/bench/fanout.js --agents 10,50 --versions 5 --json
 *   options: --agents LIST  --versions N (new versions per K, default 5)
 *            --cpu-prof DIR (controller runs with --cpu-prof, profiles written to DIR)
 *
 * Real parts on loopback, as the tests use them: Pebble (the controller opens its ACME
 * account at start; nothing is issued through it), nats-server with JetStream in
 * operator mode (the controller's include), the controller and K agent processes
 * (`dist/cli/main.js`), hook `true`, no served-certificate verification, default report
 * and resync intervals. One certificate is assigned to every agent.
 *
 * Each new version is written into the controller's file store by this process (a leaf
 * from a throwaway CA, as another controller sharing the store would); the controller's
 * next pass (checkInterval 1s) publishes it. Timing starts at the controller's
 * `published` event and ends, per agent, at the `lastSeen` of the first record in the
 * `agents` bucket showing the version current: both are the controller's clock, when it
 * published and when it took the agent's report. The agents grow 10 → 50 → 100 in one
 * fleet (agents are enrolled between rounds, not measured).
 *
 * Controller CPU per agent per version: the controller's user+system CPU (from
 * /proc/<pid>/stat) from just before the version is written until every agent has
 * reported it, minus its idle rate over the same time (heartbeats, passes) measured
 * before the round, divided by K.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileStore } from '../controller/store/file.js';
import { NatsAuthority } from '../controller/natsauth/index.js';
import { systemClock } from '../shared/clock/index.js';
import { silentLogger } from '../shared/log/index.js';
import { connectNats, openKv, readEvents, type NatsHandle } from '../shared/nats/index.js';
import { parseAgentRecord, type AgentRecord } from '../shared/records/index.js';
import { Bucket, EventType } from '../shared/wire/index.js';
import type { VersionMeta } from '../shared/model/index.js';
import { makeLeaf, makeTestCa, metaFor } from '../test/harness/certs.js';
import { startNats } from '../test/harness/nats.js';
import { startPebble } from '../test/harness/pebble.js';
import { freePort, startProcess, waitForPort, eventually, type Started } from '../test/harness/process.js';
import { tempDir } from '../test/harness/tmp.js';
import { cpuMs, cpuSplitMs, rssMiB } from './measure.js';
import { CLI, runCli } from '../test/harness/fleet.js';

const CERT = 'fan';

interface Options {
  agents: number[];
  versions: number;
  json: boolean;
  cpuProf: string | undefined;
  /** Debug logs kept in the (then kept) working directory. */
  debug: boolean;
  /** The first agent runs with --cpu-prof, profiles written here. */
  agentProf: string | undefined;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { agents: [10, 50, 100], versions: 5, json: false, cpuProf: undefined, debug: false, agentProf: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--agents' && v) {
      o.agents = v.split(',').map(Number);
      i++;
    } else if (a === '--versions' && v) {
      o.versions = Number(v);
      i++;
    } else if (a === '--cpu-prof' && v) {
      o.cpuProf = path.resolve(v);
      i++;
    } else if (a === '--json') o.json = true;
    else if (a === '--debug') o.debug = true;
    else if (a === '--agent-prof' && v) {
      o.agentProf = path.resolve(v);
      i++;
    }
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? NaN;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Round {
  agents: number;
  version: number;
  latenciesMs: number[];
  controllerCpuMs: number;
  cpuPerAgentMs: number;
  /** CPU of every agent process over the round (idle rate subtracted), per agent. */
  agentCpuMs: number;
  /** Of which system CPU (kernel: fork, fsync, sockets). */
  agentSysMs: number;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  // --debug keeps the logs: tempDir's directories go at exit.
  const root = o.debug ? fs.mkdtempSync(path.join(os.tmpdir(), 'certfleet-fanout-')) : tempDir('certfleet-fanout-');
  const ca = await makeTestCa().then((r) => makeTestCa({ issuer: r, commonName: 'Bench Intermediate' }));
  const pebble = await startPebble({ httpPort: await freePort() });
  const natsPort = await freePort();
  const apiPort = await freePort();
  const stateDir = path.join(root, 'controller');
  const storeDir = path.join(stateDir, 'store');
  const controllerConfig = path.join(root, 'controller.yaml');
  fs.writeFileSync(path.join(root, 'pebble-ca.pem'), pebble.caPem);
  fs.writeFileSync(
    controllerConfig,
    [
      `stateDir: ${stateDir}`,
      `log: { level: ${o.debug ? 'debug' : 'warn'} }`,
      `api: { listen: "127.0.0.1:${apiPort}" }`,
      `nats: { servers: ["nats://127.0.0.1:${natsPort}"] }`,
      'acme:',
      `  directoryUrl: ${pebble.directoryUrl}`,
      `  caFile: ${path.join(root, 'pebble-ca.pem')}`,
      '  termsOfServiceAgreed: true',
      'renewal: { checkInterval: 1s }',
      'certificates:',
      `  - { name: ${CERT}, names: ["fan.example.test"], agents: "role=edge" }`,
      '',
    ].join('\n'),
  );
  // Version 1 is there before the controller starts: nothing is ordered from the CA.
  const store = await FileStore.open({ dir: storeDir, log: silentLogger() });
  let latest = 0;
  const writeVersion = async (): Promise<number> => {
    const leaf = await makeLeaf(ca, { names: ['fan.example.test'] });
    const meta: Partial<VersionMeta> = { ...metaFor(CERT, latest + 1, leaf) };
    delete meta.version;
    const stored = await store.putVersion(CERT, { certPem: leaf.certPem, chainPem: leaf.chainPem, keyPem: leaf.keyPem, meta: meta as Omit<VersionMeta, 'version'> }, latest);
    latest = stored.version;
    return latest;
  };
  await writeVersion();

  const written = await runCli(['controller', '--config', controllerConfig, '--write-nats-config']);
  if (written.code !== 0) throw new Error(`--write-nats-config: ${written.stderr}`);
  const nats = await startNats({ port: natsPort, auth: { include: written.stdout.trim() } });
  const creds = (await (await NatsAuthority.open(store, systemClock)).controllerCredentials('bench-observer')).creds;
  const nodeArgs = o.cpuProf ? [`--cpu-prof`, `--cpu-prof-dir=${o.cpuProf}`] : [];
  const controller = startProcess('controller', process.execPath, [...nodeArgs, CLI, 'controller', '--config', controllerConfig]);
  const processes: Started[] = [controller];
  const stopAll = async (): Promise<void> => {
    for (const p of processes.slice(1)) await p.stop();
    await controller.stop(20_000);
    await nats.stop();
    await pebble.stop();
  };
  try {
    await waitForPort('127.0.0.1', apiPort, 60_000, controller);
    const credentials = path.join(stateDir, 'admin-credentials.json');
    await eventually('admin credentials', () => fs.existsSync(credentials), 20_000);
    const env = { ...process.env, CERTFLEET_CREDENTIALS: credentials };
    const pid = controller.child.pid ?? 0;

    const handle: NatsHandle = await connectNats({ servers: [nats.url], credentials: creds, name: 'bench', log: silentLogger() });
    const kv = await openKv<AgentRecord>(handle, Bucket.agents, { create: false, parse: parseAgentRecord });
    // agent → version → lastSeen (ms) of the first record showing it current.
    const installedAt = new Map<string, Map<number, number>>();
    const watch = await kv.watch((key, value) => {
      if (value === null) return;
      const c = value.certificates.find((s) => s.name === CERT);
      if (!c || c.state !== 'installed') return;
      let m = installedAt.get(key);
      if (!m) {
        m = new Map<number, number>();
        installedAt.set(key, m);
      }
      if (!m.has(c.version)) m.set(c.version, Date.parse(value.lastSeen));
    });
    /** When the controller published `version` (its `published` event). */
    const publishedAt = async (version: number): Promise<number> => {
      const ev = await eventually(
        `published event of v${version}`,
        async () => (await readEvents(handle, { cert: CERT, limit: 1000 })).find((e) => e.type === EventType.published && e.version === version),
        30_000,
        200,
      );
      return Date.parse(ev.at);
    };

    const rounds: Round[] = [];
    let enrolled = 0;
    for (const k of o.agents) {
      // Enrol and start agents up to k (4 enrolments at a time: CLI processes).
      const todo = Array.from({ length: k - enrolled }, (_, i) => enrolled + i + 1);
      enrolled = Math.max(enrolled, k);
      const pool = async (): Promise<void> => {
        for (let n = todo.shift(); n !== undefined; n = todo.shift()) {
          const name = `edge-${String(n).padStart(3, '0')}`;
          const dir = path.join(root, name);
          fs.mkdirSync(dir, { recursive: true });
          const configFile = path.join(dir, 'agent.yaml');
          fs.writeFileSync(
            configFile,
            [
              `stateDir: ${path.join(dir, 'state')}`,
              `log: { level: ${o.debug ? 'debug' : 'warn'} }`,
              `controller: { address: "127.0.0.1:${apiPort}", caFile: ${path.join(stateDir, 'ca.pem')}, serverName: localhost }`,
              `nats: { servers: ["${nats.url}"] }`,
              'hooks: { reload: { command: "true", timeout: 30s } }',
              'certificates:',
              `  ${CERT}: {}`,
              '',
            ].join('\n'),
          );
          const token = await runCli(['token', 'create', name, '--label', 'role=edge', '--json'], env);
          if (token.code !== 0) throw new Error(`token create ${name}: ${token.stderr}`);
          const en = await runCli(['agent', 'enroll', '--config', configFile, '--token', (JSON.parse(token.stdout) as { token: string }).token]);
          if (en.code !== 0) throw new Error(`enroll ${name}: ${en.stderr}`);
          const prof = o.agentProf && n === 1 ? ['--cpu-prof', `--cpu-prof-dir=${o.agentProf}`] : [];
          processes.push(startProcess(name, process.execPath, [...prof, CLI, 'agent', '--config', configFile]));
        }
      };
      await Promise.all([pool(), pool(), pool(), pool()]);
      const current = (v: number): number => [...installedAt.values()].filter((m) => m.has(v)).length;
      await eventually(`${k} agents on v${latest}`, () => current(latest) >= k, 300_000, 250);
      await sleep(3000);

      for (let r = 0; r < o.versions; r++) {
        // Idle rate first (heartbeats, passes), then the version.
        const agentPids = processes.slice(1).map((p) => p.child.pid ?? 0);
        const agentsCpu = (): number => agentPids.reduce((sum, p) => sum + cpuMs(p), 0);
        // System CPU of the agents (fork of the hook, fsyncs, sockets), to tell it from their JavaScript.
        const agentsSys = (): number => agentPids.reduce((sum, p) => sum + cpuSplitMs(p).sys, 0);
        const idle0 = cpuMs(pid);
        const idleAgents0 = agentsCpu();
        const idleSys0 = agentsSys();
        const t0 = Date.now();
        await sleep(3000);
        const idleRate = (cpuMs(pid) - idle0) / (Date.now() - t0);
        const idleAgentsRate = (agentsCpu() - idleAgents0) / (Date.now() - t0);
        const idleSysRate = (agentsSys() - idleSys0) / (Date.now() - t0);
        const cpu0 = cpuMs(pid);
        const agents0 = agentsCpu();
        const sys0 = agentsSys();
        const w0 = Date.now();
        const v = await writeVersion();
        await eventually(`${k} agents on v${v}`, () => current(v) >= k, 120_000, 50);
        const cpu1 = cpuMs(pid);
        const agents1 = agentsCpu();
        const sys1 = agentsSys();
        const pub = await publishedAt(v);
        const wall = Date.now() - w0;
        const spent = Math.max(0, cpu1 - cpu0 - idleRate * wall);
        const agentSpent = Math.max(0, agents1 - agents0 - idleAgentsRate * wall) / k;
        const agentSys = Math.max(0, sys1 - sys0 - idleSysRate * wall) / k;
        const lat = [...installedAt.values()].map((m) => (m.get(v) ?? NaN) - pub).sort((a, b) => a - b);
        // An agent far behind the rest (a report lost until a heartbeat): named, to find in its log.
        const late = [...installedAt.entries()].filter(([, m]) => (m.get(v) ?? Infinity) - pub > 10_000).map(([a]) => a);
        if (late.length > 0) process.stderr.write(`K=${k} v${v}: over 10 s late: ${late.join(' ')}\n`);
        rounds.push({ agents: k, version: v, latenciesMs: lat, controllerCpuMs: spent, cpuPerAgentMs: spent / k, agentCpuMs: agentSpent, agentSysMs: agentSys });
        if (!o.json) {
          process.stderr.write(
            `K=${k} v${v}: p50 ${percentile(lat, 50)} ms, p95 ${percentile(lat, 95)} ms, max ${lat[lat.length - 1]} ms, controller ${spent.toFixed(0)} ms CPU (${(spent / k).toFixed(2)} ms/agent), agents ${agentSpent.toFixed(1)} ms CPU each (${agentSys.toFixed(1)} system)\n`,
          );
        }
        await sleep(1000);
      }
    }
    await watch.stop();
    await handle.close();

    const summary = o.agents.map((k) => {
      const rs = rounds.filter((r) => r.agents === k);
      const all = rs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
      const p95s = rs.map((r) => percentile(r.latenciesMs, 95)).sort((a, b) => a - b);
      const cpus = rs.map((r) => r.cpuPerAgentMs).sort((a, b) => a - b);
      return {
        agents: k,
        versions: rs.length,
        p50Ms: percentile(all, 50),
        p95Ms: percentile(all, 95),
        maxMs: all[all.length - 1] ?? NaN,
        medianRoundP95Ms: percentile(p95s, 50),
        cpuPerAgentMsMedian: percentile(cpus, 50),
        agentCpuMsMedian: percentile(rs.map((r) => r.agentCpuMs).sort((a, b) => a - b), 50),
        controllerRssMiB: rssMiB(pid),
      };
    });
    if (o.json) {
      process.stdout.write(JSON.stringify({ summary, rounds }, null, 2) + '\n');
    } else {
      const rows = summary.map(
        (s) => `| ${s.agents} | ${s.versions} | ${s.p50Ms} | ${s.p95Ms} | ${s.maxMs} | ${s.medianRoundP95Ms} | ${s.cpuPerAgentMsMedian.toFixed(2)} | ${s.agentCpuMsMedian.toFixed(1)} |`,
      );
      process.stdout.write(
        ['| agents | versions | p50 ms | p95 ms | max ms | median round p95 ms | controller CPU ms/agent/version (median) | agent CPU ms/version (median) |', '|---|---|---|---|---|---|---|---|', ...rows, ''].join('\n'),
      );
    }
  } catch (err) {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n--- controller ---\n${controller.output().slice(-5000)}\n`);
    for (const p of processes.slice(1, 3)) process.stderr.write(`--- agent ---\n${p.output().slice(-3000)}\n`);
    process.exitCode = 1;
  } finally {
    await stopAll();
    await store.close();
    if (o.debug) {
      fs.writeFileSync(path.join(root, 'controller.log'), controller.output());
      for (const p of processes.slice(1)) fs.writeFileSync(path.join(root, `agent-${p.child.pid ?? 0}.log`), p.output());
      process.stderr.write(`logs kept in ${root}\n`);
    } else if (process.exitCode !== 1) fs.rmSync(root, { recursive: true, force: true });
  }
}

await main();

/**
 * Footprint and burst benchmark (issue #13, items 4 and 5).
 *
 *   npm run bench:footprint                         # 10,000 certificates, 1,000 agents
 *   node dist/bench/footprint.js --certs 10000 --agents 1000 --burst --json
 *   options: --certs N  --agents N (each certificate is assigned to 2 agents)
 *            --burst (every certificate is due at start; see below)
 *            --seconds S (how long `status` is sampled during the burst, default 60)
 *            --no-agent (skip the idle agent)
 *            --agent-node-args "ARGS" (node flags of one more idle agent, to compare settings;
 *              repeatable: one agent each; a NAME=VALUE word goes into its environment)
 *            --agent-heap-snapshot FILE (heap snapshot of the first idle agent, by SIGUSR2)
 *
 * What it builds, on loopback: Pebble (the controller opens its ACME account at start),
 * nats-server with JetStream in operator mode, the controller (`dist/cli/main.js`) and one
 * real agent process with 10 certificates. The store and the fleet are loaded directly at
 * their size, as a controller that has run for a while has them:
 *  - N certificates, one version each, signed by a throwaway CA (one key shared by every
 *    leaf: key generation is not what is measured), written in the file store's layout;
 *  - N/20 × 2 agent registrations in the store, and for each a status record in the
 *    `agents` bucket (online, every assigned certificate installed), written once the
 *    controller has created the bucket.
 *
 * Measured: the controller's RSS once its first passes are done; `certfleet certs --json`
 * end to end (CLI), the whole listing as gRPC calls from this process (each page's round
 * trip, and the controller's CPU per listing: its one thread is the server time —
 * building, encoding and writing the pages — without the client's decoding); `status`
 * likewise; the idle agent's RSS. The controller runs with bench/loopdelay.ts preloaded
 * (event-loop delay and memory once a second).
 *
 * --burst: every version expires within a day, so the whole fleet is due at once. The
 * agents are records only (no HTTP-01 responder answers), so each order fails at the
 * challenge step and goes to backoff: the pass still plans, orders and records every
 * certificate. For --seconds, every 250 ms each: `certfleet status` (CLI), GetStatus over
 * one open connection, and FetchBundle as an agent over mutual TLS (enrolled for it);
 * the controller's RSS, event-loop delay and memory split meanwhile.
 */
import 'reflect-metadata';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { webcrypto, randomBytes } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { NatsAuthority } from '../controller/natsauth/index.js';
import { FileStore } from '../controller/store/file.js';
import { systemClock } from '../shared/clock/index.js';
import { silentLogger } from '../shared/log/index.js';
import { connectNats, openKv } from '../shared/nats/index.js';
import { parseCertificate } from '../shared/pki/index.js';
import { parseAgentRecord, type AgentRecord } from '../shared/records/index.js';
import { Bucket } from '../shared/wire/index.js';
import type { CertStatus } from '../shared/model/index.js';
import { makeTestCa, privateKeyPem } from '../test/harness/certs.js';
import { startNats } from '../test/harness/nats.js';
import { startPebble } from '../test/harness/pebble.js';
import { eventually, freePort, startProcess, waitForPort, type Started } from '../test/harness/process.js';
import { tempDir } from '../test/harness/tmp.js';
import { CLI, runCli } from '../test/harness/fleet.js';
import { cpuMs, rssMiB, rssSplitMiB } from './measure.js';
import { operatorClient } from '../cli/client.js';
import { CERTIFICATES_PAGE } from '../cli/operator.js';
import { loadCredentials } from '../cli/credentials.js';
import { ControllerLink } from '../agent/link/index.js';
import { createAgentKeyAndCsr } from '../shared/pki-csr/index.js';

x509.cryptoProvider.set(webcrypto as never);
const DAY = 86_400_000;
const PER_GROUP = 20;

interface Options {
  certs: number;
  agents: number;
  burst: boolean;
  seconds: number;
  agent: boolean;
  json: boolean;
  cpuProf: string | undefined;
  agentNodeArgs: string[][];
  agentHeapSnapshot: string | undefined;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { certs: 10_000, agents: 1_000, burst: false, seconds: 60, agent: true, json: false, cpuProf: undefined, agentNodeArgs: [], agentHeapSnapshot: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--certs' && v) {
      o.certs = Number(v);
      i++;
    } else if (a === '--agents' && v) {
      o.agents = Number(v);
      i++;
    } else if (a === '--seconds' && v) {
      o.seconds = Number(v);
      i++;
    } else if (a === '--burst') o.burst = true;
    else if (a === '--no-agent') o.agent = false;
    else if (a === '--json') o.json = true;
    else if (a === '--agent-node-args' && v !== undefined) {
      o.agentNodeArgs.push(v.split(/\s+/).filter((x) => x !== ''));
      i++;
    } else if (a === '--agent-heap-snapshot' && v) {
      o.agentHeapSnapshot = path.resolve(v);
      i++;
    } else if (a === '--cpu-prof' && v) {
      o.cpuProf = path.resolve(v);
      i++;
    }
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};
const certName = (i: number): string => `c${String(i).padStart(5, '0')}`;
const groupOf = (i: number): string => `g${String(Math.floor(i / PER_GROUP)).padStart(4, '0')}`;

function writeFileMode(file: string, text: string): void {
  fs.writeFileSync(file, text, { mode: 0o600 });
}

/** The node flags before the script in the agent unit's ExecStart (how the agent ships under systemd). */
function agentUnitNodeFlags(): string[] {
  const unit = fs.readFileSync(new URL('../../deploy/systemd/certfleet-agent.service', import.meta.url), 'utf8');
  const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1];
  if (exec === undefined) throw new Error('no ExecStart in deploy/systemd/certfleet-agent.service');
  const words = exec.split(/\s+/);
  return words.slice(1, words.findIndex((w) => w.endsWith('/main.js')));
}

let lastSize = -1;
/** Whether the snapshot in `dir` still grows (V8 writes it in pieces). */
function isGrowing(dir: string): boolean {
  const size = fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
  const growing = size === 0 || size !== lastSize;
  lastSize = size;
  return growing;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const root = tempDir('certfleet-footprint-');
  const stateDir = path.join(root, 'controller');
  const storeDir = path.join(stateDir, 'store');
  const log = (s: string): void => void process.stderr.write(`${new Date().toISOString()} ${s}\n`);

  // ---- the store at size, written in the file store's layout ----
  const ca = await makeTestCa({ commonName: 'Footprint CA' });
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const keyPem = await privateKeyPem(keys.privateKey);
  const now = Date.now();
  // Burst: 89 of 90 days gone, every certificate due now.
  const notBefore = o.burst ? now - 89 * DAY : now - DAY;
  const notAfter = notBefore + 90 * DAY;
  await FileStore.open({ dir: storeDir, log: silentLogger() }).then((s) => s.close());
  const groups = Math.ceil(o.certs / PER_GROUP);
  const agentsPerGroup = Math.max(1, Math.round(o.agents / groups));
  const idleCerts = o.agent ? 10 : 0;
  const fingerprints: string[] = [];
  const t0 = Date.now();
  for (let i = 0; i < o.certs + idleCerts; i++) {
    const name = i < o.certs ? certName(i) : `idle${i - o.certs}`;
    const dns = `${name}.example.test`;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomBytes(16).toString('hex').replace(/^./, '1'),
      subject: `CN=${dns}`,
      issuer: ca.cert.subject,
      notBefore: new Date(notBefore),
      notAfter: new Date(notAfter),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: dns }])],
    });
    const certPem = `${cert.toString('pem')}\n`;
    const info = parseCertificate(certPem);
    fingerprints.push(info.fingerprint);
    const dir = path.join(storeDir, 'certs', name, '1');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileMode(path.join(dir, 'cert.pem'), certPem);
    writeFileMode(path.join(dir, 'chain.pem'), ca.chainPem);
    writeFileMode(path.join(dir, 'privkey.pem'), keyPem);
    const meta = { name, version: 1, serial: info.serial, fingerprint: info.fingerprint, names: info.names, notBefore: info.notBefore.toISOString(), notAfter: info.notAfter.toISOString(), issuedAt: info.notBefore.toISOString(), keyType: 'ecdsa-p256' };
    writeFileMode(path.join(dir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
  }
  log(`${o.certs + idleCerts} certificates written in ${Date.now() - t0} ms`);
  const agentNames: Array<{ name: string; group: number }> = [];
  fs.mkdirSync(path.join(storeDir, 'objects', 'agents'), { recursive: true, mode: 0o700 });
  for (let g = 0; g < groups; g++) {
    for (let k = 0; k < agentsPerGroup; k++) {
      const name = `a${String(g).padStart(4, '0')}-${k}`;
      agentNames.push({ name, group: g });
      const reg = { name, labels: { group: `g${String(g).padStart(4, '0')}` }, certSerial: randomBytes(16).toString('hex'), enrolledAt: new Date(now - DAY).toISOString() };
      writeFileMode(path.join(storeDir, 'objects', 'agents', `${name}.json`), JSON.stringify(reg) + '\n');
    }
  }

  // ---- servers ----
  const pebble = await startPebble({ httpPort: await freePort() });
  const natsPort = await freePort();
  const apiPort = await freePort();
  fs.writeFileSync(path.join(root, 'pebble-ca.pem'), pebble.caPem);
  const controllerConfig = path.join(root, 'controller.yaml');
  const lines = [
    `stateDir: ${stateDir}`,
    'log: { level: warn }',
    `api: { listen: "127.0.0.1:${apiPort}" }`,
    `nats: { servers: ["nats://127.0.0.1:${natsPort}"] }`,
    'acme:',
    `  directoryUrl: ${pebble.directoryUrl}`,
    `  caFile: ${path.join(root, 'pebble-ca.pem')}`,
    '  termsOfServiceAgreed: true',
    'certificates:',
  ];
  for (let i = 0; i < o.certs; i++) lines.push(`  - { name: ${certName(i)}, names: ["${certName(i)}.example.test"], agents: "group=${groupOf(i)}" }`);
  for (let i = 0; i < idleCerts; i++) lines.push(`  - { name: idle${i}, names: ["idle${i}.example.test"], agents: "role=idle" }`);
  fs.writeFileSync(controllerConfig, lines.join('\n') + '\n');
  const written = await runCli(['controller', '--config', controllerConfig, '--write-nats-config']);
  if (written.code !== 0) throw new Error(`--write-nats-config: ${written.stderr}`);
  const nats = await startNats({ port: natsPort, auth: { include: written.stdout.trim() } });
  const store = await FileStore.open({ dir: storeDir, log: silentLogger() });
  const creds = (await (await NatsAuthority.open(store, systemClock)).controllerCredentials('bench-observer')).creds;
  await store.close();
  const prof = o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProf}`] : [];
  const loopDelayFile = path.join(root, 'controller-loop-delay.jsonl');
  const loopDelay = ['--import', fileURLToPath(new URL('./loopdelay.js', import.meta.url))];
  const controller = startProcess('controller', process.execPath, [...prof, ...loopDelay, CLI, 'controller', '--config', controllerConfig], {
    env: { ...process.env, CERTFLEET_LOOP_DELAY_FILE: loopDelayFile },
  });
  const idle: Started[] = [];
  const result: Record<string, unknown> = { certificates: o.certs, agents: agentNames.length, burst: o.burst };
  try {
    const started = Date.now();
    await waitForPort('127.0.0.1', apiPort, 600_000, controller);
    result['apiUpAfterMs'] = Date.now() - started;
    const credentials = path.join(stateDir, 'admin-credentials.json');
    await eventually('admin credentials', () => fs.existsSync(credentials), 60_000);
    const env = { ...process.env, CERTFLEET_CREDENTIALS: credentials };
    const pid = controller.child.pid ?? 0;
    const timed = async (args: string[]): Promise<{ ms: number; out: string }> => {
      const t = Date.now();
      const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [CLI, ...args], { env, timeout: 600_000, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr: stderr || (err ? err.message : '') }),
        ),
      );
      if (r.code !== 0) throw new Error(`certfleet ${args.join(' ')}: ${r.stderr}`);
      return { ms: Date.now() - t, out: r.stdout };
    };

    // The fleet's last reports, as the agents would have written them.
    const handle = await connectNats({ servers: [nats.url], credentials: creds, name: 'bench', log: silentLogger() });
    const kv = await openKv<AgentRecord>(handle, Bucket.agents, { create: false, parse: parseAgentRecord });
    const reportOf = (name: string, group: number): AgentRecord => ({
      name,
      http01Address: '',
      agentVersion: 'bench',
      lastSeen: new Date().toISOString(),
      certificates: Array.from({ length: PER_GROUP }, (_, j): CertStatus => {
        const i = group * PER_GROUP + j;
        return { name: certName(i), version: 1, fingerprint: fingerprints[i] ?? '', desiredVersion: 1, state: 'installed', hook: null, servedVerified: true, error: '', errorCode: '', updatedAt: new Date().toISOString(), failedVersion: 0, rollback: '' };
      }).filter((c) => c.fingerprint !== ''),
    });
    const writeReports = async (): Promise<void> => {
      for (let i = 0; i < agentNames.length; i += 50) {
        await Promise.all(agentNames.slice(i, i + 50).map((a) => kv.put(a.name, reportOf(a.name, a.group))));
      }
    };
    await writeReports();
    log(`${agentNames.length} agent reports written`);

    if (o.burst) {
      // While the whole fleet is due, side by side every 250 ms: `status` through the CLI
      // (a node start-up each), `status` as a gRPC call over one open connection, and
      // FetchBundle as an agent over mutual TLS (an agent enrolled for it, in group g0000,
      // fetching that group's bundles in turn); the controller's RSS every 5 s and its
      // event-loop delay every second (bench/loopdelay.ts).
      const token = JSON.parse((await timed(['token', 'create', 'bench-fetch', '--label', 'group=g0000', '--json'])).out) as { token: string };
      const caPem = fs.readFileSync(path.join(stateDir, 'ca.pem'), 'utf8');
      const link = new ControllerLink({ address: `127.0.0.1:${apiPort}`, caPem, serverName: 'localhost' });
      const { keyPem: agentKey, csrPem } = await createAgentKeyAndCsr('agent');
      const enrolled = await link.enroll(token.token, csrPem);
      link.useIdentity({ certPem: enrolled.certificatePem, keyPem: agentKey });
      const burstClient = operatorClient(loadCredentials(credentials), 120_000);
      const delayFrom = fs.existsSync(loopDelayFile) ? fs.readFileSync(loopDelayFile, 'utf8').split('\n').length - 1 : 0;
      const until = Date.now() + o.seconds * 1000;
      const cpu0 = cpuMs(pid);
      const rssSamples: number[] = [];
      const sampler = async (fn: (i: number) => Promise<unknown>): Promise<{ ms: number[]; errors: number }> => {
        const ms: number[] = [];
        let errors = 0;
        for (let i = 0; Date.now() < until; i++) {
          const t = performance.now();
          try {
            await fn(i);
            ms.push(performance.now() - t);
          } catch {
            errors++;
          }
          await sleep(250);
        }
        return { ms, errors };
      };
      const rssLoop = (async (): Promise<void> => {
        while (Date.now() < until) {
          rssSamples.push(Math.round(rssMiB(pid)));
          await sleep(5000);
        }
      })();
      const [cli, call, fetch] = await Promise.all([
        sampler(() => timed(['status', '--json'])),
        sampler(() => burstClient.getStatus()),
        sampler((i) => link.fetchBundle(certName(i % PER_GROUP), 1)),
        rssLoop,
      ]);
      const cpuBurst = cpuMs(pid) - cpu0;
      const delays = fs
        .readFileSync(loopDelayFile, 'utf8')
        .split('\n')
        .slice(delayFrom)
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { max: number; p99: number; rss: number; heap: number; external: number; buffers: number });
      const stats = (x: { ms: number[]; errors: number }): Record<string, number> => ({ calls: x.ms.length, errors: x.errors, p50Ms: Math.round(pct(x.ms, 50)), p95Ms: Math.round(pct(x.ms, 95)), maxMs: Math.round(Math.max(...x.ms)) });
      const base = median(await Promise.all([0, 1, 2].map(async () => (await timed(['whoami'])).ms)));
      const st = JSON.parse((await timed(['status', '--json'])).out) as Record<string, unknown>;
      result['burst'] = {
        seconds: o.seconds,
        statusCli: stats(cli),
        statusCall: stats(call),
        fetchBundleCall: stats(fetch),
        whoamiCliMs: base,
        eventLoopDelayMs: { p99OfSeconds: pct(delays.map((d) => d.p99), 50), maxOfSecondsP95: pct(delays.map((d) => d.max), 95), max: Math.max(...delays.map((d) => d.max)) },
        controllerRssMiB: rssSamples,
        // Where the controller's memory is, every 5 s of the burst (MiB): JS heap in use, external, array buffers.
        controllerMemory: delays.filter((_, i) => i % 5 === 0).map((d) => `${d.rss}/${d.heap}/${d.external}/${d.buffers}`),
        controllerCpuMs: cpuBurst,
        status: st,
      };
      burstClient.close();
      link.close();
    }

    // Settle: the first passes publish every certificate; wait until the controller idles.
    const settleStart = Date.now();
    // At most 3 minutes: a burst keeps the controller busy for longer (backoff retries).
    for (let last = cpuMs(pid), i = 0; i < 36; i++) {
      await sleep(5000);
      const c = cpuMs(pid);
      if (c - last < 500) break; // under 10 % of a core over 5 s
      last = c;
    }
    result['settledAfterMs'] = Date.now() - settleStart;
    await writeReports(); // fresh lastSeen: every agent online
    await sleep(2000);
    const runs = async (args: string[]): Promise<number> => median(await Promise.all([0, 1, 2].map(async (i) => (await sleep(i * 1500), (await timed(args)).ms))));
    const certs = await runs(['certs', '--json']);
    const certsOut = (await timed(['certs', '--json'])).out;
    const parsed = JSON.parse(certsOut) as { certificates: unknown[] };
    // Server time: the same calls from this process over one open connection (the CLI's
    // own start-up, about a second on a busy 2-core box, left out).
    const client = operatorClient(loadCredentials(credentials), 120_000);
    const callMs = async (fn: () => Promise<unknown>): Promise<number> => {
      const samples: number[] = [];
      for (let i = 0; i < 7; i++) {
        const t = performance.now();
        await fn();
        samples.push(performance.now() - t);
        await sleep(300);
      }
      return Math.round(median(samples));
    };
    const whoamiCall = await callMs(() => client.whoAmI());
    // The controller's CPU over whole listings (its thread is the server time: building,
    // encoding and writing the answers; the client's decoding is not in it), and each
    // page's round trip from here.
    const pageMs: number[] = [];
    const listCpu0 = cpuMs(pid);
    const listCall = await callMs(async () => {
      let pageToken = '';
      do {
        const t = performance.now();
        const page = await client.listCertificates({ pageSize: CERTIFICATES_PAGE, pageToken });
        pageMs.push(performance.now() - t);
        pageToken = page.nextPageToken;
      } while (pageToken !== '');
    });
    const listCpuMs = (cpuMs(pid) - listCpu0) / 7;
    const statusCpu0 = cpuMs(pid);
    const statusCall = await callMs(() => client.getStatus());
    const statusCpuMs = (cpuMs(pid) - statusCpu0) / 7;
    result['controllerRssMiB'] = Math.round(rssMiB(pid));
    result['certsJson'] = {
      cliEndToEndMs: certs,
      callMs: listCall,
      controllerCpuMsPerListing: Math.round(listCpuMs),
      pages: Math.ceil(parsed.certificates.length / CERTIFICATES_PAGE),
      pageCallMs: { p50: Math.round(pct(pageMs, 50)), max: Math.round(Math.max(...pageMs)) },
      bytes: certsOut.length,
      listed: parsed.certificates.length,
    };
    result['status'] = { callMs: statusCall, controllerCpuMs: Math.round(statusCpuMs) };
    result['whoamiCallMs'] = whoamiCall;
    client.close();
    await handle.close();

    if (o.agent) {
      const installed = (d: string): number => {
        const certsDir = path.join(d, 'state', 'certs');
        return fs.existsSync(certsDir) ? fs.readdirSync(certsDir).filter((n) => fs.existsSync(path.join(certsDir, n, 'current'))).length : 0;
      };
      /** One enrolled agent on the 10 idle certificates, started with `nodeArgs`, once it installed them. */
      const idleAgent = async (label: string, words: string[]): Promise<Started> => {
        const isEnv = (w: string): boolean => /^[A-Z_][A-Z0-9_]*=/.test(w);
        const nodeArgs = words.filter((w) => !isEnv(w));
        const env = Object.fromEntries(words.filter(isEnv).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
        const dir = path.join(root, label);
        fs.mkdirSync(dir, { recursive: true });
        const configFile = path.join(dir, 'agent.yaml');
        fs.writeFileSync(
          configFile,
          [
            `stateDir: ${path.join(dir, 'state')}`,
            'log: { level: warn }',
            `controller: { address: "127.0.0.1:${apiPort}", caFile: ${path.join(stateDir, 'ca.pem')}, serverName: localhost }`,
            `nats: { servers: ["${nats.url}"] }`,
            'hooks: { reload: { command: "true", timeout: 30s } }',
            '',
          ].join('\n'),
        );
        const token = await timed(['token', 'create', label, '--label', 'role=idle', '--json']);
        const en = await runCli(['agent', 'enroll', '--config', configFile, '--token', (JSON.parse(token.out) as { token: string }).token]);
        if (en.code !== 0) throw new Error(`enroll: ${en.stderr}`);
        const started = startProcess(label, process.execPath, [...nodeArgs, CLI, 'agent', '--config', configFile], { env: { ...process.env, ...env } });
        idle.push(started);
        await eventually(`${label} installs its 10 certificates`, () => installed(dir) >= idleCerts, 120_000, 250);
        return started;
      };
      // As the agent ships: `certfleet agent` started plainly (the quick start, a shell),
      // and with the node flags of deploy/systemd/certfleet-agent.service's ExecStart.
      const unitFlags = agentUnitNodeFlags();
      const snapshotDir = o.agentHeapSnapshot === undefined ? undefined : tempDir('certfleet-heap-');
      const plain = await idleAgent('idle-1', snapshotDir === undefined ? [] : ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshotDir}`]);
      const unit = await idleAgent('idle-2', unitFlags);
      const custom: Started[] = [];
      for (const [i, words] of o.agentNodeArgs.entries()) custom.push(await idleAgent(`idle-${i + 3}`, words));
      await sleep(20_000);
      result['agentIdleRssMiB'] = Math.round(rssMiB(plain.child.pid ?? 0));
      result['agentIdleRssMiBUnitFlags'] = Math.round(rssMiB(unit.child.pid ?? 0));
      // RSS counts the node binary's code pages too (clean, shared by every node process):
      // the split shows what the agent itself holds.
      const split = rssSplitMiB(plain.child.pid ?? 0);
      result['agentIdleAnonMiB'] = Math.round(split.anon);
      result['agentIdleFileMiB'] = Math.round(split.file);
      const empty = startProcess('empty-node', process.execPath, ['-e', 'setTimeout(() => {}, 60_000)']);
      try {
        await sleep(2_000);
        const e = rssSplitMiB(empty.child.pid ?? 0);
        result['emptyNodeRssMiB'] = { rss: Math.round(e.rss), anon: Math.round(e.anon), file: Math.round(e.file) };
      } finally {
        await empty.stop();
      }
      result['agentUnitFlags'] = unitFlags.join(' ');
      if (custom.length > 0) {
        result['agentIdleRssMiBCustom'] = custom.map((c, i) => {
          const s = rssSplitMiB(c.child.pid ?? 0);
          return { flags: o.agentNodeArgs[i]?.join(' '), rssMiB: Math.round(s.rss), anonMiB: Math.round(s.anon), fileMiB: Math.round(s.file) };
        });
      }
      if (snapshotDir !== undefined && o.agentHeapSnapshot !== undefined) {
        process.kill(plain.child.pid ?? 0, 'SIGUSR2');
        await eventually('heap snapshot written', () => fs.readdirSync(snapshotDir).some((f) => f.endsWith('.heapsnapshot')) && !isGrowing(snapshotDir), 60_000, 1000);
        const file = fs.readdirSync(snapshotDir).find((f) => f.endsWith('.heapsnapshot'));
        if (file !== undefined) fs.copyFileSync(path.join(snapshotDir, file), o.agentHeapSnapshot);
      }
    }

    // What the controller warned about, by message (a lost lease under load shows here).
    const warnings = new Map<string, number>();
    for (const line of controller.output().split('\n')) {
      const m = /"msg":"([^"]*)"/.exec(line);
      if (m?.[1] !== undefined) warnings.set(m[1], (warnings.get(m[1]) ?? 0) + 1);
    }
    result['controllerLogMessages'] = Object.fromEntries(warnings);
    if (o.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n--- controller ---\n${controller.output().slice(-5000)}\n${idle.map((a) => `--- agent ---\n${a.output().slice(-3000)}`).join('\n')}\n`);
    process.exitCode = 1;
  } finally {
    for (const a of idle) await a.stop();
    await controller.stop(30_000);
    await nats.stop();
    await pebble.stop();
  }
}

await main();

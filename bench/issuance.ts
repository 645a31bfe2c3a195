/**
 * Issuance throughput, side by side: certfleet, lego and certbot issuing from one Pebble.
 *
 *   npm run bench:issuance                      # 200 certificates per run, certbot 10
 *   node dist/bench/issuance.js --n 200 --certbot-n 10 --lego-procs 32 --concurrency 64
 *       --only certfleet-http,certfleet-exec,certfleet-rfc2136,lego-exec,lego-rfc2136,lego-webroot,certbot
 *       --cpu-prof DIR   (the controller runs under `node --cpu-prof`, profiles in DIR)
 *       --json           (the rows as JSON on stdout, after the table)
 *
 * Set-up (deterministic, loopback only, nothing downloaded): one BIND (authoritative for
 * bench.test, TSIG updates) is the DNS server Pebble's VA resolves with; `*.h.bench.test`
 * points at the certfleet agent (127.0.0.2), `*.w.bench.test` at a static webroot server
 * the bench runs on 127.0.0.3 (lego and certbot). Pebble runs with VA_NOSLEEP, no
 * rejected nonces and no authorization reuse (test/harness/pebble.ts). The fleet is
 * test/harness/fleet.ts: nats-server, the controller and one agent (nginx, its reload
 * hook) as separate processes.
 *
 * Runs (each N certificates with fresh names, one after the other):
 *  - certfleet HTTP-01 through the agent; DNS-01 through an exec hook (the shell script
 *    below: nsupdate to BIND); DNS-01 through RFC 2136 to BIND. The controller restarts
 *    with only that run's certificates, `renewal.concurrency` (default 64), log level info,
 *    budgets off; the agent restarts as the controller listens (so it knows the new
 *    certificates at once). Timed from the controller's API listening (its start-up
 *    excluded) to its N-th "certificate issued" log line; CPU from /proc/<pid>/stat over
 *    the same window. The agent's CPU includes its start.
 *    "hook CPU" is the controller's reaped children (the exec hook's processes).
 *  - lego: `--lego-procs` processes at a time, one `lego run` per certificate, DNS-01
 *    through the same exec script (`--dns.disable-cp`: no propagation wait), DNS-01 through
 *    lego's own RFC 2136 provider to the same BIND with the same TSIG key (no hook
 *    processes: lego's fastest DNS path), and HTTP-01 into the webroot. CPU: this process's reaped children over the run (lego and the
 *    hooks lego started).
 *  - certbot: sequential `certbot certonly --webroot`, `--certbot-n` certificates.
 *  Each client's account is registered by a warm-up issuance before its timed run.
 * Pebble's CPU (utime+stime) is read over every run's window.
 *
 * The machine's load shows in absolute figures; compare ratios within one run.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startBind, type BindHandle } from '../test/harness/bind.js';
import { startFleet, type Fleet } from '../test/harness/fleet.js';
import { tempDir } from '../test/harness/tmp.js';

interface Options {
  n: number;
  certbotN: number;
  legoProcs: number;
  concurrency: number;
  only: Set<string>;
  cpuProf: string | undefined;
  json: boolean;
}

const RUNS = ['certfleet-http', 'certfleet-exec', 'certfleet-rfc2136', 'lego-exec', 'lego-rfc2136', 'lego-webroot', 'certbot'] as const;

function parseArgs(argv: string[]): Options {
  const o: Options = { n: 200, certbotN: 10, legoProcs: 32, concurrency: 64, only: new Set(RUNS), cpuProf: undefined, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--n') o.n = Number(v());
    else if (a === '--certbot-n') o.certbotN = Number(v());
    else if (a === '--lego-procs') o.legoProcs = Number(v());
    else if (a === '--concurrency') o.concurrency = Number(v());
    else if (a === '--only') o.only = new Set(v().split(','));
    else if (a === '--cpu-prof') o.cpuProf = path.resolve(v());
    else if (a === '--json') o.json = true;
    else throw new Error(`unknown option ${a}`);
  }
  for (const r of o.only) if (!(RUNS as readonly string[]).includes(r)) throw new Error(`unknown run ${r} (known: ${RUNS.join(', ')})`);
  return o;
}

const TICK_MS = 1000 / 100; // USER_HZ: 100 on Linux (sysconf(_SC_CLK_TCK)).

/** utime+stime and cutime+cstime of `pid`, in ms. */
function cpuOf(pid: number): { self: number; children: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the comm: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (1-based).
  const at = (field: number): number => Number(f[field - 3]);
  return { self: (at(14) + at(15)) * TICK_MS, children: (at(16) + at(17)) * TICK_MS };
}

/** The pid of this process's child whose executable is `exe`. */
function childPid(exe: string): number {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && fs.readlinkSync(`/proc/${d}/exe`) === exe) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no child process ${exe}`);
}

interface Row {
  client: string;
  mode: string;
  n: number;
  seconds: number;
  certsPerSecond: number;
  /** CPU of the client (the controller for certfleet), ms per certificate. */
  clientCpuMs: number;
  /** CPU of processes the client started (exec hooks), ms per certificate; included in clientCpuMs for lego and certbot. */
  hookCpuMs: number;
  pebbleCpuMs: number;
  /** certfleet only: the agent's CPU per certificate, and seconds until the agent installed all. */
  agentCpuMs?: number;
  installedSeconds?: number;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => {
      err = (err + c.toString()).slice(-4000);
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${String(code)}:\n${err}`))));
  });
}

async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++] as T;
        await fn(item);
      }
    }),
  );
}

/** Serves `<root>/.well-known/acme-challenge/*` over HTTP (the lego and certbot webroot). */
function startWebroot(root: string, host: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const file = path.join(root, path.normalize(url).replace(/^(\.\.[/\\])+/, ''));
    fs.readFile(file, (err, data) => {
      if (err) {
        res.statusCode = 404;
        res.end();
      } else res.end(data);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const work = tempDir('certfleet-bench-');
  const say = (s: string): void => void process.stderr.write(`${s}\n`);

  const bind: BindHandle = await startBind({
    keys: [{ name: 'bench-key', algorithm: 'hmac-sha256' }],
    zones: [{ name: 'bench.test', updateKey: 'bench-key', records: ['*.h IN A 127.0.0.2', '*.w IN A 127.0.0.3'] }],
  });
  const key = bind.key('bench-key');
  const secretFile = path.join(work, 'bench-key.secret');
  fs.writeFileSync(secretFile, key.secret, { mode: 0o600 });
  const keyFile = path.join(work, 'bench-key.conf');
  fs.writeFileSync(keyFile, `key "${key.name}" { algorithm ${key.algorithm}; secret "${key.secret}"; };\n`, { mode: 0o600 });
  // The exec hook both certfleet and lego call: `present|cleanup FQDN VALUE`.
  const hook = path.join(work, 'dns-hook.sh');
  fs.writeFileSync(
    hook,
    [
      '#!/bin/sh',
      'case "$1" in present) op=add ;; cleanup) op=delete ;; *) exit 0 ;; esac',
      `printf 'server ${bind.address} ${bind.port}\\nupdate %s %s 60 TXT "%s"\\nsend\\n' "$op" "$2" "$3" | exec nsupdate -k ${keyFile}`,
      '',
    ].join('\n'),
    { mode: 0o700 },
  );

  say('starting Pebble, NATS, the controller and an agent...');
  const fleet: Fleet = await startFleet({
    certificates: [{ name: 'warm', names: ['warm.h.bench.test'], agents: 'role=web' }],
    agents: [{ name: 'edge', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['warm'] }],
    dns: {},
    pebbleDnsServer: bind.server,
    renewalYaml: `{ checkInterval: 1s, concurrency: ${opts.concurrency} }`,
    controllerYaml: [
      'budgets: { preset: none }',
      'dns01:',
      `  providers: { bind: { type: rfc2136, server: "${bind.server}", keyName: ${key.name}, algorithm: ${key.algorithm}, secretFile: ${secretFile} }, hook: { type: exec, command: ["${hook}"] } }`,
      `  propagation: { resolvers: ["${bind.server}"], nameservers: ["${bind.address}"], nameserverPort: ${bind.port}, timeout: 30s, interval: 200ms }`,
    ],
  });
  const rows: Row[] = [];
  const caFile = path.join(work, 'pebble-ca.pem');
  fs.writeFileSync(caFile, fleet.pebble.caPem);
  const webrootDir = path.join(work, 'webroot');
  fs.mkdirSync(webrootDir);
  const webroot = await startWebroot(webrootDir, '127.0.0.3', fleet.httpPort);
  try {
    await fleet.waitUntilReady(1);
    const pebblePid = childPid('/usr/bin/pebble');
    const pebbleCpu = (): number => cpuOf(pebblePid).self;
    const baseYaml = fs.readFileSync(fleet.controllerConfig, 'utf8').split('\ncertificates:')[0] ?? '';

    const certfleetRun = async (id: string, mode: string, label: string, extra: string): Promise<void> => {
      const names = Array.from({ length: opts.n }, (_, i) => `c${i}.${label}.bench.test`);
      // The agent learns new certificates at start (GetAssignments); left running it would
      // hear of them only at its next resync, at most one per 10 s (agent/desired).
      const agent = fleet.agents.get('edge');
      if (agent === undefined) throw new Error('no agent');
      await agent.process.stop();
      await fleet.stopController();
      fs.writeFileSync(
        fleet.controllerConfig,
        [
          baseYaml.replace('log: { level: debug }', 'log: { level: info }'),
          'certificates:',
          ...names.map((nm, i) => `  - { name: ${id}-${i}, names: [${nm}], agents: "role=web"${extra} }`),
          '',
        ].join('\n'),
      );
      // node refuses --cpu-prof in NODE_OPTIONS: the profile is taken by a preloaded module.
      if (opts.cpuProf !== undefined) {
        process.env['NODE_OPTIONS'] = `--import ${new URL('./cpuprof.js', import.meta.url).href}`;
        process.env['CERTFLEET_CPU_PROF_DIR'] = path.join(opts.cpuProf, id);
      }
      const started = fleet.startController();
      delete process.env['NODE_OPTIONS'];
      delete process.env['CERTFLEET_CPU_PROF_DIR'];
      let issued = 0;
      let lastIssued = 0;
      let doneResolve: () => void = () => undefined;
      const done = new Promise<void>((r) => (doneResolve = r));
      let buf = '';
      fleet.controller.child.stdout?.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.includes('"msg":"certificate issued"')) {
            issued++;
            if (issued === opts.n) {
              lastIssued = performance.now();
              doneResolve();
            }
          }
        }
      });
      await started;
      agent.restart();
      const agentPid = agent.process.child.pid ?? 0;
      const pid = fleet.controller.child.pid ?? 0;
      const t0 = performance.now();
      const c0 = cpuOf(pid);
      const p0 = pebbleCpu();
      const a0 = cpuOf(agentPid).self;
      const progress = setInterval(() => say(`  ${id}: ${issued}/${opts.n} issued`), 5000);
      const timeout = setTimeout(() => doneResolve(), 900_000);
      await done;
      clearInterval(progress);
      clearTimeout(timeout);
      const c1 = cpuOf(pid);
      const p1 = pebbleCpu();
      if (issued < opts.n) throw new Error(`${id}: only ${issued}/${opts.n} issued in 900 s\n${fleet.controller.output().slice(-5000)}`);
      const seconds = (lastIssued - t0) / 1000;
      // Installed: every certificate's `current` link on the agent.
      const stateDir = agent.stateDir;
      const allInstalled = (): boolean => names.every((_, i) => fs.existsSync(path.join(stateDir, 'certs', `${id}-${i}`, 'current')));
      const limit = performance.now() + 300_000;
      while (!allInstalled() && performance.now() < limit) await new Promise((r) => setTimeout(r, 100));
      const installedSeconds = (performance.now() - t0) / 1000;
      const a1 = cpuOf(agentPid).self;
      rows.push({
        client: 'certfleet',
        mode,
        n: opts.n,
        seconds,
        certsPerSecond: opts.n / seconds,
        clientCpuMs: (c1.self - c0.self) / opts.n,
        hookCpuMs: (c1.children - c0.children) / opts.n,
        pebbleCpuMs: (p1 - p0) / opts.n,
        agentCpuMs: (a1 - a0) / opts.n,
        installedSeconds,
      });
      say(`  ${id}: ${opts.n} in ${seconds.toFixed(1)} s`);
    };

    const legoEnv = { ...process.env, LEGO_CA_CERTIFICATES: caFile, EXEC_PATH: hook, EXEC_PROPAGATION_TIMEOUT: '60', EXEC_POLLING_INTERVAL: '1' };
    const legoPath = path.join(work, 'lego');
    const legoRfc2136Env = {
      ...legoEnv,
      RFC2136_NAMESERVER: bind.server,
      RFC2136_TSIG_KEY: key.name,
      RFC2136_TSIG_ALGORITHM: `${key.algorithm}.`,
      RFC2136_TSIG_SECRET: key.secret,
      RFC2136_PROPAGATION_TIMEOUT: '60',
      RFC2136_POLLING_INTERVAL: '1',
    };
    const legoArgs = (name: string, mode: 'exec' | 'rfc2136' | 'webroot'): string[] => [
      '--server', fleet.pebble.directoryUrl, '--accept-tos', '--email', 'bench@example.test', '--path', legoPath, '--domains', name,
      ...(mode === 'webroot' ? ['--http', '--http.webroot', webrootDir] : ['--dns', mode, '--dns.disable-cp', '--dns.resolvers', bind.server]),
      'run',
    ];
    const childrenCpu = (): number => cpuOf(process.pid).children;
    const clientRun = async (client: string, mode: string, n: number, width: number, once: (name: string) => Promise<void>, label: string): Promise<void> => {
      await once(`warm.${label}.w.bench.test`); // registers the account; not timed
      const names = Array.from({ length: n }, (_, i) => `c${i}.${label}.w.bench.test`);
      const t0 = performance.now();
      const c0 = childrenCpu();
      const p0 = pebbleCpu();
      // A client's failed issuance is counted, not fatal: the other runs of the table still
      // print, and certs/s counts only what was issued.
      const failures: string[] = [];
      await pool(names, width, (name) =>
        once(name).catch((err: unknown) => {
          failures.push(`${name}: ${(err instanceof Error ? err.message : String(err)).split('\n').slice(-2).join(' ').trim()}`);
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const issued = n - failures.length;
      const cpu = (childrenCpu() - c0) / Math.max(issued, 1);
      const label2 = failures.length === 0 ? mode : `${mode} (${failures.length} of ${n} failed)`;
      rows.push({ client, mode: label2, n: issued, seconds, certsPerSecond: issued / seconds, clientCpuMs: cpu, hookCpuMs: 0, pebbleCpuMs: (pebbleCpu() - p0) / Math.max(issued, 1) });
      say(`  ${client} ${mode}: ${issued} of ${n} in ${seconds.toFixed(1)} s`);
      for (const f of failures.slice(0, 3)) say(`    failed ${f}`);
    };

    if (opts.only.has('certfleet-http')) await certfleetRun('h', 'HTTP-01 through one agent', 'h', '');
    if (opts.only.has('certfleet-exec')) await certfleetRun('x', 'DNS-01 exec hook (nsupdate)', 'x', ', challenge: dns-01, dnsProvider: hook');
    if (opts.only.has('certfleet-rfc2136')) await certfleetRun('r', 'DNS-01 RFC 2136 (BIND)', 'r', ', challenge: dns-01, dnsProvider: bind');
    await fleet.stopController();
    if (opts.only.has('lego-exec')) {
      await clientRun(`lego`, `DNS-01 exec (nsupdate), ${opts.legoProcs} processes`, opts.n, opts.legoProcs, (name) => run('lego', legoArgs(name, 'exec'), legoEnv), 'lx');
    }
    if (opts.only.has('lego-rfc2136')) {
      await clientRun(`lego`, `DNS-01 RFC 2136 (BIND), ${opts.legoProcs} processes`, opts.n, opts.legoProcs, (name) => run('lego', legoArgs(name, 'rfc2136'), legoRfc2136Env), 'lr');
    }
    if (opts.only.has('lego-webroot')) {
      await clientRun(`lego`, `HTTP-01 webroot, ${opts.legoProcs} processes`, opts.n, opts.legoProcs, (name) => run('lego', legoArgs(name, 'webroot'), legoEnv), 'lw');
    }
    if (opts.only.has('certbot')) {
      const cb = path.join(work, 'certbot');
      const certbotEnv = { ...process.env, REQUESTS_CA_BUNDLE: caFile };
      await clientRun('certbot', 'HTTP-01 webroot, sequential', opts.certbotN, 1, (name) =>
        run('certbot', [
          'certonly', '--non-interactive', '--agree-tos', '--email', 'bench@example.test', '--server', fleet.pebble.directoryUrl,
          '--webroot', '-w', webrootDir, '-d', name, '--config-dir', path.join(cb, 'config'), '--work-dir', path.join(cb, 'work'),
          '--logs-dir', path.join(cb, 'logs'), '--key-type', 'ecdsa',
        ], certbotEnv), 'cb');
    }
  } finally {
    webroot.close();
    await fleet.stop();
    await bind.stop();
  }
  print(rows, opts);
}

function print(rows: Row[], opts: Options): void {
  const f = (x: number | undefined, d = 1): string => (x === undefined ? '' : x.toFixed(d));
  const lines = [
    `| client | mode | N | s | certs/s | client CPU ms/cert | of which hooks | Pebble CPU ms/cert | agent CPU ms/cert | all installed (s) |`,
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.client} | ${r.mode} | ${r.n} | ${f(r.seconds)} | ${f(r.certsPerSecond)} | ${f(r.client === 'certfleet' ? r.clientCpuMs + r.hookCpuMs : r.clientCpuMs)} | ${r.client === 'certfleet' ? f(r.hookCpuMs) : ''} | ${f(r.pebbleCpuMs)} | ${f(r.agentCpuMs)} | ${f(r.installedSeconds)} |`,
    ),
  ];
  const cf = rows.filter((r) => r.client === 'certfleet');
  const lego = rows.filter((r) => r.client === 'lego');
  const bestLego = lego.reduce<Row | undefined>((b, r) => (b === undefined || r.certsPerSecond > b.certsPerSecond ? r : b), undefined);
  const out: string[] = [...lines, ''];
  if (bestLego !== undefined) {
    for (const r of cf) {
      out.push(
        `${r.mode}: ${(r.certsPerSecond / bestLego.certsPerSecond).toFixed(2)}× the certs/s of the best lego run (${bestLego.mode}); ` +
          `controller CPU (with its hooks) ${((r.clientCpuMs + r.hookCpuMs) / bestLego.clientCpuMs).toFixed(2)}× lego's per certificate`,
      );
    }
  }
  out.push(`host: ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at the end; controller renewal.concurrency ${opts.concurrency}`);
  process.stdout.write(`${out.join('\n')}\n`);
  if (opts.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

/**
 * Failover benchmark (docs/high-availability.md "Failure timings"): the HA fleet of the
 * end-to-end tests (test/harness/ha-fleet.ts: two controller processes on the Vault KV v2
 * double, a three-node nats-server cluster, Pebble behind the ACME proxy, agents with
 * nginx), then N times: SIGKILL the leader, and measure
 *
 *   leader   kill → the surviving controller answers `status` as leader (it is asked
 *            every 100 ms over gRPC, the call `certfleet status` makes);
 *   renewed  kill → the first renewal after the kill is stored: a `renew` sent right after
 *            the kill (to every controller's address, as the CLI does) has a new version
 *            in `history`, asked every 250 ms;
 *   served   kill → every nginx serves that new version (TLS handshake per agent).
 *
 * The killed controller is started again (it becomes the follower) and the fleet settles
 * for one lease time before the next round. Prints each round and p50 / max of each
 * figure; --json prints them as JSON.
 *
 *   npm run bench:failover                       # 5 rounds, lease 15s (the default ttl)
 *   node dist/bench/failover.js --rounds 10 --lease 6s --json
 *
 * Real processes on a shared machine: the figures include process scheduling noise and
 * Pebble's validation time; they are what an operator would see on loopback, not a bound.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { execSync } from 'node:child_process';
import { startHaFleet, type HaController, type HaFleet } from '../test/harness/ha-fleet.js';
import { servedCertificate } from '../test/harness/tls.js';
import { loadCredentials } from '../cli/credentials.js';
import { operatorClient } from '../cli/client.js';

interface Round {
  round: number;
  /** `renew` answers refused before one was taken (no forwarding or no leader yet). */
  renewRefused: number;
  killed: string;
  leaderMs: number;
  renewedMs: number;
  servedMs: number;
  epochBefore: number;
  epochAfter: number;
}

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, lease: { type: 'string', default: '15s' }, json: { type: 'boolean', default: false } },
  strict: true,
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');

const AGENTS = [
  { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web' }, serves: ['web'] },
  { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web' }, serves: ['web'] },
];

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The leader as one controller sees it, over gRPC (undefined when it does not answer). */
async function statusOf(c: HaController): Promise<{ role: string; leaderAddress: string; epoch: number } | undefined> {
  const client = operatorClient(loadCredentials(c.onlyCredentials), 1000);
  try {
    const s = (await client.getStatus()) as unknown as { role?: string; leader?: { address?: string; epoch?: string | number } | null };
    return { role: s.role ?? '', leaderAddress: s.leader?.address ?? '', epoch: Number(s.leader?.epoch ?? 0) };
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

async function newestVersion(fleet: HaFleet): Promise<{ version: number; fingerprint: string }> {
  const h = await fleet.cliJson<{ versions: Array<{ version: { version: number; fingerprint: string } }> }>(['history', 'web']);
  return h.versions.map((v) => v.version).sort((a, b) => b.version - a.version)[0] ?? { version: 0, fingerprint: '' };
}

async function until<T>(what: string | (() => string), check: () => Promise<T | undefined>, intervalMs: number, timeoutMs = 180_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(intervalMs);
  }
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

const fleet = await startHaFleet({
  certificates: [{ name: 'web', names: ['www.example.test'], agents: 'role=web' }],
  agents: AGENTS,
  dns: { 'www.example.test': '127.0.0.2' },
  leaseTtl: values.lease,
  logLevel: 'info',
  controllerYaml: ['budgets: { preset: none }'],
});
const results: Round[] = [];
try {
  await fleet.waitUntilReady(1);
  for (let round = 1; round <= rounds; round++) {
    const { leader, epoch } = await fleet.waitForLeader();
    const survivor = fleet.controllers.find((c) => c !== leader);
    if (!survivor) throw new Error('needs two controllers');
    const before = await newestVersion(fleet);
    const t0 = Date.now();
    await leader.kill();
    // The operator's renew, sent at once: the CLI fails over to the survivor, which hands
    // it to whoever leads (it answers only when a leader took it). Refused (no leader
    // took it in time), it is sent again, as a script would.
    const refusals: string[] = [];
    const renewing = (async () => {
      for (;;) {
        const r = await fleet.cli(['renew', 'web']);
        if (r.code === 0) return r;
        refusals.push(r.stderr.trim());
        await sleep(500);
      }
    })();
    const led = await until('a new leader', async () => {
      const s = await statusOf(survivor);
      return s && s.role === 'leader' && s.epoch > epoch ? { at: Date.now(), epoch: s.epoch } : undefined;
    }, 100);
    const renewed = await until(() => `the renewal after the kill (renew refused ${refusals.length} times${refusals.length ? `, last: ${refusals[refusals.length - 1]}` : ''})`, async () => {
      const n = await newestVersion(fleet);
      return n.version > before.version ? { at: Date.now(), ...n } : undefined;
    }, 250);
    const servedAt = await until('every nginx serving it', async () => {
      for (const a of AGENTS) {
        const got = await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername: 'www.example.test', timeoutMs: 2000 });
        if (got.fingerprint !== renewed.fingerprint) return undefined;
      }
      return Date.now();
    }, 250);
    await renewing;
    if (refusals.length > 0) process.stderr.write(`round ${round}: renew refused ${refusals.length} times before it was taken (last: ${refusals[refusals.length - 1]})\n`);
    const r: Round = { round, renewRefused: refusals.length, killed: leader.name, leaderMs: led.at - t0, renewedMs: renewed.at - t0, servedMs: servedAt - t0, epochBefore: epoch, epochAfter: led.epoch };
    results.push(r);
    if (!values.json) process.stdout.write(`round ${round}: killed ${r.killed} (epoch ${epoch}) → new leader ${r.leaderMs} ms (epoch ${led.epoch}), renewal stored ${r.renewedMs} ms, served everywhere ${r.servedMs} ms\n`);
    await leader.start();
    await fleet.waitForLeader();
    await sleep(fleet.leaseTtlMs);
  }
} finally {
  await fleet.stop();
}

const figure = (key: 'leaderMs' | 'renewedMs' | 'servedMs'): { p50: number; max: number } => {
  const xs = results.map((r) => r[key]);
  return { p50: percentile(xs, 50), max: Math.max(...xs) };
};
let commit = 'unknown';
try {
  commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {
  // Not a git checkout (a packed release): the figures still stand.
}
const summary = {
  date: new Date().toISOString(),
  commit,
  node: process.version,
  cpus: (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm) ?? []).length,
  leaseTtl: values.lease,
  rounds: results.length,
  newLeader: figure('leaderMs'),
  renewed: figure('renewedMs'),
  served: figure('servedMs'),
  results,
};
if (values.json) {
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
} else {
  process.stdout.write(
    [
      `failover, ${summary.rounds} rounds, lease ${summary.leaseTtl}, commit ${commit}, ${summary.date}, ${summary.cpus} CPUs`,
      `  kill -9 → new leader:              p50 ${summary.newLeader.p50} ms, max ${summary.newLeader.max} ms`,
      `  kill -9 → first renewal stored:    p50 ${summary.renewed.p50} ms, max ${summary.renewed.max} ms`,
      `  kill -9 → served by every nginx:   p50 ${summary.served.p50} ms, max ${summary.served.max} ms`,
      '',
    ].join('\n'),
  );
}

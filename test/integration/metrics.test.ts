/**
 * The Prometheus endpoint of a real controller (a whole local fleet: Pebble, NATS, two
 * agents with nginx), scraped over HTTP and read with a small strict parser of the text
 * exposition format written here, independently of the controller's renderer. The
 * values are checked against what the operator CLI reports (`certs --json`,
 * `agents --json`, `budgets --json`), and the body against the key material in the store.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { FileStore } from '../../controller/store/index.js';
import { Instrument, INSTRUMENT_NAMES, METRIC_NAMES, startMetricsServer, type MetricsSources } from '../../controller/metrics/index.js';
import { AgentMetric } from '../../agent/metrics/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { startFleet, type Fleet } from '../harness/fleet.js';
import { eventually, freePort } from '../harness/process.js';

// --- a strict parser of the text exposition format (version 0.0.4) ----------------------

interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface ParsedFamily {
  help: string;
  type: string;
  samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
// Prometheus reads values with Go's strconv.ParseFloat: NaN and Inf in any letter case
// (prom-client writes "Nan" for an event-loop statistic with no sample yet).
const VALUE = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|nan|[+-]?inf(?:inity)?)$/i;

/**
 * Parses an exposition; throws on anything a strict reader should refuse: a sample
 * before its family's HELP and TYPE, a family declared twice or interleaved with
 * another, a bad escape, an unquoted or unterminated label value, a repeated label, a
 * duplicate series, a value that is not a float, a missing final newline.
 */
function parseExposition(text: string): Map<string, ParsedFamily> {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  const families = new Map<string, ParsedFamily>();
  const seriesSeen = new Set<string>();
  let current: string | undefined;
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    // The format ignores empty lines (prom-client separates families with one).
    if (line === '') return;
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (help) {
      const [, name = '', raw = ''] = help;
      assert.ok(!families.has(name), `${where}: family declared twice`);
      assert.ok(!/\\[^\\n]/.test(raw.replace(/\\\\/g, '')), `${where}: bad escape in HELP`);
      families.set(name, { help: raw.replace(/\\n/g, '\n').replace(/\\\\/g, '\\'), type: '', samples: [] });
      current = name;
      return;
    }
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      const fam = families.get(type[1] ?? '');
      assert.ok(fam && current === type[1], `${where}: TYPE without its HELP just before`);
      assert.equal(fam.type, '', `${where}: TYPE twice`);
      fam.type = type[2] ?? '';
      return;
    }
    assert.ok(!line.startsWith('#'), `${where}: unexpected comment`);
    const name = NAME.exec(line)?.[0];
    assert.ok(name, `${where}: no metric name`);
    // A histogram's samples are <name>_bucket, <name>_sum and <name>_count.
    const famName = current !== undefined && families.get(current)?.type === 'histogram' && [`${current}_bucket`, `${current}_sum`, `${current}_count`].includes(name) ? current : name;
    assert.equal(current, famName, `${where}: sample outside its family's block`);
    const fam = families.get(famName);
    assert.ok(fam && fam.type !== '', `${where}: sample before its TYPE`);
    let rest = line.slice(name.length);
    const labels: Record<string, string> = {};
    if (rest.startsWith('{')) {
      rest = rest.slice(1);
      while (!rest.startsWith('}')) {
        const key = LABEL.exec(rest)?.[0];
        assert.ok(key, `${where}: bad label name`);
        assert.ok(!(key in labels), `${where}: label ${key} twice`);
        rest = rest.slice(key.length);
        assert.ok(rest.startsWith('="'), `${where}: label ${key} not ="quoted"`);
        rest = rest.slice(2);
        let value = '';
        for (;;) {
          const ch = rest[0];
          assert.ok(ch !== undefined, `${where}: unterminated label value`);
          if (ch === '"') break;
          if (ch === '\\') {
            const next = rest[1];
            assert.ok(next === '\\' || next === '"' || next === 'n', `${where}: bad escape \\${next ?? ''}`);
            value += next === 'n' ? '\n' : next;
            rest = rest.slice(2);
          } else {
            assert.notEqual(ch, '\n');
            value += ch;
            rest = rest.slice(1);
          }
        }
        labels[key] = value;
        rest = rest.slice(1);
        if (rest.startsWith(',')) {
          rest = rest.slice(1);
          assert.ok(!rest.startsWith('}'), `${where}: trailing comma`);
        } else {
          assert.ok(rest.startsWith('}'), `${where}: expected , or }`);
        }
      }
      rest = rest.slice(1);
    }
    const m = /^ (\S+)$/.exec(rest);
    assert.ok(m && VALUE.test(m[1] ?? ''), `${where}: bad value`);
    const series = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seriesSeen.has(series), `${where}: duplicate series`);
    seriesSeen.add(series);
    const v = m[1] ?? '';
    const lower = v.toLowerCase();
    const value = lower === 'nan' ? NaN : /^\+?inf/.test(lower) ? Infinity : lower.startsWith('-inf') ? -Infinity : Number(v);
    fam.samples.push({ name, labels, value });
  });
  return families;
}

test('the strict parser refuses what a Prometheus server would refuse', () => {
  const ok = '# HELP a_b x\n# TYPE a_b gauge\na_b{l="q\\"\\\\\\n"} 1.5e3\n';
  assert.deepEqual(parseExposition(ok).get('a_b')?.samples, [{ name: 'a_b', labels: { l: 'q"\\\n' }, value: 1500 }]);
  for (const bad of [
    'a_b 1\n', // no HELP/TYPE
    '# HELP a_b x\n# TYPE a_b gauge\na_b{l="x} 1\n', // unterminated
    '# HELP a_b x\n# TYPE a_b gauge\na_b{l="\\t"} 1\n', // bad escape
    '# HELP a_b x\n# TYPE a_b gauge\na_b{l=x} 1\n', // unquoted
    '# HELP a_b x\n# TYPE a_b gauge\na_b 1\na_b 2\n', // duplicate series
    '# HELP a_b x\n# TYPE a_b gauge\na_b one\n', // not a float
    '# HELP a_b x\n# TYPE a_b gauge\na_b 1', // no final newline
    '# HELP a_b x\n# TYPE a_b gauge\na_b{l="1",} 1\n', // trailing comma
  ]) {
    assert.throws(() => parseExposition(bad), `refused: ${JSON.stringify(bad)}`);
  }
});

// --- a real controller ---------------------------------------------------------------------

interface CertJson {
  name: string;
  state: string;
  agentsAssigned: number;
  agentsCurrent: number;
  nextRenewal: string;
  current?: { version: number; fingerprint: string; notBefore: string; notAfter: string };
}
interface AgentJson {
  name: string;
  online: boolean;
  lastSeen: string;
  certificates: Array<{ name: string; version: number; desiredVersion: number; state: string; servedVerified: boolean }>;
}
interface BudgetsJson {
  budgets: Array<{ name: string; available: number; capacity: number; reserved: number }>;
}

const CERTS = [
  { name: 'web', names: ['www.example.test', 'example.test'], agents: 'role=web' },
  { name: 'api', names: ['api.example.test'], agents: 'site=a' },
];

/** The one sample of `name` whose labels include `labels`; fails when there is not exactly one. */
function sample(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string>): number {
  const fam = families.get(name);
  assert.ok(fam, `family ${name} is exposed`);
  const found = fam.samples.filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(found.length, 1, `exactly one ${name}${JSON.stringify(labels)}`);
  return found[0]?.value ?? NaN;
}

describe('the metrics endpoint of a running controller', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let metricsPort: number;
  let agentMetricsPort: number;
  let startedAt: number;
  const scrapeUrl = (): string => `http://127.0.0.1:${metricsPort}/metrics`;

  async function scrape(): Promise<{ text: string; families: Map<string, ParsedFamily> }> {
    const res = await fetch(scrapeUrl());
    assert.equal(res.status, 200);
    const text = await res.text();
    return { text, families: parseExposition(text) };
  }

  before(async () => {
    startedAt = Date.now();
    metricsPort = await freePort('127.0.0.1');
    agentMetricsPort = await freePort('127.0.0.2');
    fleet = await startFleet({
      certificates: CERTS,
      controllerYaml: [`metrics: { listen: "127.0.0.1:${metricsPort}" }`],
      agents: [
        { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web', site: 'a' }, serves: ['web', 'api'], agentYaml: [`metrics: { listen: "127.0.0.2:${agentMetricsPort}" }`] },
        { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web', site: 'b' }, serves: ['web'] },
      ],
      dns: { 'www.example.test': '127.0.0.2', 'example.test': '127.0.0.3', 'api.example.test': '127.0.0.2' },
    });
    await fleet.waitUntilReady(2);
  });

  after(async () => {
    await fleet?.stop();
  });

  test('GET /metrics answers 200 with the text format: the gauges names.ts defines, then its counters and histograms, then the process metrics', async () => {
    const res = await fetch(scrapeUrl());
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const families = parseExposition(await res.text());
    const names = [...families.keys()];
    assert.deepEqual(names.slice(0, METRIC_NAMES.length), [...METRIC_NAMES]);
    assert.deepEqual(
      names.filter((n) => n.startsWith('certfleet_')),
      [...METRIC_NAMES, ...INSTRUMENT_NAMES],
      'every certfleet family is defined in names.ts',
    );
    for (const def of Object.values(Instrument)) assert.equal(families.get(def.name)?.type, def.type, def.name);
    for (const [name, fam] of families) {
      if (METRIC_NAMES.includes(name)) assert.equal(fam.type, 'gauge', name);
      assert.ok(fam.help.length > 10, `${name} has help text`);
    }
    for (const m of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_version_info']) assert.ok(families.has(m), `${m} is exposed`);
    assert.equal(sample(families, 'certfleet_controller_info', {}), 1);
  });

  test('every ACME request of the issuances is counted and timed by resource and status, and the work loop counted its orders', async () => {
    const { families } = await scrape();
    const requests = families.get('certfleet_acme_client_requests_total')?.samples ?? [];
    const pebbleHost = new URL(fleet.pebble.directoryUrl).host;
    const count = (path: string, status: string): number =>
      requests.filter((s) => s.labels['path'] === path && s.labels['status'] === status).reduce((a, s) => a + s.value, 0);
    for (const s of requests) {
      assert.equal(s.labels['scheme'], 'https');
      assert.equal(s.labels['host'], pebbleHost);
    }
    assert.ok(count('directory', '200') >= 1, 'the directory was read');
    assert.ok(count('newAccount', '201') + count('newAccount', '200') >= 1, 'the account was registered');
    assert.ok(count('newOrder', '201') >= 2, 'two orders placed (web, api)');
    assert.ok(count('authz', '200') >= 3, 'three authorizations read (3 names)');
    assert.ok(count('challenge', '200') >= 3, 'three challenges answered');
    assert.ok(count('finalize', '200') >= 2, 'two orders finalized');
    assert.ok(count('cert', '200') >= 2, 'two certificates downloaded');
    assert.deepEqual(requests.filter((s) => s.labels['path'] === 'other'), [], 'every URL is named by its resource');
    // The histogram counts exactly the requests the counter counts.
    const durations = families.get('certfleet_acme_client_request_duration_seconds')?.samples ?? [];
    const histogramCount = durations.filter((s) => s.name.endsWith('_count')).reduce((a, s) => a + s.value, 0);
    assert.equal(histogramCount, requests.reduce((a, s) => a + s.value, 0));
    assert.ok(sample(families, 'certfleet_orders_total', { outcome: 'issued' }) >= 2);
    assert.ok(sample(families, 'certfleet_orders_total', { outcome: 'started' }) >= 2);
    assert.ok(sample(families, 'certfleet_reconcile_passes_total', {}) >= 1);
    assert.ok(sample(families, 'certfleet_reconcile_syncs_total', { action: 'order' }) >= 2);
  });

  test("an agent's own endpoint counts its installs, hook runs and verifications, and shows the installed versions", async () => {
    const res = await fetch(`http://127.0.0.2:${agentMetricsPort}/metrics`);
    assert.equal(res.status, 200);
    const families = parseExposition(await res.text());
    for (const def of Object.values(AgentMetric)) assert.equal(families.get(def.name)?.type, def.type, def.name);
    const agents = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    const edgeA = agents.agents.find((a) => a.name === 'edge-a');
    assert.ok(edgeA);
    for (const c of edgeA.certificates) {
      assert.equal(sample(families, 'certfleet_agent_installed_version', { cert: c.name }), c.version, `${c.name} installed version`);
      assert.ok(sample(families, 'certfleet_agent_installs_total', { cert: c.name, outcome: 'installed' }) >= 1, `${c.name} installed`);
      assert.ok(sample(families, 'certfleet_agent_verify_total', { cert: c.name, result: 'served' }) >= 1, `${c.name} verified`);
    }
    const hooks = families.get('certfleet_agent_hook_duration_seconds')?.samples.filter((s) => s.name.endsWith('_count') && s.labels['result'] === 'ok') ?? [];
    assert.ok(hooks.reduce((a, s) => a + s.value, 0) >= 1, 'the reload hook ran and was timed');
    assert.ok(families.has('process_cpu_seconds_total'), 'the agent serves the process metrics too');
  });

  test('other paths answer 404, other methods 405, HEAD no body', async () => {
    assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/`)).status, 404);
    const post = await fetch(scrapeUrl(), { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const head = await fetch(scrapeUrl(), { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
  });

  test('certificate metrics equal what `certfleet certs --json` reports', async () => {
    const { families } = await scrape();
    const certs = await fleet.cliJson<{ certificates: CertJson[] }>(['certs']);
    for (const c of certs.certificates) {
      assert.ok(c.current, `${c.name} has a current version`);
      const name = { name: c.name };
      assert.equal(sample(families, 'certfleet_certificate_expiration_timestamp_seconds', name), Date.parse(c.current.notAfter) / 1000, `${c.name} expiration`);
      assert.equal(sample(families, 'certfleet_certificate_not_before_timestamp_seconds', name), Date.parse(c.current.notBefore) / 1000, `${c.name} notBefore`);
      assert.equal(sample(families, 'certfleet_certificate_version', name), c.current.version);
      assert.equal(sample(families, 'certfleet_certificate_renewal_timestamp_seconds', name), Date.parse(c.nextRenewal) / 1000, `${c.name} renewal`);
      assert.ok(Date.parse(c.nextRenewal) < Date.parse(c.current.notAfter), 'renewal before expiry');
      assert.equal(sample(families, 'certfleet_certificate_ready_status', { name: c.name, condition: 'True' }), 1);
      assert.equal(sample(families, 'certfleet_certificate_ready_status', { name: c.name, condition: 'False' }), 0);
      assert.equal(sample(families, 'certfleet_certificate_state', { name: c.name, state: 'ready' }), 1);
      assert.equal(sample(families, 'certfleet_certificate_state', { name: c.name, state: 'failed' }), 0);
      assert.equal(sample(families, 'certfleet_certificate_agents_assigned', name), c.agentsAssigned);
      assert.equal(sample(families, 'certfleet_certificate_agents_current', name), c.agentsCurrent);
      assert.equal(sample(families, 'certfleet_issuance_failures', name), 0);
      assert.equal(sample(families, 'certfleet_certificate_deferred', name), 0);
      assert.equal(sample(families, 'certfleet_certificate_pinned', name), 0);
    }
    assert.equal(certs.certificates.find((c) => c.name === 'web')?.agentsAssigned, 2, 'web is assigned to both agents');
  });

  test('per-agent metrics equal what `certfleet agents --json` reports', async () => {
    const { families } = await scrape();
    const agents = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    assert.equal(agents.agents.length, 2);
    for (const a of agents.agents) {
      assert.equal(sample(families, 'certfleet_agent_online', { agent: a.name }), a.online ? 1 : 0);
      const lastSeen = sample(families, 'certfleet_agent_last_seen_timestamp_seconds', { agent: a.name });
      assert.ok(lastSeen * 1000 >= startedAt && lastSeen * 1000 <= Date.now(), `${a.name} last seen during this test`);
      assert.equal(sample(families, 'certfleet_agent_info', { agent: a.name }), 1);
      for (const s of a.certificates) {
        const labels = { agent: a.name, name: s.name };
        assert.equal(sample(families, 'certfleet_agent_certificate_version', labels), s.version, `${a.name}/${s.name} version`);
        assert.equal(sample(families, 'certfleet_agent_certificate_desired_version', labels), s.desiredVersion, `${a.name}/${s.name} desired`);
        assert.equal(sample(families, 'certfleet_agent_certificate_verified', labels), s.servedVerified ? 1 : 0);
        assert.equal(sample(families, 'certfleet_agent_certificate_current', labels), s.state === 'installed' && s.version === s.desiredVersion ? 1 : 0);
      }
    }
    // Assignments come from the selectors: edge-b (site=b) has web only.
    const edgeB = families.get('certfleet_agent_certificate_version')?.samples.filter((s) => s.labels['agent'] === 'edge-b').map((s) => s.labels['name']);
    assert.deepEqual(edgeB, ['web']);
  });

  test('budget metrics equal what `certfleet budgets --json` reports', async () => {
    const { families } = await scrape();
    const res = await fleet.cliJson<BudgetsJson>(['budgets']);
    const capacity = families.get('certfleet_budget_capacity')?.samples ?? [];
    assert.equal(capacity.length, res.budgets.length);
    for (const b of res.budgets) {
      // The CLI's name is "<title> (<key>)".
      const s = capacity.find((x) => b.name.endsWith(`(${x.labels['key'] ?? ''})`));
      assert.ok(s, `a capacity sample for ${b.name}`);
      assert.equal(s.value, b.capacity);
      assert.equal(sample(families, 'certfleet_budget_reserved', s.labels), b.reserved);
      const available = sample(families, 'certfleet_budget_available', s.labels);
      assert.ok(available >= 0 && available <= b.capacity, `${b.name} available ${available}`);
    }
    assert.equal(sample(families, 'certfleet_budget_capacity', { limit: 'newOrdersPerAccount', key: 'account' }), 300, 'the letsencrypt preset');
  });

  test('no metrics line contains key material, a PEM block or a bootstrap token', async () => {
    const { text } = await scrape();
    const store = await FileStore.open({ dir: path.join(fleet.controllerState, 'store'), log: silentLogger() });
    const secrets: string[] = [];
    try {
      for (const cert of ['web', 'api']) {
        const latest = await store.latest(cert);
        const bundle = latest ? await store.getVersion(cert, latest.version) : null;
        assert.ok(bundle);
        for (const pem of [bundle.keyPem, bundle.certPem]) {
          const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
          for (let i = 0; i + 24 <= body.length; i += 24) secrets.push(body.slice(i, i + 24));
        }
      }
    } finally {
      await store.close();
    }
    for (const agent of fleet.agents.values()) secrets.push(agent.token);
    for (const line of text.split('\n')) {
      assert.ok(!line.includes('-----BEGIN'), `PEM armour in: ${line}`);
      for (const s of secrets) assert.ok(!line.includes(s), `secret material in: ${line}`);
    }
  });

  test('a stopped agent shows offline and the value is computed at scrape time', async () => {
    const b = fleet.agents.get('edge-b');
    assert.ok(b);
    const { families: before } = await scrape();
    assert.equal(sample(before, 'certfleet_agent_online', { agent: 'edge-b' }), 1);
    await b.process.stop();
    // api.agentOfflineAfter is 30s in the harness.
    await eventually(
      'edge-b offline in the metrics',
      async () => sample((await scrape()).families, 'certfleet_agent_online', { agent: 'edge-b' }) === 0,
      90_000,
      1000,
    );
    const agents = await fleet.cliJson<{ agents: AgentJson[] }>(['agents']);
    assert.equal(agents.agents.find((a) => a.name === 'edge-b')?.online, false, 'the CLI agrees');
    const { families: after } = await scrape();
    assert.equal(sample(after, 'certfleet_agent_online', { agent: 'edge-a' }), 1, 'edge-a still online');
  });
});

describe('the metrics endpoint alone', () => {
  const sources: MetricsSources = {
    controllerVersion: '0.0.0-test',
    certificates: [],
    summary: (name) => ({ name, state: 'pending', agentsAssigned: 0, agentsCurrent: 0 }),
    runtime: () => undefined,
    desired: () => undefined,
    agents: () => [],
    budgets: () => [],
    versions: () => Promise.resolve([]),
    now: () => Date.now(),
  };

  test('an address already in use fails the start with CONFIG_INVALID naming metrics.listen', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await assert.rejects(startMetricsServer({ listen: { host: '127.0.0.1', port }, sources, log: silentLogger() }), (err) => {
        assert.ok(isCertfleetError(err, ErrorCode.ConfigInvalid));
        assert.match(err.message, /metrics\.listen/);
        return true;
      });
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  test('port 0 binds a free port, and stop closes it (twice is harmless)', async () => {
    const server = await startMetricsServer({ listen: { host: '127.0.0.1', port: 0 }, sources, log: silentLogger() });
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /^certfleet_controller_info\{version="0\.0\.0-test"\} 1$/m);
    await server.stop();
    await server.stop();
    await assert.rejects(fetch(`http://127.0.0.1:${server.port}/metrics`));
  });
});

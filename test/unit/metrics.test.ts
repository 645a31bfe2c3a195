/**
 * Metrics without a controller: the text exposition (escaping, HELP/TYPE, values), what
 * each metric says about a snapshot, the snapshot taken from fake sources, the
 * `metrics` config section, and that docs/metrics.md, the Prometheus alert rules and the
 * Grafana dashboard use only the names controller/metrics/names.ts defines.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import {
  collect,
  createControllerInstruments,
  escapeLabelValue,
  Instrument,
  INSTRUMENT_NAMES,
  Metric,
  METRIC_NAMES,
  renderExposition,
  SnapshotGatherer,
  type MetricsSnapshot,
  type MetricsSources,
} from '../../controller/metrics/index.js';
import { parseControllerConfig } from '../../controller/config/index.js';
import { EndpointNamer } from '../../controller/acme/transport.js';
import { AGENT_METRIC_NAMES, AgentInstruments, AgentMetric } from '../../agent/metrics/index.js';
import type { AgentView } from '../../controller/fleet/index.js';
import type { CertRuntime } from '../../controller/reconcile/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { CertStatus, DesiredRecord, VersionMeta } from '../../shared/model/index.js';

// Compiled to dist/test/unit/: the repository root is three levels up.
const ROOT = new URL('../../../', import.meta.url);
const read = (rel: string): string => fs.readFileSync(new URL(rel, ROOT), 'utf8');

// --- exposition ------------------------------------------------------------------------

test('label values escape backslash, double quote and newline, and nothing else', () => {
  assert.equal(escapeLabelValue('a\\b"c\nd\te'), 'a\\\\b\\"c\\nd\te');
});

test('a family renders HELP, TYPE and one line per sample, with escaped labels and special values', () => {
  const def = { name: 'x_total_seconds', type: 'gauge', help: 'line one\nback\\slash "quoted"', labels: ['a', 'b'] } as const;
  const text = renderExposition([
    {
      def,
      samples: [
        { labels: { a: 'q"1', b: 'x\\y\nz' }, value: 1.5 },
        { labels: { b: '2', a: '1' }, value: NaN },
        { labels: { a: '3', b: '' }, value: Infinity },
        { labels: { a: '4', b: '' }, value: -Infinity },
      ],
    },
    { def: { name: 'empty', type: 'gauge', help: 'h', labels: [] }, samples: [] },
    { def: { name: 'plain', type: 'gauge', help: 'h', labels: [] }, samples: [{ labels: {}, value: 1_700_000_000.123 }] },
  ]);
  assert.equal(
    text,
    [
      '# HELP x_total_seconds line one\\nback\\\\slash "quoted"',
      '# TYPE x_total_seconds gauge',
      'x_total_seconds{a="q\\"1",b="x\\\\y\\nz"} 1.5',
      'x_total_seconds{a="1",b="2"} NaN',
      'x_total_seconds{a="3",b=""} +Inf',
      'x_total_seconds{a="4",b=""} -Inf',
      '# HELP empty h',
      '# TYPE empty gauge',
      '# HELP plain h',
      '# TYPE plain gauge',
      'plain 1700000000.123',
      '',
    ].join('\n'),
  );
});

test('rendering refuses samples whose labels differ from the family, duplicate series and bad names', () => {
  const def = { name: 'm', type: 'gauge', help: 'h', labels: ['a'] } as const;
  const internal = (err: unknown): boolean => isCertfleetError(err, ErrorCode.Internal);
  assert.throws(() => renderExposition([{ def, samples: [{ labels: {}, value: 1 }] }]), internal);
  assert.throws(() => renderExposition([{ def, samples: [{ labels: { a: '1', b: '2' }, value: 1 }] }]), internal);
  assert.throws(() => renderExposition([{ def, samples: [{ labels: { a: '1' }, value: 1 }, { labels: { a: '1' }, value: 2 }] }]), internal);
  assert.throws(() => renderExposition([{ def: { ...def, name: 'bad-name' }, samples: [] }]), internal);
  assert.throws(() => renderExposition([{ def: { ...def, labels: ['__reserved'] }, samples: [] }]), internal);
  assert.throws(() => renderExposition([{ def, samples: [] }, { def, samples: [] }]), internal);
});

/** Every certfleet metric of both binaries: gauges, counters and histograms, the agent's. */
const ALL_DEFS: ReadonlyArray<{ name: string; type: string; help: string; labels: readonly string[] }> = [
  ...Object.values(Metric),
  ...Object.values(Instrument),
  ...Object.values(AgentMetric),
];
const ALL_NAMES = [...METRIC_NAMES, ...INSTRUMENT_NAMES, ...AGENT_METRIC_NAMES];
const HISTOGRAMS = ALL_DEFS.filter((d) => d.type === 'histogram').map((d) => d.name);

/** Whether a name in a query is defined: itself, or a histogram's _bucket/_sum/_count series. */
function defined(name: string): boolean {
  return ALL_NAMES.includes(name) || HISTOGRAMS.some((h) => [`${h}_bucket`, `${h}_sum`, `${h}_count`].includes(name));
}

test('every defined metric has a certfleet_ name, help text, valid labels, and a unique name', () => {
  for (const def of ALL_DEFS) {
    assert.match(def.name, /^certfleet_[a-z0-9_]+$/, def.name);
    assert.ok(def.help.length >= 20, `${def.name} has help`);
    for (const l of def.labels) assert.match(l, /^[a-z][a-z0-9_]*$/, `${def.name} label ${l}`);
    if (def.name.endsWith('_timestamp_seconds')) assert.ok(/Unix seconds|report/.test(def.help), `${def.name} says its unit`);
  }
  assert.equal(new Set(ALL_NAMES).size, ALL_NAMES.length);
  // promtool check metrics: counters end in _total, nothing else does, no _count suffix.
  for (const def of ALL_DEFS) {
    assert.equal(def.name.endsWith('_total'), def.type === 'counter', `${def.name} (${def.type}) and _total`);
    assert.ok(!def.name.endsWith('_count'), `${def.name} does not end in _count`);
  }
});

// --- collect ---------------------------------------------------------------------------

const SNAP: MetricsSnapshot = {
  controllerVersion: '1.2.3',
  certificates: [
    {
      name: 'web',
      state: 'ready',
      desiredVersion: 3,
      notBefore: Date.parse('2025-01-01T00:00:00Z'),
      notAfter: Date.parse('2025-04-01T00:00:00Z'),
      publishedAt: Date.parse('2025-01-01T00:01:00.500Z'),
      pinned: false,
      nextRenewal: Date.parse('2025-03-01T00:00:00Z'),
      failures: 0,
      deferred: false,
      agentsAssigned: 2,
      agentsCurrent: 2,
    },
    { name: 'new', state: 'failed', desiredVersion: 0, notBefore: null, notAfter: null, publishedAt: null, pinned: false, nextRenewal: null, failures: 4, deferred: true, agentsAssigned: 1, agentsCurrent: 0 },
  ],
  agents: [
    { name: 'edge-a', agentVersion: '0.1.0', online: true, lastSeen: Date.parse('2025-02-01T00:00:00Z'), assignments: [{ name: 'web', version: 3, desiredVersion: 3, current: true, verified: true }], refusals: { replay: 2, unsigned: 1 } },
    { name: 'edge-b', agentVersion: '', online: false, lastSeen: null, assignments: [{ name: 'new', version: 0, desiredVersion: 0, current: false, verified: false }] },
  ],
  budgets: [{ limit: 'newOrdersPerAccount', key: 'account', available: 290, capacity: 300, reserved: 60 }],
};

function values(snap: MetricsSnapshot, name: string): Array<[string, number]> {
  const fam = collect(snap).find((f) => f.def.name === name);
  assert.ok(fam, name);
  return fam.samples.map((s) => [JSON.stringify(s.labels), s.value]);
}

test('an HTTP-01 challenge that went ahead without an offline agent is a timestamp per certificate and agent; none, no series', () => {
  assert.deepEqual(values(SNAP, 'certfleet_http01_agent_skipped_timestamp_seconds'), []);
  const skipped: MetricsSnapshot = { ...SNAP, http01Skips: [{ cert: 'web', agent: 'edge-b', at: 1_735_689_600_500 }] };
  assert.deepEqual(values(skipped, 'certfleet_http01_agent_skipped_timestamp_seconds'), [['{"name":"web","agent":"edge-b"}', 1735689600.5]]);
});

test('timestamps are Unix seconds, and a certificate never published has no version, expiry or renewal series', () => {
  assert.deepEqual(values(SNAP, 'certfleet_certificate_expiration_timestamp_seconds'), [['{"name":"web"}', 1743465600]]);
  assert.deepEqual(values(SNAP, 'certfleet_certificate_not_before_timestamp_seconds'), [['{"name":"web"}', 1735689600]]);
  assert.deepEqual(values(SNAP, 'certfleet_certificate_published_timestamp_seconds'), [['{"name":"web"}', 1735689660.5]]);
  assert.deepEqual(values(SNAP, 'certfleet_certificate_renewal_timestamp_seconds'), [['{"name":"web"}', 1740787200]]);
  assert.deepEqual(values(SNAP, 'certfleet_certificate_version'), [['{"name":"web"}', 3]]);
  assert.deepEqual(values(SNAP, 'certfleet_agent_last_seen_timestamp_seconds'), [['{"agent":"edge-a"}', 1738368000]]);
});

test('ready_status has a True and a False series per certificate, exactly one of them 1', () => {
  assert.deepEqual(values(SNAP, 'certfleet_certificate_ready_status'), [
    ['{"name":"web","condition":"True"}', 1],
    ['{"name":"web","condition":"False"}', 0],
    ['{"name":"new","condition":"True"}', 0],
    ['{"name":"new","condition":"False"}', 1],
  ]);
});

test('state is one-hot over the known states, and an unknown state still shows', () => {
  const web = values(SNAP, 'certfleet_certificate_state').filter(([l]) => l.includes('"web"'));
  assert.equal(web.length, 6);
  assert.deepEqual(
    web.filter(([, v]) => v === 1).map(([l]) => l),
    ['{"name":"web","state":"ready"}'],
  );
  const odd = { ...SNAP, certificates: [{ ...SNAP.certificates[0]!, state: 'mystery' }] };
  const states = values(odd, 'certfleet_certificate_state');
  assert.equal(states.length, 7);
  assert.deepEqual(states.filter(([, v]) => v === 1).map(([l]) => l), ['{"name":"web","state":"mystery"}']);
});

test('failures, deferral, agent and budget facts come through as numbers', () => {
  assert.deepEqual(values(SNAP, 'certfleet_issuance_failures'), [['{"name":"web"}', 0], ['{"name":"new"}', 4]]);
  assert.deepEqual(values(SNAP, 'certfleet_certificate_deferred'), [['{"name":"web"}', 0], ['{"name":"new"}', 1]]);
  assert.deepEqual(values(SNAP, 'certfleet_agent_online'), [['{"agent":"edge-a"}', 1], ['{"agent":"edge-b"}', 0]]);
  // SECURITY: refused records per agent and reason; an agent with none has no sample.
  assert.deepEqual(values(SNAP, 'certfleet_agent_records_refused'), [['{"agent":"edge-a","reason":"replay"}', 2], ['{"agent":"edge-a","reason":"unsigned"}', 1]]);
  assert.deepEqual(values(SNAP, 'certfleet_agent_info'), [['{"agent":"edge-a","agent_version":"0.1.0"}', 1], ['{"agent":"edge-b","agent_version":""}', 1]]);
  assert.deepEqual(values(SNAP, 'certfleet_agent_certificate_current'), [['{"agent":"edge-a","name":"web"}', 1], ['{"agent":"edge-b","name":"new"}', 0]]);
  assert.deepEqual(values(SNAP, 'certfleet_budget_available'), [['{"limit":"newOrdersPerAccount","key":"account"}', 290]]);
  assert.deepEqual(values(SNAP, 'certfleet_budget_reserved'), [['{"limit":"newOrdersPerAccount","key":"account"}', 60]]);
  // The whole snapshot renders (labels complete, no duplicate series).
  assert.match(renderExposition(collect(SNAP)), /^certfleet_controller_info\{version="1\.2\.3"\} 1$/m);
});

// --- gather ----------------------------------------------------------------------------

function meta(name: string, version: number, notBefore: string): VersionMeta {
  return { name, version, serial: '01', fingerprint: `fp${version}`, names: ['a.example'], notBefore, notAfter: '2030-01-01T00:00:00Z', issuedAt: notBefore, keyType: 'ecdsa-p256' };
}

function status(name: string, version: number, state: CertStatus['state'], servedVerified: boolean): CertStatus {
  return { name, version, fingerprint: '', desiredVersion: version, state, hook: null, servedVerified, error: '', errorCode: '', updatedAt: '', failedVersion: 0, rollback: '' };
}

test('during a staged rollout each agent is current with the version of its own wave', async () => {
  const desired: DesiredRecord = {
    name: 'web',
    version: 5,
    fingerprint: 'fp5',
    names: ['a.example'],
    notAfter: '2030-01-01T00:00:00Z',
    selector: 'role=web',
    updatedAt: '2029-10-01T00:00:00Z',
    rollout: { from: { version: 4, fingerprint: 'fp4', notAfter: '2029-12-01T00:00:00Z', names: ['a.example'] }, waves: ['wave=1'], released: 1, halted: false, haltReason: '' },
  };
  const agent = (name: string, labels: Record<string, string>, certs: CertStatus[]): AgentView => ({
    registration: { name, labels, certSerial: '', enrolledAt: '' },
    report: { name, http01Address: '', agentVersion: '0.1.0', lastSeen: '2029-10-01T00:00:00Z', certificates: certs },
    online: true,
    removed: false,
  });
  const agents = [
    agent('canary', { role: 'web', wave: '1' }, [status('web', 5, 'installed', true)]),
    agent('later', { role: 'web', wave: '2' }, [status('web', 4, 'installed', false)]),
    agent('behind', { role: 'web', wave: '1' }, [status('web', 4, 'installed', true)]),
    agent('other', { role: 'db' }, []),
  ];
  let lookups = 0;
  const sources: MetricsSources = {
    controllerVersion: 'x',
    certificates: [{ name: 'web', agents: 'role=web' }],
    summary: () => ({ state: 'rolling-out', agentsAssigned: 3, agentsCurrent: 2 }),
    runtime: () => undefined,
    desired: () => desired,
    agents: () => agents,
    budgets: () => [],
    versions: () => {
      lookups++;
      return Promise.resolve([meta('web', 4, '2029-09-01T00:00:00Z'), meta('web', 5, '2029-10-01T00:00:00Z')]);
    },
    now: () => Date.parse('2029-10-02T00:00:00Z'),
  };
  const g = new SnapshotGatherer(sources, silentLogger());
  const snap = await g.snapshot();
  const byAgent = new Map(snap.agents.map((a) => [a.name, a.assignments]));
  assert.deepEqual(byAgent.get('canary'), [{ name: 'web', version: 5, desiredVersion: 5, current: true, verified: true }]);
  assert.deepEqual(byAgent.get('later'), [{ name: 'web', version: 4, desiredVersion: 4, current: true, verified: false }]);
  assert.deepEqual(byAgent.get('behind'), [{ name: 'web', version: 4, desiredVersion: 5, current: false, verified: true }]);
  assert.deepEqual(byAgent.get('other'), [], 'an agent the selector does not select has no assignment');
  assert.equal(snap.certificates[0]?.notBefore, Date.parse('2029-10-01T00:00:00Z'), 'notBefore of the desired version');
  assert.equal(snap.certificates[0]?.state, 'rolling-out');
  await g.snapshot();
  assert.equal(lookups, 1, 'the immutable metadata of the desired version is read from the store once');
  desired.version = 4;
  delete desired.rollout;
  const back = await g.snapshot();
  assert.equal(lookups, 2, 'and again when the desired version changes');
  assert.equal(back.certificates[0]?.notBefore, Date.parse('2029-09-01T00:00:00Z'));
});

test('a store that cannot be read leaves notBefore out but the scrape goes on', async () => {
  const rt = { failures: 2, deferredUntil: Date.parse('2030-01-01T00:00:00Z'), nextCheck: 0, latest: null } as unknown as CertRuntime;
  const sources: MetricsSources = {
    controllerVersion: 'x',
    certificates: [{ name: 'web', agents: '*' }],
    summary: () => ({ state: 'failed', agentsAssigned: 0, agentsCurrent: 0 }),
    runtime: () => rt,
    desired: () => ({ name: 'web', version: 2, fingerprint: '', names: [], notAfter: '2030-06-01T00:00:00Z', selector: '*', updatedAt: '2029-01-01T00:00:00Z' }),
    agents: () => [],
    budgets: () => [],
    versions: () => Promise.reject(new Error('store down')),
    now: () => Date.parse('2029-12-01T00:00:00Z'),
  };
  const snap = await new SnapshotGatherer(sources, silentLogger()).snapshot();
  assert.deepEqual(
    { ...snap.certificates[0] },
    {
      name: 'web',
      state: 'failed',
      desiredVersion: 2,
      notBefore: null,
      notAfter: Date.parse('2030-06-01T00:00:00Z'),
      publishedAt: Date.parse('2029-01-01T00:00:00Z'),
      pinned: false,
      nextRenewal: null,
      failures: 2,
      deferred: true,
      agentsAssigned: 0,
      agentsCurrent: 0,
    },
  );
});

// --- config ----------------------------------------------------------------------------

const BASE = 'stateDir: /var/lib/certfleet\nacme:\n  directoryUrl: https://ca.example/dir\n  termsOfServiceAgreed: true\ncertificates: [{ name: web, names: [www.example.test], agents: "*" }]\n';

test('the metrics section is optional (off when absent) and takes a host:port', () => {
  assert.equal(parseControllerConfig(BASE, '/etc/c.yaml').metrics, undefined);
  assert.deepEqual(parseControllerConfig(`${BASE}metrics: { listen: "127.0.0.1:9464" }\n`, '/etc/c.yaml').metrics, { listen: '127.0.0.1:9464' });
  for (const bad of ['metrics: { listen: "9464" }', 'metrics: {}', 'metrics: { listen: "127.0.0.1:9464", path: /m }']) {
    assert.throws(
      () => parseControllerConfig(`${BASE}${bad}\n`, '/etc/c.yaml'),
      (err) => isCertfleetError(err, ErrorCode.ConfigInvalid) && /metrics/.test(err.message),
      bad,
    );
  }
});

// --- docs, alert rules, dashboard --------------------------------------------------------

/** certfleet_* names in a PromQL expression. */
function metricNamesIn(expr: string): string[] {
  return [...expr.matchAll(/\bcertfleet_[a-z0-9_]+\b/g)].map((m) => m[0]);
}

test('docs/metrics.md has exactly one row per defined metric, with its labels', () => {
  const rows = read('docs/metrics.md')
    .split('\n')
    .map((l) => /^\| `(certfleet_[a-z0-9_]+)` \| ([^|]*) \|/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null);
  assert.deepEqual(
    rows.map((m) => m[1]),
    ALL_NAMES,
  );
  for (const m of rows) {
    const def = ALL_DEFS.find((d) => d.name === m[1]);
    const labels = [...(m[2] ?? '').matchAll(/`([a-z_]+)`/g)].map((x) => x[1]);
    assert.deepEqual(labels, [...(def?.labels ?? [])], `labels of ${m[1]}`);
  }
});

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

test('the Prometheus alert rules parse, are complete, and use only defined metrics', () => {
  const doc = parseYaml(read('deploy/prometheus/alerts.yml'), { uniqueKeys: true }) as { groups: Array<{ name: string; rules: AlertRule[] }> };
  assert.ok(Array.isArray(doc.groups) && doc.groups.length > 0);
  const rules = doc.groups.flatMap((g) => {
    assert.match(g.name, /^certfleet-/);
    return g.rules;
  });
  const names = new Set<string>();
  for (const r of rules) {
    assert.match(r.alert, /^Certfleet[A-Za-z]+$/);
    assert.ok(!names.has(r.alert), `${r.alert} once`);
    names.add(r.alert);
    assert.equal(typeof r.expr, 'string');
    const used = metricNamesIn(r.expr);
    assert.ok(used.length > 0, `${r.alert} uses a certfleet metric`);
    for (const m of used) assert.ok(defined(m), `${r.alert} uses ${m}, which names.ts does not define`);
    assert.equal([...r.expr].filter((c) => c === '(').length, [...r.expr].filter((c) => c === ')').length, `${r.alert} parentheses balance`);
    if (r.for !== undefined) assert.match(r.for, /^\d+[smhd]$/);
    assert.ok(['warning', 'critical'].includes(r.labels?.['severity'] ?? ''), `${r.alert} severity`);
    assert.ok((r.annotations?.['summary'] ?? '').length > 0, `${r.alert} summary`);
  }
  const rule = (name: string): AlertRule => {
    const r = rules.find((x) => x.alert === name);
    assert.ok(r, `alert ${name} exists`);
    return r;
  };
  // The conditions operators asked for, on the metrics that carry them.
  const overdue = rule('CertfleetCertificateRenewalOverdue');
  assert.ok(metricNamesIn(overdue.expr).includes('certfleet_certificate_not_before_timestamp_seconds') && /\/ 3\b/.test(overdue.expr), 'one third of the lifetime');
  const behind = rule('CertfleetAgentNotServingDesiredVersion');
  assert.deepEqual(metricNamesIn(behind.expr), ['certfleet_agent_certificate_current']);
  assert.equal(behind.for, '30m');
  assert.deepEqual(metricNamesIn(rule('CertfleetAgentOffline').expr), ['certfleet_agent_online']);
  assert.deepEqual(metricNamesIn(rule('CertfleetIssuanceFailing').expr), ['certfleet_issuance_failures']);
  assert.ok(metricNamesIn(rule('CertfleetBudgetNearlyExhausted').expr).includes('certfleet_budget_available'));
  // docs/metrics.md lists every alert.
  const docs = read('docs/metrics.md');
  for (const n of names) assert.ok(docs.includes(`| \`${n}\` |`), `docs/metrics.md lists ${n}`);
});

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Array<{ expr: string; refId: string; datasource?: { type: string; uid: string } }>;
  datasource?: { type: string; uid: string };
}

test('the Grafana dashboard takes its data source from a `datasource` variable, so it can be provisioned from a file', () => {
  const dash = JSON.parse(read('deploy/grafana/certfleet.json')) as {
    __inputs?: unknown;
    templating: { list: Array<{ name: string; type: string; query: string }> };
    panels: Panel[];
  };
  const vars = dash.templating.list.filter((v) => v.name === 'datasource');
  assert.equal(vars.length, 1, 'one datasource variable');
  assert.equal(vars[0]?.type, 'datasource');
  assert.equal(vars[0]?.query, 'prometheus');
  // ${DS_...} inputs are only resolved by the import dialog, never by file provisioning.
  assert.equal(dash.__inputs, undefined, 'no import-time inputs');
  assert.ok(!JSON.stringify(dash).includes('${DS_'), 'no ${DS_...} placeholder left');
  const want = { type: 'prometheus', uid: '${datasource}' };
  for (const p of dash.panels) {
    if (p.type === 'row') continue;
    assert.deepEqual(p.datasource, want, `${p.title} uses the variable`);
    for (const t of p.targets ?? []) assert.deepEqual(t.datasource ?? want, want, `${p.title} ${t.refId} uses the variable`);
  }
});

test('the Grafana dashboard is valid JSON whose panels query only defined metrics', () => {
  const dash = JSON.parse(read('deploy/grafana/certfleet.json')) as { title: string; uid: string; panels: Panel[] };
  assert.equal(dash.title, 'certfleet');
  assert.ok(dash.uid.length > 0 && dash.uid.length <= 40);
  const ids = dash.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const used = new Set<string>();
  for (const p of dash.panels) {
    assert.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`);
    if (p.type === 'row') continue;
    assert.ok((p.targets ?? []).length > 0, `${p.title} has a query`);
    for (const t of p.targets ?? []) {
      const names = metricNamesIn(t.expr);
      assert.ok(names.length > 0, `${p.title} ${t.refId} queries a certfleet metric`);
      for (const m of names) {
        assert.ok(defined(m), `${p.title} uses ${m}, which names.ts does not define`);
        used.add(m);
      }
    }
  }
  for (const m of [
    'certfleet_certificate_expiration_timestamp_seconds',
    'certfleet_agent_certificate_version',
    'certfleet_agent_online',
    'certfleet_budget_available',
    'certfleet_acme_client_requests_total',
    'certfleet_acme_client_request_duration_seconds_bucket',
    'certfleet_orders_total',
  ]) {
    assert.ok(used.has(m), `the dashboard shows ${m}`);
  }
});

// --- counters and histograms -------------------------------------------------------------

test('ACME request URLs are named by the resource the CA announced, never by their ids', () => {
  const dir = 'https://ca.test/dir';
  const namer = new EndpointNamer(dir);
  const ok = (data: unknown, headers: Record<string, unknown> = {}): { status: number; headers: Record<string, unknown>; data: unknown } => ({ status: 200, headers, data });
  assert.equal(namer.name(dir), 'directory');
  assert.equal(namer.name('https://ca.test/nonce'), 'other', 'unknown before the directory is read');
  namer.learn('directory', ok({ newNonce: 'https://ca.test/nonce', newAccount: 'https://ca.test/acct', newOrder: 'https://ca.test/order', revokeCert: 'https://ca.test/revoke', keyChange: 'https://ca.test/kc', renewalInfo: 'https://ca.test/ari/' }));
  assert.equal(namer.name('https://ca.test/nonce'), 'newNonce');
  assert.equal(namer.name('https://ca.test/acct'), 'newAccount');
  assert.equal(namer.name('https://ca.test/order'), 'newOrder');
  assert.equal(namer.name('https://ca.test/revoke'), 'revokeCert');
  assert.equal(namer.name('https://ca.test/ari/abc.def'), 'renewalInfo');
  namer.learn('newAccount', ok({}, { location: 'https://ca.test/acct/7' }));
  assert.equal(namer.name('https://ca.test/acct/7'), 'account');
  namer.learn('newOrder', ok({ authorizations: ['https://ca.test/authz/1', 'https://ca.test/authz/2'], finalize: 'https://ca.test/fin/9' }, { location: 'https://ca.test/o/9' }));
  assert.equal(namer.name('https://ca.test/o/9'), 'order');
  assert.equal(namer.name('https://ca.test/authz/2'), 'authz');
  assert.equal(namer.name('https://ca.test/fin/9'), 'finalize');
  namer.learn('authz', ok({ challenges: [{ type: 'http-01', url: 'https://ca.test/chal/1' }, { type: 'dns-01', url: 'https://ca.test/chal/2' }] }));
  assert.equal(namer.name('https://ca.test/chal/2'), 'challenge');
  namer.learn('order', ok({ authorizations: [], finalize: 'https://ca.test/fin/9', certificate: 'https://ca.test/cert/abc' }));
  assert.equal(namer.name('https://ca.test/cert/abc'), 'cert');
  assert.equal(namer.name('https://elsewhere.test/x'), 'other');
});

/** The sample lines of `name` in an exposition, as { labels text -> value }. */
function samplesOf(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out.set(m[2] ?? '', Number(m[3]));
  }
  return out;
}

test('the controller counts ACME requests by CA, resource, method and status, and times them in a histogram', async () => {
  const ins = createControllerInstruments({ defaultMetrics: false });
  ins.acmeRequest({ url: 'https://ca.test:14000/order-plz', method: 'post', endpoint: 'newOrder', status: 201, seconds: 0.03 });
  ins.acmeRequest({ url: 'https://ca.test:14000/order-plz', method: 'post', endpoint: 'newOrder', status: 201, seconds: 0.2 });
  ins.acmeRequest({ url: 'https://ca.test:14000/nonce-plz', method: 'head', endpoint: 'newNonce', status: null, seconds: 30 });
  const text = await ins.registry.text();
  const count = samplesOf(text, 'certfleet_acme_client_requests_total');
  assert.equal(count.get('{scheme="https",host="ca.test:14000",path="newOrder",method="POST",status="201"}'), 2);
  assert.equal(count.get('{scheme="https",host="ca.test:14000",path="newNonce",method="HEAD",status="none"}'), 1);
  const buckets = samplesOf(text, 'certfleet_acme_client_request_duration_seconds_bucket');
  const at = (le: string): number | undefined => buckets.get(`{le="${le}",scheme="https",host="ca.test:14000",path="newOrder",method="POST",status="201"}`);
  assert.equal(at('0.05'), 1);
  assert.equal(at('0.25'), 2);
  assert.equal(at('+Inf'), 2);
  assert.match(text, /^# TYPE certfleet_acme_client_request_duration_seconds histogram$/m);
  assert.doesNotMatch(text, /^process_|^nodejs_/m, 'no default metrics when not asked');
});

test('the work-loop counters start at 0 for every known label value and count passes, decisions and orders', async () => {
  const ins = createControllerInstruments({ defaultMetrics: false });
  let text = await ins.registry.text();
  assert.equal(samplesOf(text, 'certfleet_reconcile_passes_total').get(''), 0);
  assert.equal(samplesOf(text, 'certfleet_orders_total').get('{outcome="issued"}'), 0);
  assert.equal(samplesOf(text, 'certfleet_reconcile_syncs_total').get('{action="defer"}'), 0);
  ins.loop.pass();
  ins.loop.pass();
  ins.loop.sync('order');
  ins.loop.order('started');
  ins.loop.order('failed', 'ACME_RATE_LIMITED');
  ins.loop.order('spooled', 'STORE_UNAVAILABLE');
  text = await ins.registry.text();
  assert.equal(samplesOf(text, 'certfleet_reconcile_passes_total').get(''), 2);
  assert.equal(samplesOf(text, 'certfleet_reconcile_syncs_total').get('{action="order"}'), 1);
  assert.equal(samplesOf(text, 'certfleet_orders_total').get('{outcome="failed"}'), 1);
  assert.equal(samplesOf(text, 'certfleet_orders_total').get('{outcome="spooled"}'), 1);
  assert.deepEqual([...samplesOf(text, 'certfleet_order_failures_total')], [['{code="ACME_RATE_LIMITED"}', 1]], 'only failures count by code');
});

test('the controller registry carries the process and Node.js metrics by default', async () => {
  const text = await createControllerInstruments().registry.text();
  for (const m of ['process_cpu_seconds_total', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    assert.match(text, new RegExp(`^# TYPE ${m} `, 'm'), m);
  }
  // promtool check metrics refuses a gauge named _total (test/integration/promtool.test.ts).
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    assert.equal(name?.endsWith('_total'), type === 'counter', `${name ?? ''} is a ${type ?? ''}`);
  }
});

test('the agent counts installs and verifications per certificate, times hooks, and shows installed versions of held certificates only', async () => {
  const ins = new AgentInstruments({ defaultMetrics: false });
  ins.install('web', 'installed');
  ins.install('web', 'rolled-back');
  ins.verify('web', true);
  ins.verify('web', false);
  ins.hook({ ran: true, exitCode: 0, signal: '', timedOut: false, durationMs: 120, outputTail: '' }, false);
  ins.hook({ ran: true, exitCode: 1, signal: '', timedOut: false, durationMs: 40, outputTail: '' }, true);
  ins.hook({ ran: false, exitCode: 0, signal: '', timedOut: false, durationMs: 0, outputTail: '' }, false);
  const status = (name: string, version: number): CertStatus =>
    ({ name, version, fingerprint: '', desiredVersion: version, state: 'installed', hook: null, servedVerified: true, error: '', errorCode: '', failedVersion: 0, rollback: '', updatedAt: '' });
  ins.observeStatuses([status('web', 3), status('api', 1)]);
  ins.observeStatuses([status('web', 4)]);
  const text = await ins.registry.text();
  assert.equal(samplesOf(text, 'certfleet_agent_installs_total').get('{cert="web",outcome="rolled-back"}'), 1);
  assert.equal(samplesOf(text, 'certfleet_agent_verify_total').get('{cert="web",result="not-served"}'), 1);
  assert.equal(samplesOf(text, 'certfleet_agent_hook_duration_seconds_count').get('{result="ok",rollback="false"}'), 1);
  assert.equal(samplesOf(text, 'certfleet_agent_hook_duration_seconds_sum').get('{result="failed",rollback="true"}'), 0.04);
  assert.equal(samplesOf(text, 'certfleet_agent_hook_duration_seconds_count').size, 2, 'a hook that did not run is not observed');
  assert.deepEqual([...samplesOf(text, 'certfleet_agent_installed_version')], [['{cert="web"}', 4]], 'api is no longer held');
});

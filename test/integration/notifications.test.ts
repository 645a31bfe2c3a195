/**
 * Notifications: the rules as tables, then delivery to a real HTTP receiver on loopback
 * (formats, retry with backoff and Retry-After, refusal, de-duplication, a hung receiver
 * that must not block the caller, no secret URL in the logs).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { fromEvent, fromLife, fromReport, Notifier, parseRetryAfter, type Notification, type ReportedCertificate, type WebhookTarget } from '../../controller/notifications/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { createRootLogger, silentLogger } from '../../shared/log/index.js';
import type { FleetEvent } from '../../shared/model/index.js';

const AT = '2026-01-01T00:00:00.000Z';
const DAY = 86_400_000;

describe('what deserves a notification', () => {
  const failed = (failures: number, retryable = true): FleetEvent => ({
    type: 'failed',
    at: AT,
    cert: 'web',
    message: 'challenge not served',
    details: { code: 'CHALLENGE_NOT_SERVED', retryable, failures },
  });
  const CASES: Array<[string, FleetEvent, string | undefined]> = [
    ['a first retryable failure is not news', failed(1), undefined],
    ['a second one neither', failed(2), undefined],
    ['the third failure in a row is', failed(3), 'renewal-failed'],
    ['a failure that will not be retried is news at once', failed(1, false), 'renewal-failed'],
    ['a budget deferral is', { type: 'deferred', at: AT, cert: 'web', message: 'order deferred', details: { limits: ['newOrders'] } }, 'budget-exhausted'],
    ['an issuance is not', { type: 'issued', at: AT, cert: 'web', message: 'issued' }, undefined],
  ];
  for (const [name, event, kind] of CASES) {
    test(name, () => assert.equal(fromEvent(event, { afterFailures: 3 })?.kind, kind));
  }

  test('renewal failures of one certificate and code share one alert; another code is a new one', () => {
    const a = fromEvent(failed(3), { afterFailures: 3 })!;
    const b = fromEvent(failed(4), { afterFailures: 3 })!;
    const c = fromEvent({ ...failed(5), details: { code: 'ACME_PROBLEM', failures: 5, retryable: true } }, { afterFailures: 3 })!;
    assert.equal(a.dedupKey, b.dedupKey);
    assert.notEqual(a.dedupKey, c.dedupKey);
  });

  const cert = (over: Partial<ReportedCertificate>): ReportedCertificate => ({
    name: 'web',
    state: 'installed',
    version: 1,
    desiredVersion: 1,
    failedVersion: 0,
    error: '',
    errorCode: '',
    rollback: '',
    ...over,
  });
  test('an agent newly reporting a failed install is news, with its rollback', () => {
    const n = fromReport('edge-a', cert({}), cert({ state: 'failed', desiredVersion: 2, failedVersion: 2, error: 'reload hook exited 1', errorCode: 'HOOK_FAILED', rollback: 'restored' }), AT)!;
    assert.equal(n.kind, 'install-failed');
    assert.equal(n.version, 2);
    assert.match(n.summary, /edge-a could not install web v2: reload hook exited 1; version 1 serves again/);
    assert.equal(n.severity, 'warning');
  });
  test('the same failure reported again is not news', () => {
    const failedNow = cert({ state: 'failed', desiredVersion: 2, failedVersion: 2, errorCode: 'HOOK_FAILED' });
    assert.equal(fromReport('edge-a', failedNow, failedNow, AT), undefined);
  });
  test('a failed rollback is critical', () => {
    assert.equal(fromReport('edge-a', undefined, cert({ state: 'failed', failedVersion: 2, rollback: 'restore-failed' }), AT)?.severity, 'critical');
  });

  const T0 = Date.UTC(2026, 0, 1);
  const life = { name: 'web', version: 4, notBefore: T0, notAfter: T0 + 90 * DAY };
  test('two thirds into its life a certificate is not yet news', () => assert.equal(fromLife(life, T0 + 59 * DAY), undefined));
  test('in its last third it is, once per version', () => {
    const n = fromLife(life, T0 + 61 * DAY)!;
    assert.equal(n.kind, 'last-third');
    assert.equal(n.dedupKey, 'last-third/web/4');
    assert.equal(n.severity, 'warning');
  });
  test('in its last tenth it is critical, and expired says so', () => {
    assert.equal(fromLife(life, T0 + 85 * DAY)?.severity, 'critical');
    assert.match(fromLife(life, T0 + 91 * DAY)!.summary, /has expired/);
  });

  test('Retry-After in seconds or as a date', () => {
    assert.equal(parseRetryAfter('7', 0), 7000);
    assert.equal(parseRetryAfter(new Date(T0 + 5000).toUTCString(), T0), 5000);
    assert.equal(parseRetryAfter(null, 0), undefined);
  });
});

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

describe('webhook delivery to a local receiver', () => {
  let server: http.Server;
  let base: string;
  const received: Received[] = [];
  /** What the receiver answers next, per path: a list of statuses consumed in order (then 200). */
  const script = new Map<string, Array<number | 'hang'>>();

  before(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const path = req.url ?? '/';
        received.push({ path, headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        const next = script.get(path)?.shift() ?? 200;
        if (next === 'hang') return; // never answers
        if (next === 503) res.setHeader('retry-after', '0');
        res.writeHead(next).end();
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const sample: Notification = {
    kind: 'install-failed',
    severity: 'warning',
    summary: 'edge-a could not install web v2: reload hook exited 1',
    cert: 'web',
    agent: 'edge-a',
    version: 2,
    at: AT,
    details: { code: 'HOOK_FAILED' },
    dedupKey: 'install-failed/edge-a/web/2',
  };
  const target = (path: string, over: Partial<WebhookTarget> = {}): WebhookTarget => ({ name: path.slice(1), url: `${base}${path}`, format: 'json', headers: {}, kinds: [], ...over });
  const at = (path: string) => received.filter((r) => r.path === path);
  async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
    const end = systemClock.now() + ms;
    while (!check()) {
      if (systemClock.now() > end) throw new Error(`timed out waiting for ${what}`);
      await systemClock.sleep(10);
    }
  }

  test('json, slack and alertmanager bodies, with the configured headers', async () => {
    const n = new Notifier({
      clock: systemClock,
      log: silentLogger(),
      targets: [
        target('/json', { headers: { authorization: 'Bearer hook-secret' } }),
        target('/slack', { format: 'slack' }),
        target('/am/api/v2/alerts', { format: 'alertmanager' }),
      ],
    });
    n.send(sample);
    await until('three deliveries', () => at('/json').length + at('/slack').length + at('/am/api/v2/alerts').length === 3);
    await n.stop();
    const json = at('/json')[0]!;
    assert.equal(json.headers.authorization, 'Bearer hook-secret');
    assert.deepEqual(json.body, { source: 'certfleet', kind: 'install-failed', severity: 'warning', summary: sample.summary, cert: 'web', agent: 'edge-a', version: 2, at: AT, details: { code: 'HOOK_FAILED' } });
    assert.deepEqual(at('/slack')[0]!.body, { text: `:warning: certfleet install-failed: ${sample.summary}` });
    const [alert] = at('/am/api/v2/alerts')[0]!.body as Array<Record<string, Record<string, string>>>;
    assert.deepEqual(alert!['labels'], { alertname: 'CertfleetInstallFailed', severity: 'warning', source: 'certfleet', cert: 'web', agent: 'edge-a' });
    assert.equal(alert!['annotations']!['summary'], sample.summary);
  });

  test('a receiver that fails twice gets the notification on the third attempt, exactly once', async () => {
    script.set('/flaky', [503, 500]);
    const outcomes: string[] = [];
    const n = new Notifier({ clock: systemClock, log: silentLogger(), baseDelayMs: 5, targets: [target('/flaky')], onOutcome: (_t, o, _n, attempts) => outcomes.push(`${o} after ${attempts}`) });
    n.send(sample);
    await until('delivered', () => outcomes.length === 1);
    await n.stop();
    assert.deepEqual(outcomes, ['delivered after 3']);
    assert.equal(at('/flaky').length, 3);
  });

  test('a 4xx refusal is not retried; maxAttempts bounds a receiver that stays down', async () => {
    script.set('/refuses', [400]);
    script.set('/down', [500, 500, 500, 500]);
    const outcomes: string[] = [];
    const n = new Notifier({
      clock: systemClock,
      log: silentLogger(),
      baseDelayMs: 5,
      maxAttempts: 3,
      targets: [target('/refuses'), target('/down')],
      onOutcome: (t, o, _n, attempts) => outcomes.push(`${t} ${o} after ${attempts}`),
    });
    n.send(sample);
    await until('both outcomes', () => outcomes.length === 2);
    await n.stop();
    assert.deepEqual(outcomes.sort(), ['down dropped after 3', 'refuses dropped after 1']);
  });

  test('the same alert twice within the window is sent once; a target only gets the kinds it asked for', async () => {
    const n = new Notifier({ clock: systemClock, log: silentLogger(), targets: [target('/dedup'), target('/only-budget', { kinds: ['budget-exhausted'] })] });
    n.send(sample);
    n.send({ ...sample, at: '2026-01-01T00:05:00.000Z' });
    n.send({ ...sample, dedupKey: 'install-failed/edge-b/web/2', agent: 'edge-b' });
    await until('two deliveries', () => at('/dedup').length === 2);
    await systemClock.sleep(50);
    await n.stop();
    assert.equal(at('/dedup').length, 2);
    assert.equal(at('/only-budget').length, 0);
  });

  test('a receiver that never answers does not block the caller, and stop() ends its loop', async () => {
    script.set('/hangs', ['hang']);
    const n = new Notifier({ clock: systemClock, log: silentLogger(), targets: [target('/hangs', { timeoutMs: 60_000 })] });
    n.send(sample);
    n.send({ ...sample, dedupKey: 'other' });
    // send() returned without waiting for the receiver: both are queued.
    assert.equal(n.pending, 2);
    await until('the first request arrives', () => at('/hangs').length === 1);
    const stopped = systemClock.now();
    await n.stop();
    assert.ok(systemClock.now() - stopped < 5000, 'stop waited for the hung receiver');
  });

  test('the webhook URL and header values never appear in the logs', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    script.set('/secret-path-abc123', [503, 400]);
    const outcomes: string[] = [];
    const n = new Notifier({
      clock: systemClock,
      log: createRootLogger({ name: 'test', level: 'debug', destination: sink }),
      baseDelayMs: 5,
      targets: [target('/secret-path-abc123', { name: 'ops-slack', headers: { authorization: 'Bearer tok-xyz789' } })],
      onOutcome: (_t, o) => outcomes.push(o),
    });
    n.send(sample);
    await until('an outcome', () => outcomes.length === 1);
    await n.stop();
    const text = lines.join('');
    assert.match(text, /ops-slack/);
    assert.doesNotMatch(text, /secret-path-abc123|tok-xyz789/);
  });
});

/**
 * The web console (`certfleet console`, docs/console.md) end to end: a real fleet (Pebble,
 * NATS, the controller, two agents each with its own nginx) carrying the quick start's
 * certificates web, api and shop, the console as its own `certfleet console` process with
 * the admin's credentials, and a real headless Chromium (Debian package) driving the page
 * over the DevTools protocol.
 *
 * Proves: the overview renders every certificate and both agents; a renew and then a
 * rollback made by clicking in the page (and accepting its confirmation) reach the fleet,
 * nginx on both nodes serves the rolled-back version, the agent × version matrix and the
 * live event feed in the page show it; a viewer's console disables the changes and the
 * controller refuses the viewer's rollback (403 PERMISSION_DENIED shown as the
 * controller's message); and the console refuses requests without its secret, under a
 * foreign Host header (DNS rebinding), and changes from another Origin (CSRF).
 *
 * With CERTFLEET_SCREENSHOTS=DIR the pages are saved as PNGs there (docs/console/).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { CLI, startFleet, type Fleet } from '../harness/fleet.js';
import { startChromium, type Browser, type Page } from '../harness/chromium.js';
import { eventually, startProcess, type Started } from '../harness/process.js';
import { servedCertificate } from '../harness/tls.js';

const SCREENSHOTS = process.env['CERTFLEET_SCREENSHOTS'];

const AGENTS = [
  { name: 'edge-a', ip: '127.0.0.2', labels: { role: 'web', site: 'a' }, serves: ['web', 'api'] },
  { name: 'edge-b', ip: '127.0.0.3', labels: { role: 'web', site: 'b' }, serves: ['web', 'shop'] },
];

interface HistoryJson {
  versions: Array<{ version: { version: number; fingerprint: string }; agents: string[]; desired: boolean }>;
}

/** Starts `certfleet console` on a free port with `credentials`; resolves with its address (with the secret). */
async function startConsoleProcess(credentials: string): Promise<{ proc: Started; url: string }> {
  const proc = startProcess('console', process.execPath, [CLI, 'console', '--listen', '127.0.0.1:0', '--credentials', credentials]);
  const url = await eventually(
    'the console prints its address',
    () => /^(http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]+)$/m.exec(proc.output())?.[1],
    30_000,
    100,
  );
  return { proc, url };
}

/** One raw HTTP request to the console, with exactly the headers given. */
function raw(url: string, opts: { method?: string; path: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, setHost: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end(opts.body);
  });
}

describe('web console against a real fleet, in a real headless Chromium', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let browser: Browser;
  let admin: { proc: Started; url: string };
  let page: Page;

  const shot = async (p: Page, name: string): Promise<void> => {
    if (SCREENSHOTS !== undefined && SCREENSHOTS !== '') await p.screenshot(path.join(SCREENSHOTS, `${name}.png`), { fullPage: true });
  };
  const history = (): Promise<HistoryJson> => fleet.cliJson<HistoryJson>(['history', 'web']);
  const failure = (err: unknown): Error =>
    new Error(`${(err as Error).message}\npage errors: ${page?.errors.join('\n') ?? ''}\nconsole: ${admin?.proc.output() ?? ''}\n${fleet.logs()}`);

  before(async () => {
    fleet = await startFleet({
      // The quick start's HTTP-01 certificates (deploy/examples/quickstart-controller.yaml).
      certificates: [
        { name: 'web', names: ['www.example.test', 'example.test'], agents: 'role=web' },
        { name: 'api', names: ['api.example.test'], agents: 'site=a' },
        { name: 'shop', names: ['shop.example.test'], agents: 'site=b' },
      ],
      agents: AGENTS,
      dns: { 'www.example.test': '127.0.0.2', 'example.test': '127.0.0.3', 'api.example.test': '127.0.0.2', 'shop.example.test': '127.0.0.3' },
    });
    await fleet.waitUntilReady(3);
    admin = await startConsoleProcess(fleet.credentials);
    browser = await startChromium();
    page = await browser.newPage();
  });

  after(async () => {
    await browser?.stop();
    await admin?.proc.stop();
    await fleet?.stop();
  });

  test('the overview shows every certificate by state, both agents online and the budgets', async () => {
    try {
      await page.goto(admin.url);
      // The secret moved from the address into a cookie.
      assert.equal(await page.evaluate<string>('location.search'), '');
      await page.waitFor('the overview', "document.body.dataset.loaded === 'overview'");
      const rows = await page.evaluate<string[][]>(
        "[...document.querySelectorAll('#certs tbody tr')].map((r) => [r.dataset.cert, r.children[1].textContent, r.children[5].textContent])",
      );
      assert.deepEqual(rows, [
        ['api', 'ready', '1/1'],
        ['shop', 'ready', '1/1'],
        ['web', 'ready', '2/2'],
      ]);
      assert.equal(await page.evaluate<string>("document.getElementById('cert-states').textContent"), 'ready 3');
      assert.equal(await page.evaluate<string>("document.getElementById('stat-agents').textContent"), '2/2');
      assert.deepEqual(await page.evaluate<string[]>("[...document.querySelectorAll('#agents tbody tr')].map((r) => r.dataset.agent + ' ' + r.children[1].textContent)"), [
        'edge-a online',
        'edge-b online',
      ]);
      assert.ok(await page.evaluate<boolean>("document.getElementById('budgets') !== null"), 'budgets shown');
      assert.match(await page.evaluate<string>("document.getElementById('whoami').textContent"), /^admin · role admin$/);
      assert.deepEqual(page.errors, [], 'no script error, CSP violation or failed load');
      await shot(page, 'overview');
    } catch (err) {
      throw failure(err);
    }
  });

  test('renew and rollback clicked in the page reach nginx; the matrix and the live event feed show it', async () => {
    try {
      const v1 = (await history()).versions.find((v) => v.version.version === 1)?.version;
      assert.ok(v1, 'version 1 issued');

      await page.evaluate("location.hash = '#/cert/web'");
      await page.waitFor('the certificate page', "document.body.dataset.loaded === 'cert' && document.getElementById('matrix') !== null");
      // Renew in the page: a confirmation, then the controller's answer in the banner.
      await page.evaluate("document.getElementById('renew').click()");
      await page.waitFor('the renew answer', "!document.getElementById('banner').hidden && document.getElementById('banner').className === 'ok'");
      assert.match(page.dialogs.at(-1) ?? '', /^Renew web now\?/);
      await eventually(
        'version 2 served by both agents',
        async () => {
          const c = (await fleet.cliJson<{ certificates: Array<{ name: string; desiredVersion: number; agentsCurrent: number; agentsAssigned: number; state: string }> }>(['certs'])).certificates.find((x) => x.name === 'web');
          return c?.desiredVersion === 2 && c.agentsCurrent === 2 && c.state === 'ready';
        },
        120_000,
        500,
      );

      // Reload the certificate page (v2 now desired) and roll back to v1 with the default choice.
      await page.evaluate("location.hash = '#/'");
      await page.waitFor('the overview', "document.body.dataset.loaded === 'overview'");
      await page.evaluate("location.hash = '#/cert/web'");
      await page.waitFor(
        'the rollback choice v1',
        "document.body.dataset.loaded === 'cert' && document.getElementById('rollback-to') && document.getElementById('rollback-to').value === '1' && !document.getElementById('rollback').disabled",
      );
      await page.evaluate("document.getElementById('rollback').click()");
      await page.waitFor('the rollback answer', "document.getElementById('banner').className === 'ok' && /rolled back/.test(document.getElementById('banner').textContent)");
      assert.match(page.dialogs.at(-1) ?? '', /^Roll web back from v2 to v1 and pin it there\?/);
      assert.equal(await page.evaluate<string>("document.getElementById('banner').textContent"), 'web: rolled back from v2 to v1 and pinned; agents are installing it.');

      // nginx on both nodes serves v1 again, for every name.
      for (const a of AGENTS) {
        for (const name of ['www.example.test', 'example.test']) {
          await eventually(
            `${a.name} serves v1 for ${name}`,
            async () => (await servedCertificate({ host: a.ip, port: fleet.tlsPort, servername: name })).fingerprint === v1.fingerprint,
            90_000,
            300,
          );
        }
      }
      // The page catches up (it refreshes every 5 s): both agents serve v1 in the matrix.
      await page.waitFor(
        'the matrix shows v1 served by both agents',
        "[...document.querySelectorAll('#matrix tbody tr')].map((r) => r.dataset.agent + ':' + [...r.querySelectorAll('td.serving')].map((c) => c.dataset.version).join()).join(' ') === 'edge-a:1 edge-b:1'",
        60_000,
      );
      assert.match(await page.evaluate<string>("document.getElementById('desired').textContent"), /^v1 \(newest v2\), pinned to v1 by a rollback$/);
      assert.equal(await page.evaluate<boolean>("document.getElementById('release').disabled"), false, 'release offered while pinned');
      await shot(page, 'certificate');

      // The live feed shows the rollback, by the admin.
      await page.evaluate("location.hash = '#/events'");
      const row = await page.waitFor<string>(
        'the rolled-back event in the feed',
        "(() => { const r = document.querySelector('#events tbody tr[data-type=\"rolled-back\"][data-cert=\"web\"]'); return r ? [...r.children].map((c) => c.textContent).slice(1).join('|') : ''; })()",
      );
      assert.match(row, /^rolled-back\|web\|-\|v1\|admin\|/);
      assert.equal(await page.evaluate<string>("document.getElementById('live-state').textContent"), 'live');
      await shot(page, 'events');
      // An event that happens while the feed is open arrives without a reload: release from the CLI.
      const rel = await fleet.cli(['release', 'web']);
      assert.equal(rel.code, 0, rel.stderr);
      await page.waitFor('the released event arrives live', "document.querySelector('#events tbody tr[data-type=\"released\"][data-cert=\"web\"]') !== null", 30_000);
      assert.deepEqual(page.errors, [], 'no script error, CSP violation or failed load');
    } catch (err) {
      throw failure(err);
    }
  });

  test("a viewer's console offers no changes, and the controller refuses the viewer's rollback", async () => {
    const file = path.join(fleet.root, 'vera.json');
    const created = await fleet.cli(['operators', 'create', 'vera', '--role', 'viewer', '--out', file]);
    assert.equal(created.code, 0, created.stderr);
    const viewer = await startConsoleProcess(file);
    const vpage = await browser.newPage();
    try {
      const desiredBefore = (await history()).versions.find((v) => v.desired)?.version.version;
      await vpage.goto(`${viewer.url}#/cert/web`);
      await vpage.waitFor('the certificate page', "document.body.dataset.loaded === 'cert'");
      assert.deepEqual(await vpage.evaluate<boolean[]>("['renew', 'rollback', 'release'].map((id) => document.getElementById(id).disabled)"), [true, true, true]);
      assert.match(await vpage.evaluate<string>("document.querySelector('.note').textContent"), /role \(viewer\) may only read/);
      // The page's own request, as a changed page script would send it: the console forwards it and the controller refuses.
      const refused = await vpage.evaluate<{ status: number; error: { code: string; message: string } }>(
        "fetch('/api/certs/web/rollback', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' }).then(async (r) => ({ status: r.status, ...(await r.json()) }))",
      );
      assert.equal(refused.status, 403);
      assert.equal(refused.error.code, 'PERMISSION_DENIED');
      assert.match(refused.error.message, /operator vera has role viewer, which may not roll certificates back/);
      assert.equal((await history()).versions.find((v) => v.desired)?.version.version, desiredBefore, 'nothing changed');
      await shot(vpage, 'certificate-viewer');
    } catch (err) {
      throw new Error(`${(err as Error).message}\nviewer console: ${viewer.proc.output()}`);
    } finally {
      await vpage.close();
      await viewer.proc.stop();
    }
  });

  test('the console refuses requests without its secret, under another Host, and changes from another Origin', async () => {
    const u = new URL(admin.url);
    const token = u.searchParams.get('token') ?? '';
    const host = u.host;
    const cookie = `certfleet_console_${u.port}=${token}`;
    const desiredBefore = (await history()).versions.find((v) => v.desired)?.version.version;

    const noSecret = await raw(admin.url, { path: '/api/certs', headers: { Host: host } });
    assert.equal(noSecret.status, 401, noSecret.body);
    const wrongSecret = await raw(admin.url, { path: '/api/certs', headers: { Host: host, Cookie: `certfleet_console_${u.port}=x${token.slice(1)}` } });
    assert.equal(wrongSecret.status, 401, wrongSecret.body);
    const ok = await raw(admin.url, { path: '/api/certs', headers: { Host: host, Cookie: cookie } });
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual((JSON.parse(ok.body) as { certificates: Array<{ name: string }> }).certificates.map((c) => c.name).sort(), ['api', 'shop', 'web']);
    // DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own name as Host.
    const rebound = await raw(admin.url, { path: '/api/certs', headers: { Host: `evil.example:${u.port}`, Cookie: cookie } });
    assert.equal(rebound.status, 403, rebound.body);
    // CSRF: even with the cookie, a change from another origin (or none) is refused, and so is GET.
    const post = (headers: Record<string, string>): Promise<{ status: number; body: string }> =>
      raw(admin.url, { method: 'POST', path: '/api/certs/web/rollback', headers: { Host: host, Cookie: cookie, 'Content-Type': 'application/json', ...headers }, body: '{}' });
    const foreign = await post({ Origin: 'http://evil.example' });
    assert.equal(foreign.status, 403, foreign.body);
    assert.match(foreign.body, /only the console's own page may ask/);
    assert.equal((await post({})).status, 403);
    const form = await raw(admin.url, { method: 'POST', path: '/api/certs/web/rollback', headers: { Host: host, Cookie: cookie, Origin: `http://${host}`, 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'to=1' });
    assert.equal(form.status, 400, form.body);
    const get = await raw(admin.url, { path: '/api/certs/web/rollback', headers: { Host: host, Cookie: cookie } });
    assert.equal(get.status, 405, get.body);
    assert.equal((await history()).versions.find((v) => v.desired)?.version.version, desiredBefore, 'nothing changed');
    // The page itself is no exception: without the secret there is nothing to see.
    const pageNoSecret = await raw(admin.url, { path: '/', headers: { Host: host } });
    assert.equal(pageNoSecret.status, 401);
    assert.doesNotMatch(pageNoSecret.body, /console\.js/);
  });
});

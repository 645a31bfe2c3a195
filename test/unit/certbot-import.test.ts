/**
 * `certfleet import-certbot` without certbot: the renewal-configuration parser, the
 * authenticator mapping, the refusals, and the import into a real file store.
 *
 * The certbot directories here are BUILT BY THIS TEST in certbot's layout
 * (renewal/<lineage>.conf as certbot 2.1 writes it, live/<lineage>/*.pem symlinks into
 * archive/<lineage>/*1.pem) with certificates from test/harness/certs.ts, not made by
 * certbot. The run with a real certbot issuing from Pebble is
 * test/e2e/certbot-import.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { certNameFor, importCertbot, parseRenewalConf, planImport, readCertbotDir, type ImportOptions } from '../../controller/certbot/index.js';
import { parseControllerConfig } from '../../controller/config/index.js';
import { FileStore } from '../../controller/store/index.js';
import { runCli, type CliIo } from '../../cli/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { parseCertificate } from '../../shared/pki/index.js';
import { makeLeaf, sharedCa, type TestLeaf } from '../harness/certs.js';
import { tempDir } from '../harness/tmp.js';

const DAY = 86_400_000;
const SERVER = 'https://acme-v02.api.letsencrypt.org/directory';
/** A TSIG secret (32 random-looking bytes, base64) for the rfc2136 cases. */
const TSIG_SECRET = 'm2Ft0ZLEFrM3KkD6S0R7kVZ3j0kq3G5yY1h8m8u3ZfE=';

interface LineageSpec {
  lineage: string;
  authenticator: string;
  leaf: TestLeaf;
  /** Extra `[renewalparams]` lines. */
  params?: string[];
  /** Replace the key with another one (a mismatch). */
  keyPem?: string;
  /** Written as the dns_rfc2136_credentials file. */
  credentials?: string;
}

/** A certbot configuration directory in certbot's own layout (module comment). */
function certbotDir(specs: LineageSpec[]): string {
  const dir = tempDir('certfleet-letsencrypt-');
  for (const s of specs) {
    const archive = path.join(dir, 'archive', s.lineage);
    const live = path.join(dir, 'live', s.lineage);
    fs.mkdirSync(archive, { recursive: true });
    fs.mkdirSync(live, { recursive: true });
    fs.mkdirSync(path.join(dir, 'renewal'), { recursive: true });
    const files: Record<string, string> = { cert: s.leaf.certPem, chain: s.leaf.chainPem, fullchain: s.leaf.fullchainPem, privkey: s.keyPem ?? s.leaf.keyPem };
    for (const [kind, pem] of Object.entries(files)) {
      fs.writeFileSync(path.join(archive, `${kind}1.pem`), pem, { mode: kind === 'privkey' ? 0o600 : 0o644 });
      fs.symlinkSync(`../../archive/${s.lineage}/${kind}1.pem`, path.join(live, `${kind}.pem`));
    }
    const params = [`authenticator = ${s.authenticator}`, `server = ${SERVER}`, 'account = 8a4d9f69ee6a3feaae746cadaff83d2f', ...(s.params ?? [])];
    if (s.credentials !== undefined) {
      const ini = path.join(dir, `${s.lineage}-rfc2136.ini`);
      fs.writeFileSync(ini, s.credentials, { mode: 0o600 });
      params.push(`dns_rfc2136_credentials = ${ini}`);
    }
    fs.writeFileSync(
      path.join(dir, 'renewal', `${s.lineage}.conf`),
      [
        '# renew_before_expiry = 30 days',
        'version = 2.1.0',
        `archive_dir = ${archive}`,
        `cert = ${live}/cert.pem`,
        `privkey = ${live}/privkey.pem`,
        `chain = ${live}/chain.pem`,
        `fullchain = ${live}/fullchain.pem`,
        '',
        '# Options used in the renewal process',
        '[renewalparams]',
        ...params,
        '',
      ].join('\n'),
    );
  }
  return dir;
}

/** A controller configuration with no certificates yet, in its own directory. */
function controllerConfig(extra = ''): { file: string; stateDir: string } {
  const dir = tempDir('certfleet-controller-');
  const file = path.join(dir, 'controller.yaml');
  const stateDir = path.join(dir, 'state');
  fs.writeFileSync(file, `# the operator's own comment\nstateDir: ${stateDir}\nacme:\n  directoryUrl: ${SERVER}\n  termsOfServiceAgreed: true\n${extra}certificates: []\n`);
  return { file, stateDir };
}

function options(certbot: string, configFile: string, over: Partial<ImportOptions> = {}): ImportOptions {
  return { certbotDir: certbot, configFile, agents: 'role=lb', only: [], renames: {}, out: undefined, dryRun: false, force: false, now: Date.now(), env: {}, log: silentLogger(), ...over };
}

async function leaf(names: string[], extra: { keyType?: 'ecdsa-p256' | 'rsa-2048'; notAfter?: Date; notBefore?: Date } = {}): Promise<TestLeaf> {
  return makeLeaf(await sharedCa(), { names, ...extra });
}

/** Every file under `dir` with its mode. */
function modes(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), fs.statSync(p).mode & 0o777);
    }
  };
  walk(dir);
  return out;
}

void describe('certbot renewal configurations', () => {
  void it('parses the file certbot 2.1 writes, with a nested webroot map and one-element lists', () => {
    const conf = parseRenewalConf(
      [
        '# renew_before_expiry = 30 days',
        'version = 2.1.0',
        'cert = /etc/letsencrypt/live/example.com/cert.pem',
        '',
        '[renewalparams]',
        'authenticator = webroot',
        'webroot_path = /var/www/html,',
        'server = https://acme-v02.api.letsencrypt.org/directory',
        'key_type = ecdsa',
        '[[webroot_map]]',
        'example.com = /var/www/html',
        'www.example.com = /var/www/html',
        '',
      ].join('\n'),
    );
    assert.equal(conf.top['cert'], '/etc/letsencrypt/live/example.com/cert.pem');
    assert.equal(conf.params['authenticator'], 'webroot');
    assert.equal(conf.params['webroot_path'], '/var/www/html');
    assert.equal(conf.params['key_type'], 'ecdsa');
    assert.deepEqual(conf.webrootMap, { 'example.com': '/var/www/html', 'www.example.com': '/var/www/html' });
    assert.throws(() => parseRenewalConf('[renewalparams]\nthis is not a pair\n'), /line 2/);
  });

  void it('turns lineage names into certificate names', () => {
    const cases: Array<[string, string | undefined]> = [
      ['web', 'web'],
      ['example.com', 'example-com'],
      ['Example.COM-0001', 'example-com-0001'],
      ['www.shop.example.co.uk', 'www-shop-example-co-uk'],
      ['..', undefined],
      ['a'.repeat(64), undefined],
    ];
    for (const [lineage, want] of cases) assert.equal(certNameFor(lineage), want, lineage);
  });
});

void describe('the authenticator mapping', () => {
  void it('maps webroot, standalone, nginx and apache to http-01 through the agents and refuses manual and DNS plugins certfleet has no provider for', async () => {
    const specs: LineageSpec[] = [];
    for (const a of ['webroot', 'standalone', 'nginx', 'apache', 'manual', 'dns-cloudflare', 'dns-route53']) {
      specs.push({ lineage: `${a}.example.test`, authenticator: a, leaf: await leaf([`${a}.example.test`]) });
    }
    const plan = planImport(readCertbotDir(certbotDir(specs)), { agents: 'role=lb', existingCertificates: [], existingProviders: {}, force: false, now: Date.now() });
    assert.deepEqual(
      plan.imports.map((i) => [i.lineage, i.declaration.name, i.declaration.challenge, i.declaration.agents]),
      ['apache', 'nginx', 'standalone', 'webroot'].map((a) => [`${a}.example.test`, `${a}-example-test`, 'http-01', 'role=lb']),
    );
    const refused = new Map(plan.refusals.map((r) => [r.lineage, r.reason]));
    assert.match(refused.get('manual.example.test') ?? '', /authenticator manual/);
    assert.match(refused.get('dns-cloudflare.example.test') ?? '', /dns-cloudflare: certfleet has no provider.*exec provider/);
    assert.match(refused.get('dns-route53.example.test') ?? '', /dns-route53/);
  });

  void it('maps dns-rfc2136 credentials onto an rfc2136 provider and refuses what certfleet cannot sign or reach', async () => {
    const ini = (lines: string[]): string => `# certbot dns-rfc2136 credentials\n${lines.join('\n')}\n`;
    const good = ['dns_rfc2136_server = 192.0.2.53', 'dns_rfc2136_port = 5353', 'dns_rfc2136_name = certbot-key.', `dns_rfc2136_secret = ${TSIG_SECRET}`, 'dns_rfc2136_algorithm = HMAC-SHA512'];
    const specs: LineageSpec[] = [
      { lineage: 'wild', authenticator: 'dns-rfc2136', leaf: await leaf(['*.wild.example.test', 'wild.example.test']), credentials: ini(good) },
      { lineage: 'also', authenticator: 'dns-rfc2136', leaf: await leaf(['also.example.test']), credentials: ini(good) },
      { lineage: 'md5', authenticator: 'dns-rfc2136', leaf: await leaf(['md5.example.test']), credentials: ini(good.filter((l) => !l.includes('algorithm'))) },
      { lineage: 'byname', authenticator: 'dns-rfc2136', leaf: await leaf(['byname.example.test']), credentials: ini(good.map((l) => l.replace('192.0.2.53', 'ns1.example.test'))) },
    ];
    const dir = certbotDir(specs);
    // A copy of /etc/letsencrypt: the credentials path under certbot's config_dir is found in the copy.
    const copied = certbotDir([{ lineage: 'copied', authenticator: 'dns-rfc2136', leaf: await leaf(['copied.example.test']), params: ['config_dir = /etc/letsencrypt'], credentials: ini(good) }]);
    const conf = path.join(copied, 'renewal', 'copied.conf');
    fs.writeFileSync(conf, fs.readFileSync(conf, 'utf8').replace(/dns_rfc2136_credentials = .*/, 'dns_rfc2136_credentials = /etc/letsencrypt/copied-rfc2136.ini'));
    assert.deepEqual(planImport(readCertbotDir(copied), { agents: 'role=lb', existingCertificates: [], existingProviders: {}, force: false, now: Date.now() }).imports.map((i) => i.declaration.dnsProvider), ['certbot-certbot-key']);
    const plan = planImport(readCertbotDir(dir), { agents: 'role=lb', existingCertificates: [], existingProviders: {}, force: false, now: Date.now() });
    assert.deepEqual(plan.providers.map(({ name, server, keyName, algorithm, secret }) => ({ name, server, keyName, algorithm, secret })), [
      { name: 'certbot-certbot-key', server: '192.0.2.53:5353', keyName: 'certbot-key', algorithm: 'hmac-sha512', secret: TSIG_SECRET },
    ]);
    assert.deepEqual(
      plan.imports.map((i) => [i.lineage, i.declaration.challenge, i.declaration.dnsProvider]),
      [
        ['also', 'dns-01', 'certbot-certbot-key'],
        ['wild', 'dns-01', 'certbot-certbot-key'],
      ],
      'one provider for two lineages with the same credentials; a wildcard is fine over dns-01',
    );
    const refused = new Map(plan.refusals.map((r) => [r.lineage, r.reason]));
    assert.match(refused.get('md5') ?? '', /HMAC-MD5 \(certbot's default\).*hmac-sha256/);
    assert.match(refused.get('byname') ?? '', /host name: certfleet needs the DNS server's IP address/);
  });

  void it('refuses an expired certificate, a key that belongs to another certificate, and a chain out of order', async () => {
    const ca = await sharedCa();
    const expired = await makeLeaf(ca, { names: ['old.example.test'], notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY) });
    const mismatched = await leaf(['mismatch.example.test']);
    const other = await leaf(['other.example.test']);
    const good = await leaf(['order.example.test']);
    const reversed = { ...good, chainPem: good.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/).reverse().join('') };
    const plan = planImport(
      readCertbotDir(
        certbotDir([
          { lineage: 'old', authenticator: 'webroot', leaf: expired },
          { lineage: 'mismatch', authenticator: 'webroot', leaf: mismatched, keyPem: other.keyPem },
          { lineage: 'order', authenticator: 'webroot', leaf: reversed },
        ]),
      ),
      { agents: 'role=lb', existingCertificates: [], existingProviders: {}, force: false, now: Date.now() },
    );
    assert.equal(plan.imports.length, 0);
    const refused = new Map(plan.refusals.map((r) => [r.lineage, r.reason]));
    assert.match(refused.get('old') ?? '', /expired.*BUNDLE_EXPIRED/);
    assert.match(refused.get('mismatch') ?? '', /BUNDLE_KEY_MISMATCH/);
    assert.match(refused.get('order') ?? '', /bad chain.*BUNDLE_INVALID/);
  });
});

void describe('importCertbot into a file store', () => {
  void it('stores each certificate as v1 with certbot\'s fingerprint, keys 0600, and returns a configuration the controller accepts', async () => {
    const web = await leaf(['web.example.test', 'www.example.test'], { keyType: 'rsa-2048' });
    const api = await leaf(['api.example.test']);
    const certbot = certbotDir([
      { lineage: 'web', authenticator: 'webroot', leaf: web, params: ['key_type = rsa', 'rsa_key_size = 4096', 'renew_hook = systemctl reload nginx'] },
      { lineage: 'api.example.test', authenticator: 'dns-rfc2136', leaf: api, credentials: `dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_name = tsig-key\ndns_rfc2136_secret = ${TSIG_SECRET}\ndns_rfc2136_algorithm = HMAC-SHA256\n` },
    ]);
    const { file, stateDir } = controllerConfig();
    const out = path.join(path.dirname(file), 'merged.yaml');
    const outcome = await importCertbot(options(certbot, file, { out }));

    assert.deepEqual(
      outcome.imported.map((i) => [i.name, i.lineage, i.version, i.fingerprint]),
      [
        ['api-example-test', 'api.example.test', 1, parseCertificate(api.certPem).fingerprint],
        ['web', 'web', 1, parseCertificate(web.certPem).fingerprint],
      ],
    );
    const text = fs.readFileSync(out, 'utf8');
    assert.equal(fs.statSync(out).mode & 0o777, 0o644);
    assert.ok(text.startsWith("# the operator's own comment\n"), 'the operator\'s comments are kept');
    assert.ok(!text.includes(TSIG_SECRET) && !text.includes('PRIVATE KEY'), 'no secret in the configuration');
    const cfg = parseControllerConfig(text, out);
    assert.deepEqual(
      cfg.certificates.map((c) => ({ name: c.name, names: c.names, keyType: c.keyType, challenge: c.challenge, agents: c.agents, dnsProvider: c.dnsProvider })),
      [
        { name: 'api-example-test', names: ['api.example.test'], keyType: 'ecdsa-p256', challenge: 'dns-01', agents: 'role=lb', dnsProvider: 'certbot-tsig-key' },
        { name: 'web', names: ['web.example.test', 'www.example.test'], keyType: 'rsa-2048', challenge: 'http-01', agents: 'role=lb', dnsProvider: undefined },
      ],
    );
    const provider = cfg.dns01.providers['certbot-tsig-key'];
    assert.deepEqual(provider && { ...provider }, { type: 'rfc2136', server: '127.0.0.1:53', keyName: 'tsig-key', algorithm: 'hmac-sha256', secretFile: path.join(stateDir, 'dns01', 'certbot-tsig-key.tsig'), ttl: 60, timeout: 10_000 });
    assert.equal(fs.readFileSync(path.join(stateDir, 'dns01', 'certbot-tsig-key.tsig'), 'utf8').trim(), TSIG_SECRET);
    assert.ok(outcome.lines.some((l) => /^web: imported as v1 .*renewal from/.test(l)), outcome.lines.join('\n'));
    assert.ok(outcome.lines.some((l) => l.includes('certbot would renew it with rsa-4096')), 'the key-type difference is reported');
    assert.ok(outcome.lines.some((l) => l.includes('ln -s api-example-test <live dir>/api.example.test')), 'the renamed live path is explained');
    assert.ok(outcome.lines.some((l) => l.includes('deploy hook "systemctl reload nginx": make it the agent\'s reload hook')), 'the deploy hook is pointed out');

    const store = await FileStore.open({ dir: path.join(stateDir, 'store'), log: silentLogger() });
    try {
      const v1 = await store.getVersion('web', 1);
      assert.ok(v1);
      assert.equal(v1.certPem, web.certPem);
      assert.equal(v1.chainPem, web.chainPem);
      assert.equal(v1.keyPem, web.keyPem);
      assert.equal(v1.meta.keyType, 'rsa-2048');
      const record = await store.getObject<Record<string, unknown>>('imports/web');
      assert.deepEqual({ ...record, importedAt: typeof record?.['importedAt'] }, { version: 1, fingerprint: v1.meta.fingerprint, source: 'certbot', lineage: 'web', server: SERVER, authenticator: 'webroot', importedAt: 'string' });
    } finally {
      await store.close();
    }
    for (const [f, mode] of modes(stateDir)) assert.equal(mode, 0o600, `${f} is 0600`);
  });

  void it('a second run changes nothing; another certificate under a name already stored is refused unless --force, which stores it as v2', async () => {
    const first = await leaf(['web.example.test']);
    const { file, stateDir } = controllerConfig();
    await importCertbot(options(certbotDir([{ lineage: 'web', authenticator: 'standalone', leaf: first }]), file, { out: file }));
    const again = await importCertbot(options(certbotDir([{ lineage: 'web', authenticator: 'standalone', leaf: first }]), file, { out: file }));
    assert.deepEqual(again.imported, []);
    assert.ok(again.lines.some((l) => l.startsWith('web: already in the store as v1')));
    assert.equal(parseControllerConfig(fs.readFileSync(file, 'utf8'), file).certificates.length, 1, 'declared once');

    const renewed = certbotDir([{ lineage: 'web', authenticator: 'standalone', leaf: await leaf(['web.example.test']) }]);
    await assert.rejects(importCertbot(options(renewed, file)), (err: unknown) => isCertfleetError(err, ErrorCode.ImportRefused) && /store already has versions of "web".*--force/.test(err.message));
    const forced = await importCertbot(options(renewed, file, { force: true }));
    assert.deepEqual(forced.imported.map((i) => i.version), [2]);
    const store = await FileStore.open({ dir: path.join(stateDir, 'store'), log: silentLogger() });
    try {
      assert.deepEqual((await store.listVersions('web')).map((v) => v.version), [1, 2]);
    } finally {
      await store.close();
    }
  });

  void it('writes nothing in a dry run, and nothing at all when one lineage is refused', async () => {
    const certbot = certbotDir([
      { lineage: 'web', authenticator: 'webroot', leaf: await leaf(['web.example.test']) },
      { lineage: 'by-hand', authenticator: 'manual', leaf: await leaf(['hand.example.test']) },
    ]);
    const { file, stateDir } = controllerConfig();
    const before = fs.readFileSync(file, 'utf8');
    const out = path.join(path.dirname(file), 'out.yaml');

    await assert.rejects(importCertbot(options(certbot, file, { out })), (err: unknown) => isCertfleetError(err, ErrorCode.ImportRefused) && /by-hand: authenticator manual/.test(err.message) && !/^ {2}web:/m.test(err.message));
    assert.ok(!fs.existsSync(stateDir) && !fs.existsSync(out), 'nothing written when refused');

    const dry = await importCertbot(options(certbot, file, { out, only: ['web'], dryRun: true }));
    assert.ok(dry.lines.some((l) => l.startsWith('web: would import as v1')), dry.lines.join('\n'));
    assert.match(dry.yaml, /name: web/);
    assert.ok(!fs.existsSync(stateDir) && !fs.existsSync(out), 'nothing written in a dry run, not even the store directory');
    assert.equal(fs.readFileSync(file, 'utf8'), before);

    const done = await importCertbot(options(certbot, file, { out, only: ['web'] }));
    assert.deepEqual(done.imported.map((i) => i.name), ['web']);
  });

  void it('refuses to redeclare a name the configuration declares with other names, unless --force replaces it', async () => {
    const certbot = certbotDir([{ lineage: 'web', authenticator: 'webroot', leaf: await leaf(['web.example.test']) }]);
    const { file } = controllerConfig();
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('certificates: []', 'certificates:\n  - { name: web, names: [old.example.test], agents: "role=lb" }'));
    await assert.rejects(importCertbot(options(certbot, file)), /already declares "web" with other names \(old\.example\.test\)/);
    const forced = await importCertbot(options(certbot, file, { force: true }));
    assert.deepEqual(parseControllerConfig(forced.yaml, file).certificates.map((c) => c.names), [['web.example.test']]);
  });
});

void describe('certfleet import-certbot', () => {
  function io(): CliIo & { out: () => string; err: () => string } {
    let out = '';
    let err = '';
    return {
      stdout: { write: (t: string) => (out += t) },
      stderr: { write: (t: string) => (err += t) },
      stdin: () => (async function* () {})(),
      env: {},
      now: () => new Date(),
      out: () => out,
      err: () => err,
    };
  }

  void it('prints the merged configuration on stdout and what it did on stderr; refusals exit 1 with IMPORT_REFUSED', async () => {
    const certbot = certbotDir([{ lineage: 'web', authenticator: 'nginx', leaf: await leaf(['web.example.test']) }]);
    const { file } = controllerConfig();
    const ok = io();
    assert.equal(await runCli(['import-certbot', certbot, '--config', file, '--agents', 'role=lb', '--dry-run'], ok), 0, ok.err());
    parseControllerConfig(ok.out(), file);
    assert.match(ok.err(), /^dry run: nothing written\nweb: would import as v1 from lineage web \(nginx -> http-01;/);

    const refused = io();
    const manual = certbotDir([{ lineage: 'web', authenticator: 'manual', leaf: await leaf(['web.example.test']) }]);
    assert.equal(await runCli(['import-certbot', manual, '--config', file, '--agents', 'role=lb'], refused), 1);
    assert.match(refused.err(), /code: IMPORT_REFUSED/);
    assert.equal(refused.out(), '');

    const usage = io();
    assert.equal(await runCli(['import-certbot', certbot, '--config', file], usage), 2);
    assert.match(usage.err(), /missing --agents SELECTOR/);
    const notCertbot = io();
    assert.equal(await runCli(['import-certbot', tempDir(), '--config', file, '--agents', 'role=lb'], notCertbot), 3);
    assert.match(notCertbot.err(), /not a certbot configuration directory/);
  });
});

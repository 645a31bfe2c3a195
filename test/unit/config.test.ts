import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseControllerConfig } from '../../controller/config/index.js';
import { parseAgentConfig, reloadHookFor } from '../../agent/config/index.js';
import { parseDuration } from '../../shared/config/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';

const GOOD_CONTROLLER = `
stateDir: /var/lib/certfleet
acme:
  directoryUrl: https://127.0.0.1:14000/dir
  termsOfServiceAgreed: true
certificates:
  - name: web
    names: [www.example.test, example.test]
    agents: role=web
`;

function problemsOf(fn: () => unknown): Array<{ path: string; line?: number; message: string }> {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CertfleetError, `expected CertfleetError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.ConfigInvalid);
    return err.details['problems'] as Array<{ path: string; line?: number; message: string }>;
  }
  assert.fail('expected the config to be refused');
}

test('a minimal controller config gets every default', () => {
  const cfg = parseControllerConfig(GOOD_CONTROLLER, '/etc/certfleet/controller.yaml');
  assert.equal(cfg.api.listen, '127.0.0.1:7443');
  assert.equal(cfg.api.agentOfflineAfter, 90_000);
  assert.equal(cfg.store.type, 'file');
  assert.equal(cfg.store.path, '/var/lib/certfleet/store');
  assert.deepEqual(cfg.certificates[0]?.names, ['www.example.test', 'example.test']);
  assert.equal(cfg.certificates[0]?.keyType, 'ecdsa-p256');
  assert.equal(cfg.renewal.concurrency, 4);
  assert.ok(Object.isFrozen(cfg.api), 'the result is frozen');
});

test('acme.staging: optional; its caFile resolved against the config file; an http:// or unknown field refused', () => {
  assert.equal(parseControllerConfig(GOOD_CONTROLLER, '/etc/certfleet/controller.yaml').acme?.staging, undefined);
  const withStaging = GOOD_CONTROLLER.replace('  termsOfServiceAgreed: true\n', '  termsOfServiceAgreed: true\n  staging: { directoryUrl: "https://staging.test/dir", caFile: staging-ca.pem }\n');
  assert.deepEqual(parseControllerConfig(withStaging, '/etc/certfleet/controller.yaml').acme?.staging, { directoryUrl: 'https://staging.test/dir', caFile: '/etc/certfleet/staging-ca.pem' });
  const bad = GOOD_CONTROLLER.replace('  termsOfServiceAgreed: true\n', '  termsOfServiceAgreed: true\n  staging: { directoryUrl: "http://staging.test/dir", email: a@b.test }\n');
  assert.deepEqual(problemsOf(() => parseControllerConfig(bad, '/c.yaml')).map((p) => p.path).sort(), ['acme.staging.directoryUrl', 'acme.staging.email']);
});

test('the controller is the NATS authority by default; its own credentials only with authority: external', () => {
  const cfg = parseControllerConfig(GOOD_CONTROLLER, '/etc/certfleet/controller.yaml');
  assert.equal(cfg.nats.authority, 'controller');
  assert.equal(cfg.nats.serverConfigFile, '/var/lib/certfleet/nats/auth.conf');
  const withCreds = `${GOOD_CONTROLLER}nats: { credentialsFile: c.creds, tokenFile: t }\n`;
  assert.deepEqual(
    problemsOf(() => parseControllerConfig(withCreds, '/c.yaml')).map((p) => p.path),
    ['nats.credentialsFile', 'nats.tokenFile'],
  );
  const external = parseControllerConfig(`${GOOD_CONTROLLER}nats: { authority: external, credentialsFile: c.creds }\n`, '/etc/certfleet/controller.yaml');
  assert.equal(external.nats.credentialsFile, '/etc/certfleet/c.creds');
  assert.equal(external.nats.serverConfigFile, undefined);
  const misplaced = `${GOOD_CONTROLLER}nats: { authority: external, serverConfigFile: a.conf }\n`;
  assert.deepEqual(problemsOf(() => parseControllerConfig(misplaced, '/c.yaml')).map((p) => p.path), ['nats.serverConfigFile']);
});

test('agent identity lifetime and the HTTP-01 offline policy: defaults, choices and bounds', () => {
  const cfg = parseControllerConfig(GOOD_CONTROLLER, 'c.yaml');
  assert.equal(cfg.api.agentIdentityValidity, 90 * 86_400_000);
  assert.equal(cfg.http01.offlineAgents, 'grace');
  assert.equal(cfg.http01.offlineGrace, 3_600_000);
  const set = parseControllerConfig(`${GOOD_CONTROLLER}api: { agentIdentityValidity: 2m }\nhttp01: { offlineAgents: skip, offlineGrace: 10s }\n`, 'c.yaml');
  assert.deepEqual([set.api.agentIdentityValidity, set.http01.offlineAgents, set.http01.offlineGrace], [120_000, 'skip', 10_000]);
  const problems = problemsOf(() => parseControllerConfig(`${GOOD_CONTROLLER}api: { agentIdentityValidity: 10s }\nhttp01: { offlineAgents: wait, offlineGrace: 60d }\n`, 'c.yaml'));
  assert.deepEqual(problems.map((p) => p.path).sort(), ['api.agentIdentityValidity', 'http01.offlineAgents', 'http01.offlineGrace']);
});

test('every problem in a controller config is reported at once with path and line', () => {
  const text = `stateDir: /x
acme:
  directoryUrl: http://insecure.example/dir
  termsOfServiceAgreed: false
  colour: blue
renewal:
  checkInterval: soon
certificates:
  - name: Web_1
    names: [ok.example.test, "not a name"]
    agents: "role in (a"
  - name: web
    names: []
    agents: "*"
`;
  const problems = problemsOf(() => parseControllerConfig(text, 'c.yaml'));
  const byPath = new Map(problems.map((p) => [p.path, p]));
  for (const path of ['acme.directoryUrl', 'acme.termsOfServiceAgreed', 'acme.colour', 'renewal.checkInterval', 'certificates[0].name', 'certificates[0].names[1]', 'certificates[0].agents', 'certificates[1].names']) {
    assert.ok(byPath.has(path), `expected a problem at ${path}; got ${problems.map((p) => p.path).join(', ')}`);
  }
  assert.equal(byPath.get('acme.colour')?.line, 5);
  assert.equal(byPath.get('renewal.checkInterval')?.line, 7);
  assert.match(byPath.get('acme.colour')?.message ?? '', /unknown field \(allowed: directoryUrl, email, eab, caFile, termsOfServiceAgreed, staging\)/);
});

test('the error message names the file and each field', () => {
  try {
    parseControllerConfig('stateDir: 3\nacme: {}\n', '/etc/certfleet/controller.yaml');
    assert.fail('expected failure');
  } catch (err) {
    assert.ok(err instanceof CertfleetError);
    assert.match(err.message, /invalid configuration \/etc\/certfleet\/controller.yaml/);
    assert.match(err.message, /controller.yaml:1: stateDir:/);
    assert.match(err.message, /acme.directoryUrl/);
  }
});

test('duplicate certificate names and wildcards over HTTP-01 are refused', () => {
  const text = `stateDir: /x
acme: { directoryUrl: "https://ca.test/dir", termsOfServiceAgreed: true }
certificates:
  - { name: a, names: [a.test], agents: "*" }
  - { name: a, names: ["*.b.test"], agents: "*" }
`;
  const paths = problemsOf(() => parseControllerConfig(text, 'c.yaml')).map((p) => p.path);
  assert.ok(paths.includes('certificates[1].name'));
  assert.ok(paths.includes('certificates[1].names[0]'));
});

test('${VAR} in a value is taken from the environment, and a missing one is a problem', () => {
  const text = `stateDir: \${STATE}\nacme: { directoryUrl: "https://ca.test/dir", termsOfServiceAgreed: true, email: "\${MAIL}" }\ncertificates: [{ name: a, names: [a.test], agents: "*" }]\n`;
  const cfg = parseControllerConfig(text, '/c.yaml', { STATE: '/srv/state', MAIL: 'ops@example.com' });
  assert.equal(cfg.stateDir, '/srv/state');
  const problems = problemsOf(() => parseControllerConfig(text, '/c.yaml', { STATE: '/srv' }));
  assert.deepEqual(problems.map((p) => p.path), ['acme.email', 'acme.email'].slice(0, problems.length));
  assert.match(problems[0]?.message ?? '', /MAIL is not set/);
});

test('YAML syntax errors are reported with their line', () => {
  const problems = problemsOf(() => parseControllerConfig('stateDir: /x\nacme: [\n', 'c.yaml'));
  assert.ok((problems[0]?.line ?? 0) >= 2);
  assert.match(problems[0]?.message ?? '', /^YAML:/);
});

test('an agent config resolves relative paths against its own directory', () => {
  const cfg = parseAgentConfig(
    `stateDir: state
controller: { address: "127.0.0.1:7443", caFile: ca.pem }
http01: { listen: "127.0.0.2:5002" }
hooks: { reload: { command: "nginx -s reload" } }
certificates:
  web: { verify: [{ address: "127.0.0.2:8443" }] }
`,
    '/etc/certfleet/agent.yaml',
  );
  assert.equal(cfg.stateDir, '/etc/certfleet/state');
  assert.equal(cfg.controller.caFile, '/etc/certfleet/ca.pem');
  assert.equal(cfg.hooks.reload?.timeout, 60_000);
  assert.equal(cfg.certificates['web']?.verify[0]?.address, '127.0.0.2:8443');
});

test('an agent config with a bad hook and a bad address names both fields', () => {
  const problems = problemsOf(() =>
    parseAgentConfig(`stateDir: s\ncontroller: { address: nowhere, caFile: ca.pem }\nhooks: { reload: { command: [] } }\n`, 'a.yaml'),
  );
  const paths = problems.map((p) => p.path);
  assert.ok(paths.includes('controller.address'), paths.join());
  assert.ok(paths.some((p) => p.startsWith('hooks.reload.command')), paths.join());
});

test('a HAProxy hook resolves its socket and carries the agent crt directory to every certificate', () => {
  const cfg = parseAgentConfig(
    `stateDir: state
controller: { address: "127.0.0.1:7443", caFile: ca.pem }
haproxy: { crtDir: haproxy/certs }
hooks: { reload: { haproxy: { socket: run/admin.sock }, command: "systemctl reload haproxy" } }
certificates:
  legacy: { reload: { haproxy: { socket: /run/haproxy-master.sock, master: true, crtFile: /etc/haproxy/legacy.pem } } }
`,
    '/etc/certfleet/agent.yaml',
  );
  assert.equal(cfg.haproxy?.crtDir, '/etc/certfleet/haproxy/certs');
  assert.deepEqual(reloadHookFor(cfg, 'www')?.haproxy, { socket: '/etc/certfleet/run/admin.sock', master: false, crtDir: '/etc/certfleet/haproxy/certs' });
  assert.equal(reloadHookFor(cfg, 'www')?.command, 'systemctl reload haproxy');
  assert.deepEqual(reloadHookFor(cfg, 'legacy')?.haproxy, { socket: '/run/haproxy-master.sock', master: true, crtFile: '/etc/haproxy/legacy.pem', crtDir: '/etc/certfleet/haproxy/certs' });
  assert.equal(reloadHookFor(cfg, 'legacy')?.command, undefined);
});

test('HAProxy hooks that cannot name a file, a crtFile shared by every certificate and an empty hook are refused', () => {
  const problems = problemsOf(() =>
    parseAgentConfig(
      `stateDir: s
controller: { address: "127.0.0.1:7443", caFile: ca.pem }
hooks: { reload: { haproxy: { socket: /run/haproxy/admin.sock, crtFile: /etc/haproxy/site.pem } } }
certificates:
  a: { reload: { haproxy: { socket: /run/haproxy/admin.sock } } }
  b: { reload: { timeout: 5s } }
`,
      'a.yaml',
    ),
  );
  const byPath = new Map(problems.map((p) => [p.path, p.message]));
  assert.match(byPath.get('hooks.reload.haproxy.crtFile') ?? '', /certificates\.<name>\.reload/);
  assert.match(byPath.get('certificates.a.reload.haproxy') ?? '', /haproxy\.crtDir/);
  assert.match(byPath.get('certificates.b.reload') ?? '', /command, haproxy, or both/);
  const blank = problemsOf(() => parseAgentConfig(`stateDir: s\ncontroller: { address: "127.0.0.1:7443", caFile: ca.pem }\nhaproxy: { crtDir: "/etc/haproxy/my certs" }\n`, 'a.yaml'));
  assert.equal(blank[0]?.path, 'haproxy.crtDir');
});

const DURATIONS: Array<[string, number | undefined]> = [
  ['500ms', 500],
  ['30s', 30_000],
  ['5m', 300_000],
  ['2h', 7_200_000],
  ['7d', 604_800_000],
  ['5', undefined],
  ['1.5h', undefined],
  ['-1s', undefined],
];
for (const [text, ms] of DURATIONS) {
  test(`duration "${text}" parses to ${String(ms)}`, () => assert.equal(parseDuration(text), ms));
}

/**
 * The controller's issuers (issue #15): the `acme` section stays one issuer named
 * `default`; `issuers` adds named ones; a certificate's `issuers` list defaults to all of
 * them in declared order; unknown or repeated names, a second `default`, two issuers on
 * one directory and a config with no CA are refused with their path and line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { issuerChain, issuersOf, parseControllerConfig } from '../../controller/config/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';

const FILE = '/etc/certfleet/controller.yaml';
const ACME = ['acme:', '  directoryUrl: https://ca-one.test/dir', '  termsOfServiceAgreed: true'];
const BACKUP = ['issuers:', '  backup:', '    directoryUrl: https://ca-two.test/dir', '    caFile: backup-ca.pem', '    eab: { keyId: kid, hmacKeyFile: eab-hmac }', '    termsOfServiceAgreed: true', '    budgets: { preset: none }'];

function config(...lines: string[]): string {
  return ['stateDir: /var/lib/certfleet', ...lines, ''].join('\n');
}

const CERTS = ['certificates:', '  - { name: web, names: [www.example.test], agents: role=web }'];

function problemsOf(text: string): Array<{ path: string; line?: number; message: string }> {
  try {
    parseControllerConfig(text, FILE);
  } catch (err) {
    assert.ok(err instanceof CertfleetError);
    assert.equal(err.code, ErrorCode.ConfigInvalid);
    return err.details['problems'] as Array<{ path: string; line?: number; message: string }>;
  }
  assert.fail('expected the config to be refused');
}

test('an acme section alone is one issuer named default, with the top-level budgets', () => {
  const cfg = parseControllerConfig(config(...ACME, ...CERTS), FILE);
  const issuers = issuersOf(cfg);
  assert.deepEqual(issuers.map((i) => [i.name, i.field, i.directoryUrl, i.budgets.preset]), [['default', 'acme', 'https://ca-one.test/dir', 'letsencrypt']]);
  assert.deepEqual(issuerChain(cfg, cfg.certificates[0] ?? { issuers: undefined }), ['default']);
  assert.equal(cfg.renewal.fallbackAfter, 2);
});

test('issuers come after default in declared order, with their own budgets and paths resolved against the file', () => {
  const cfg = parseControllerConfig(config(...ACME, ...BACKUP, '  other:', '    directoryUrl: https://ca-three.test/dir', '    termsOfServiceAgreed: true', ...CERTS), FILE);
  const issuers = issuersOf(cfg);
  assert.deepEqual(issuers.map((i) => i.name), ['default', 'backup', 'other']);
  const backup = issuers[1];
  assert.equal(backup?.budgets.preset, 'none');
  assert.equal(backup?.caFile, '/etc/certfleet/backup-ca.pem');
  assert.equal(backup?.eab?.hmacKeyFile, '/etc/certfleet/eab-hmac');
  assert.equal(backup?.field, 'issuers.backup');
  assert.equal(issuers[2]?.budgets.preset, 'letsencrypt', 'without its own budgets an issuer takes the top-level section');
  assert.deepEqual(issuerChain(cfg, cfg.certificates[0] ?? { issuers: undefined }), ['default', 'backup', 'other']);
});

test('a certificate may name its issuers and their order; issuers without acme is a complete config', () => {
  const cfg = parseControllerConfig(config(...BACKUP, '  second:', '    directoryUrl: https://ca-three.test/dir', '    termsOfServiceAgreed: true', 'certificates:', '  - { name: web, names: [www.example.test], agents: role=web, issuers: [second, backup] }'), FILE);
  assert.equal(cfg.acme, undefined);
  assert.deepEqual(issuerChain(cfg, cfg.certificates[0] ?? { issuers: undefined }), ['second', 'backup']);
});

test('unknown and repeated issuer names are refused with their path and line', () => {
  const problems = problemsOf(config(...ACME, ...BACKUP, 'certificates:', '  - name: web', '    names: [www.example.test]', '    agents: role=web', '    issuers: [default, nope, default]'));
  const unknown = problems.find((p) => p.path === 'certificates[0].issuers[1]');
  assert.match(unknown?.message ?? '', /unknown issuer "nope" \(configured: default, backup\)/);
  assert.equal(unknown?.line, 16);
  assert.match(problems.find((p) => p.path === 'certificates[0].issuers[2]')?.message ?? '', /listed twice/);
});

test('a config with no CA, a second default, two issuers on one directory and a bad issuer name are refused', () => {
  assert.match(problemsOf(config(...CERTS)).find((p) => p.path === 'acme')?.message ?? '', /required: the CA to issue from/);
  const dup = problemsOf(config(...ACME, 'issuers:', '  default:', '    directoryUrl: https://ca-two.test/dir', '    termsOfServiceAgreed: true', '  same:', '    directoryUrl: https://ca-one.test/dir', '    termsOfServiceAgreed: true', ...CERTS));
  assert.ok(dup.some((p) => p.path === 'issuers.default' && /the `acme` section's issuer/.test(p.message)), JSON.stringify(dup));
  assert.ok(dup.some((p) => p.path === 'issuers.same.directoryUrl' && /same directory as issuer "default"/.test(p.message)), JSON.stringify(dup));
  const bad = problemsOf(config(...ACME, 'issuers:', '  Bad_Name:', '    directoryUrl: https://ca-four.test/dir', '    termsOfServiceAgreed: true', ...CERTS));
  assert.ok(bad.some((p) => p.path === 'issuers.Bad_Name'), JSON.stringify(bad));
});

test('an issuer must agree to its CA terms and name an https directory', () => {
  const problems = problemsOf(config(...ACME, 'issuers:', '  backup:', '    directoryUrl: http://ca-two.test/dir', ...CERTS));
  assert.ok(problems.some((p) => p.path === 'issuers.backup.directoryUrl'), JSON.stringify(problems));
  assert.ok(problems.some((p) => p.path === 'issuers.backup.termsOfServiceAgreed'), JSON.stringify(problems));
});

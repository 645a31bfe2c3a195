/**
 * ACME profiles, the pure parts: which configured profiles a CA's directory can serve
 * (controller/acme profiles.ts) and the `profile` field of a certificate in the
 * controller's configuration. The protocol half runs against Pebble behind the proxy in
 * test/integration/acme-profiles.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { profileProblems } from '../../controller/acme/index.js';
import { parseControllerConfig } from '../../controller/config/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';

const LE = { classic: 'https://letsencrypt.org/docs/profiles#classic', tlsserver: 'tls', shortlived: 'six days' };

function controllerYaml(certLines: string[]): string {
  return ['stateDir: /var/lib/certfleet', 'acme: { directoryUrl: "https://127.0.0.1:14000/dir", termsOfServiceAgreed: true }', 'certificates:', ...certLines, ''].join('\n');
}

const cases: Array<{ says: string; offered: Record<string, string> | undefined; wishes: Array<{ name: string; profile?: string }>; problems: string[] }> = [
  { says: 'certificates without a profile need nothing from the CA', offered: undefined, wishes: [{ name: 'web' }], problems: [] },
  { says: 'an advertised profile is accepted', offered: LE, wishes: [{ name: 'web', profile: 'shortlived' }], problems: [] },
  {
    says: 'a profile the CA does not list is named with what the CA offers',
    offered: LE,
    wishes: [{ name: 'web', profile: 'short-lived' }],
    problems: ['certificate web: profile "short-lived" is not offered by the CA (it offers: classic, tlsserver, shortlived)'],
  },
  {
    says: 'a CA that advertises no profiles gets none asked of it (it would issue under its default)',
    offered: undefined,
    wishes: [{ name: 'web', profile: 'classic' }],
    problems: ['certificate web: profile "classic" is set, but the CA advertises no profiles (its directory has no meta.profiles); remove the profile'],
  },
  {
    says: 'every certificate with a problem is named, in order, the others pass',
    offered: { classic: '' },
    wishes: [{ name: 'a', profile: 'x' }, { name: 'b', profile: 'classic' }, { name: 'c', profile: 'y' }],
    problems: ['certificate a: profile "x" is not offered by the CA (it offers: classic)', 'certificate c: profile "y" is not offered by the CA (it offers: classic)'],
  },
  { says: 'profile names are compared exactly (case matters)', offered: LE, wishes: [{ name: 'web', profile: 'Classic' }], problems: ['certificate web: profile "Classic" is not offered by the CA (it offers: classic, tlsserver, shortlived)'] },
];
for (const c of cases) {
  void test(`profiles: ${c.says}`, () => {
    assert.deepEqual(profileProblems(c.offered, c.wishes), c.problems);
  });
}

void test('a certificate may name a profile; none is the default', () => {
  const cfg = parseControllerConfig(
    controllerYaml(['  - { name: web, names: [www.example.test], agents: role=web, profile: shortlived }', '  - { name: api, names: [api.example.test], agents: role=api }']),
    '/etc/certfleet/controller.yaml',
  );
  assert.equal(cfg.certificates[0]?.profile, 'shortlived');
  assert.equal(cfg.certificates[1]?.profile, undefined);
});

void test('a profile with spaces, an empty one or one longer than 64 characters is a config problem at its path', () => {
  for (const bad of ['"short lived"', '""', 'x'.repeat(65)]) {
    try {
      parseControllerConfig(controllerYaml([`  - { name: web, names: [www.example.test], agents: role=web, profile: ${bad} }`]), '/etc/certfleet/controller.yaml');
      assert.fail(`profile ${bad} was accepted`);
    } catch (err) {
      assert.ok(err instanceof CertfleetError && err.code === ErrorCode.ConfigInvalid, String(err));
      const problems = err.details['problems'] as Array<{ path: string }>;
      assert.deepEqual(problems.map((p) => p.path), ['certificates[0].profile'], JSON.stringify(problems));
    }
  }
});

/**
 * Configuration of the cloud DNS providers (cloudflare, route53, gcloud, acme-dns):
 * defaults, every problem named by field and file, credentials read from files or the
 * environment (Route 53: the AWS chain in AWS's order), and no secret in any message.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseControllerConfig } from '../../controller/config/index.js';
import { createDns01Providers, dns01ConfigSchema, resolveAwsCredentials } from '../../controller/solvers/dns01/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

const BASE = `
stateDir: /var/lib/certfleet
acme:
  directoryUrl: https://127.0.0.1:14000/dir
  termsOfServiceAgreed: true
certificates:
  - name: web
    names: [www.example.test]
    agents: role=web
`;

function refusal(fn: () => unknown): CertfleetError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CertfleetError, `expected CertfleetError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.ConfigInvalid);
    return err;
  }
  assert.fail('expected a refusal');
}

const opts = (env: NodeJS.ProcessEnv) => ({ env, clock: new ManualClock(), log: silentLogger() });

void test('cloud providers get their defaults (real endpoints) and relative credential files resolve against the config file', () => {
  const cfg = parseControllerConfig(
    `${BASE}dns01:
  providers:
    cf: { type: cloudflare, apiTokenFile: cf.token }
    aws: { type: route53, credentialsFile: aws/credentials }
    gc: { type: gcloud, serviceAccountFile: sa.json }
    adns: { type: acme-dns, server: "https://auth.example.org", accountsFile: acmedns.json }
`,
    '/etc/certfleet/controller.yaml',
  );
  const p = cfg.dns01.providers;
  assert.deepEqual(p['cf'], { type: 'cloudflare', apiTokenFile: '/etc/certfleet/cf.token', baseUrl: 'https://api.cloudflare.com/client/v4', ttl: 60, timeout: 30_000 });
  assert.deepEqual(p['aws'], { type: 'route53', credentialsFile: '/etc/certfleet/aws/credentials', endpoint: 'https://route53.amazonaws.com', region: 'us-east-1', ttl: 60, timeout: 30_000, pollInterval: 5000, changeTimeout: 120_000 });
  assert.deepEqual(p['gc'], { type: 'gcloud', serviceAccountFile: '/etc/certfleet/sa.json', baseUrl: 'https://dns.googleapis.com/dns/v1', ttl: 60, timeout: 30_000, pollInterval: 2000, changeTimeout: 120_000 });
  assert.deepEqual(p['adns'], { type: 'acme-dns', server: 'https://auth.example.org', accountsFile: '/etc/certfleet/acmedns.json', timeout: 30_000 });
});

void test('schema problems name the field and the file', () => {
  const err = refusal(() =>
    parseControllerConfig(
      `${BASE}dns01:
  providers:
    cf: { type: cloudflare }
    cf2: { type: cloudflare, apiTokenFile: a, apiTokenEnv: B, baseUrl: "ftp://x" }
    adns: { type: acme-dns, accountsFile: a.json }
    gc: { type: gcloud, serviceAccountEnv: lower-case }
`,
      '/etc/certfleet/controller.yaml',
    ),
  );
  const problems = (err.details['problems'] as Array<{ path: string; message: string }>).map((p) => `${p.path}: ${p.message}`);
  for (const want of [
    /^dns01\.providers\.cf\.apiTokenFile: set exactly one of apiTokenFile and apiTokenEnv$/,
    /^dns01\.providers\.cf2\.apiTokenFile: set exactly one of apiTokenFile and apiTokenEnv$/,
    /^dns01\.providers\.cf2\.baseUrl: expected an http\(s\) URL$/,
    /^dns01\.providers\.adns\.server: /,
    /^dns01\.providers\.gc\.serviceAccountEnv: an environment variable name$/,
  ]) {
    assert.ok(problems.some((p) => want.test(p)), `expected ${String(want)} in:\n${problems.join('\n')}`);
  }
  assert.match(err.message, /controller\.yaml/);
});

void test('missing or malformed credentials are all reported at once, by field, without their content', () => {
  const dir = tempDir('certfleet-cloud-config-');
  const badSa = path.join(dir, 'sa.json');
  fs.writeFileSync(badSa, JSON.stringify({ type: 'service_account', client_email: 'x@y', private_key: 'hunter2-not-a-key', token_uri: 'https://oauth2.googleapis.com/token' }));
  const badAccounts = path.join(dir, 'acmedns.json');
  fs.writeFileSync(badAccounts, JSON.stringify({ 'example.com': { username: 'u', password: 'hunter2pass', fulldomain: 'x.auth.example.org' } }));
  const cfg = dns01ConfigSchema.parse({
    providers: {
      cf: { type: 'cloudflare', apiTokenEnv: 'CF_UNSET' },
      cffile: { type: 'cloudflare', apiTokenFile: path.join(dir, 'missing.token') },
      aws: { type: 'route53', profile: 'prod' },
      gc: { type: 'gcloud', serviceAccountFile: badSa },
      gcnone: { type: 'gcloud' },
      adns: { type: 'acme-dns', server: 'https://auth.example.org', accountsFile: badAccounts },
    },
  });
  const err = refusal(() => createDns01Providers(cfg, opts({ HOME: dir })));
  const text = err.message;
  assert.match(text, /dns01\.providers\.cf\.apiTokenEnv: environment variable CF_UNSET is not set/);
  assert.match(text, /dns01\.providers\.cffile\.apiTokenFile: cannot read .*missing\.token: ENOENT/);
  assert.match(text, /dns01\.providers\.aws\.profile: no AWS credentials: no keys for profile "prod" in .*\.aws\/credentials/);
  assert.match(text, /dns01\.providers\.gc\.serviceAccountFile: not a service-account key: private_key is not a PEM private key/);
  assert.match(text, /dns01\.providers\.gcnone\.serviceAccountFile: set serviceAccountFile or serviceAccountEnv \(GOOGLE_APPLICATION_CREDENTIALS is not set either\)/);
  assert.match(text, /dns01\.providers\.adns\.accountsFile: not an acme-dns accounts file: account "example\.com": subdomain is missing/);
  assert.doesNotMatch(JSON.stringify({ text, d: err.details }), /hunter2/);
});

void test('credentials from the environment or files build the providers (gcloud falls back to GOOGLE_APPLICATION_CREDENTIALS)', () => {
  const dir = tempDir('certfleet-cloud-config-');
  const sa = path.join(dir, 'sa.json');
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(sa, JSON.stringify({ type: 'service_account', project_id: 'p1', client_email: 'x@p1.iam.gserviceaccount.com', private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }), token_uri: 'https://oauth2.googleapis.com/token' }));
  const cfg = dns01ConfigSchema.parse({
    providers: {
      cf: { type: 'cloudflare', apiTokenEnv: 'CF_TOKEN' },
      aws: { type: 'route53' },
      gc: { type: 'gcloud' },
      adns: { type: 'acme-dns', server: 'http://127.0.0.1:1', accountsEnv: 'ACMEDNS_ACCOUNTS' },
    },
  });
  const providers = createDns01Providers(
    cfg,
    opts({
      CF_TOKEN: 'tok',
      AWS_ACCESS_KEY_ID: 'AKID',
      AWS_SECRET_ACCESS_KEY: 'secret',
      GOOGLE_APPLICATION_CREDENTIALS: sa,
      ACMEDNS_ACCOUNTS: JSON.stringify({ 'example.com': { username: 'u', password: 'p', fulldomain: 's.auth.example.org', subdomain: 's' } }),
    }),
  );
  assert.deepEqual([...providers.values()].map((p) => `${p.name}:${p.type}`), ['cf:cloudflare', 'aws:route53', 'gc:gcloud', 'adns:acme-dns']);
});

void test('the AWS chain: environment first, then the credentials file, then the config file; a named profile skips the environment', () => {
  const dir = tempDir('certfleet-aws-chain-');
  fs.mkdirSync(path.join(dir, '.aws'));
  fs.writeFileSync(path.join(dir, '.aws', 'credentials'), '[default]\naws_access_key_id = FILEDEFAULT\naws_secret_access_key = s1\n\n[prod]\naws_access_key_id=FILEPROD\naws_secret_access_key=s2\naws_session_token=t2\n');
  fs.writeFileSync(path.join(dir, '.aws', 'config'), '[profile cfgonly]\nregion = eu-west-1\naws_access_key_id = CONFIGONLY\naws_secret_access_key = s3\n');
  const env = { HOME: dir, AWS_ACCESS_KEY_ID: 'ENVKEY', AWS_SECRET_ACCESS_KEY: 'envsecret', AWS_SESSION_TOKEN: 'envtoken' };
  const id = (r: ReturnType<typeof resolveAwsCredentials>): string => ('credentials' in r ? `${r.credentials.accessKeyId}/${r.credentials.sessionToken ?? '-'}@${r.source.replace(dir, '~')}` : r.problem);
  assert.equal(id(resolveAwsCredentials(env)), 'ENVKEY/envtoken@environment');
  assert.equal(id(resolveAwsCredentials({ HOME: dir })), 'FILEDEFAULT/-@~/.aws/credentials [default]');
  assert.equal(id(resolveAwsCredentials({ HOME: dir, AWS_PROFILE: 'prod' })), 'FILEPROD/t2@~/.aws/credentials [prod]');
  assert.equal(id(resolveAwsCredentials(env, { profile: 'prod' })), 'FILEPROD/t2@~/.aws/credentials [prod]');
  assert.equal(id(resolveAwsCredentials({ HOME: dir, AWS_PROFILE: 'cfgonly' })), 'CONFIGONLY/-@~/.aws/config [profile cfgonly]');
  assert.match(id(resolveAwsCredentials({ HOME: dir, AWS_PROFILE: 'nope' })), /no keys for profile "nope"/);
});

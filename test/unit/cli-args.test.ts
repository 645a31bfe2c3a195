import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CREDENTIALS_FILE, DEFAULT_TIMEOUT_MS, credentialsPath, helpText, parseCommandLine, type CommandName } from '../../cli/index.js';
import { ErrorCode, ExitCode, isCertfleetError } from '../../shared/errors/index.js';
import { tempDir } from '../harness/tmp.js';

// dist/test/unit/ -> dist/cli/main.js and the package root.
const MAIN = fileURLToPath(new URL('../../cli/main.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function usageFailure(argv: string[], message: RegExp): void {
  assert.throws(
    () => parseCommandLine(argv),
    (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && message.test(err.message),
    `expected a usage error matching ${String(message)} for: ${argv.join(' ')}`,
  );
}

/** Every command, as a record so that the compiler rejects this file until a new command is listed here too. */
const COMMANDS: Record<CommandName, true> = {
  controller: true,
  agent: true,
  'agent enroll': true,
  'controller signing-key': true,
  status: true,
  certs: true,
  agents: true,
  show: true,
  history: true,
  renew: true,
  check: true,
  rollback: true,
  release: true,
  revoke: true,
  events: true,
  budgets: true,
  'token create': true,
  whoami: true,
  'operators create': true,
  'operators list': true,
  'operators revoke': true,
  'operators set-role': true,
  'agents remove': true,
  'import-certbot': true,
  console: true,
};
const ALL_COMMANDS = Object.keys(COMMANDS) as CommandName[];

// ---- pure parsing ----

void test('console --listen takes a loopback HOST:PORT only (default 127.0.0.1:8765; port 0 means any)', () => {
  const op = { credentialsFile: undefined, timeoutMs: 10_000 };
  const listen = (argv: string[]): unknown => {
    const inv = parseCommandLine(argv);
    return inv.command === 'console' ? inv.listen : inv;
  };
  assert.deepEqual(parseCommandLine(['console']), { command: 'console', listen: { host: '127.0.0.1', port: 8765 }, operator: op });
  assert.deepEqual(listen(['console', '--listen', '127.0.0.1:0']), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(listen(['console', '--listen', 'localhost:9000']), { host: '127.0.0.1', port: 9000 });
  assert.deepEqual(listen(['console', '--listen', '[::1]:9000']), { host: '::1', port: 9000 });
  usageFailure(['console', '--listen', '0.0.0.0:8765'], /loopback only/);
  usageFailure(['console', '--listen', '192.168.1.5:8765'], /loopback only/);
  usageFailure(['console', '--listen', '8765'], /not HOST:PORT/);
  usageFailure(['console', '--listen', '127.0.0.1:70000'], /not HOST:PORT/);
  usageFailure(['console', 'extra'], /unexpected argument/);
});

void test('--wait on renew, rollback and release, with --wait-timeout (default 10m); not with --cancel, nor the timeout alone', () => {
  const op = { credentialsFile: undefined, timeoutMs: 10_000 };
  assert.deepEqual(parseCommandLine(['renew', 'web', '--wait']), { command: 'renew', name: 'web', cancel: false, json: false, wait: { timeoutMs: 600_000 }, operator: op });
  assert.deepEqual(parseCommandLine(['rollback', 'web', '--wait', '--wait-timeout', '2m']), { command: 'rollback', name: 'web', toVersion: 0, json: false, wait: { timeoutMs: 120_000 }, operator: op });
  assert.deepEqual(parseCommandLine(['release', 'web', '--wait']), { command: 'release', name: 'web', json: false, wait: { timeoutMs: 600_000 }, operator: op });
  usageFailure(['renew', 'web', '--cancel', '--wait'], /either --cancel or --wait/);
  usageFailure(['release', 'web', '--wait-timeout', '1m'], /--wait-timeout needs --wait/);
  usageFailure(['renew', 'web', '--wait', '--wait-timeout', 'soon'], /not a positive duration/);
});

void test('agents remove takes exactly one valid agent name; agents alone still lists', () => {
  const op = { credentialsFile: undefined, timeoutMs: 10_000 };
  assert.deepEqual(parseCommandLine(['agents', 'remove', 'edge-b']), { command: 'agents remove', name: 'edge-b', json: false, operator: op });
  assert.deepEqual(parseCommandLine(['agents', '--json']), { command: 'agents', json: true, operator: op });
  usageFailure(['agents', 'remove'], /missing NAME/);
  usageFailure(['agents', 'remove', 'a', 'b'], /unexpected argument 'b'/);
  usageFailure(['agents', 'remove', 'Edge_B'], /not a valid agent name/);
});

void test('daemon commands parse their config file and --check', () => {
  assert.deepEqual(parseCommandLine(['controller', '--config', 'c.yaml']), { command: 'controller', configFile: 'c.yaml', check: false, json: false });
  assert.deepEqual(parseCommandLine(['agent', '--config=a.yaml', '--check']), { command: 'agent', configFile: 'a.yaml', check: true, json: false });
  assert.deepEqual(parseCommandLine(['agent', '--config=a.yaml', '--check', '--json']), { command: 'agent', configFile: 'a.yaml', check: true, json: true });
  assert.deepEqual(parseCommandLine(['controller', '--config', 'c.yaml', '--write-nats-config']), { command: 'controller', configFile: 'c.yaml', check: false, writeNatsConfig: true, json: false });
  usageFailure(['controller', '--config', 'c.yaml', '--json'], /--json goes with --check/);
});

void test('agent enroll takes the token inline or from a file, exactly one of them', () => {
  assert.deepEqual(parseCommandLine(['agent', 'enroll', '--config', 'a.yaml', '--token', ' T0K ']), {
    command: 'agent enroll',
    configFile: 'a.yaml',
    token: { kind: 'inline', token: 'T0K' },
    json: false,
  });
  assert.deepEqual(parseCommandLine(['agent', 'enroll', '--config', 'a.yaml', '--token-file', '-']), {
    command: 'agent enroll',
    configFile: 'a.yaml',
    token: { kind: 'file', path: '-' },
    json: false,
  });
  usageFailure(['agent', 'enroll', '--config', 'a.yaml'], /missing --token-file/);
  usageFailure(['agent', 'enroll', '--config', 'a.yaml', '--token', 'x', '--token-file', 'f'], /not both/);
  usageFailure(['agent', 'enroll', '--token', 'x'], /missing --config/);
});

void test('operator read commands take --json, and global options before or after the command', () => {
  assert.deepEqual(parseCommandLine(['certs']), {
    command: 'certs',
    json: false,
    operator: { credentialsFile: undefined, timeoutMs: DEFAULT_TIMEOUT_MS },
  });
  assert.deepEqual(parseCommandLine(['--credentials', '/c.json', '--timeout', '2s', 'agents', '--json']), {
    command: 'agents',
    json: true,
    operator: { credentialsFile: '/c.json', timeoutMs: 2000 },
  });
  assert.deepEqual(parseCommandLine(['status', '--timeout=500ms', '--credentials=/x.json']), {
    command: 'status',
    json: false,
    operator: { credentialsFile: '/x.json', timeoutMs: 500 },
  });
});

void test('token create parses the agent, repeated labels and the ttl in seconds', () => {
  assert.deepEqual(parseCommandLine(['token', 'create', 'web-1', '--label', 'role=lb', '--label=site=par', '--ttl', '90m']), {
    command: 'token create',
    agent: 'web-1',
    labels: { role: 'lb', site: 'par' },
    ttlSeconds: 5400,
    json: false,
    operator: { credentialsFile: undefined, timeoutMs: DEFAULT_TIMEOUT_MS },
  });
  const noTtl = parseCommandLine(['token', 'create', 'web-2', '--label', 'empty=']);
  assert.equal(noTtl.command === 'token create' && noTtl.ttlSeconds, 0);
  assert.deepEqual(noTtl.command === 'token create' && noTtl.labels, { empty: '' });
});

void test('per-certificate commands take one NAME, --json, and rollback an optional --to version', () => {
  const operator = { credentialsFile: undefined, timeoutMs: DEFAULT_TIMEOUT_MS };
  for (const command of ['show', 'history', 'release'] as const) {
    assert.deepEqual(parseCommandLine([command, 'web']), { command, name: 'web', json: false, operator });
    assert.deepEqual(parseCommandLine([command, '--json', 'web-2']), { command, name: 'web-2', json: true, operator });
  }
  assert.deepEqual(parseCommandLine(['renew', 'web']), { command: 'renew', name: 'web', cancel: false, json: false, operator });
  assert.deepEqual(parseCommandLine(['renew', '--cancel', '--json', 'web-2']), { command: 'renew', name: 'web-2', cancel: true, json: true, operator });
  assert.deepEqual(parseCommandLine(['rollback', 'web']), { command: 'rollback', name: 'web', toVersion: 0, json: false, operator });
  assert.deepEqual(parseCommandLine(['rollback', 'web', '--to', '2']), { command: 'rollback', name: 'web', toVersion: 2, json: false, operator });
  assert.deepEqual(parseCommandLine(['rollback', '--to=4294967295', 'web']), {
    command: 'rollback',
    name: 'web',
    toVersion: 4294967295,
    json: false,
    operator,
  });
});

void test('events takes --cert, --limit, --follow and --json; budgets takes --json', () => {
  const operator = { credentialsFile: undefined, timeoutMs: DEFAULT_TIMEOUT_MS };
  assert.deepEqual(parseCommandLine(['events']), { command: 'events', cert: undefined, limit: 0, follow: false, json: false, operator });
  assert.deepEqual(parseCommandLine(['events', '--cert', 'web', '--limit', '20', '--follow', '--json']), {
    command: 'events',
    cert: 'web',
    limit: 20,
    follow: true,
    json: true,
    operator,
  });
  assert.deepEqual(parseCommandLine(['budgets', '--json']), { command: 'budgets', json: true, operator });
});

const usageCases: [string, string[], RegExp][] = [
  ['no command', [], /missing command/],
  ['an unknown command', ['renew-all'], /unknown command 'renew-all'/],
  ['an unknown option', ['certs', '--bogus'], /unknown option '--bogus'/],
  ['an option of another command', ['status', '--label', 'a=b'], /unknown option '--label'/],
  ['a missing option value', ['controller', '--config'], /--config/],
  ['a value given to a switch', ['certs', '--json=yes'], /--json/],
  ['an extra argument', ['agents', 'web-1'], /unexpected argument 'web-1'/],
  ['a missing --config', ['controller'], /missing --config/],
  ['--check with --write-nats-config', ['controller', '--config', 'c.yaml', '--check', '--write-nats-config'], /either --check or --write-nats-config/],
  ['--write-nats-config for the agent', ['agent', '--config', 'a.yaml', '--write-nats-config'], /unknown option '--write-nats-config'/],
  ['token without subcommand', ['token'], /missing subcommand/],
  ['an unknown token subcommand', ['token', 'revoke', 'x'], /unknown command 'token revoke'/],
  ['token create without agent', ['token', 'create'], /missing AGENT/],
  ['token create with two agents', ['token', 'create', 'a', 'b'], /unexpected argument 'b'/],
  ['an invalid agent name', ['token', 'create', 'Web_1'], /not a valid agent name/],
  ['a label without "="', ['token', 'create', 'a', '--label', 'role'], /not key=value/],
  ['an invalid label key', ['token', 'create', 'a', '--label', '_x=1'], /not a valid label key/],
  ['an invalid label value', ['token', 'create', 'a', '--label', 'k=a b'], /not a valid label value/],
  ['a label given twice', ['token', 'create', 'a', '--label', 'k=1', '--label', 'k=2'], /given twice/],
  ['a malformed --ttl', ['token', 'create', 'a', '--ttl', 'soon'], /not a positive duration/],
  ['a --ttl under a second', ['token', 'create', 'a', '--ttl', '500ms'], /shorter than one second/],
  ['a zero --timeout', ['status', '--timeout', '0s'], /not a positive duration/],
  ['an empty --credentials', ['status', '--credentials='], /non-empty/],
  ['show without NAME', ['show'], /missing NAME/],
  ['history without NAME', ['history', '--json'], /missing NAME/],
  ['renew without NAME', ['renew'], /missing NAME/],
  ['rollback without NAME', ['rollback', '--to', '2'], /missing NAME/],
  ['release without NAME', ['release'], /missing NAME/],
  ['show with two names', ['show', 'web', 'api'], /unexpected argument 'api'/],
  ['an invalid certificate name', ['rollback', 'Web_1'], /'Web_1' is not a valid certificate name/],
  ['--to 0', ['rollback', 'web', '--to', '0'], /--to '0' is not a positive integer/],
  ['a negative --to', ['rollback', 'web', '--to=-1'], /--to '-1' is not a positive integer/],
  ['a fractional --to', ['rollback', 'web', '--to', '2.5'], /--to '2\.5' is not a positive integer/],
  ['a --to that is not a number', ['rollback', 'web', '--to', 'v2'], /--to 'v2' is not a positive integer/],
  ['a --to beyond uint32', ['rollback', 'web', '--to', '4294967296'], /not a positive integer/],
  ['--to without a value', ['rollback', 'web', '--to'], /--to/],
  ['--to on another command', ['release', 'web', '--to', '2'], /unknown option '--to'/],
  ['--json on a write command given a value', ['renew', 'web', '--json=1'], /--json/],
  ['an events --limit of 0', ['events', '--limit', '0'], /--limit '0' is not a positive integer/],
  ['an events --limit with a unit', ['events', '--limit', '10s'], /--limit '10s' is not a positive integer/],
  ['an invalid events --cert', ['events', '--cert', 'Nope!'], /--cert 'Nope!' is not a valid certificate name/],
  ['an argument to events', ['events', 'web'], /unexpected argument 'web'/],
  ['an argument to budgets', ['budgets', 'letsencrypt'], /unexpected argument 'letsencrypt'/],
  ['--follow on another command', ['certs', '--follow'], /unknown option '--follow'/],
];
for (const [what, argv, message] of usageCases) {
  void test(`a usage error is raised for ${what}`, () => usageFailure(argv, message));
}

void test('--help wins over missing or invalid arguments and selects the command help', () => {
  assert.deepEqual(parseCommandLine(['--help']), { command: 'help', topic: undefined });
  assert.deepEqual(parseCommandLine(['agent', 'enroll', '-h']), { command: 'help', topic: 'agent enroll' });
  assert.deepEqual(parseCommandLine(['token', 'create', '--help']), { command: 'help', topic: 'token create' });
  assert.deepEqual(parseCommandLine(['token', '--help']), { command: 'help', topic: 'token create' });
  assert.deepEqual(parseCommandLine(['help', 'certs']), { command: 'help', topic: 'certs' });
  assert.deepEqual(parseCommandLine(['controller', '--help']), { command: 'help', topic: 'controller' });
  assert.deepEqual(parseCommandLine(['rollback', '--help']), { command: 'help', topic: 'rollback' });
  assert.deepEqual(parseCommandLine(['rollback', '--to', '0', '-h']), { command: 'help', topic: 'rollback' });
  assert.deepEqual(parseCommandLine(['help', 'events']), { command: 'help', topic: 'events' });
  assert.deepEqual(parseCommandLine(['--version']), { command: 'version' });
});

void test('every command has a help text that starts with its own usage line', () => {
  for (const name of ALL_COMMANDS) {
    assert.ok(helpText(name).startsWith(`Usage: certfleet ${name}`), name);
    assert.match(helpText(name), /--credentials FILE/);
    assert.match(helpText(), new RegExp(`^  ${name.split(' ')[0] ?? ''}`, 'm'));
  }
});

void test('the credentials file comes from --credentials, else CERTFLEET_CREDENTIALS, else the default path', () => {
  assert.equal(credentialsPath('/flag.json', { CERTFLEET_CREDENTIALS: '/env.json' }), '/flag.json');
  assert.equal(credentialsPath(undefined, { CERTFLEET_CREDENTIALS: '/env.json' }), '/env.json');
  assert.equal(credentialsPath(undefined, { CERTFLEET_CREDENTIALS: '' }), DEFAULT_CREDENTIALS_FILE);
  assert.equal(credentialsPath(undefined, {}), '/var/lib/certfleet/admin-credentials.json');
});

// ---- the executable ----

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs dist/cli/main.js. `forbid` names dist/ folders whose modules must not be loaded:
 * a module resolve hook makes any import from them fail the process.
 */
function runMain(argv: string[], opts: { env?: Record<string, string>; forbid?: string[] } = {}): Promise<Ran> {
  const nodeArgs: string[] = [];
  if (opts.forbid !== undefined) {
    const hooks = `export async function resolve(s, c, next) {
      const r = await next(s, c);
      for (const f of ${JSON.stringify(opts.forbid.map((f) => `/dist/${f}/`))}) {
        if (r.url.includes(f)) throw new Error('FORBIDDEN MODULE LOADED: ' + r.url);
      }
      return r;
    }`;
    const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`;
    nodeArgs.push('--import', `data:text/javascript,${encodeURIComponent(register)}`);
  }
  const env: Record<string, string | undefined> = { ...process.env, ...opts.env };
  if (opts.env?.['CERTFLEET_CREDENTIALS'] === undefined) delete env['CERTFLEET_CREDENTIALS'];
  const child = spawn(process.execPath, [...nodeArgs, MAIN, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

void test('the compiled entry point starts with a node shebang', () => {
  assert.ok(fs.readFileSync(MAIN, 'utf8').startsWith('#!/usr/bin/env node\n'));
});

void test('usage errors exit 2 with the message and a one-line hint on stderr, nothing on stdout', async () => {
  const r = await runMain(['certs', '--bogus']);
  assert.equal(r.code, ExitCode.Usage);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, "certfleet: unknown option '--bogus'\nTry 'certfleet certs --help'.\n");

  const noName = await runMain(['rollback', '--to', '2']);
  assert.equal(noName.code, ExitCode.Usage);
  assert.equal(noName.stdout, '');
  assert.equal(noName.stderr, "certfleet: missing NAME (the certificate, as in certfleet certs)\nTry 'certfleet rollback --help'.\n");

  const none = await runMain([]);
  assert.equal(none.code, ExitCode.Usage);
  assert.match(none.stderr, /^certfleet: missing command\nTry 'certfleet --help'\.\n$/);

  const unknown = await runMain(['frobnicate']);
  assert.equal(unknown.code, ExitCode.Usage);
  assert.match(unknown.stderr, /unknown command 'frobnicate'/);
});

void test('--help and --version exit 0 and print to stdout; the version is package.json\'s', async () => {
  const help = await runMain(['--help']);
  assert.equal(help.code, 0);
  for (const cmd of ALL_COMMANDS) assert.ok(help.stdout.includes(cmd), cmd);
  const certsHelp = await runMain(['certs', '-h']);
  assert.equal(certsHelp.code, 0);
  assert.match(certsHelp.stdout, /^Usage: certfleet certs/);
  const version = await runMain(['--version']);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(version.code, 0);
  assert.equal(version.stdout, `certfleet ${pkg.version}\n`);
});

void test('a missing credentials file exits 3 with CONFIG_UNREADABLE, naming the file from the flag or the environment', async () => {
  const dir = tempDir();
  const viaFlag = await runMain(['status', '--credentials', path.join(dir, 'nope.json')]);
  assert.equal(viaFlag.code, ExitCode.Config);
  assert.match(viaFlag.stderr, new RegExp(`^certfleet: cannot read credentials file ${dir}/nope\\.json`));
  assert.match(viaFlag.stderr, /\ncode: CONFIG_UNREADABLE\n$/);

  const viaEnv = await runMain(['certs', '--json'], { env: { CERTFLEET_CREDENTIALS: path.join(dir, 'env.json') } });
  assert.equal(viaEnv.code, ExitCode.Config);
  assert.match(viaEnv.stderr, /env\.json/);
  assert.equal(viaEnv.stdout, '');
});

void test('a credentials file with bad content exits 3 with CONFIG_INVALID listing every bad field and no key material', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'creds.json');
  fs.writeFileSync(file, JSON.stringify({ server: 'no-port', caPem: 'x', certPem: 'y', keyPem: 'PRIVATE-SECRET' }), { mode: 0o600 });
  const r = await runMain(['agents', '--credentials', file]);
  assert.equal(r.code, ExitCode.Config);
  assert.match(r.stderr, /4 problems/);
  for (const field of ['server', 'caPem', 'certPem', 'keyPem']) assert.match(r.stderr, new RegExp(`${field}: `));
  assert.doesNotMatch(r.stderr, /PRIVATE-SECRET/);
  assert.match(r.stderr, /code: CONFIG_INVALID/);

  fs.writeFileSync(file, '{not json');
  const notJson = await runMain(['agents', '--credentials', file]);
  assert.equal(notJson.code, ExitCode.Config);
  assert.match(notJson.stderr, /not JSON/);
});

void test('agent --check prints ok for a valid config and exits 3 for an invalid one, without loading controller code', async () => {
  const dir = tempDir();
  const good = path.join(dir, 'agent.yaml');
  fs.writeFileSync(good, 'stateDir: ./state\ncontroller:\n  address: 127.0.0.1:7443\n  caFile: ./ca.pem\n');
  const ok = await runMain(['agent', '--check', '--config', good], { forbid: ['controller'] });
  assert.equal(ok.stderr, '');
  assert.equal(ok.stdout, 'ok\n');
  assert.equal(ok.code, 0);

  const bad = path.join(dir, 'bad.yaml');
  fs.writeFileSync(bad, 'stateDir: ./state\ncontroller:\n  address: nowhere\n  caFile: ./ca.pem\nbogus: 1\n');
  const r = await runMain(['agent', '--check', '--config', bad], { forbid: ['controller'] });
  assert.equal(r.code, ExitCode.Config);
  assert.match(r.stderr, /^certfleet: invalid configuration .*bad\.yaml \(2 problems\)/);
  assert.match(r.stderr, /code: CONFIG_INVALID/);
});

void test('with --json, --check answers a JSON object, and every error (usage, config) is one JSON object on stderr', async () => {
  const dir = tempDir();
  const good = path.join(dir, 'agent.yaml');
  fs.writeFileSync(good, 'stateDir: ./state\ncontroller:\n  address: 127.0.0.1:7443\n  caFile: ./ca.pem\n');
  const ok = await runMain(['agent', '--check', '--json', '--config', good], { forbid: ['controller'] });
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), { ok: true, config: good });

  const bad = path.join(dir, 'bad.yaml');
  fs.writeFileSync(bad, 'stateDir: ./state\ncontroller:\n  address: nowhere\n  caFile: ./ca.pem\nbogus: 1\n');
  const r = await runMain(['agent', '--check', '--json', '--config', bad], { forbid: ['controller'] });
  assert.equal(r.code, ExitCode.Config);
  assert.equal(r.stdout, '');
  const err = (JSON.parse(r.stderr) as { error: { code: string; message: string; exitCode: number; retryable: boolean } }).error;
  assert.equal(err.code, 'CONFIG_INVALID');
  assert.equal(err.exitCode, ExitCode.Config);
  assert.match(err.message, /bad\.yaml \(2 problems\)/);

  const usage = await runMain(['renew', '--json']);
  assert.equal(usage.code, ExitCode.Usage);
  assert.deepEqual(JSON.parse(usage.stderr), { error: { code: 'USAGE_INVALID', message: 'missing NAME (the certificate, as in certfleet certs)', exitCode: 2, retryable: false, hint: 'certfleet renew --help' } });
});

void test('controller --check reports an invalid config with exit 3, without loading agent code', async () => {
  const dir = tempDir();
  const bad = path.join(dir, 'controller.yaml');
  fs.writeFileSync(bad, 'stateDir: ./state\nacme:\n  directoryUrl: http://insecure.test/dir\n  termsOfServiceAgreed: true\n');
  const r = await runMain(['controller', '--check', '--config', bad], { forbid: ['agent'] });
  assert.equal(r.code, ExitCode.Config);
  assert.match(r.stderr, /acme\.directoryUrl/);
  assert.match(r.stderr, /code: CONFIG_INVALID/);
});

void test('controller signing-key takes one step word (list by default) and refuses others', () => {
  assert.deepEqual(parseCommandLine(['controller', 'signing-key', '--config', 'c.yaml']), { command: 'controller signing-key', configFile: 'c.yaml', step: 'list', json: false });
  assert.deepEqual(parseCommandLine(['controller', 'signing-key', 'prepare', '--config', 'c.yaml', '--json']), { command: 'controller signing-key', configFile: 'c.yaml', step: 'prepare', json: true });
  assert.deepEqual(parseCommandLine(['controller', 'signing-key', '--help']), { command: 'help', topic: 'controller signing-key' });
  usageFailure(['controller', 'signing-key', 'rotate', '--config', 'c.yaml'], /unknown step 'rotate'/);
  usageFailure(['controller', 'signing-key', 'prepare', 'activate', '--config', 'c.yaml'], /unexpected argument 'activate'/);
  usageFailure(['controller', 'signing-key', 'list'], /--config/);
});

void test('controller signing-key rotates the key ring in the store, step by step, never printing a private key and without loading agent code', async () => {
  const dir = tempDir();
  const config = path.join(dir, 'controller.yaml');
  fs.writeFileSync(config, `stateDir: ${dir}/state\nacme:\n  directoryUrl: https://ca.test/dir\n  termsOfServiceAgreed: true\ncertificates:\n  - { name: web, names: [www.example.test], agents: "*" }\n`);
  const steps: Array<[string, string[]]> = [
    ['list', ['active']],
    ['prepare', ['active', 'next']],
    ['activate', ['retiring', 'active']],
    ['retire', ['active']],
  ];
  let previousActive = '';
  for (const [step, states] of steps) {
    const r = await runMain(['controller', 'signing-key', step, '--config', config, '--json'], { forbid: ['agent'] });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /PRIVATE KEY/);
    const ring = (JSON.parse(r.stdout) as { keys: Array<{ keyId: string; state: string }> }).keys;
    assert.deepEqual(ring.map((k) => k.state), states, step);
    const active = ring.find((k) => k.state === 'active')?.keyId ?? '';
    if (step === 'activate') assert.notEqual(active, previousActive, 'activate switches the signing key');
    previousActive = active;
  }
  const again = await runMain(['controller', 'signing-key', 'retire', '--config', config]);
  assert.equal(again.code, ExitCode.Usage);
  assert.match(again.stderr, /no signing key is retiring/);
  const table = await runMain(['controller', 'signing-key', 'prepare', '--config', config]);
  assert.match(table.stdout, /^STATE +KEY ID +CREATED\nactive /);
  assert.match(table.stdout, /next: restart the controller/);
  assert.equal(fs.statSync(path.join(dir, 'state', 'store', 'objects', 'pki', 'signing-keys.json')).mode & 0o777, 0o600);
});

void test('the resolve hook used above really fails a process that loads a forbidden folder', async () => {
  // Guards the two tests above against passing vacuously: agent --check must load agent/.
  const dir = tempDir();
  const good = path.join(dir, 'agent.yaml');
  fs.writeFileSync(good, 'stateDir: ./state\ncontroller:\n  address: 127.0.0.1:7443\n  caFile: ./ca.pem\n');
  const r = await runMain(['agent', '--check', '--config', good], { forbid: ['agent'] });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /FORBIDDEN MODULE LOADED/);
});

void test('operator commands load neither controller nor agent code', async () => {
  const r = await runMain(['status', '--credentials', '/nonexistent/creds.json'], { forbid: ['controller', 'agent'] });
  assert.equal(r.code, ExitCode.Config);
  assert.doesNotMatch(r.stderr, /FORBIDDEN/);
});

void test('agent enroll reports an unreadable or empty token file before contacting anything', async () => {
  const dir = tempDir();
  const missing = await runMain(['agent', 'enroll', '--config', path.join(dir, 'agent.yaml'), '--token-file', path.join(dir, 'none')], {
    forbid: ['agent', 'controller'],
  });
  assert.equal(missing.code, ExitCode.Config);
  assert.match(missing.stderr, /^certfleet: cannot read token file .*none \(ENOENT\)\ncode: CONFIG_UNREADABLE\n$/);

  const empty = path.join(dir, 'empty.token');
  fs.writeFileSync(empty, '\n  \n');
  const r = await runMain(['agent', 'enroll', '--config', path.join(dir, 'agent.yaml'), '--token-file', empty], { forbid: ['agent', 'controller'] });
  assert.equal(r.code, ExitCode.Usage);
  assert.match(r.stderr, /is empty/);
});

void test('docs/cli.md documents every exit code, every command and every option', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'cli.md'), 'utf8');
  for (const [name, code] of Object.entries(ExitCode)) {
    assert.match(doc, new RegExp(`^\\| ${code} \\| \`${name}\` \\|`, 'm'), `exit code ${code} (${name})`);
  }
  for (const name of ALL_COMMANDS) {
    assert.ok(doc.includes(`### \`certfleet ${name}`), `section for ${name}`);
    // Every option the help text lists is in the doc too.
    for (const option of helpText(name).match(/--[a-z][a-z-]*/g) ?? []) assert.ok(doc.includes(`\`${option}`), `${option} of ${name}`);
  }
});

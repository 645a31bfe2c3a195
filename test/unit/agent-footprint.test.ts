/**
 * What the agent process loads (issue #13: an idle agent should stay small). The agent's
 * module graph — what `certfleet agent` imports, cli/run.js and agent/index.js — is
 * loaded in a fresh node process with a resolve hook recording every module: the ACME
 * client, the ASN.1 and X.509 libraries, the Vault client, zod (with its locales and schemas ~3 MiB
 * of heap: the agent validates with shared/check) and any controller code must not be
 * among them, and prom-client only when the metrics endpoint is configured
 * (agent/index.ts imports agent/metrics on demand). And what a real `certfleet agent`
 * process runs with: V8's young generation kept small, TurboFan off (cli/heap.ts); and
 * no agent code calls localeCompare, which maps ICU's collation tables into the process.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { tempDir } from '../harness/tmp.js';
import { writeLoneAgent } from '../harness/lone-agent.js';

const DIST = fileURLToPath(new URL('../../', import.meta.url));

/** Every module URL a fresh node process resolves while importing `modules`. */
function loadedBy(modules: string[]): string[] {
  const dir = tempDir('certfleet-footprint-');
  const out = path.join(dir, 'resolved.txt');
  const hooks = path.join(dir, 'hooks.mjs');
  fs.writeFileSync(hooks, `import fs from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); fs.appendFileSync(${JSON.stringify(out)}, r.url + '\\n'); return r; }\n`);
  const register = path.join(dir, 'register.mjs');
  fs.writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  // CommonJS modules required from inside packages do not pass the ESM hook: the
  // require cache lists them.
  const main = [
    ...modules.map((m) => `await import(${JSON.stringify(pathToFileURL(path.join(DIST, m)).href)});`),
    "const { createRequire } = await import('node:module');",
    "process.stdout.write(JSON.stringify(Object.keys(createRequire(process.cwd() + '/x.js').cache)));",
  ].join('\n');
  const res = spawnSync(process.execPath, ['--import', pathToFileURL(register).href, '--input-type=module', '-e', main], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(res.status, 0, res.stderr);
  const required = (JSON.parse(res.stdout) as string[]).map((f) => pathToFileURL(f).href);
  return [...fs.readFileSync(out, 'utf8').split('\n').filter((l) => l !== ''), ...required];
}

/**
 * new_space's size (MiB) in a fresh node process (with `nodeArgs`) that calls
 * cli/heap's limitYoungGeneration() as cli/main.ts does (unless `limit` is false),
 * then loads the agent and allocates as a start does: objects that survive scavenges.
 */
function youngGenerationAfterStart(nodeArgs: string[], limit: boolean): { set: boolean; newSpaceMiB: number } {
  const heap = pathToFileURL(path.join(DIST, 'cli/heap.js')).href;
  const agent = pathToFileURL(path.join(DIST, 'agent/index.js')).href;
  const main = [
    `const { limitYoungGeneration } = await import(${JSON.stringify(heap)});`,
    `const set = ${limit ? 'limitYoungGeneration(process.execArgv, process.env.NODE_OPTIONS)' : 'false'};`,
    `await import(${JSON.stringify(agent)});`,
    'let keep = [];',
    "for (let i = 0; i < 3e6; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 5000) keep = []; }",
    "const v8 = await import('node:v8');",
    "const ns = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');",
    'process.stdout.write(JSON.stringify({ set, newSpaceMiB: ns.space_size / 1048576 }));',
  ].join('\n');
  const res = spawnSync(process.execPath, [...nodeArgs, '--input-type=module', '-e', main], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } });
  assert.equal(res.status, 0, res.stderr);
  return JSON.parse(res.stdout) as { set: boolean; newSpaceMiB: number };
}

/**
 * How many functions V8 compiled with TurboFan (`--trace-opt` prints each on stdout) in a
 * real `certfleet agent` (dist/cli/main.js, as every start path runs it) started with
 * `nodeArgs`, from its start until it logs that it is ready; then it is stopped. The agent
 * is a lone one (no controller, no NATS: it starts and retries); its start alone makes
 * TurboFan compile a dozen or more functions when nothing turns it off.
 */
async function turbofanCompilesUntilReady(nodeArgs: string[]): Promise<number> {
  const dir = tempDir('certfleet-tiers-');
  const { config } = await writeLoneAgent(dir, 'tiers');
  const child = spawn(process.execPath, ['--trace-opt', ...nodeArgs, path.join(DIST, 'cli/main.js'), 'agent', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  let out = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      out += chunk.toString('utf8');
      if (out.includes('"msg":"agent ready"')) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then(() => reject(new Error(`the agent exited before it was ready:\n${out.slice(-3000)}`)));
  });
  const compiles = out.split('\n').filter((l) => l.startsWith('[compiling method') && l.includes('(target TURBOFAN)')).length;
  child.kill('SIGTERM');
  await exited;
  return compiles;
}

const packageOf = (url: string): string | undefined => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1];

void describe('agent footprint', () => {
  void it('the agent never loads acme-client, the ASN.1/X.509 libraries, the Vault client, prom-client, zod or controller code', () => {
    const loaded = loadedBy(['cli/run.js', 'agent/index.js', 'agent/config/index.js']);
    assert.ok(loaded.some((u) => u.endsWith('/agent/index.js')), 'the hook saw the agent load');
    const packages = new Set(loaded.map(packageOf).filter((p): p is string => p !== undefined));
    for (const forbidden of ['acme-client', '@peculiar/x509', '@peculiar/asn1-schema', 'asn1js', 'pkijs', 'node-vault', 'tldts', 'prom-client', 'zod']) {
      assert.ok(!packages.has(forbidden), `the agent loads ${forbidden} (loaded packages: ${[...packages].sort().join(', ')})`);
    }
    const controllerCode = loaded.filter((u) => u.includes('/dist/controller/'));
    assert.deepEqual(controllerCode, []);
    // shared/config is the controller's zod flavour of shared/configfile.
    assert.deepEqual(loaded.filter((u) => u.includes('/dist/shared/config/')), []);
  });

  void it('no agent or shared module the agent loads sorts with localeCompare (ICU collation tables: ~3 MiB of RSS)', () => {
    // cli/ modules load too (cli/run.js), but their sorting (cli/render) runs only in operator commands.
    const ours = loadedBy(['cli/run.js', 'agent/index.js', 'agent/config/index.js']).filter((u) => /\/dist\/(agent|shared)\//.test(u));
    assert.ok(ours.some((u) => u.endsWith('/agent/apply/index.js')), 'the hook saw agent/apply load');
    const callers = ours.filter((u) => fs.readFileSync(fileURLToPath(u), 'utf8').includes('.localeCompare('));
    assert.deepEqual(callers, []);
  });

  void it('the hook sees zod when the controller configuration module loads', () => {
    assert.ok(new Set(loadedBy(['shared/config/index.js']).map(packageOf)).has('zod'));
  });

  void it('the metrics module (with prom-client) is what a configured endpoint loads', () => {
    const packages = new Set(loadedBy(['agent/metrics/index.js']).map(packageOf));
    assert.ok(packages.has('prom-client'), 'the hook sees prom-client when the metrics module loads');
  });

  void it("the agent keeps V8's young generation at its initial size however node was started", () => {
    // Without the limit, the same start grows the semi-spaces to their 16 MiB default.
    assert.ok(youngGenerationAfterStart([], false).newSpaceMiB >= 16, 'the allocation grows an unlimited young generation');
    const limited = youngGenerationAfterStart([], true);
    assert.deepEqual(limited, { set: true, newSpaceMiB: 2 });
    // An explicit --max-semi-space-size is the operator's choice: left alone.
    const explicit = youngGenerationAfterStart(['--max-semi-space-size=4'], true);
    assert.equal(explicit.set, false);
    assert.ok(explicit.newSpaceMiB > 2 && explicit.newSpaceMiB <= 8, `new space ${explicit.newSpaceMiB} MiB`);
  });

  void it('a real `certfleet agent` runs without TurboFan unless node was told a compiler tier', async () => {
    assert.equal(await turbofanCompilesUntilReady([]), 0, 'certfleet agent compiled with TurboFan');
    // The operator's explicit choice is left alone; this also shows the trace would see compiles.
    assert.ok((await turbofanCompilesUntilReady(['--opt'])) > 0, 'with --opt given, the start compiles with TurboFan');
  });
});

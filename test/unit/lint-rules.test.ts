/**
 * The house lint rules bite: ESLint's Node API lints test/lint-fixtures/ (a mirror of the
 * source tree holding deliberately bad files, excluded from `npm run lint` and from tsc)
 * with `houseRules` from eslint.config.js, and every bad file must draw exactly the rule
 * it breaks, every fine one nothing. That the real tree passes is `npm run lint` itself.
 * Removing or loosening a rule in eslint.config.js fails this test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ESLint, type Linter } from 'eslint';
import tseslint from 'typescript-eslint';

// This file runs compiled, from dist/test/unit/.
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURES = path.join(REPO, 'test', 'lint-fixtures');

/** Fixture (relative to FIXTURES) -> the rules it must draw; [] means it must pass. */
const EXPECTED: Array<[file: string, rules: string[], why: string]> = [
  ['controller/imports-agent.ts', ['import-x/no-restricted-paths'], 'controller/ imports agent/'],
  ['agent/imports-controller.ts', ['import-x/no-restricted-paths'], 'agent/ imports controller/'],
  ['shared/imports-controller.ts', ['import-x/no-restricted-paths'], 'shared/ imports controller/'],
  ['shared/cycle-a.ts', ['import-x/no-cycle'], 'an import cycle'],
  ['shared/cycle-b.ts', ['import-x/no-cycle'], 'the other end of the cycle'],
  ['cli/deep-import.ts', ['import-x/no-restricted-paths'], 'cli/ past a module index.ts'],
  ['cli/surface-import.ts', [], 'cli/ through the controller index.ts'],
  ['shared/sdk-outside-adapter.ts', ['house/sdk-in-adapter'], 'acme-client outside controller/acme'],
  ['agent/grpc-outside-adapter.ts', ['house/sdk-in-adapter'], '@grpc/grpc-js outside shared/grpc'],
  ['controller/acme/sdk-in-adapter.ts', [], 'acme-client in its adapter'],
  ['agent/prom-outside-adapter.ts', ['house/sdk-in-adapter'], 'prom-client outside shared/metrics'],
  ['shared/metrics/sdk-in-adapter.ts', [], 'prom-client in its adapter'],
  ['shared/raw-timer.ts', ['house/clock-only'], 'a raw setTimeout'],
  ['controller/raw-now.ts', ['house/clock-only'], 'Date.now()'],
  ['cli/timers-promises.ts', ['house/clock-only'], 'node:timers/promises'],
  ['shared/clock/raw-timer-allowed.ts', [], 'raw timers in shared/clock'],
  ['controller/reads-env.ts', ['house/env-in-config'], 'process.env outside config'],
  ['controller/config/reads-env-allowed.ts', [], 'process.env in a config module'],
  ['controller/thing.ts', [], 'a plain module'],
  ['controller/index.ts', [], 'a surface'],
  ['agent/thing.ts', [], 'a plain module'],
];

async function lintFixtures(): Promise<Map<string, string[]>> {
  const config = (await import(pathToFileURL(path.join(REPO, 'eslint.config.js')).href)) as { houseRules(root: string): Linter.Config[] };
  const eslint = new ESLint({
    cwd: FIXTURES,
    overrideConfigFile: true,
    overrideConfig: [{ files: ['**/*.ts'], languageOptions: { parser: tseslint.parser } }, ...config.houseRules(FIXTURES)],
  });
  const results = await eslint.lintFiles(EXPECTED.map(([file]) => path.join(FIXTURES, file)));
  const byFile = new Map<string, string[]>();
  for (const r of results) {
    const fatal = r.messages.filter((m) => m.fatal === true || m.ruleId === null);
    assert.deepEqual(fatal, [], `${r.filePath} did not parse`);
    byFile.set(path.relative(FIXTURES, r.filePath), [...new Set(r.messages.map((m) => m.ruleId ?? ''))].sort());
  }
  return byFile;
}

void test('each house rule fires on the fixture that breaks it, and on nothing else', async () => {
  const got = await lintFixtures();
  for (const [file, rules, why] of EXPECTED) {
    assert.deepEqual(got.get(file), [...rules].sort(), `${file} (${why})`);
  }
});

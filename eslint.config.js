// Lint: typescript-eslint with type information, so floating promises and misused
// promises are errors (STYLE.md rule 11), plus the house rules that keep the architecture
// (houseRules below, documented in docs/development.md). Generated gRPC types are not linted.
//
// test/unit/lint-rules.test.ts lints test/lint-fixtures/ (deliberately bad files, excluded
// here and from tsc) with houseRules(fixtureRoot) and checks that every rule fires.
import tseslint from 'typescript-eslint';
import { builtinRules } from 'eslint/use-at-your-own-risk';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

/** Where raw time is allowed for good: the clock itself. */
const RAW_TIME_ALLOWED = ['shared/clock/**'];

/**
 * Where process.env may be read (STYLE.md rule 8): config modules, the agent's hook
 * environment builder (hooks inherit the agent's environment), and the executable that
 * binds the process (cli/main.ts).
 */
const ENV_ALLOWED = ['shared/config/**', 'shared/configfile/**', 'controller/config/**', 'agent/config/**', 'agent/hooks/index.ts', 'cli/main.ts'];

/** Each SDK and the one adapter folder that may import it (STYLE.md rule 4). */
const SDK_ADAPTERS = [
  { sdk: ['acme-client'], adapter: 'controller/acme/**', why: 'acme-client only in controller/acme' },
  { sdk: ['node-vault'], adapter: 'controller/store/**', why: 'node-vault only in controller/store' },
  {
    sdk: ['@nats-io/transport-node', '@nats-io/jetstream', '@nats-io/kv', '@nats-io/nats-core', '@nats-io/services', '@nats-io/obj'],
    adapter: 'shared/nats/**',
    why: 'NATS clients only in shared/nats',
  },
  // natsauth is the NATS account authority: it signs JWTs and makes nkeys, it never connects.
  { sdk: ['@nats-io/jwt', '@nats-io/nkeys'], adapter: 'controller/natsauth/**', why: 'NATS JWT/nkeys only in controller/natsauth' },
  { sdk: ['@grpc/*'], adapter: 'shared/grpc/**', why: '@grpc/* only in shared/grpc (controller/api and agent/link use its surface)' },
  { sdk: ['prom-client'], adapter: 'shared/metrics/**', why: 'prom-client only in shared/metrics (controller/metrics and agent/metrics use its surface)' },
];

/**
 * The shipped code. test/ and bench/ are outside the house rules on purpose: they wait for
 * real servers in real time (raw timers), read CERTFLEET_* test settings from the
 * environment, drive CAs, brokers and attackers with the raw SDK clients, and import the
 * modules they test. Pure code under test still gets a ManualClock from the test.
 */
const SOURCES = ['shared/**/*.ts', 'controller/**/*.ts', 'agent/**/*.ts', 'cli/**/*.ts'];

// Core rules under our own names, so each house rule can be switched off for its own
// exceptions without touching the others (flat config replaces a rule's options, it does
// not merge them), and a report says which house rule it is.
const house = {
  meta: { name: 'certfleet-house' },
  rules: {
    'clock-only': builtinRules.get('no-restricted-syntax'),
    'env-in-config': builtinRules.get('no-restricted-syntax'),
    'sdk-in-adapter': builtinRules.get('no-restricted-imports'),
  },
};

const CLOCK_ONLY = [
  { selector: "Identifier[name=/^(setTimeout|setInterval)$/]", message: 'Timers come from an injected Clock (shared/clock): clock.after / clock.every / clock.sleep.' },
  { selector: "MemberExpression[object.name='Date'][property.name='now']", message: 'Read time from an injected Clock (clock.now()), not Date.now().' },
  { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: 'new Date() reads the wall clock: use new Date(clock.now()) with an injected Clock.' },
  {
    selector: "ImportDeclaration[source.value=/^(node:)?timers(\\u002Fpromises)?$/], ImportExpression[source.value=/^(node:)?timers(\\u002Fpromises)?$/]",
    message: 'Sleep on an injected Clock (clock.sleep(ms, signal)), not node:timers.',
  },
];

const ENV_IN_CONFIG = [
  { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'Only config modules read process.env (STYLE.md rule 8): take the value from config.' },
  { selector: "MemberExpression[object.property.name='process'][property.name='env']", message: 'Only config modules read process.env (STYLE.md rule 8): take the value from config.' },
  { selector: "ImportDeclaration[source.value=/^(node:)?process$/] > ImportSpecifier[imported.name='env']", message: 'Only config modules read process.env (STYLE.md rule 8).' },
];

/** no-restricted-imports options banning every SDK except those of `allowed`. */
function sdkOptions(allowed = []) {
  const patterns = SDK_ADAPTERS.filter((a) => !allowed.includes(a)).map((a) => ({
    group: a.sdk,
    message: `${a.why} (STYLE.md rule 4): use that adapter's index.ts.`,
  }));
  return [{ patterns }];
}

/**
 * The architecture rules, for the tree at `root` (the repository, or the lint fixtures'
 * mirror of it). Paths below are relative to `root`.
 */
export function houseRules(root) {
  const at = (p) => `${root}/${p}`;
  return [
    {
      files: SOURCES,
      plugins: { 'import-x': importX, house },
      settings: {
        // Follow imports into .ts files (parsed with the TypeScript parser), or no-cycle sees no edges.
        'import-x/extensions': ['.ts', '.js'],
        'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
        // Sources import './x.js' for './x.ts' (NodeNext): resolve the way tsc does.
        'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json', '.node'], extensionAlias: { '.js': ['.ts', '.js'] } })],
      },
      rules: {
        // Type-only imports are erased and do not count (the rule skips them).
        'import-x/no-cycle': ['error', { ignoreExternal: true }],
        'import-x/no-restricted-paths': [
          'error',
          {
            basePath: root,
            zones: [
              { target: at('controller'), from: at('agent'), message: 'controller/ and agent/ never import each other (STYLE.md rule 2).' },
              { target: at('agent'), from: at('controller'), message: 'controller/ and agent/ never import each other; the agent stays light (STYLE.md rule 2).' },
              { target: at('shared'), from: [at('controller'), at('agent'), at('cli')], message: 'shared/ imports nothing of ours outside shared/ (STYLE.md rule 2).' },
              { target: [at('controller'), at('agent')], from: at('cli'), message: 'The CLI sits on top: daemons never import cli/.' },
              { target: [at('shared'), at('controller'), at('agent'), at('cli')], from: [at('test'), at('bench')], message: 'Shipped code never imports tests or the benchmark.' },
              {
                // cli/run.ts starts the daemons and the offline commands through their surfaces.
                target: at('cli'),
                from: [at('controller/**'), at('agent/**')],
                except: ['**/controller/index.ts', '**/controller/*/index.ts', '**/agent/index.ts', '**/agent/*/index.ts'],
                message: 'cli/ reaches controller/ and agent/ only through a module index.ts (STYLE.md rule 1).',
              },
            ],
          },
        ],
        'house/clock-only': ['error', ...CLOCK_ONLY],
        'house/env-in-config': ['error', ...ENV_IN_CONFIG],
        'house/sdk-in-adapter': ['error', ...sdkOptions()],
      },
    },
    ...SDK_ADAPTERS.map((a) => ({ files: [a.adapter], rules: { 'house/sdk-in-adapter': ['error', ...sdkOptions([a])] } })),
    { files: RAW_TIME_ALLOWED, rules: { 'house/clock-only': 'off' } },
    // Converted on parallel branches; lead removes after merge.
    { files: ENV_ALLOWED, rules: { 'house/env-in-config': 'off' } },
  ];
}

export default tseslint.config(
  {
    ignores: ['dist/**', 'node_modules/**', 'shared/grpc/generated/**', 'shared/notify/native/**', 'eslint.config.js', 'test/lint-fixtures/**'],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's test()/describe() return promises the runner itself awaits.
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  ...houseRules(import.meta.dirname),
  // The console's page script runs in the browser, outside the TypeScript project (no
  // build step): linted without type information.
  { files: ['cli/console/assets/**/*.js'], ...tseslint.configs.disableTypeChecked },
);

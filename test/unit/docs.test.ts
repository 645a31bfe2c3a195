/**
 * The reference pages stay in step with the code: every error code has exactly one row in
 * docs/errors.md (with the exit code and gRPC status the code really gets), and every
 * field of both configuration schemas has a row in docs/configuration.md, with no row
 * for a field that does not exist.
 *
 * Field paths follow the convention documented at the top of docs/configuration.md:
 * `a.b` for a field of a section, `a[].b` for a field of every list element,
 * `a.<name>.b` for a field of every map entry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { controllerConfigSchema, parseControllerConfig } from '../../controller/config/index.js';
import { agentConfigSchema, parseAgentConfig } from '../../agent/config/index.js';
import { z } from '../../shared/config/index.js';
import { CertfleetError, ErrorCode, exitCodeFor } from '../../shared/errors/index.js';
import { grpc, toServiceError } from '../../shared/grpc/index.js';

// Compiled to dist/test/unit/: the repository root is three levels up.
const ROOT = new URL('../../../', import.meta.url);

function readDoc(name: string): string {
  return fs.readFileSync(new URL(`docs/${name}`, ROOT), 'utf8');
}

/** Cells of the markdown table rows in `text` whose first cell is one `code span`. */
function tableRows(text: string): Array<{ key: string; cells: string[] }> {
  const rows: Array<{ key: string; cells: string[] }> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('|')) continue;
    // `\|` inside a cell is an escaped pipe (e.g. `a` \| `b`), not a separator.
    const cells = line
      .replace(/\\\|/g, '\u0000')
      .split('|')
      .slice(1, -1)
      .map((c) => c.replace(/\u0000/g, '|').trim());
    const key = /^`([^`]+)`$/.exec(cells[0] ?? '')?.[1];
    if (key !== undefined) rows.push({ key, cells });
  }
  return rows;
}

/** The text of the `## heading` section (up to the next `## `). */
function section(text: string, heading: string): string {
  const start = text.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `docs section "## ${heading}" is missing`);
  const rest = text.slice(start + heading.length + 5);
  const end = rest.search(/\n## /);
  return end < 0 ? rest : rest.slice(0, end);
}

interface ZodLike {
  def?: {
    type?: string;
    innerType?: unknown;
    in?: unknown;
    element?: unknown;
    valueType?: unknown;
    options?: unknown[];
  };
  shape?: Record<string, unknown>;
}

/** Strips wrappers that do not change which fields a value has (as allowedKeysHint does). */
function unwrap(schema: unknown): ZodLike | undefined {
  let cur = schema as ZodLike | undefined;
  for (let i = 0; i < 20 && cur?.def; i++) {
    const t = cur.def.type;
    if (t === 'optional' || t === 'default' || t === 'prefault' || t === 'nullable' || t === 'readonly' || t === 'catch' || t === 'nonoptional') {
      cur = cur.def.innerType as ZodLike;
    } else if (t === 'pipe') {
      // A transform is a pipe whose input is what the YAML holds.
      cur = cur.def.in as ZodLike;
    } else {
      break;
    }
  }
  return cur;
}

/**
 * Every documented field path of `schema`: sections and leaves, `[]` into list elements,
 * `.<name>` into map values, union members merged (a union of objects, such as `store`,
 * contributes the fields of every member).
 */
function fieldPaths(schema: unknown, prefix = ''): string[] {
  const node = unwrap(schema);
  const type = node?.def?.type;
  const out: string[] = [];
  if (type === 'object' && node?.shape) {
    for (const [key, child] of Object.entries(node.shape)) {
      const p = prefix === '' ? key : `${prefix}.${key}`;
      out.push(p, ...fieldPaths(child, p));
    }
  } else if (type === 'array') {
    out.push(...fieldPaths(node?.def?.element, `${prefix}[]`));
  } else if (type === 'record') {
    out.push(...fieldPaths(node?.def?.valueType, `${prefix}.<name>`));
  } else if (type === 'union') {
    for (const option of node?.def?.options ?? []) out.push(...fieldPaths(option, prefix));
  }
  return [...new Set(out)];
}

/** Missing and stale rows of `doc` (one `## heading` section) against `schema`. */
function compareFields(schema: unknown, doc: string, heading: string): { missing: string[]; stale: string[]; duplicated: string[] } {
  const want = fieldPaths(schema);
  const rows = tableRows(section(doc, heading)).map((r) => r.key);
  const have = new Set(rows);
  return {
    missing: want.filter((p) => !have.has(p)),
    stale: [...have].filter((p) => !want.includes(p)),
    duplicated: rows.filter((p, i) => rows.indexOf(p) !== i),
  };
}

const GRPC_STATUS_NAME = new Map<number, string>(
  Object.entries(grpc.status)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([name, n]) => [n, name]),
);

test('every ErrorCode has exactly one row in docs/errors.md and every row is a real code', () => {
  const rows = tableRows(readDoc('errors.md'));
  const documented = rows.map((r) => r.key);
  const codes: string[] = Object.values(ErrorCode);
  const missing = codes.filter((c) => !documented.includes(c));
  const stale = documented.filter((c) => !codes.includes(c));
  const duplicated = documented.filter((c, i) => documented.indexOf(c) !== i);
  assert.deepEqual({ missing, stale, duplicated }, { missing: [], stale: [], duplicated: [] });
});

test('the exit code and gRPC status of each row in docs/errors.md are the ones the code gets', () => {
  const rows = tableRows(readDoc('errors.md'));
  const header = readDoc('errors.md')
    .split('\n')
    .find((l) => l.startsWith('| code |'));
  assert.ok(header, 'errors.md has a table whose header starts with "| code |"');
  const columns = header.split('|').slice(1, -1).map((c) => c.trim());
  const exitCol = columns.indexOf('exit');
  const grpcCol = columns.indexOf('gRPC status');
  const retryCol = columns.indexOf('retryable');
  assert.ok(exitCol > 0 && grpcCol > 0 && retryCol > 0, `unexpected columns: ${columns.join(', ')}`);
  const wrong: string[] = [];
  for (const { key, cells } of rows) {
    const err = new CertfleetError(key as ErrorCode, 'x');
    const exit = String(exitCodeFor(err));
    const status = GRPC_STATUS_NAME.get(toServiceError(err).code ?? -1) ?? '?';
    if (cells[exitCol] !== exit) wrong.push(`${key}: exit ${cells[exitCol] ?? ''}, code says ${exit}`);
    if (cells[grpcCol] !== `\`${status}\``) wrong.push(`${key}: gRPC ${cells[grpcCol] ?? ''}, code says ${status}`);
    if (!/^(yes|no|depends)\b/.test(cells[retryCol] ?? '')) wrong.push(`${key}: retryable cell "${cells[retryCol] ?? ''}" is not yes/no/depends`);
  }
  assert.deepEqual(wrong, []);
});

test('every controller config field has a row in docs/configuration.md and no row is stale', () => {
  const result = compareFields(controllerConfigSchema, readDoc('configuration.md'), 'Controller fields');
  assert.deepEqual(result, { missing: [], stale: [], duplicated: [] });
});

test('every agent config field has a row in docs/configuration.md and no row is stale', () => {
  const result = compareFields(agentConfigSchema, readDoc('configuration.md'), 'Agent fields');
  assert.deepEqual(result, { missing: [], stale: [], duplicated: [] });
});

test('the field walk reaches nested sections, list elements, map values and union members', () => {
  // The sample paths of the two real schemas that exercise each kind of node.
  const controller = fieldPaths(controllerConfigSchema);
  for (const p of ['stateDir', 'api', 'api.agentOfflineAfter', 'store.type', 'store.path', 'certificates[].names', 'certificates[].agents']) {
    assert.ok(controller.includes(p), `controller paths include ${p}`);
  }
  const agent = fieldPaths(agentConfigSchema);
  for (const p of ['http01.listen', 'hooks.reload.command', 'certificates.<name>.reload.timeout', 'certificates.<name>.verify[].address']) {
    assert.ok(agent.includes(p), `agent paths include ${p}`);
  }
  assert.ok(!agent.some((p) => p.endsWith('[]') || p.endsWith('<name>')), 'list and map containers are not paths of their own');
});

test('a field added to a schema without a docs row is reported missing', () => {
  const extended = z.strictObject({
    ...agentConfigSchema.shape,
    hooks: z.strictObject({ reload: z.string().optional(), undocumentedHook: z.string().optional() }).prefault({}),
    certificates: z.record(z.string(), z.strictObject({ verify: z.array(z.strictObject({ address: z.string(), undocumentedPort: z.int() })) })),
  });
  const result = compareFields(extended, readDoc('configuration.md'), 'Agent fields');
  assert.ok(result.missing.includes('hooks.undocumentedHook'), `missing: ${result.missing.join(', ')}`);
  assert.ok(result.missing.includes('certificates.<name>.verify[].undocumentedPort'), `missing: ${result.missing.join(', ')}`);
  assert.ok(result.stale.includes('certificates.<name>.reload.command'), 'a removed field shows as a stale row');
});

test('the minimal configurations shown in docs/configuration.md are valid', () => {
  const blocks = [...readDoc('configuration.md').matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
  const whole = blocks.filter((b) => b.startsWith('stateDir:'));
  assert.ok(whole.length >= 3, `expected at least 3 complete examples, found ${whole.length}`);
  for (const text of whole) {
    // A controller file has an acme section; an agent file a controller section.
    if (/^acme:/m.test(text)) parseControllerConfig(text, '/etc/certfleet/controller.yaml');
    else parseAgentConfig(text, '/etc/certfleet/agent.yaml');
  }
});

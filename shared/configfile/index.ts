/**
 * Configuration file mechanics shared by both binaries: YAML text in, a validated, frozen
 * object out, or ONE error listing every problem with its file, line and field path.
 *
 * Each binary owns its schema (controller/config with zod through shared/config,
 * agent/config with shared/check); this module owns the mechanics: YAML parsing with
 * positions, `${ENV}` substitution, validation through the schema's `safeParse`, the
 * error text, and freezing, plus the field types of the agent's schema. It does not load
 * zod: the agent imports it (issue #13, agent memory). Only config modules read
 * process.env (STYLE.md rule 8).
 */
import fs from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { c, type Schema, type StringSchema } from '../check/index.js';
import { CertfleetError, ErrorCode } from '../errors/index.js';

/** A problem as a schema reports it (zod 4's issues and shared/check's both fit). */
export interface SchemaIssue {
  readonly code: string;
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
  readonly keys?: ReadonlyArray<string>;
}

/**
 * What parseConfig validates with: a zod schema or a shared/check one (both have
 * `safeParse`, and the walkable `def`/`shape` the unknown-field hint reads).
 */
export interface ConfigSchema<T> {
  safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: ReadonlyArray<SchemaIssue> } };
}

/** The value a {@link ConfigSchema} produces. */
export type ConfigOf<S> = S extends { safeParse(value: unknown): infer R } ? (R extends { success: true; data: infer D } ? D : never) : never;

/** One problem found in a configuration file. */
export interface ConfigProblem {
  /** Dotted path of the field, e.g. `certificates[1].names[0]`; empty for the whole file. */
  path: string;
  /** 1-based line in the file, when known. */
  line?: number;
  message: string;
}

/** Renders a zod/YAML path as `a.b[0].c`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

/** The error thrown for an invalid file: its message lists every problem, one per line. */
export function configError(file: string, problems: ConfigProblem[]): CertfleetError {
  const lines = problems.map((p) => {
    const where = p.line === undefined ? file : `${file}:${p.line}`;
    return `  ${where}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`;
  });
  const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
  return new CertfleetError(ErrorCode.ConfigInvalid, `invalid configuration ${file} (${count}):\n${lines.join('\n')}`, {
    details: { file, problems },
  });
}

function lineOf(doc: Document, counter: LineCounter, path: ReadonlyArray<PropertyKey>): number | undefined {
  // Walk down as far as the path exists: an unknown or missing key points at its parent.
  let node: unknown = doc.contents;
  let best: number | undefined;
  const rangeLine = (n: unknown): number | undefined => {
    const range = (n as YamlNode | null)?.range;
    return range ? counter.linePos(range[0]).line : undefined;
  };
  best = rangeLine(node);
  for (const part of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === part);
      if (!pair) break;
      best = rangeLine(pair.key) ?? best;
      node = pair.value;
    } else if (isSeq(node) && typeof part === 'number') {
      node = node.items[part];
      best = rangeLine(node) ?? best;
    } else {
      break;
    }
  }
  return best;
}

const ENV_REF = /\$\{([A-Z_][A-Z0-9_]*)\}/g;

/** Replaces `${NAME}` in every string value with the environment variable, collecting misses. */
function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[], problems: Array<{ path: PropertyKey[]; message: string }>): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_m, name: string) => {
      const got = env[name];
      if (got === undefined) {
        problems.push({ path, message: `environment variable ${name} is not set` });
        return '';
      }
      return got;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, [...path, i], problems));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, [...path, k], problems);
    return out;
  }
  return value;
}

/** Freezes an object graph in place and returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Parses YAML `text` (named `file` in errors) against `schema`.
 * Throws CertfleetError CONFIG_INVALID listing every problem; returns the frozen result.
 */
export function parseConfig<S extends ConfigSchema<unknown>>(text: string, file: string, schema: S, env: NodeJS.ProcessEnv = process.env): Readonly<ConfigOf<S>> {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw configError(
      file,
      doc.errors.map((e) => ({ path: '', line: counter.linePos(e.pos[0]).line, message: `YAML: ${e.message.split('\n')[0] ?? e.code}` })),
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  const envProblems: Array<{ path: PropertyKey[]; message: string }> = [];
  const substituted = substituteEnv(raw, env, [], envProblems);
  const problems: ConfigProblem[] = envProblems.map((p) => ({ path: formatPath(p.path), line: lineOf(doc, counter, p.path), message: p.message }));
  const result = schema.safeParse(substituted);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const keys: ReadonlyArray<string | undefined> = issue.code === 'unrecognized_keys' && issue.keys !== undefined ? issue.keys : [undefined];
      for (const key of keys) {
        const path = key === undefined ? issue.path : [...issue.path, key];
        const message = key === undefined ? issue.message : `unknown field (allowed: ${allowedKeysHint(schema, issue.path)})`;
        problems.push({ path: formatPath(path), line: lineOf(doc, counter, path), message });
      }
    }
  }
  if (problems.length > 0) {
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    throw configError(file, problems);
  }
  return deepFreeze((result as { data: ConfigOf<S> }).data);
}

/** Lists the keys a strict object schema allows at `path`, for "unknown field" messages. */
function allowedKeysHint(schema: unknown, path: ReadonlyArray<PropertyKey>): string {
  let node: unknown = schema;
  const unwrap = (n: unknown): unknown => {
    let cur = n as { def?: { type?: string; innerType?: unknown; element?: unknown; valueType?: unknown; in?: unknown } } | undefined;
    for (let i = 0; i < 10 && cur?.def; i++) {
      const t = cur.def.type;
      if (t === 'optional' || t === 'default' || t === 'prefault' || t === 'nullable' || t === 'readonly' || t === 'catch') cur = cur.def.innerType as typeof cur;
      else if (t === 'pipe') cur = cur.def.in as typeof cur;
      else break;
    }
    return cur;
  };
  for (const part of path) {
    const n = unwrap(node) as { shape?: Record<string, unknown>; def?: { type?: string; element?: unknown; valueType?: unknown } } | undefined;
    if (typeof part === 'number' && n?.def?.type === 'array') node = n.def.element;
    else if (n?.def?.type === 'record') node = n.def.valueType;
    else if (n?.shape && typeof part === 'string') node = n.shape[part];
    else return '?';
  }
  const n = unwrap(node) as { shape?: Record<string, unknown> } | undefined;
  return n?.shape ? Object.keys(n.shape).join(', ') : '?';
}

/** Reads and parses a configuration file. Unreadable file → CONFIG_UNREADABLE naming it. */
export function loadConfigFile<S extends ConfigSchema<unknown>>(file: string, schema: S, env: NodeJS.ProcessEnv = process.env): Readonly<ConfigOf<S>> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new CertfleetError(ErrorCode.ConfigUnreadable, `cannot read configuration ${file}: ${reason}`, { cause: err, details: { file } });
  }
  return parseConfig(text, file, schema, env);
}

// ---- field types shared by both schemas (zod versions: shared/config) ----

const DURATION = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "500ms", "30s", "5m", "2h", "7d" into milliseconds; undefined if malformed. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  return Number(m[1]) * (UNIT_MS[m[2] ?? 's'] ?? 1000);
}

/** Writes `ms` the way a config file would ("90s", "1d"), for messages about bounds. */
export function formatDurationText(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/**
 * The reading of a bounded duration field (see boundedDuration): milliseconds, or the
 * problem with `text` as the message to report. Throws for bounds that are themselves wrong.
 */
export function durationReader(min: string, max: string, why?: string): (text: string) => number | { problem: string } {
  const minMs = parseDuration(min);
  const maxMs = parseDuration(max);
  if (minMs === undefined || maxMs === undefined || minMs > maxMs) throw new Error(`bad duration bounds ${min}..${max}`);
  return (text) => {
    const ms = parseDuration(text);
    if (ms === undefined) return { problem: `"${text}" is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)` };
    if (ms < minMs) return { problem: `"${text}" is too short: at least ${min}${why === undefined ? '' : ` (${why})`}` };
    if (ms > maxMs) return { problem: `"${text}" is too long: at most ${max}` };
    return ms;
  };
}

/**
 * A duration field bounded to [`min`, `max`] (texts such as "1s", "1d"): a string in
 * YAML, milliseconds after parsing. The bounds exist because every duration ends up in
 * a timer: `0s` made a loop spin (checkInterval busy-looped the controller, a
 * reportInterval of 0s on one agent pinned the controller's CPU), and anything above
 * Node's timer limit (about 24.8 days) fires at once. `why` is added to the "too short"
 * message when the reason is not obvious.
 */
export function boundedDuration(min: string, max: string, why?: string): Schema<number> {
  const read = durationReader(min, max, why);
  return c.string().transform((text, ctx) => {
    const ms = read(text);
    if (typeof ms === 'number') return ms;
    ctx.addIssue({ message: ms.problem });
    return 0;
  });
}

/** What a host:port field must look like; IPv6 hosts in brackets. */
export const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;
/** The message for a field that is not {@link HOST_PORT}. */
export const HOST_PORT_MESSAGE = 'expected host:port, e.g. 127.0.0.1:7443';

/** "host:port" with a numeric port; IPv6 hosts in brackets. */
export const hostPort: StringSchema = c.string().regex(HOST_PORT, HOST_PORT_MESSAGE);

/** Splits "host:port" (validated by {@link hostPort}). */
export function splitHostPort(text: string): { host: string; port: number } {
  const idx = text.lastIndexOf(':');
  const host = text.slice(0, idx).replace(/^\[|\]$/g, '');
  return { host, port: Number(text.slice(idx + 1)) };
}

/** How a certificate name must look (shared/wire CERT_NAME_PATTERN), for messages. */
export const CERT_NAME_RULE = 'lower-case letters, digits and "-", at most 63 characters, starting and ending with a letter or digit';

/** The log levels a configuration may name (pino's). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const logLevel = c.enum(LOG_LEVELS);

/** A NATS server URL field, and its default. */
export const NATS_SERVER = /^(nats|tls):\/\/[^\s]+$/;
export const NATS_SERVER_MESSAGE = 'expected nats://host:port or tls://host:port';
export const DEFAULT_NATS_SERVERS: readonly string[] = ['nats://127.0.0.1:4222'];

/** NATS connection settings, the same for both binaries (shared/config has the zod one). */
export const natsSection = c
  .strictObject({
    servers: c.array(c.string().regex(NATS_SERVER, NATS_SERVER_MESSAGE)).min(1).default([...DEFAULT_NATS_SERVERS]),
    credentialsFile: c.string().min(1).optional(),
    tokenFile: c.string().min(1).optional(),
    tlsCaFile: c.string().min(1).optional(),
  })
  .prefault({});

/** The NATS section with its file paths resolved by `abs` (relative to the config file). */
export function resolveNatsPaths<N extends { credentialsFile?: string | undefined; tokenFile?: string | undefined; tlsCaFile?: string | undefined }>(
  nats: N,
  abs: (p: string) => string,
): N {
  return {
    ...nats,
    ...(nats.credentialsFile === undefined ? {} : { credentialsFile: abs(nats.credentialsFile) }),
    ...(nats.tokenFile === undefined ? {} : { tokenFile: abs(nats.tokenFile) }),
    ...(nats.tlsCaFile === undefined ? {} : { tlsCaFile: abs(nats.tlsCaFile) }),
  };
}

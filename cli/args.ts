/**
 * Command-line parsing: argv in, an {@link Invocation} out, or a USAGE_INVALID error whose
 * message fits on one line. Pure: no environment, no files, no clock.
 *
 * Parsing runs twice. A lenient pass over every known option finds the command words
 * (so global options may stand before or after the command); a strict `util.parseArgs`
 * pass with only that command's options then rejects anything the command does not take.
 */
import { parseArgs } from 'node:util';
import { CertfleetError, ErrorCode } from '../shared/errors/index.js';
import { parseDuration } from '../shared/configfile/index.js';
import { isValidLabelKey, isValidLabelValue, parseSelector } from '../shared/selector/index.js';
import { AGENT_NAME_PATTERN, CERT_NAME_PATTERN, REVOCATION_REASONS, isRevocationReason, type RevocationReason } from '../shared/wire/index.js';
import { OPERATOR_ROLES, isOperatorRole, type OperatorRole } from '../shared/model/index.js';
import type { CommandName } from './usage.js';

/** Default deadline of one operator request. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** What the operator commands need to reach the controller. */
export interface OperatorOptions {
  /** From --credentials; undefined means "environment, then the default path". */
  credentialsFile: string | undefined;
  timeoutMs: number;
}

/**
 * Default deadline of `renew --dry-run` and `check`: a whole issuance against the staging
 * CA, or DNS propagation per name, takes minutes, not the 10 s of a read.
 */
export const LONG_TIMEOUT_MS = 15 * 60_000;

/** Default bound of `--wait` (`--wait-timeout`). */
export const DEFAULT_WAIT_TIMEOUT_MS = 10 * 60_000;

/** `--wait`: follow a renew, rollback or release until the fleet serves its version. */
export interface WaitOptions {
  /** Give up (WAIT_TIMEOUT) after this long. */
  timeoutMs: number;
}

/** Where `agent enroll` takes its token from. */
export type TokenSource = { kind: 'inline'; token: string } | { kind: 'file'; path: string };

/** One parsed command line. */
export type Invocation =
  | { command: 'help'; topic: CommandName | undefined }
  | { command: 'version' }
  | { command: 'controller' | 'agent'; configFile: string; check: boolean; json: boolean }
  | { command: 'controller'; configFile: string; check: false; writeNatsConfig: true; json: boolean }
  | { command: 'agent enroll'; configFile: string; token: TokenSource; json: boolean }
  | {
      command: 'controller signing-key';
      configFile: string;
      /** A rotation step, or 'list' (the default): docs/security.md. */
      step: 'list' | 'prepare' | 'activate' | 'retire';
      json: boolean;
    }
  | { command: 'status' | 'certs' | 'agents' | 'budgets'; json: boolean; operator: OperatorOptions }
  | { command: 'show' | 'history'; name: string; json: boolean; operator: OperatorOptions }
  | { command: 'release'; name: string; json: boolean; wait?: WaitOptions; operator: OperatorOptions }
  | { command: 'renew'; name: string; cancel: boolean; json: boolean; wait?: WaitOptions; operator: OperatorOptions }
  /** `renew NAME --dry-run`: rehearse against the staging CA. */
  | { command: 'renew'; name: string; dryRun: true; json: boolean; operator: OperatorOptions }
  /** `check [NAME]`: undefined name: every certificate. */
  | { command: 'check'; name: string | undefined; json: boolean; operator: OperatorOptions }
  | {
      command: 'rollback';
      name: string;
      /** 0: the version before the desired one (the controller chooses). */
      toVersion: number;
      json: boolean;
      wait?: WaitOptions;
      operator: OperatorOptions;
    }
  | {
      command: 'revoke';
      name: string;
      /** The version to revoke (required: revocation cannot be undone). */
      version: number;
      reason: RevocationReason;
      json: boolean;
      operator: OperatorOptions;
    }
  | {
      command: 'events';
      /** undefined: every certificate. */
      cert: string | undefined;
      /** 0 lets the controller choose (50). */
      limit: number;
      follow: boolean;
      json: boolean;
      operator: OperatorOptions;
    }
  | {
      command: 'token create';
      agent: string;
      labels: Record<string, string>;
      /** 0 lets the controller choose (one hour). */
      ttlSeconds: number;
      json: boolean;
      operator: OperatorOptions;
    }
  | { command: 'whoami' | 'operators list'; json: boolean; operator: OperatorOptions }
  | {
      command: 'operators create';
      name: string;
      role: OperatorRole;
      /** Where the new operator's credentials file is written (must not exist yet). */
      out: string;
      json: boolean;
      operator: OperatorOptions;
    }
  | { command: 'operators revoke'; name: string; json: boolean; operator: OperatorOptions }
  | { command: 'agents remove'; name: string; json: boolean; operator: OperatorOptions }
  | { command: 'operators set-role'; name: string; role: OperatorRole; json: boolean; operator: OperatorOptions }
  | {
      command: 'console';
      /** Where the console listens: a loopback address only (port 0: the system picks one). */
      listen: { host: string; port: number };
      operator: OperatorOptions;
    }
  | {
      command: 'import-certbot';
      /** certbot's configuration directory. */
      dir: string;
      configFile: string;
      agents: string;
      out: string | undefined;
      lineages: string[];
      renames: Record<string, string>;
      dryRun: boolean;
      force: boolean;
    };

type OptionSpec = { type: 'string' | 'boolean'; short?: string; multiple?: boolean };

const GLOBAL: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  credentials: { type: 'string' },
  timeout: { type: 'string' },
};

const COMMAND_OPTIONS: Record<CommandName, Record<string, OptionSpec>> = {
  controller: { config: { type: 'string' }, check: { type: 'boolean' }, 'write-nats-config': { type: 'boolean' }, json: { type: 'boolean' } },
  agent: { config: { type: 'string' }, check: { type: 'boolean' }, json: { type: 'boolean' } },
  'agent enroll': { config: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' }, json: { type: 'boolean' } },
  'controller signing-key': { config: { type: 'string' }, json: { type: 'boolean' } },
  status: { json: { type: 'boolean' } },
  certs: { json: { type: 'boolean' } },
  agents: { json: { type: 'boolean' } },
  show: { json: { type: 'boolean' } },
  history: { json: { type: 'boolean' } },
  renew: { json: { type: 'boolean' }, cancel: { type: 'boolean' }, wait: { type: 'boolean' }, 'wait-timeout': { type: 'string' }, 'dry-run': { type: 'boolean' } },
  check: { json: { type: 'boolean' } },
  rollback: { json: { type: 'boolean' }, to: { type: 'string' }, wait: { type: 'boolean' }, 'wait-timeout': { type: 'string' } },
  release: { json: { type: 'boolean' }, wait: { type: 'boolean' }, 'wait-timeout': { type: 'string' } },
  // `--version N` here is the version to revoke; the global `--version` (print the
  // program's version) is a flag everywhere else.
  revoke: { json: { type: 'boolean' }, version: { type: 'string' }, reason: { type: 'string' } },
  events: { json: { type: 'boolean' }, cert: { type: 'string' }, limit: { type: 'string' }, follow: { type: 'boolean' } },
  budgets: { json: { type: 'boolean' } },
  'token create': { json: { type: 'boolean' }, label: { type: 'string', multiple: true }, ttl: { type: 'string' } },
  whoami: { json: { type: 'boolean' } },
  'operators create': { json: { type: 'boolean' }, role: { type: 'string' }, out: { type: 'string' } },
  'operators list': { json: { type: 'boolean' } },
  'operators revoke': { json: { type: 'boolean' } },
  'agents remove': { json: { type: 'boolean' } },
  'operators set-role': { json: { type: 'boolean' }, role: { type: 'string' } },
  console: { listen: { type: 'string' } },
  'import-certbot': {
    config: { type: 'string' },
    agents: { type: 'string' },
    out: { type: 'string' },
    lineage: { type: 'string', multiple: true },
    rename: { type: 'string', multiple: true },
    'dry-run': { type: 'boolean' },
    force: { type: 'boolean' },
  },
};

/** The subcommands of `operators`. */
const OPERATORS_SUBCOMMANDS = ['create', 'list', 'revoke', 'set-role'] as const;

/** Command words after the command itself: `agent enroll` and `token create` take one more word. */
const COMMAND_WORDS = new Set([
  'controller',
  'agent',
  'status',
  'certs',
  'agents',
  'show',
  'history',
  'renew',
  'check',
  'rollback',
  'release',
  'revoke',
  'events',
  'budgets',
  'token',
  'whoami',
  'operators',
  'import-certbot',
  'console',
]);

/**
 * Every option of every command, for the lenient first pass (no two commands disagree on
 * a type). The global options come last: `revoke --version N` takes a value, but in the
 * first pass `--version` must stay the global flag, so that `certfleet --version` prints
 * the version (the strict pass then reads revoke's value).
 */
const ALL_OPTIONS: Record<string, OptionSpec> = Object.assign({}, ...Object.values(COMMAND_OPTIONS), GLOBAL) as Record<string, OptionSpec>;

/**
 * Whether a command line asks for JSON, for reporting an error when parsing failed:
 * `--json` that is not where a value belongs (`events --cert --json` is a missing value,
 * reported as text).
 */
export function wantsJson(argv: readonly string[]): boolean {
  return argv.some((word, i) => {
    if (word !== '--json') return false;
    const prev = i > 0 ? argv[i - 1] : undefined;
    const option = prev?.startsWith('--') === true && !prev.includes('=') ? ALL_OPTIONS[prev.slice(2)] : undefined;
    return option?.type !== 'string';
  });
}

/** A usage error; `hint` names the help to read and is printed on its own line. */
export function usageError(message: string, command?: CommandName): CertfleetError {
  const hint = command === undefined ? 'certfleet --help' : `certfleet ${command} --help`;
  return new CertfleetError(ErrorCode.UsageInvalid, message, { details: { hint } });
}

/**
 * Parses `argv` (without node and the script). Throws a CertfleetError USAGE_INVALID for
 * an unknown command or option, a missing or malformed value, or a wrong number of
 * arguments. `--help` wins over everything else, then `--version`, so both work even on
 * an otherwise incomplete command line.
 */
export function parseCommandLine(rawArgv: readonly string[]): Invocation {
  const argv = attachNegativeValues(rawArgv);
  const first = parseArgs({ args: [...argv], options: ALL_OPTIONS, strict: false, allowPositionals: true });
  const words = first.positionals;

  if (words.length === 0) {
    if (first.values['help'] === true) return { command: 'help', topic: undefined };
    if (first.values['version'] === true) return { command: 'version' };
    throw usageError('missing command');
  }
  const [word0 = '', word1] = words;
  if (word0 === 'help') return { command: 'help', topic: helpTopic(words.slice(1)) };
  const command = commandOf(word0, word1, first.values['help'] === true);
  if (command === undefined) {
    // `certfleet token --help` shows the help of the only `token` subcommand;
    // `certfleet operators --help` the one of `operators create`, which lists the others.
    return { command: 'help', topic: word0 === 'token' ? 'token create' : word0 === 'operators' ? 'operators create' : undefined };
  }

  const spec = { ...GLOBAL, ...COMMAND_OPTIONS[command] };
  let parsed: { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };
  try {
    const r = parseArgs({ args: [...argv], options: spec, strict: true, allowPositionals: true });
    parsed = { values: r.values as typeof parsed.values, positionals: r.positionals };
  } catch (err) {
    throw usageError(parseArgsMessage(err), command);
  }
  const v = parsed.values;
  if (v['help'] === true) return { command: 'help', topic: command };
  if (v['version'] === true) return { command: 'version' };

  const commandWordCount = command.includes(' ') ? 2 : 1;
  const args = parsed.positionals.slice(commandWordCount);
  /** `{ wait }` with --wait, `{}` without (the field is absent then). */
  const wait = (): { wait?: WaitOptions } => {
    const limit = v['wait-timeout'];
    if (v['wait'] !== true) {
      if (limit !== undefined) throw usageError('--wait-timeout needs --wait', command);
      return {};
    }
    return { wait: { timeoutMs: limit === undefined ? DEFAULT_WAIT_TIMEOUT_MS : positiveDuration(String(limit), '--wait-timeout', command) } };
  };
  const operator = (defaultTimeoutMs = DEFAULT_TIMEOUT_MS): OperatorOptions => ({
    credentialsFile: nonEmpty(v['credentials'], '--credentials', command),
    timeoutMs: v['timeout'] === undefined ? defaultTimeoutMs : timeoutMs(String(v['timeout']), command),
  });

  switch (command) {
    case 'controller':
    case 'agent':
      noArgs(args, command);
      if (v['write-nats-config'] === true) {
        if (v['check'] === true) throw usageError('give either --check or --write-nats-config, not both', command);
        return { command: 'controller', configFile: requireConfig(v['config'], command), check: false, writeNatsConfig: true, json: v['json'] === true };
      }
      if (v['json'] === true && v['check'] !== true) throw usageError('--json goes with --check or --write-nats-config (the daemon logs JSON already)', command);
      return { command, configFile: requireConfig(v['config'], command), check: v['check'] === true, json: v['json'] === true };
    case 'controller signing-key': {
      const configFile = requireConfig(v['config'], command);
      if (args.length > 1) throw usageError(`unexpected argument '${args[1] ?? ''}'`, command);
      const step = args[0] ?? 'list';
      if (step !== 'list' && step !== 'prepare' && step !== 'activate' && step !== 'retire') {
        throw usageError(`unknown step '${step}': list, prepare, activate or retire`, command);
      }
      return { command, configFile, step, json: v['json'] === true };
    }
    case 'agent enroll': {
      noArgs(args, command);
      const configFile = requireConfig(v['config'], command);
      const inline = v['token'];
      const file = v['token-file'];
      if (inline !== undefined && file !== undefined) throw usageError('give either --token or --token-file, not both', command);
      if (typeof inline === 'string') {
        if (inline.trim() === '') throw usageError('--token is empty', command);
        return { command, configFile, token: { kind: 'inline', token: inline.trim() }, json: v['json'] === true };
      }
      if (typeof file === 'string') {
        if (file === '') throw usageError('--token-file needs a non-empty value', command);
        return { command, configFile, token: { kind: 'file', path: file }, json: v['json'] === true };
      }
      throw usageError('missing --token-file FILE (or --token TOKEN)', command);
    }
    case 'status':
    case 'certs':
    case 'agents':
    case 'budgets':
      noArgs(args, command);
      return { command, json: v['json'] === true, operator: operator() };
    case 'show':
    case 'history':
      return { command, name: certName(args, command), json: v['json'] === true, operator: operator() };
    case 'release':
      return { command, name: certName(args, command), json: v['json'] === true, ...wait(), operator: operator() };
    case 'renew': {
      const name = certName(args, command);
      if (v['dry-run'] === true) {
        if (v['cancel'] === true || v['wait'] === true || v['wait-timeout'] !== undefined) throw usageError('--dry-run goes alone (no --cancel, --wait or --wait-timeout)', command);
        return { command, name, dryRun: true, json: v['json'] === true, operator: operator(LONG_TIMEOUT_MS) };
      }
      if (v['cancel'] === true && v['wait'] === true) throw usageError('give either --cancel or --wait, not both', command);
      return { command, name, cancel: v['cancel'] === true, json: v['json'] === true, ...wait(), operator: operator() };
    }
    case 'check': {
      if (args.length > 1) throw usageError(`unexpected argument '${args[1] ?? ''}'`, command);
      return { command, name: args.length === 0 ? undefined : certName(args, command), json: v['json'] === true, operator: operator(LONG_TIMEOUT_MS) };
    }
    case 'rollback': {
      const name = certName(args, command);
      const to = v['to'];
      return {
        command,
        name,
        toVersion: to === undefined ? 0 : positiveInteger(String(to), '--to', command),
        json: v['json'] === true,
        ...wait(),
        operator: operator(),
      };
    }
    case 'revoke': {
      const name = certName(args, command);
      const version = v['version'];
      if (typeof version !== 'string') throw usageError(`missing --version N (the version to revoke; certfleet history ${name} lists them)`, command);
      const reason = v['reason'] ?? 'unspecified';
      if (!isRevocationReason(reason)) {
        throw usageError(`--reason '${String(reason)}' is not a revocation reason: one of ${Object.keys(REVOCATION_REASONS).join(', ')}`, command);
      }
      return { command, name, version: positiveInteger(version, '--version', command), reason, json: v['json'] === true, operator: operator() };
    }
    case 'events': {
      noArgs(args, command);
      const cert = v['cert'];
      if (cert !== undefined && !CERT_NAME_PATTERN.test(String(cert))) {
        throw usageError(`--cert '${String(cert)}' is not a valid certificate name`, command);
      }
      const limit = v['limit'];
      return {
        command,
        cert: cert === undefined ? undefined : String(cert),
        limit: limit === undefined ? 0 : positiveInteger(String(limit), '--limit', command),
        follow: v['follow'] === true,
        json: v['json'] === true,
        operator: operator(),
      };
    }
    case 'token create': {
      if (args.length === 0) throw usageError('missing AGENT (the name the agent will enrol as)', command);
      if (args.length > 1) throw usageError(`unexpected argument '${args[1] ?? ''}'`, command);
      const agent = args[0] ?? '';
      if (!AGENT_NAME_PATTERN.test(agent)) {
        throw usageError(`'${agent}' is not a valid agent name (lower-case letters, digits and '-', at most 63)`, command);
      }
      const ttl = v['ttl'];
      return {
        command,
        agent,
        labels: parseLabels((v['label'] as string[] | undefined) ?? [], command),
        ttlSeconds: ttl === undefined ? 0 : ttlSeconds(String(ttl), command),
        json: v['json'] === true,
        operator: operator(),
      };
    }
    case 'whoami':
    case 'operators list':
      noArgs(args, command);
      return { command, json: v['json'] === true, operator: operator() };
    case 'operators create': {
      const name = operatorName(args, command);
      const out = nonEmpty(v['out'], '--out', command);
      if (out === undefined) throw usageError('missing --out FILE (where the new credentials are written)', command);
      return { command, name, role: requireRole(v['role'], command), out, json: v['json'] === true, operator: operator() };
    }
    case 'operators revoke':
      return { command, name: operatorName(args, command), json: v['json'] === true, operator: operator() };
    case 'agents remove': {
      const name = oneName(args, command, { what: 'the agent to remove', kind: 'agent', pattern: AGENT_NAME_PATTERN });
      return { command, name, json: v['json'] === true, operator: operator() };
    }
    case 'operators set-role': {
      const name = operatorName(args, command);
      return { command, name, role: requireRole(v['role'], command), json: v['json'] === true, operator: operator() };
    }
    case 'console':
      noArgs(args, command);
      return { command, listen: listenAddress(v['listen'], command), operator: operator() };
    case 'import-certbot': {
      if (args.length === 0) throw usageError("missing DIR (certbot's configuration directory, e.g. /etc/letsencrypt)", command);
      if (args.length > 1) throw usageError(`unexpected argument '${args[1] ?? ''}'`, command);
      const agents = nonEmpty(v['agents'], '--agents', command);
      if (agents === undefined) throw usageError('missing --agents SELECTOR (the agents that serve the imported certificates, e.g. role=lb)', command);
      try {
        parseSelector(agents);
      } catch (err) {
        throw usageError(`--agents '${agents}' is not a label selector: ${(err as Error).message}`, command);
      }
      const renames: Record<string, string> = {};
      for (const item of (v['rename'] as string[] | undefined) ?? []) {
        const eq = item.lastIndexOf('=');
        const lineage = item.slice(0, eq);
        const name = item.slice(eq + 1);
        if (eq <= 0) throw usageError(`--rename '${item}' is not LINEAGE=NAME`, command);
        if (!CERT_NAME_PATTERN.test(name)) throw usageError(`--rename '${item}': '${name}' is not a valid certificate name (lower-case letters, digits and '-', at most 63)`, command);
        if (Object.hasOwn(renames, lineage)) throw usageError(`--rename ${lineage} given twice`, command);
        renames[lineage] = name;
      }
      const lineages = (v['lineage'] as string[] | undefined) ?? [];
      if (lineages.some((l) => l === '')) throw usageError('--lineage needs a non-empty value', command);
      return {
        command,
        dir: args[0] ?? '',
        configFile: requireConfig(v['config'], command),
        agents,
        out: nonEmpty(v['out'], '--out', command),
        lineages,
        renames,
        dryRun: v['dry-run'] === true,
        force: v['force'] === true,
      };
    }
  }
}

/** `console --listen` when not given. */
export const DEFAULT_CONSOLE_LISTEN = '127.0.0.1:8765';

/**
 * `--listen HOST:PORT` of `console`: HOST must be a loopback address (127.0.0.0/8, ::1,
 * written [::1]:PORT, or localhost), because the console acts with the operator's own
 * credentials and must not become a new way into the fleet from the network.
 */
function listenAddress(value: unknown, command: CommandName): { host: string; port: number } {
  const text = nonEmpty(value, '--listen', command) ?? DEFAULT_CONSOLE_LISTEN;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3] ?? -1);
  if (m === null || host === undefined || port > 65535) throw usageError(`--listen '${text}' is not HOST:PORT (e.g. 127.0.0.1:8765)`, command);
  const loopback = host === 'localhost' || host === '::1' || /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(host);
  if (!loopback) {
    throw usageError(`--listen '${text}': the console listens on loopback only (127.0.0.1, ::1 or localhost); reach it from elsewhere through an SSH tunnel`, command);
  }
  return { host: host === 'localhost' ? '127.0.0.1' : host, port };
}

/** The one NAME argument of the `operators` subcommands. */
function operatorName(args: string[], command: CommandName): string {
  return oneName(args, command, { what: 'the operator', kind: 'operator', pattern: AGENT_NAME_PATTERN });
}

/**
 * The one NAME argument of a command: present, alone, and of the name syntax `pattern`
 * (lower-case letters, digits and '-', at most 63). `what` says what the NAME is in the
 * "missing NAME" message, `kind` in the "not a valid ... name" one.
 */
function oneName(args: string[], command: CommandName, spec: { what: string; kind: string; pattern: RegExp }): string {
  if (args.length === 0) throw usageError(`missing NAME (${spec.what})`, command);
  if (args.length > 1) throw usageError(`unexpected argument '${args[1] ?? ''}'`, command);
  const name = args[0] ?? '';
  if (!spec.pattern.test(name)) {
    throw usageError(`'${name}' is not a valid ${spec.kind} name (lower-case letters, digits and '-', at most 63)`, command);
  }
  return name;
}

function requireRole(value: unknown, command: CommandName): OperatorRole {
  if (value === undefined) throw usageError(`missing --role ROLE (${OPERATOR_ROLES.join(', ')})`, command);
  if (!isOperatorRole(value)) throw usageError(`--role '${typeof value === 'string' ? value : ''}' is not a role: one of ${OPERATOR_ROLES.join(', ')}`, command);
  return value;
}

function commandOf(word0: string, word1: string | undefined, help: boolean): CommandName | undefined {
  if (!COMMAND_WORDS.has(word0)) throw usageError(`unknown command '${word0}'`);
  if (word0 === 'agent' && word1 === 'enroll') return 'agent enroll';
  if (word0 === 'controller' && word1 === 'signing-key') return 'controller signing-key';
  // `agents` alone lists; `agents remove NAME` removes (any other word is refused by `agents`).
  if (word0 === 'agents' && word1 === 'remove') return 'agents remove';
  if (word0 === 'operators') {
    if (word1 !== undefined && (OPERATORS_SUBCOMMANDS as readonly string[]).includes(word1)) return `operators ${word1}` as CommandName;
    if (word1 === undefined && help) return undefined;
    throw usageError(
      word1 === undefined ? `missing subcommand: certfleet operators ${OPERATORS_SUBCOMMANDS.join('|')}` : `unknown command 'operators ${word1}'`,
      'operators create',
    );
  }
  if (word0 === 'token') {
    if (word1 === 'create') return 'token create';
    if (word1 === undefined && help) return undefined;
    throw usageError(word1 === undefined ? "missing subcommand: certfleet token create AGENT" : `unknown command 'token ${word1}'`, 'token create');
  }
  return word0 as CommandName;
}

function helpTopic(words: string[]): CommandName | undefined {
  if (words.length === 0) return undefined;
  const joined = words.join(' ');
  if (joined === 'token') return 'token create';
  if (joined === 'operators') return 'operators create';
  if (joined in COMMAND_OPTIONS) return joined as CommandName;
  throw usageError(`no help for unknown command '${joined}'`);
}

/**
 * `--to -1` becomes `--to=-1`. util.parseArgs refuses a value that starts with "-" as
 * "argument is ambiguous", which hid the real mistake (a negative number); attached,
 * the value reaches the option's own check, which says what the value must be.
 * Only values that look like numbers are attached: `--cert --json` stays a missing value.
 */
function attachNegativeValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const next = argv[i + 1];
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : undefined;
    if (name !== undefined && ALL_OPTIONS[name]?.type === 'string' && next !== undefined && /^-[0-9.]/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** The first sentence of node's parseArgs error, which is the useful part. */
function parseArgsMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (unknown) return `unknown option '${unknown[1] ?? ''}'`;
  // "Option '--cert <value>' argument is ambiguous": the next word is another option.
  const ambiguous = /^Option '(-[^ ']+)(?: <value>)?' argument is ambiguous/.exec(message) ?? /^Option '-\w, (--[^ ']+)(?: <value>)?' argument is ambiguous/.exec(message);
  if (ambiguous) return `${ambiguous[1] ?? 'the option'} needs a value (the next word starts with "-"; write ${ambiguous[1] ?? '--option'}=VALUE if the value really does)`;
  const missing = /^Option '(?:-\w, )?(--[^ ']+) <value>' argument missing/.exec(message);
  if (missing) return `${missing[1] ?? 'the option'} needs a value`;
  const firstSentence = message.split(/\.(\s|$)/)[0] ?? message;
  return firstSentence.charAt(0).toLowerCase() + firstSentence.slice(1);
}

function noArgs(args: string[], command: CommandName): void {
  if (args.length > 0) throw usageError(`unexpected argument '${args[0] ?? ''}'`, command);
}

/** The one NAME argument of the per-certificate commands, checked against the certificate name syntax. */
function certName(args: string[], command: CommandName): string {
  return oneName(args, command, { what: 'the certificate, as in certfleet certs', kind: 'certificate', pattern: CERT_NAME_PATTERN });
}

const MAX_UINT32 = 0xffff_ffff;

/** A decimal integer from 1 to 2^32-1 (the wire's uint32); no sign, no leading zero, no unit. */
function positiveInteger(text: string, flag: string, command: CommandName): number {
  const n = /^[1-9][0-9]{0,9}$/.test(text) ? Number(text) : 0;
  if (n < 1 || n > MAX_UINT32) {
    const why = /^-\d/.test(text) ? ': negative numbers are not allowed' : '';
    throw usageError(`${flag} '${text}' is not a positive integer${why} (1, 2, 3, ...)`, command);
  }
  return n;
}

function requireConfig(value: unknown, command: CommandName): string {
  if (typeof value !== 'string') throw usageError('missing --config FILE', command);
  if (value === '') throw usageError('--config needs a non-empty value', command);
  return value;
}

function nonEmpty(value: unknown, flag: string, command: CommandName): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw usageError(`${flag} needs a non-empty value`, command);
  return value;
}

function positiveDuration(text: string, flag: string, command: CommandName): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) throw usageError(`${flag} '${text}' is not a positive duration (e.g. 500ms, 30s, 5m, 2h, 7d)`, command);
  return ms;
}


/** Shortest and longest --timeout: below half a second a TLS handshake alone may not finish. */
export const MIN_TIMEOUT_MS = 500;
export const MAX_TIMEOUT_MS = 3_600_000;

function timeoutMs(text: string, command: CommandName): number {
  const ms = positiveDuration(text, '--timeout', command);
  if (ms < MIN_TIMEOUT_MS) throw usageError(`--timeout '${text}' is too short: at least 500ms (a shorter deadline expires before the controller can answer)`, command);
  if (ms > MAX_TIMEOUT_MS) throw usageError(`--timeout '${text}' is too long: at most 1h`, command);
  return ms;
}

function ttlSeconds(text: string, command: CommandName): number {
  const ms = positiveDuration(text, '--ttl', command);
  if (ms < 1000) throw usageError(`--ttl '${text}' is shorter than one second`, command);
  const seconds = Math.floor(ms / 1000);
  if (seconds > MAX_UINT32) throw usageError(`--ttl '${text}' is too long`, command);
  return seconds;
}

function parseLabels(items: string[], command: CommandName): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw usageError(`--label '${item}' is not key=value`, command);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (!isValidLabelKey(key)) throw usageError(`--label '${item}': '${key}' is not a valid label key`, command);
    if (!isValidLabelValue(value)) throw usageError(`--label '${item}': '${value}' is not a valid label value`, command);
    if (Object.hasOwn(labels, key)) throw usageError(`--label '${key}' given twice`, command);
    labels[key] = value;
  }
  return labels;
}

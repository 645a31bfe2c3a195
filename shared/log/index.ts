/**
 * Logging: one pino root per process, a child per component, a child per unit of work.
 *
 * Messages are short phrases ("order placed"); context goes into fields whose names are
 * the constants in {@link LogKey}. Anything that could hold key material is redacted by
 * path, and the code never logs PEM private keys or tokens in the first place.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

/** Field names used in log lines. One name per meaning across the project. */
export const LogKey = {
  component: 'component',
  cert: 'cert',
  version: 'version',
  agent: 'agent',
  order: 'order',
  /** The controller issuer (CA account, config `issuers`) an order goes to. */
  issuer: 'issuer',
  identifier: 'identifier',
  token: 'challengeToken',
  err: 'err',
  code: 'code',
  durationMs: 'durationMs',
  /** A component's part, when the logger handed in already names another component (componentLogger). */
  subsystem: 'subsystem',
  /** Why something happened or was refused: a short text. */
  reason: 'reason',
  attempt: 'attempt',
  attempts: 'attempts',
  intervalMs: 'intervalMs',
  signal: 'signal',
  file: 'file',
  // NATS
  server: 'server',
  servers: 'servers',
  serverVersion: 'serverVersion',
  stream: 'stream',
  subject: 'subject',
  seq: 'seq',
  lastSeq: 'lastSeq',
  cursor: 'cursor',
  pending: 'pending',
  bucket: 'bucket',
  kvKey: 'kvKey',
  revision: 'revision',
  from: 'from',
  to: 'to',
  follow: 'follow',
  // systemd
  socket: 'socket',
  // DNS-01
  provider: 'provider',
  fqdn: 'fqdn',
  zone: 'zone',
  names: 'names',
  action: 'action',
  removed: 'removed',
  failed: 'failed',
  /** An ACME certificate profile (draft-ietf-acme-profiles). */
  profile: 'profile',
  // Several controllers (controller/intents)
  /** The id of an operator call handed from a follower controller to the leader. */
  intent: 'intent',
  /** The OperatorBackend method an intent calls. */
  method: 'method',
  epoch: 'epoch',
} as const;

/** Paths pino replaces with "[redacted]" wherever they appear (two levels deep). */
export const REDACT_PATHS = [
  'privateKeyPem',
  'keyPem',
  'key',
  'privkey',
  'token',
  'password',
  'secretId',
  'secret',
  'creds',
  'credentials',
  'natsCredentials',
  'seed',
  '*.privateKeyPem',
  '*.keyPem',
  '*.key',
  '*.privkey',
  '*.token',
  '*.password',
  '*.secretId',
  '*.secret',
  '*.creds',
  '*.credentials',
  '*.natsCredentials',
  '*.seed',
];

export interface RootLoggerOptions {
  level?: LevelWithSilent;
  /** Program name in every line: "controller" or "agent". */
  name: string;
  /** Where lines go; default stdout. */
  destination?: NodeJS.WritableStream;
}

/** Creates the process's root logger. Call once, in the binary's main. */
export function createRootLogger(options: RootLoggerOptions): Logger {
  const opts = {
    name: options.name,
    level: options.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return options.destination === undefined
    ? pino(opts)
    : pino(opts, options.destination as unknown as pino.DestinationStream);
}

/**
 * The logger of component `name`, made from `log` without ever repeating the "component"
 * key (pino writes a child's bindings after its parent's, so a child that binds a key its
 * parent already bound puts the key twice in every line):
 *   * `log` itself when it is already bound to `name` (the caller named the component);
 *   * a child binding {component: name} when `log` has no component;
 *   * a child binding {subsystem: name} when `log` belongs to another component.
 * Modules that create their own component logger from a logger handed in use this, not
 * `log.child({ component })`.
 */
export function componentLogger(log: Logger, name: string): Logger {
  const bound: unknown = log.bindings()[LogKey.component];
  if (bound === name) return log;
  if (bound === undefined) return log.child({ [LogKey.component]: name });
  return log.child({ [LogKey.subsystem]: name });
}

/** A logger that drops everything; for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

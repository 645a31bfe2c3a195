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
  identifier: 'identifier',
  token: 'challengeToken',
  err: 'err',
  code: 'code',
  durationMs: 'durationMs',
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

/** A logger that drops everything; for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * The operator credentials file: where the controllers are and the mutual-TLS material
 * to reach them. The controller writes it at initialisation (mode 0600); the CLI only
 * reads it.
 *
 *   { "server": "127.0.0.1:7443", "servers": ["127.0.0.1:7443", "127.0.0.1:7444"],
 *     "serverName": "localhost", "caPem": "...", "certPem": "...", "keyPem": "..." }
 *
 * `servers` is optional: every controller (HA), tried in order, the CLI fails over
 * between them; when present it is used instead of `server`, which stays for older
 * files and older CLIs. A file needs at least one of the two. `serverName` is optional:
 * the TLS name to expect when it differs from the dialled host. Unknown fields are
 * ignored so a newer controller can add some. Error messages name fields, never their
 * values (one of them is a private key).
 */
import fs from 'node:fs';
import { CertfleetError, ErrorCode } from '../shared/errors/index.js';
import { configError, formatPath, hostPort, z } from '../shared/config/index.js';

/** Where the controller writes the credentials when nothing else is said. */
export const DEFAULT_CREDENTIALS_FILE = '/var/lib/certfleet/admin-credentials.json';

/** The environment variable naming the credentials file. */
export const CREDENTIALS_ENV = 'CERTFLEET_CREDENTIALS';

const pem = (kind: string) => z.string().refine((text) => text.includes('-----BEGIN'), { message: `expected a PEM ${kind}` });

const credentialsSchema = z
  .object({
    server: hostPort.optional(),
    servers: z.array(hostPort).min(1, 'give at least one host:port').optional(),
    serverName: z.string().min(1).optional(),
    caPem: pem('CA certificate'),
    certPem: pem('certificate'),
    keyPem: pem('private key'),
  })
  .superRefine((c, ctx) => {
    if (c.server === undefined && c.servers === undefined) ctx.addIssue({ code: 'custom', path: ['server'], message: "required: the controller's host:port (or servers: a list)" });
  });

/** Parsed credentials. */
export type OperatorCredentials = z.output<typeof credentialsSchema>;

/** The controllers to dial, in order: `servers` when present, else `[server]`. */
export function credentialServers(creds: Pick<OperatorCredentials, 'server' | 'servers'>): string[] {
  return [...(creds.servers ?? (creds.server === undefined ? [] : [creds.server]))];
}

/** The file to use: --credentials, else $CERTFLEET_CREDENTIALS, else the default path. */
export function credentialsPath(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  if (flag !== undefined) return flag;
  const fromEnv = env[CREDENTIALS_ENV];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_CREDENTIALS_FILE;
}

/**
 * Parses credentials text. Throws CONFIG_INVALID listing every problem (not JSON, missing
 * or malformed fields).
 */
export function parseCredentials(text: string, file: string): OperatorCredentials {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw configError(file, [{ path: '', message: `not JSON (${err instanceof Error ? err.message : String(err)})` }]);
  }
  const result = credentialsSchema.safeParse(raw);
  if (!result.success) {
    throw configError(
      file,
      result.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message })),
    );
  }
  return result.data;
}

/**
 * Reads and parses the credentials file. Throws CONFIG_UNREADABLE when it cannot be read
 * (the message says how to point at another file) and CONFIG_INVALID when its content is
 * wrong. `warn` hears about a file that group or others may read: it holds a private key.
 */
export function loadCredentials(file: string, warn: (message: string) => void = () => undefined): OperatorCredentials {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
    const mode = fs.statSync(file).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      warn(`credentials file ${file} is readable by others (mode ${mode.toString(8).padStart(4, '0')}); it holds a private key: chmod 600 it`);
    }
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
    throw new CertfleetError(
      ErrorCode.ConfigUnreadable,
      `cannot read credentials file ${file} (${reason}); give --credentials FILE or set ${CREDENTIALS_ENV}`,
      { cause: err, details: { file } },
    );
  }
  return parseCredentials(text, file);
}

/**
 * A small client for HAProxy's runtime API (HAProxy 2.2+, written against 2.6's
 * doc/management.txt) that replaces a certificate in a running HAProxy without a reload:
 *
 *   show ssl cert                      is the file loaded? is a transaction open?
 *   set ssl cert <file> <<\n<pem>\n\n  opens a transaction with the new PEM
 *   commit ssl cert <file>             swaps it in: new handshakes get it, open connections keep theirs
 *   abort ssl cert <file>              only after a failed commit, so no transaction is left behind
 *
 * One command per connection (the socket's non-interactive mode: HAProxy answers and
 * closes). Over the master CLI (`haproxy -W -S <socket>`) each command is prefixed with
 * `@1`, the current worker.
 *
 * Contract of {@link updateCertificate}: it never throws; it reports `ok: false` with
 * HAProxy's answer when the API refuses (socket missing or not admin, file not loaded,
 * another transaction open, a PEM HAProxy will not take). The PEM (it holds the private
 * key) is only ever written to the socket: never to a result, an error or a log, and
 * HAProxy's answers are scrubbed of PEM blocks before they are returned.
 */
import { deadline, systemClock, type Clock } from '../../shared/clock/index.js';
import net from 'node:net';

/** Where the runtime API listens. */
export interface HaproxyApi {
  /** Unix socket path: a `stats socket ... level admin`, or the master CLI when `master`. */
  socket: string;
  /** True for the master CLI: commands go to the current worker (`@1`). */
  master: boolean;
}

export type UpdateResult = { ok: true; detail: string } | { ok: false; reason: string };

/** Characters that cannot appear in a file name sent to the CLI (it splits on blanks; `;` and `\` are its escapes). */
export const CLI_UNSAFE = /[\s;\\]/;

/**
 * Replaces the certificate HAProxy knows as `file` (the path it loaded: `<crt dir>/<name>.pem`
 * or a `crt` file) by `pem` (certificate, chain and key), within `timeoutMs` in total (on
 * `clock`, default the system clock).
 *
 * Refuses without sending the PEM when `file` is not loaded (a new certificate needs a
 * reload) or when a certificate transaction is already open: HAProxy keeps one transaction
 * at a time, and 2.6 answers `set ssl cert` for another file by updating the open one
 * ("Transaction updated for certificate <other>"), which would put this PEM under the
 * other file's name. Should that still happen (a transaction opened between the two
 * commands), the poisoned transaction is aborted.
 */
export async function updateCertificate(api: HaproxyApi, file: string, pem: string, timeoutMs: number, clock: Clock = systemClock): Promise<UpdateResult> {
  const until = deadline(clock, timeoutMs);
  const left = (): number => Math.max(1, until.remaining());
  if (CLI_UNSAFE.test(file)) return { ok: false, reason: `${file}: the file name has a blank, ';' or '\\', which the runtime API cannot take` };
  const payload = pemPayload(pem);
  if (payload === '') return { ok: false, reason: `${file}: no PEM to send` };
  try {
    const list = await runtimeCommand(api, 'show ssl cert', undefined, left(), clock);
    const shown = parseShowSslCert(list);
    // At level user or operator HAProxy 2.6 answers "Can't allocate memory!" here.
    if (shown === null) return { ok: false, reason: `show ssl cert: ${oneLine(list)} (is the socket at level admin?)` };
    if (shown.transaction !== null) return { ok: false, reason: `a certificate transaction is already open for ${shown.transaction}` };
    if (!shown.files.includes(file)) return { ok: false, reason: `${file} is not loaded by HAProxy (a new certificate needs a reload)` };

    const set = await runtimeCommand(api, `set ssl cert ${file}`, payload, left(), clock);
    const opened = /^Transaction (?:created|updated) for certificate (.*)!$/m.exec(set)?.[1];
    if (opened !== file) {
      if (opened !== undefined) await runtimeCommand(api, `abort ssl cert ${opened}`, undefined, left(), clock).catch(() => '');
      return { ok: false, reason: `set ssl cert ${file}: ${oneLine(set)}` };
    }
    const commit = await runtimeCommand(api, `commit ssl cert ${file}`, undefined, left(), clock);
    if (!/^Success!$/m.test(commit)) {
      await runtimeCommand(api, `abort ssl cert ${file}`, undefined, left(), clock).catch(() => '');
      return { ok: false, reason: `commit ssl cert ${file}: ${oneLine(commit)}` };
    }
    return { ok: true, detail: `${file} committed` };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

/** What `show ssl cert` lists: the open transaction (if any) and the loaded files. Null when the answer is not that list. */
export function parseShowSslCert(answer: string): { transaction: string | null; files: string[] } | null {
  let section: 'transaction' | 'files' | null = null;
  let transaction: string | null = null;
  const files: string[] = [];
  let sawHeader = false;
  for (const line of answer.split('\n')) {
    if (line === '# transaction') {
      [section, sawHeader] = ['transaction', true];
    } else if (line === '# filename') {
      [section, sawHeader] = ['files', true];
    } else if (line !== '' && section === 'transaction') {
      transaction = line.replace(/^\*/, '');
    } else if (line !== '' && section === 'files') {
      files.push(line);
    }
  }
  return sawHeader ? { transaction, files } : null;
}

/**
 * Sends one command (with an optional payload) and resolves with HAProxy's whole answer,
 * PEM blocks scrubbed. Rejects when the socket cannot be reached or the answer takes
 * longer than `timeoutMs` of `clock` time (default the system clock); the rejection names
 * the command's first two words only.
 */
export function runtimeCommand(api: HaproxyApi, command: string, payload: string | undefined, timeoutMs: number, clock: Clock = systemClock): Promise<string> {
  const line = `${api.master ? '@1 ' : ''}${command}`;
  // A payload follows "<<\n" and ends at the first empty line (pemPayload has none).
  const request = payload === undefined ? `${line}\n` : `${line} <<\n${payload}\n\n`;
  const what = command.split(' ').slice(0, 3).join(' ');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.createConnection(api.socket);
    const timer = clock.after(timeoutMs, () => {
      socket.destroy();
      reject(new Error(`${what}: no answer from ${api.socket} within ${timeoutMs} ms`));
    });
    socket.once('connect', () => socket.end(request));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      timer.stop();
      reject(new Error(`${what}: ${api.socket}: ${err.code ?? err.message}`));
    });
    socket.once('close', (hadError) => {
      timer.stop();
      if (!hadError) resolve(scrubPem(Buffer.concat(chunks).toString('utf8')));
    });
  });
}

/** The PEM as a CLI payload: every line kept but blank ones (a blank line would end it early). */
export function pemPayload(pem: string): string {
  return pem
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .join('\n');
}

/** Replaces every PEM block (and a truncated one) in `text`: HAProxy's answers are logged. */
export function scrubPem(text: string): string {
  return text.replace(/-----BEGIN [^-]*-----[\s\S]*?(-----END [^-]*-----|$)/g, '[PEM removed]');
}

function oneLine(answer: string): string {
  return answer.trim().split('\n').join(' / ') || 'no answer';
}

/**
 * The agent's HTTP-01 responder: answers the CA's
 * `GET /.well-known/acme-challenge/<token>` with the key authorization the controller
 * published for this node.
 *
 * The Host header is ignored (the CA connects for whichever name it validates, and a load
 * balancer may forward any of them). Key authorizations are public by design (the CA
 * reads them over plain HTTP), so hits are logged with the token. Anything other than a
 * known token under the challenge path is 404; methods other than GET/HEAD are 405.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../log/index.js';

/** URL path prefix of HTTP-01 challenges (RFC 8555 section 8.3). */
export const CHALLENGE_PATH = '/.well-known/acme-challenge/';

/** A token is base64url without padding (RFC 8555 section 8.1); the length bound keeps junk out. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;
/** A key authorization is `<token>.<base64url thumbprint>`. */
const KEY_AUTHORIZATION = /^[A-Za-z0-9_-]{1,256}\.[A-Za-z0-9_-]{1,256}$/;

export interface ListenAddress {
  host: string;
  port: number;
}

export interface Http01ResponderOptions {
  log: Logger;
}

/** True when `token` is a syntactically valid ACME token. */
export function isValidToken(token: string): boolean {
  return TOKEN.test(token);
}

/** An in-memory token table served over HTTP. One instance listens on one address. */
export class Http01Responder {
  private readonly answers = new Map<string, string>();
  private readonly log: Logger;
  private server: http.Server | undefined;

  constructor(options: Http01ResponderOptions) {
    this.log = componentLogger(options.log, 'http01');
  }

  /**
   * Starts listening. Resolves once bound; rejects with INTERNAL (retryable, details hold
   * the address and errno code) when the address cannot be bound, e.g. EADDRINUSE or
   * EACCES for port 80 without the capability. Port 0 picks a free port (see {@link address}).
   * Calling start twice without stop throws USAGE_INVALID.
   */
  async start(listen: ListenAddress): Promise<void> {
    if (this.server !== undefined) throw new CertfleetError(ErrorCode.UsageInvalid, 'http-01 responder already started');
    const server = http.createServer((req, res) => this.handle(req, res));
    // Challenge requests are tiny; do not let slow clients hold sockets for long.
    server.headersTimeout = 10_000;
    server.requestTimeout = 15_000;
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(listen.port, listen.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.server = undefined;
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
      throw new CertfleetError(ErrorCode.Internal, `http-01 responder cannot listen on ${listen.host}:${listen.port}: ${code}`, {
        retryable: true,
        cause: err,
        details: { host: listen.host, port: listen.port, errno: code },
      });
    }
    server.on('error', (err) => this.log.error({ [LogKey.err]: err }, 'http-01 server error'));
    this.log.info({ [LogKey.host]: listen.host, [LogKey.port]: this.address()?.port }, 'http-01 responder listening');
  }

  /** The bound address while started, else null. */
  address(): ListenAddress | null {
    const addr = this.server?.address();
    if (addr === undefined || addr === null || typeof addr === 'string') return null;
    const info: AddressInfo = addr;
    return { host: info.address, port: info.port };
  }

  /** Stops listening and drops open connections; resolves when closed. Safe to call when stopped. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /**
   * Serves `keyAuthorization` for `token` from now on (replacing an earlier answer).
   * Throws USAGE_INVALID when the token is not base64url or the key authorization is not
   * `<token>.<thumbprint>` for this token: a malformed challenge record is refused, not served.
   */
  set(token: string, keyAuthorization: string): void {
    if (!isValidToken(token)) throw new CertfleetError(ErrorCode.UsageInvalid, 'http-01 token is not base64url', { details: { [LogKey.token]: token } });
    if (!KEY_AUTHORIZATION.test(keyAuthorization) || !keyAuthorization.startsWith(`${token}.`)) {
      throw new CertfleetError(ErrorCode.UsageInvalid, 'key authorization does not match the token', { details: { [LogKey.token]: token } });
    }
    this.answers.set(token, keyAuthorization);
  }

  /** Stops serving `token`; true when it was being served. */
  delete(token: string): boolean {
    return this.answers.delete(token);
  }

  /** Tokens currently served. */
  tokens(): string[] {
    return [...this.answers.keys()];
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = req.url ?? '/';
    const pathname = url.split('?', 1)[0] ?? '/';
    if (!pathname.startsWith(CHALLENGE_PATH)) return this.reply(res, 404, 'not found\n');
    const token = pathname.slice(CHALLENGE_PATH.length);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return this.reply(res, 405, 'method not allowed\n');
    }
    const answer = isValidToken(token) ? this.answers.get(token) : undefined;
    this.log.debug({ [LogKey.token]: isValidToken(token) ? token : '(malformed)', [LogKey.found]: answer !== undefined, [LogKey.from]: req.socket.remoteAddress }, 'challenge request');
    if (answer === undefined) return this.reply(res, 404, 'not found\n');
    this.reply(res, 200, answer);
  }

  private reply(res: http.ServerResponse, status: number, body: string): void {
    res.statusCode = status;
    res.setHeader('Content-Type', 'text/plain');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.setHeader('Cache-Control', 'no-store');
    res.end(body);
  }
}

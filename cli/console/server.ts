/**
 * The console's HTTP server: static pages from assets/ and a JSON API that forwards each
 * request to the controller's OperatorService with the operator's credentials. The
 * controller decides what the operator may do (its role checks); the console adds no
 * rights and keeps no state besides the per-run secret.
 *
 * Routes (all behind guard.ts):
 *   GET  /                         the page (overview, certificate, events: one page, # routes)
 *   GET  /assets/console.css|.js   its style and script
 *   GET  /api/whoami               WhoAmI            (as `certfleet whoami --json`)
 *   GET  /api/status               GetStatus         (`status --json`)
 *   GET  /api/certs                ListCertificates  (`certs --json`)
 *   GET  /api/certs/NAME           ShowCertificate   (`show NAME --json`)
 *   GET  /api/certs/NAME/history   GetHistory        (`history NAME --json`)
 *   GET  /api/agents               ListAgents        (`agents --json`)
 *   GET  /api/budgets              ListBudgets       (`budgets --json`)
 *   GET  /api/events[?cert=NAME]   ListEvents        (`events --json`)
 *   GET  /api/events/stream[?cert=NAME]  Server-Sent Events (feed.ts)
 *   POST /api/certs/NAME/renew     {"cancel"?: bool}  RenewCertificate
 *   POST /api/certs/NAME/rollback  {"to"?: N}         Rollback
 *   POST /api/certs/NAME/release   {}                 Release
 * Errors: {"error": {"code", "message", "retryable"}} with an HTTP status for the code.
 */
import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, toCertfleetError } from '../../shared/errors/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import type { OperatorClient } from '../client.js';
import { allowedHosts, checkRequest, cookieName } from './guard.js';
import { streamEvents } from './feed.js';

/** The controller calls the console makes. */
export type ConsoleClient = Pick<
  OperatorClient,
  'whoAmI' | 'getStatus' | 'listCertificates' | 'showCertificate' | 'getHistory' | 'listAgents' | 'listBudgets' | 'listEvents' | 'renewCertificate' | 'rollback' | 'release'
>;

/** How to start the console. */
export interface ConsoleOptions {
  client: ConsoleClient;
  /** A loopback address (the CLI refuses others). */
  host: string;
  /** 0: any free port. */
  port: number;
  /** The per-run secret; default 32 random bytes, base64url. */
  token?: string;
  /** Period of the event feed's polls; default 2000 ms, as `events --follow`. */
  feedIntervalMs?: number;
  clock?: Clock;
  /** Hears one short line per change asked for and per refused request (never the secret). */
  log?: (line: string) => void;
}

/** A running console. */
export interface ConsoleServer {
  /** The address to open, with the secret: `http://127.0.0.1:PORT/?token=...`. */
  url: string;
  /** `http://127.0.0.1:PORT`, without the secret. */
  origin: string;
  port: number;
  /** Stops listening, ends the event feeds and closes every connection. */
  close(): Promise<void>;
}

/** The assets, found next to the installed package (never from the working directory). */
const ASSETS_DIR = fileURLToPath(new URL('../../../cli/console/assets/', import.meta.url));

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/assets/console.css': { file: 'console.css', type: 'text/css; charset=utf-8' },
  '/assets/console.js': { file: 'console.js', type: 'text/javascript; charset=utf-8' },
};

/**
 * No inline script or style, nothing from another origin: the page runs only the
 * console's own script, even if a certificate name or an event message held markup.
 */
const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  // The first address carries the secret: never send it on as a referrer.
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
  'X-Frame-Options': 'DENY',
};

/** HTTP status for an error code the controller (or the console) gave. */
function statusFor(code: string): number {
  switch (code) {
    case ErrorCode.PermissionDenied:
      return 403;
    case ErrorCode.Unauthenticated:
      return 401;
    case ErrorCode.NotFound:
      return 404;
    case ErrorCode.UsageInvalid:
      return 400;
    case ErrorCode.ControllerUnavailable:
    case ErrorCode.NotLeader:
      return 502;
    default:
      // A refusal with a reason (BUNDLE_INVALID, ...): the request was understood, not done.
      return 409;
  }
}

/** Starts the console; resolves once it listens. */
export async function startConsole(opts: ConsoleOptions): Promise<ConsoleServer> {
  const token = opts.token ?? randomBytes(32).toString('base64url');
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? (() => undefined);
  const feedIntervalMs = opts.feedIntervalMs ?? 2000;
  const stopping = new AbortController();
  const assets = new Map(Object.entries(ASSETS).map(([route, a]) => [route, { type: a.type, body: fs.readFileSync(`${ASSETS_DIR}${a.file}`) }]));
  let hosts: string[] = [];
  let port = 0;

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, toCertfleetError(err));
      else res.destroy();
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://console.invalid');
    const path = url.pathname;
    const decision = checkRequest(
      { method: req.method ?? 'GET', path, queryToken: url.searchParams.get('token') ?? undefined, headers: req.headers },
      { hosts, token, port },
    );
    if (decision.kind === 'refuse') {
      log(`refused ${req.method ?? '?'} ${path}: ${decision.reason}`);
      sendJson(res, decision.status, { error: { code: decision.status === 401 ? ErrorCode.Unauthenticated : ErrorCode.PermissionDenied, message: decision.reason, retryable: false } });
      return;
    }
    if (decision.kind === 'set-cookie') {
      res.writeHead(303, {
        ...SECURITY_HEADERS,
        // HttpOnly: the page's script never sees the secret; Strict: no other site's request carries it.
        'Set-Cookie': `${cookieName(port)}=${token}; Path=/; HttpOnly; SameSite=Strict`,
        Location: decision.location,
      });
      res.end();
      return;
    }
    const asset = assets.get(path);
    if (asset !== undefined) {
      res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': asset.type });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return;
    }
    if (!path.startsWith('/api/')) {
      sendJson(res, 404, { error: { code: ErrorCode.NotFound, message: `no page ${path}`, retryable: false } });
      return;
    }
    await api(req, res, path.slice('/api/'.length).split('/'), url.searchParams);
  }

  async function api(req: http.IncomingMessage, res: http.ServerResponse, parts: string[], query: URLSearchParams): Promise<void> {
    const c = opts.client;
    const [a, b, d, ...rest] = parts;
    const cert = b === undefined ? undefined : certName(b);
    const answer = async (call: () => Promise<unknown>): Promise<void> => {
      try {
        sendJson(res, 200, await call());
      } catch (err) {
        sendError(res, toCertfleetError(err));
      }
    };
    if (rest.length > 0) return sendJson(res, 404, notFound(parts));
    if (a === 'whoami' && b === undefined) return answer(() => c.whoAmI());
    if (a === 'status' && b === undefined) return answer(() => c.getStatus());
    if (a === 'agents' && b === undefined) return answer(() => c.listAgents());
    if (a === 'budgets' && b === undefined) return answer(() => c.listBudgets());
    if (a === 'events' && (b === undefined || b === 'stream') && d === undefined) {
      const filter = query.get('cert') ?? '';
      if (filter !== '') certName(filter);
      const limit = Number(query.get('limit') ?? '0');
      if (b === undefined) return answer(() => c.listEvents({ cert: filter, limit: Number.isInteger(limit) && limit > 0 ? limit : 0 }));
      const done = new AbortController();
      const onStop = (): void => done.abort();
      stopping.signal.addEventListener('abort', onStop, { once: true });
      res.once('close', onStop);
      try {
        await streamEvents(res, { client: c, cert: filter, intervalMs: feedIntervalMs, clock, signal: done.signal });
      } finally {
        stopping.signal.removeEventListener('abort', onStop);
      }
      return;
    }
    if (a === 'certs') {
      if (cert === undefined) return answer(() => c.listCertificates());
      if (d === undefined) return answer(() => c.showCertificate({ name: cert }));
      if (d === 'history') return answer(() => c.getHistory({ name: cert }));
      if (d === 'renew' || d === 'rollback' || d === 'release') {
        const body = await readJson(req);
        return answer(async () => {
          log(`${d} ${cert} asked`);
          try {
            const out = await change(d, cert, body);
            log(`${d} ${cert} done`);
            return out;
          } catch (err) {
            log(`${d} ${cert} refused: ${toCertfleetError(err).message}`);
            throw err;
          }
        });
      }
    }
    return sendJson(res, 404, notFound(parts));
  }

  function change(what: 'renew' | 'rollback' | 'release', name: string, body: Record<string, unknown>): Promise<unknown> {
    const c = opts.client;
    if (what === 'renew') return c.renewCertificate({ name, cancel: body['cancel'] === true });
    if (what === 'release') return c.release({ name });
    const to = body['to'] ?? 0;
    if (typeof to !== 'number' || !Number.isInteger(to) || to < 0 || to > 0xffff_ffff) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `"to" must be a version number (0: the one before the desired version)`);
    }
    return c.rollback({ name, toVersion: to });
  }

  server.listen(opts.port, opts.host);
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(listenError(err, opts)))]);
  port = (server.address() as AddressInfo).port;
  hosts = allowedHosts(opts.host, port);
  const origin = `http://${hosts[0] ?? ''}`;
  return {
    url: `${origin}/?token=${token}`,
    origin,
    port,
    async close() {
      stopping.abort();
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

function listenError(err: unknown, opts: ConsoleOptions): CertfleetError {
  const code = (err as NodeJS.ErrnoException).code ?? String(err);
  const where = opts.host.includes(':') ? `[${opts.host}]:${opts.port}` : `${opts.host}:${opts.port}`;
  const hint = code === 'EADDRINUSE' ? ': the port is taken; give --listen with another port (0: any free one)' : '';
  return new CertfleetError(ErrorCode.UsageInvalid, `cannot listen on ${where} (${code})${hint}`, { cause: err, details: { hint: 'certfleet console --help' } });
}

function certName(text: string): string {
  const name = decodeURIComponent(text);
  if (!CERT_NAME_PATTERN.test(name)) throw new CertfleetError(ErrorCode.UsageInvalid, `'${name}' is not a valid certificate name`);
  return name;
}

function notFound(parts: string[]): unknown {
  return { error: { code: ErrorCode.NotFound, message: `no API /api/${parts.join('/')}`, retryable: false } };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body, null, 2) + '\n');
}

function sendError(res: http.ServerResponse, err: CertfleetError): void {
  sendJson(res, statusFor(err.code), { error: { code: err.code, message: err.message, retryable: err.retryable } });
}

/** The body of a change: a JSON object of at most 4 KiB ({} when empty). */
async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req) {
    text += (chunk as Buffer).toString('utf8');
    if (text.length > 4096) throw new CertfleetError(ErrorCode.UsageInvalid, 'request body too large');
  }
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CertfleetError(ErrorCode.UsageInvalid, 'request body is not JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new CertfleetError(ErrorCode.UsageInvalid, 'request body must be a JSON object');
  return value as Record<string, unknown>;
}

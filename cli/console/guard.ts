/**
 * Who may talk to the console: pure checks of one request's Host, Origin, secret and
 * method, so the rules are tested without a server.
 *
 * The console acts with the operator's own credentials, so anything that reaches it
 * acts as that operator. Three kinds of caller must be kept out:
 *   - other users of this machine: they can connect to a loopback port, but they do not
 *     have the per-run secret (printed only to the operator's terminal);
 *   - web pages on other sites, open in the operator's browser: they can make the browser
 *     send requests to 127.0.0.1 (CSRF), but not read the answers, and the browser sends
 *     no SameSite=Strict cookie with them; a change also needs an Origin that is the
 *     console's own and a JSON body, which a plain cross-site form cannot send;
 *   - DNS rebinding (evil.example resolving to 127.0.0.1, so the page is "same origin"):
 *     the Host header then names evil.example, and only the console's own names pass.
 */
import { timingSafeEqual } from 'node:crypto';

/** Name of the cookie that carries the secret after the first visit; per port, as cookies ignore ports. */
export function cookieName(port: number): string {
  return `certfleet_console_${port}`;
}

/**
 * The Host header values under which the console answers, for a listener on `host:port`
 * (after the port is known): the literal address and, for the usual loopback addresses,
 * `localhost`.
 */
export function allowedHosts(host: string, port: number): string[] {
  const literal = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return host === '127.0.0.1' || host === '::1' ? [literal, `localhost:${port}`] : [literal];
}

/** The request facts the guard looks at. Header names lower case, as node gives them. */
export interface GuardRequest {
  method: string;
  /** Path without the query. */
  path: string;
  /** `?token=` of the URL, if any. */
  queryToken: string | undefined;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** What to do with a request. */
export type GuardDecision =
  | { kind: 'allow' }
  /** The secret came in the URL of a page: set the cookie and redirect to the same path without it. */
  | { kind: 'set-cookie'; location: string }
  | { kind: 'refuse'; status: 400 | 401 | 403 | 405; reason: string };

/** Paths that change something: POST only, with the console's Origin and a JSON body. */
export function isMutation(path: string): boolean {
  return /^\/api\/certs\/[^/]+\/(renew|rollback|release)$/.test(path);
}

function header(req: GuardRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Compares two secrets in constant time (for equal lengths). */
export function sameSecret(given: string, token: string): boolean {
  const a = Buffer.from(given, 'utf8');
  const b = Buffer.from(token, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The value of cookie `name` in a Cookie header, if present. */
export function readCookie(cookieHeader: string | undefined, name: string): string | undefined {
  if (cookieHeader === undefined) return undefined;
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Decides one request. `hosts` is {@link allowedHosts}; `token` the per-run secret.
 * Order: the Host first (a rebinding page learns nothing, not even whether the secret
 * was right), then the secret (cookie, or `?token=` which a page load turns into the
 * cookie), then for a change: POST, the console's own Origin, a JSON body.
 */
export function checkRequest(req: GuardRequest, opts: { hosts: readonly string[]; token: string; port: number }): GuardDecision {
  const host = header(req, 'host');
  if (host === undefined || !opts.hosts.includes(host.toLowerCase())) {
    return { kind: 'refuse', status: 403, reason: `unexpected Host header ${JSON.stringify(host ?? '')}: open the address certfleet console printed` };
  }
  const cookie = readCookie(header(req, 'cookie'), cookieName(opts.port));
  const byCookie = cookie !== undefined && sameSecret(cookie, opts.token);
  const byQuery = req.queryToken !== undefined && sameSecret(req.queryToken, opts.token);
  if (!byCookie && !byQuery) {
    return { kind: 'refuse', status: 401, reason: 'missing or wrong console secret: open the address certfleet console printed (it ends in ?token=...)' };
  }
  // A page load with the secret in the URL: keep it in a cookie and drop it from the
  // address bar (and from the history), as Jupyter does.
  if (byQuery && req.method === 'GET' && !req.path.startsWith('/api/')) return { kind: 'set-cookie', location: req.path };
  if (isMutation(req.path)) {
    if (req.method !== 'POST') return { kind: 'refuse', status: 405, reason: 'changes are POST requests' };
    const origin = header(req, 'origin');
    if (origin === undefined || !opts.hosts.some((h) => origin.toLowerCase() === `http://${h}`)) {
      return { kind: 'refuse', status: 403, reason: `refusing a change from origin ${JSON.stringify(origin ?? '(none)')}: only the console's own page may ask` };
    }
    const type = header(req, 'content-type') ?? '';
    if (!/^application\/json\s*(;|$)/i.test(type)) return { kind: 'refuse', status: 400, reason: 'a change needs a JSON body (Content-Type: application/json)' };
  } else if (req.method !== 'GET' && req.method !== 'HEAD') {
    return { kind: 'refuse', status: 405, reason: `${req.method} is not allowed here` };
  }
  return { kind: 'allow' };
}

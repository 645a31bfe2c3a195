/**
 * Human output of the operator commands: a response object and `now` in, a string out.
 * Pure, so tables and relative times are tested without a controller or a clock.
 *
 * Tables are aligned on the plain text; colour (only when the caller says stdout is a
 * terminal) is added after padding so escape codes never shift a column. Dates are UTC.
 * Nothing here ever prints key material: the responses carry none, and the renderers
 * pick fields by name rather than dumping objects.
 */
import type { pb } from '../shared/grpc/index.js';

/** Rendering switches. */
export interface RenderOptions {
  /** ANSI colours for states; default false. */
  color?: boolean;
}

type Style = 'green' | 'yellow' | 'red' | 'dim';
const ANSI: Record<Style, string> = { green: '\x1b[32m', yellow: '\x1b[33m', red: '\x1b[31m', dim: '\x1b[2m' };
const RESET = '\x1b[0m';

/** One table cell: the text that sets the width, and the same text as shown. */
interface Cell {
  plain: string;
  shown: string;
}

function cell(text: string, style: Style | undefined, color: boolean): Cell {
  return { plain: text, shown: color && style !== undefined && text !== '' ? `${ANSI[style]}${text}${RESET}` : text };
}

function join(cells: Cell[], sep: string): Cell {
  return { plain: cells.map((c) => c.plain).join(sep), shown: cells.map((c) => c.shown).join(sep) };
}

/**
 * Columns separated by three spaces, each padded to its widest cell; the last column is
 * not padded, so no line ends in blanks.
 */
function table(headers: string[], rows: Cell[][]): string {
  const all: Cell[][] = [headers.map((h) => ({ plain: h, shown: h })), ...rows];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => r[i]?.plain.length ?? 0)));
  return all
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c.shown : c.shown + ' '.repeat((widths[i] ?? 0) - c.plain.length)))
        .join('   '),
    )
    .join('\n')
    .concat('\n');
}

// ---- time ----

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * A length of time in one unit, rounded down, precise enough to act on:
 * under 2 minutes in seconds ("90s"), under 2 hours in minutes ("95m"), under 2 days in
 * hours ("36h"), under 2 years in days ("59d"), then years ("3y"). Negative input is
 * treated as its absolute value.
 */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 2 * MINUTE) return `${Math.floor(abs / SECOND)}s`;
  if (abs < 2 * HOUR) return `${Math.floor(abs / MINUTE)}m`;
  if (abs < 2 * DAY) return `${Math.floor(abs / HOUR)}h`;
  if (abs < 730 * DAY) return `${Math.floor(abs / DAY)}d`;
  return `${Math.floor(abs / (365 * DAY))}y`;
}

/**
 * `when` relative to `now`: "in 59d", "12s ago", or "now" within a second either way.
 * Empty or unparsable input gives "".
 */
export function relativeTime(when: string, now: Date): string {
  const t = parseTime(when);
  if (t === undefined) return '';
  const delta = t - now.getTime();
  if (Math.abs(delta) < SECOND) return 'now';
  return delta > 0 ? `in ${formatDuration(delta)}` : `${formatDuration(delta)} ago`;
}

function parseTime(when: string): number | undefined {
  if (when === '') return undefined;
  const t = Date.parse(when);
  return Number.isNaN(t) ? undefined : t;
}

/** "2025-03-01" (UTC), or the input unchanged when it is not a time. */
function day(when: string): string {
  const t = parseTime(when);
  return t === undefined ? when : new Date(t).toISOString().slice(0, 10);
}

// ---- status ----

/** `certfleet status`: one "key: value" line per fact, values aligned. */
export function renderStatus(s: pb.GetStatusResponse__Output, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const lines: [string, Cell][] = [
    ['controller', cell(s.controllerVersion || '-', undefined, color)],
    ['store', cell(s.store || '-', undefined, color)],
    ['acme', cell(s.acmeDirectory || '-', undefined, color)],
    ['nats', cell(s.nats || '-', s.nats === 'connected' ? 'green' : 'red', color)],
    [
      'certificates',
      cell(`${s.certificates} (${s.certificatesReady} ready)`, s.certificatesReady < s.certificates ? 'yellow' : undefined, color),
    ],
    ['agents', cell(`${s.agents} (${s.agentsOnline} online)`, s.agentsOnline < s.agents ? 'yellow' : undefined, color)],
  ];
  const width = Math.max(...lines.map(([k]) => k.length)) + 1;
  return lines.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v.shown}`).join('\n') + '\n';
}

// ---- certificates ----

const CERT_STATE_STYLE: Record<string, Style> = { ready: 'green', failed: 'red', pending: 'yellow', issuing: 'yellow' };

function expiresCell(notAfter: string, now: Date, color: boolean): Cell {
  const t = parseTime(notAfter);
  if (t === undefined) return cell('-', undefined, color);
  const left = t - now.getTime();
  if (left <= 0) return cell(`${day(notAfter)} (expired ${formatDuration(left)} ago)`, 'red', color);
  // Under a week is the point where an operator should already be looking.
  return cell(`${day(notAfter)} (in ${formatDuration(left)})`, left < 7 * DAY ? 'red' : left < 21 * DAY ? 'yellow' : undefined, color);
}

function renewalCell(nextRenewal: string, now: Date, color: boolean): Cell {
  const t = parseTime(nextRenewal);
  if (t === undefined) return cell('-', undefined, color);
  const delta = t - now.getTime();
  if (delta <= 0) return cell(`${day(nextRenewal)} (due ${formatDuration(delta)} ago)`, 'yellow', color);
  return cell(`${day(nextRenewal)} (in ${formatDuration(delta)})`, undefined, color);
}

/**
 * `certfleet certs`: NAME, VERSION, STATE, AGENTS (current/assigned), EXPIRES,
 * NEXT RENEWAL, NAMES, sorted by name; then one line per certificate whose last
 * attempt failed, with the error.
 */
export function renderCertificates(resp: pb.ListCertificatesResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  if (resp.certificates.length === 0) return 'no certificates configured\n';
  const certs = [...resp.certificates].sort((a, b) => a.name.localeCompare(b.name));
  const rows = certs.map((c) => [
    cell(c.name, undefined, color),
    cell(c.current ? String(c.current.version) : '-', undefined, color),
    cell(c.state || '-', CERT_STATE_STYLE[c.state], color),
    cell(`${c.agentsCurrent}/${c.agentsAssigned}`, c.agentsCurrent < c.agentsAssigned ? 'yellow' : undefined, color),
    c.current ? expiresCell(c.current.notAfter, now, color) : cell('-', undefined, color),
    renewalCell(c.nextRenewal, now, color),
    cell(c.names.join(',') || '-', undefined, color),
  ]);
  let out = table(['NAME', 'VERSION', 'STATE', 'AGENTS', 'EXPIRES', 'NEXT RENEWAL', 'NAMES'], rows);
  const failures = certs.filter((c) => c.lastError !== '');
  if (failures.length > 0) {
    out += '\n' + failures.map((c) => `${cell(c.name, 'red', color).shown}: ${c.lastError}`).join('\n') + '\n';
  }
  return out;
}

// ---- agents ----

const INSTALL_STATE_STYLE: Record<string, Style> = { failed: 'red', pending: 'yellow' };

/**
 * "web@3 installed", "web@2->3 pending" (installed 2, asked for 3), "api@2 failed
 * (HOOK_FAILED)", "new@0->1 pending" (0: nothing installed yet, as on the wire).
 */
function certStatusCell(s: pb.CertificateStatus__Output, color: boolean): Cell {
  let version = String(s.version);
  if (s.desiredVersion > 0 && s.desiredVersion !== s.version) version += `->${s.desiredVersion}`;
  let state = s.state || 'unknown';
  if (s.state === 'failed' && s.errorCode !== '') state += ` (${s.errorCode})`;
  return cell(`${s.name}@${version} ${state}`, INSTALL_STATE_STYLE[s.state], color);
}

/**
 * `certfleet agents`: NAME, ONLINE, LAST SEEN, LABELS (sorted key=value), CERTIFICATES,
 * sorted by name.
 */
export function renderAgents(resp: pb.ListAgentsResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  if (resp.agents.length === 0) return 'no agents enrolled\n';
  const agents = [...resp.agents].sort((a, b) => a.name.localeCompare(b.name));
  const rows = agents.map((a) => {
    const labels = formatLabels(a.labels);
    const certs = [...a.certificates].sort((x, y) => x.name.localeCompare(y.name)).map((s) => certStatusCell(s, color));
    return [
      cell(a.name, undefined, color),
      cell(a.online ? 'yes' : 'no', a.online ? 'green' : 'red', color),
      cell(relativeTime(a.lastSeen, now) || 'never', undefined, color),
      cell(labels || '-', undefined, color),
      certs.length === 0 ? cell('-', undefined, color) : join(certs, ', '),
    ];
  });
  return table(['NAME', 'ONLINE', 'LAST SEEN', 'LABELS', 'CERTIFICATES'], rows);
}

/** Labels as "k=v,k2=v2", keys sorted; "" for none. */
export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k] ?? ''}`)
    .join(',');
}

// ---- tokens and enrolment ----

/** The line `token create` writes to stderr beside the bare token on stdout. */
export function renderTokenNote(resp: pb.CreateEnrollmentTokenResponse__Output, agent: string, now: Date): string {
  const rel = relativeTime(resp.expiresAt, now);
  const expiry = resp.expiresAt === '' ? '' : ` until ${resp.expiresAt}${rel === '' ? '' : ` (${rel})`}`;
  return `one-time token for agent ${agent}, valid${expiry}; on the node: certfleet agent enroll --config FILE --token-file FILE\n`;
}

/** What `agent enroll` prints once the controller accepted the token. */
export function renderEnrolled(result: { name: string; labels: Readonly<Record<string, string>> }): string {
  return `enrolled as ${result.name}\nlabels: ${formatLabels(result.labels) || '-'}\n`;
}

/** Machine output of every read command: the response object, camelCase field names, 2-space indent. */
export function renderJson(resp: unknown): string {
  return JSON.stringify(resp, null, 2) + '\n';
}

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

/**
 * `certfleet status`: one "key: value" line per fact, values aligned. From a controller
 * that runs the leader lease (it names itself): who leads ("c1 (epoch 4) at
 * 127.0.0.1:7443", `none` in red), which controller answered and its role, and a
 * CONTROLLERS table of the registry (health `stale`/`deposed`/`degraded` in red/yellow). `now`
 * turns the registry's last-seen times into ages.
 */
export function renderStatus(s: pb.GetStatusResponse__Output, opts: RenderOptions = {}, now?: Date): string {
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
  if (s.self === '') return keyValues(lines);
  const leader = s.leader;
  // The holder is name#incarnation: the name is what operators configured.
  const leaderName = (leader?.holder ?? '').split('#')[0] ?? '';
  lines.push(['leader', leader ? cell(`${leaderName} (epoch ${leader.epoch}) at ${leader.address}`, undefined, color) : cell('none', 'red', color)]);
  lines.push(['answered by', cell(`${s.self} (${s.role || '-'})`, undefined, color)]);
  const out = keyValues(lines);
  if (s.controllers.length === 0) return out;
  const HEALTH_STYLE: Record<string, Style> = { ok: 'green', stale: 'red', deposed: 'red', degraded: 'yellow' };
  const rows = s.controllers.map((c) => [
    cell(c.name, undefined, color),
    cell(c.role || '-', c.role === 'leader' && c.health !== 'deposed' ? 'green' : undefined, color),
    cell(c.role === 'leader' ? String(c.epoch) : '-', undefined, color),
    cell(c.address || '-', undefined, color),
    cell(c.health || '-', HEALTH_STYLE[c.health], color),
    cell((now === undefined ? stamp(c.seenAt) : relativeTime(c.seenAt, now)) || '-', undefined, color),
    cell(c.version || '-', undefined, color),
  ]);
  return `${out}\nCONTROLLERS\n${table(['NAME', 'ROLE', 'EPOCH', 'ADDRESS', 'HEALTH', 'SEEN', 'VERSION'], rows)}`;
}

// ---- certificates ----

const CERT_STATE_STYLE: Record<string, Style> = { ready: 'green', failed: 'red', pending: 'yellow', issuing: 'yellow' };

/** notAfter with the time left; `format` prints the date (a day in tables, to the second in `show`). */
function expiresCell(notAfter: string, now: Date, color: boolean, format: (when: string) => string = day): Cell {
  const t = parseTime(notAfter);
  if (t === undefined) return cell('-', undefined, color);
  const left = t - now.getTime();
  if (left <= 0) return cell(`${format(notAfter)} (expired ${formatDuration(left)} ago)`, 'red', color);
  // Under a week is the point where an operator should already be looking.
  return cell(`${format(notAfter)} (in ${formatDuration(left)})`, left < 7 * DAY ? 'red' : left < 21 * DAY ? 'yellow' : undefined, color);
}

function renewalCell(nextRenewal: string, now: Date, color: boolean): Cell {
  const t = parseTime(nextRenewal);
  if (t === undefined) return cell('-', undefined, color);
  const delta = t - now.getTime();
  if (delta <= 0) return cell(`${day(nextRenewal)} (due ${formatDuration(delta)} ago)`, 'yellow', color);
  return cell(`${day(nextRenewal)} (in ${formatDuration(delta)})`, undefined, color);
}

/**
 * What STATE shows: the controller's state, except that a ready certificate pinned by a
 * rollback says `pinned` (ready, but not on the newest version until released).
 */
function displayState(c: pb.CertificateSummary__Output): string {
  if (c.state === 'ready' && c.pinnedVersion > 0) return 'pinned';
  return c.state || '-';
}

/** NEXT: a budget deferral or failure backoff still ahead wins over the schedule; an outstanding request says so. */
function nextCell(c: pb.CertificateSummary__Output, now: Date, color: boolean): Cell {
  const rel = (when: string): string => relativeTime(when, now) || when;
  if (c.deferredUntil !== '') return cell(`deferred, ${rel(c.deferredUntil)} (budget)`, 'yellow', color);
  if (c.backoffUntil !== '') return cell(`retry ${rel(c.backoffUntil)} (backoff)`, 'red', color);
  if (c.renewalRequested && c.state !== 'issuing') return cell('requested', 'yellow', color);
  return renewalCell(c.nextRenewal, now, color);
}

/**
 * `certfleet certs`: NAME, NEWEST (newest stored version), DESIRED (what agents are asked
 * to serve), PINNED (a rollback's pin, `-` for none), SERVING (agents on the desired
 * version / agents selected), STATE, NEXT (renewal time, or a budget deferral, a backoff,
 * an outstanding request), EXPIRES (of the newest version), NAMES, sorted by name; then
 * one line per certificate that failed, is deferred by a budget, or is pinned. NEWEST
 * and DESIRED differ after a rollback: the summary used to show only NEWEST, so a rolled
 * back certificate looked current (issue #14).
 */
export function renderCertificates(resp: Pick<pb.ListCertificatesResponse__Output, 'certificates'>, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  if (resp.certificates.length === 0) return 'no certificates configured\n';
  const certs = [...resp.certificates].sort((a, b) => a.name.localeCompare(b.name));
  const v = (n: number): string => (n > 0 ? String(n) : '-');
  const rows = certs.map((c) => {
    const newest = c.newestVersion || c.current?.version || 0;
    return [
      cell(c.name, undefined, color),
      cell(v(newest), undefined, color),
      cell(v(c.desiredVersion), c.desiredVersion > 0 && c.desiredVersion !== newest ? 'yellow' : undefined, color),
      cell(v(c.pinnedVersion), c.pinnedVersion > 0 ? 'yellow' : undefined, color),
      cell(`${c.agentsCurrent}/${c.agentsAssigned}`, c.agentsCurrent < c.agentsAssigned ? 'yellow' : undefined, color),
      cell(displayState(c), c.pinnedVersion > 0 && c.state === 'ready' ? 'yellow' : CERT_STATE_STYLE[c.state], color),
      nextCell(c, now, color),
      c.current ? expiresCell(c.current.notAfter, now, color) : cell('-', undefined, color),
      cell(c.names.join(',') || '-', undefined, color),
    ];
  });
  let out = table(['NAME', 'NEWEST', 'DESIRED', 'PINNED', 'SERVING', 'STATE', 'NEXT', 'EXPIRES', 'NAMES'], rows);
  const notes: string[] = [];
  for (const c of certs) {
    if (c.lastError !== '') notes.push(`${cell(c.name, 'red', color).shown}: ${oneLine(c.lastError)}`);
    if (c.deferredUntil !== '') notes.push(`${cell(c.name, 'yellow', color).shown}: renewal deferred until ${stampRel(c.deferredUntil, now)}: ${oneLine(c.deferredReason)}`);
    if (c.pinnedVersion > 0) {
      const newest = c.newestVersion || c.current?.version || 0;
      const after = newest > c.pinnedVersion ? `; \`certfleet release ${c.name}\` serves v${newest} again` : `; \`certfleet release ${c.name}\` removes the pin`;
      notes.push(`${cell(c.name, 'yellow', color).shown}: pinned to v${c.pinnedVersion} by a rollback${after}`);
    }
  }
  if (notes.length > 0) out += '\n' + notes.join('\n') + '\n';
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

/** An agent out of step with the version the controller asks of it (removed agents never are). */
function drifts(a: pb.AgentSummary__Output): boolean {
  return (a.drift ?? []).length > 0 && (a.removedAt ?? '') === '';
}

/**
 * The certificates cell of one agent: what it reports, each marked "(want N)" when the
 * controller asks for another version than the one shown, then the assigned
 * certificates it does not report at all ("web: none (want 2)").
 */
function agentCertsCell(a: pb.AgentSummary__Output, color: boolean): Cell {
  const want = new Map((a.drift ?? []).map((d) => [d.certificate, d.desiredVersion]));
  const cells = [...a.certificates]
    .sort((x, y) => x.name.localeCompare(y.name))
    .map((s) => {
      const c = certStatusCell(s, color);
      const w = want.get(s.name);
      want.delete(s.name);
      const shown = s.desiredVersion > 0 && s.desiredVersion !== s.version ? s.desiredVersion : s.version;
      if (w === undefined || w === shown) return c;
      return join([c, cell(`(want ${w})`, 'yellow', color)], ' ');
    });
  for (const [name, w] of [...want].sort(([x], [y]) => x.localeCompare(y))) cells.push(cell(`${name}: none (want ${w})`, 'yellow', color));
  return cells.length === 0 ? cell('-', undefined, color) : join(cells, ', ');
}

/**
 * `certfleet agents`: NAME, ONLINE, LAST SEEN, LABELS (sorted key=value), CERTIFICATES.
 * Agents that do not serve the version the controller asks of them (drift: an older or
 * newer version, a failure, nothing yet) come first, then the rest, each group by name;
 * a line under the table names them.
 */
export function renderAgents(resp: pb.ListAgentsResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  if (resp.agents.length === 0) return 'no agents enrolled\n';
  const agents = [...resp.agents].sort((a, b) => Number(drifts(b)) - Number(drifts(a)) || a.name.localeCompare(b.name));
  const rows = agents.map((a) => {
    const labels = formatLabels(a.labels);
    // A removed agent stays listed, so who left and when is visible; it serves nothing now.
    const removed = (a.removedAt ?? '') !== '';
    return [
      cell(a.name, undefined, color),
      removed
        ? cell(`removed by ${a.removedBy || '?'} ${stamp(a.removedAt)}`, 'red', color)
        : cell(a.online ? 'yes' : 'no', a.online ? 'green' : 'red', color),
      cell(relativeTime(a.lastSeen, now) || 'never', undefined, color),
      cell(labels || '-', undefined, color),
      agentCertsCell(a, color),
    ];
  });
  const drifting = agents.filter(drifts);
  const driftLine =
    drifting.length === 0
      ? ''
      : `${cell(`${drifting.length} agent${drifting.length === 1 ? '' : 's'} not serving the desired version: ${drifting.map((a) => a.name).join(', ')}`, 'yellow', color).shown}\n`;
  // Records an agent refused (unsigned, replayed, ...) mean someone writes to NATS who
  // should not: one line per such agent under the table, hard to overlook.
  const security = agents
    .filter((a) => (a.refusals?.total ?? 0) > 0)
    .map((a) => {
      const r = a.refusals;
      const reasons = Object.entries(r?.byReason ?? {})
        .sort(([x], [y]) => x.localeCompare(y))
        .map(([k, n]) => `${k} ${n}`)
        .join(', ');
      const when = relativeTime(r?.lastAt ?? '', now);
      const text = `SECURITY ${a.name}: ${r?.total ?? 0} records refused (${reasons}); last${when === '' ? '' : ` ${when}`}: ${oneLine(r?.last ?? '')}`;
      return `${cell(text, 'red', color).shown}\n`;
    });
  return table(['NAME', 'ONLINE', 'LAST SEEN', 'LABELS', 'CERTIFICATES'], rows) + driftLine + security.join('');
}

/** Labels as "k=v,k2=v2", keys sorted; "" for none. */
export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k] ?? ''}`)
    .join(',');
}

// ---- one certificate ----

/** A fingerprint cut to its first 12 hex digits (colons dropped, lower case): enough to tell versions apart. */
export function shortFingerprint(fingerprint: string): string {
  return fingerprint.replace(/:/g, '').toLowerCase().slice(0, 12);
}

/** "2026-03-01 12:00:00Z": UTC to the second; the input unchanged when it is not a time. */
function stamp(when: string): string {
  const t = parseTime(when);
  return t === undefined ? when : new Date(t).toISOString().slice(0, 19).replace('T', ' ') + 'Z';
}

/** "2026-03-01 12:00:00Z (in 5h)", or "-" for no time. */
function stampRel(when: string, now: Date): string {
  if (parseTime(when) === undefined) return when === '' ? '-' : when;
  return `${stamp(when)} (${relativeTime(when, now)})`;
}

/**
 * Text from the controller that ends up on one terminal line: line breaks become
 * spaces and other control characters "?", so a hook's output quoted in an error can
 * neither break the layout nor send escape sequences to the terminal.
 */
function oneLine(text: string): string {
  return text.replace(/\r?\n|\r/g, ' ').replace(/[\x00-\x1f\x7f-\x9f]/g, '?');
}

/** Aligned "key: value" lines, as `status` prints them. */
function keyValues(lines: [string, Cell][]): string {
  const width = Math.max(...lines.map(([k]) => k.length)) + 1;
  return lines.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v.shown}`).join('\n') + '\n';
}

/**
 * `certfleet show NAME`: one "key: value" line per fact, every key always present
 * ("-" when it does not apply) so the block keeps its shape: names, selector, state,
 * current version (serial, short fingerprint, not before/after, ACME profile, and its
 * issuer when it records one), the issuers it tries when it has several (and the fallback
 * the next order goes to), desired and pinned version, revoked versions, agents
 * current/assigned, next renewal and its reason, ARI window, budget
 * deferral, failure backoff, last error.
 */
export function renderCertificate(resp: pb.ShowCertificateResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const c = resp.summary;
  const plain = (text: string, style?: Style): Cell => cell(text, style, color);
  const cur = c?.current ?? null;
  const deferred = parseTime(resp.deferredUntil) !== undefined;
  const backoff = parseTime(resp.backoffUntil) !== undefined;
  let renewal = stampRel(c?.nextRenewal ?? '', now);
  if (resp.reason !== '') renewal += renewal === '-' ? ` (${oneLine(resp.reason)})` : `: ${oneLine(resp.reason)}`;
  const ari =
    resp.ariWindowStart === '' && resp.ariWindowEnd === '' ? '-' : `${stamp(resp.ariWindowStart) || '?'} .. ${stamp(resp.ariWindowEnd) || '?'}`;
  const lines: [string, Cell][] = [
    ['certificate', plain(c?.name || '-')],
    ['names', plain(c?.names.join(', ') || '-')],
    ['selector', plain(c?.selector || '-')],
    ['state', plain(c?.state || '-', c === null ? undefined : CERT_STATE_STYLE[c.state])],
    ['current version', plain(cur ? String(cur.version) : '-')],
    ['  serial', plain(cur?.serial || '-')],
    ['  fingerprint', plain(cur ? shortFingerprint(cur.fingerprint) || '-' : '-')],
    ['  not before', plain(cur ? stamp(cur.notBefore) || '-' : '-')],
    ['  not after', cur ? expiresCell(cur.notAfter, now, color, stamp) : plain('-')],
    ['  profile', plain(cur?.profile || '-')],
    // Issuers (docs/renewal.md#issuers-and-fallback): the version's when it records one,
    // and the list when there is a choice, so a single-CA controller's block is unchanged.
    ...(cur?.issuer ? ([['  issuer', plain(cur.issuer)]] as [string, Cell][]) : []),
    ...(resp.issuers.length > 1 ? ([['issuers', issuersCell(resp, plain)]] as [string, Cell][]) : []),
    ['desired version', plain(resp.desiredVersion > 0 ? String(resp.desiredVersion) : '-')],
    [
      'pinned version',
      resp.pinnedVersion > 0
        ? plain(`${resp.pinnedVersion} (certfleet release ${c?.name ?? 'NAME'} to unpin)`, 'yellow')
        : plain('-'),
    ],
    ['revoked', resp.revokedVersions.length > 0 ? plain(resp.revokedVersions.map((v) => `v${v}`).join(', '), 'red') : plain('-')],
    ['agents', c ? plain(`${c.agentsCurrent}/${c.agentsAssigned} on the desired version`, c.agentsCurrent < c.agentsAssigned ? 'yellow' : undefined) : plain('-')],
    ['next renewal', plain(renewal)],
    ['ari window', plain(ari)],
    [
      'deferred until',
      deferred
        ? plain(`${stampRel(resp.deferredUntil, now)}${resp.deferredReason === '' ? '' : `: ${oneLine(resp.deferredReason)}`}`, 'yellow')
        : plain('-'),
    ],
    [
      'backoff until',
      backoff
        ? plain(`${stampRel(resp.backoffUntil, now)} after ${resp.failures} failure${resp.failures === 1 ? '' : 's'}`, 'red')
        : plain(resp.failures > 0 ? `- (${resp.failures} failures)` : '-'),
    ],
    ['last error', c?.lastError ? plain(oneLine(c.lastError), 'red') : plain('-')],
  ];
  return keyValues(lines);
}

/** "primary, fallback (next order: fallback, a fallback)": the order tried, and where the next order goes. */
function issuersCell(resp: pb.ShowCertificateResponse__Output, plain: (text: string, style?: Style) => Cell): Cell {
  const fallingBack = resp.nextIssuer !== '' && resp.nextIssuer !== resp.issuers[0];
  return plain(`${resp.issuers.join(', ')}${fallingBack ? ` (next order: ${resp.nextIssuer}, a fallback)` : ''}`, fallingBack ? 'yellow' : undefined);
}

/**
 * `certfleet history NAME`: VERSION, SERIAL, FINGERPRINT (short), NOT AFTER, ISSUED,
 * ISSUER (the controller issuer whose CA issued it, "-" when not recorded; the column
 * only when some version records one), STATE (desired, pinned, expired, revoked(REASON); "-" for none), AGENTS (sorted; who reports it
 * installed now), newest version first.
 */
export function renderHistory(resp: pb.GetHistoryResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const entries = resp.versions.filter((h) => h.version !== null);
  if (entries.length === 0) return `${resp.name}: no versions issued yet\n`;
  const sorted = [...entries].sort((a, b) => (b.version?.version ?? 0) - (a.version?.version ?? 0));
  const withIssuer = entries.some((h) => (h.version?.issuer ?? '') !== '');
  const rows = sorted.map((h) => {
    const v = h.version;
    const state: string[] = [];
    if (h.desired) state.push('desired');
    if (resp.pinnedVersion > 0 && v?.version === resp.pinnedVersion) state.push('pinned');
    if (h.expired) state.push('expired');
    if (h.revoked) state.push(`revoked${h.revocationReason === '' ? '' : `(${h.revocationReason})`}`);
    const style: Style | undefined = h.revoked ? 'red' : h.expired ? 'dim' : h.desired ? 'green' : undefined;
    return [
      cell(String(v?.version ?? '-'), undefined, color),
      cell(v?.serial || '-', undefined, color),
      cell(shortFingerprint(v?.fingerprint ?? '') || '-', undefined, color),
      v ? expiresCell(v.notAfter, now, color) : cell('-', undefined, color),
      cell(v?.issuedAt ? day(v.issuedAt) : '-', undefined, color),
      ...(withIssuer ? [cell(v?.issuer || '-', undefined, color)] : []),
      cell(state.join(',') || '-', style, color),
      cell([...h.agents].sort().join(',') || '-', undefined, color),
    ];
  });
  return table(['VERSION', 'SERIAL', 'FINGERPRINT', 'NOT AFTER', 'ISSUED', ...(withIssuer ? ['ISSUER'] : []), 'STATE', 'AGENTS'], rows);
}

// ---- write commands ----

/** What `renew NAME` prints: the controller's message, or a plain acknowledgement when it sent none. */
export function renderRenew(name: string, resp: pb.RenewCertificateResponse__Output): string {
  return resp.message === '' ? `${name}: renewal requested\n` : `${oneLine(resp.message)}\n`;
}

/**
 * What `rollback NAME` prints: "web: rolled back from v3 to v2: v2 is desired now, pinned
 * (`certfleet release web` to undo); agents install it now (--wait follows them)".
 */
export function renderRollback(name: string, resp: pb.RollbackResponse__Output): string {
  return `${name}: rolled back from v${resp.fromVersion} to v${resp.toVersion}: v${resp.toVersion} is desired now, pinned (\`certfleet release ${name}\` to undo); agents install it now (--wait follows them)\n`;
}

/** What `release NAME` prints: "web: released; v3 is desired now; agents install it now (--wait follows them)". */
export function renderRelease(name: string, resp: pb.ReleaseResponse__Output): string {
  return `${name}: released; v${resp.version} is desired now; agents install it now (--wait follows them)\n`;
}

/**
 * What `revoke NAME --version N` prints: the controller's line (what was revoked, where
 * the fleet goes), then what to watch.
 */
export function renderRevoke(resp: pb.RevokeCertificateResponse__Output): string {
  const lines = [resp.message === '' ? `${resp.name}: version ${resp.version} ${resp.alreadyRevoked ? 'was already revoked' : 'revoked'}` : oneLine(resp.message)];
  if (resp.renewalRequested) lines.push(`${resp.name}: "certfleet renew ${resp.name} --wait" follows the renewal until the fleet serves it`);
  else if (resp.servingVersion > 0) lines.push(`${resp.name}: "certfleet certs" shows when every agent serves v${resp.servingVersion}`);
  return `${lines.join('\n')}\n`;
}

/** What `--wait` prints once the fleet serves the version: "web: version 3 served by 2/2 agents". */
export function renderServed(name: string, version: number, agentsCurrent: number, agentsAssigned: number): string {
  return `${name}: version ${version} served by ${agentsCurrent}/${agentsAssigned} agent${agentsAssigned === 1 ? '' : 's'}\n`;
}

// ---- budgets ----

/**
 * `certfleet budgets`: an optional "preset: NAME" line, then BUDGET, LIMIT, AVAILABLE
 * ("287/300": whole tokens now / capacity), RESERVED, NEXT TOKEN (relative; "-" when
 * full), sorted by name. On a terminal AVAILABLE is red once only the reserve is left
 * and yellow under a quarter of the capacity.
 */
export function renderBudgets(resp: pb.ListBudgetsResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const head = resp.preset === '' ? '' : `preset: ${resp.preset}\n\n`;
  if (resp.budgets.length === 0) return `${head}no budgets\n`;
  // Several issuers: one account each, so every row says whose budget it is.
  const byIssuer = resp.budgets.some((b) => b.issuer !== '');
  const budgets = [...resp.budgets].sort((a, b) => (byIssuer ? 0 : a.name.localeCompare(b.name)) || a.name.localeCompare(b.name));
  const rows = budgets.map((b) => {
    // Whole tokens: a fraction of one cannot be spent.
    const available = Math.floor(b.available);
    const style: Style | undefined = available <= b.reserved ? 'red' : available < b.capacity / 4 ? 'yellow' : undefined;
    return [
      ...(byIssuer ? [cell(b.issuer || '-', undefined, color)] : []),
      cell(b.name, undefined, color),
      cell(b.limit || '-', undefined, color),
      cell(`${available}/${Math.round(b.capacity)}`, style, color),
      cell(String(Math.round(b.reserved)), undefined, color),
      cell(relativeTime(b.nextTokenAt, now) || '-', undefined, color),
    ];
  });
  return head + table([...(byIssuer ? ['ISSUER'] : []), 'BUDGET', 'LIMIT', 'AVAILABLE', 'RESERVED', 'NEXT TOKEN'], rows);
}

// ---- events ----

const EVENT_STYLE: Record<string, Style> = {
  issued: 'green',
  installed: 'green',
  failed: 'red',
  'install-failed': 'red',
  'hook-failed': 'red',
  deferred: 'yellow',
  'deferred-by-budget': 'yellow',
  'rolled-back': 'yellow',
};

/**
 * One event on one line: TIME TYPE CERT AGENT VERSION ACTOR MESSAGE, separated by two
 * spaces, "-" for a field that does not apply, so `awk '{print $3}'` finds the
 * certificate. TIME is UTC to the second.
 */
export function renderEvent(e: pb.FleetEvent__Output, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const fields = [
    stamp(e.at).replace(' ', 'T') || '-',
    cell(e.type || '-', EVENT_STYLE[e.type], color).shown,
    e.cert || '-',
    e.agent || '-',
    e.version > 0 ? `v${e.version}` : '-',
    e.actor || '-',
  ];
  const message = oneLine(e.message);
  return `${fields.join('  ')}${message === '' ? '' : `  ${message}`}\n`;
}

/** `certfleet events`: one line per event in the order the controller sent them (oldest first). */
export function renderEvents(resp: pb.ListEventsResponse__Output, opts: RenderOptions = {}): string {
  if (resp.events.length === 0) return 'no events\n';
  return resp.events.map((e) => renderEvent(e, opts)).join('');
}

/**
 * The identity `events --follow` deduplicates on: time, type, certificate, agent,
 * version, actor and message. (Agent and version are included so two agents installing the
 * same version in the same millisecond stay two events.)
 */
export function eventKey(e: pb.FleetEvent__Output): string {
  return JSON.stringify([e.at, e.type, e.cert, e.agent, e.version, e.actor, e.message]);
}

/**
 * For `events --follow`: the events of one poll that the previous poll did not return,
 * in order, and the keys to pass to the next call. Only the previous answer's keys are
 * kept, which is enough because the controller returns the most recent events: an
 * event that left the window never comes back.
 */
export function newEvents(
  seen: ReadonlySet<string>,
  events: readonly pb.FleetEvent__Output[],
): { fresh: pb.FleetEvent__Output[]; seen: Set<string> } {
  const next = new Set<string>();
  const fresh: pb.FleetEvent__Output[] = [];
  for (const e of events) {
    const key = eventKey(e);
    if (!seen.has(key) && !next.has(key)) fresh.push(e);
    next.add(key);
  }
  return { fresh, seen: next };
}

// ---- operators ----

/**
 * `certfleet operators list`: NAME, ROLE, STATE (active, or "revoked by X <time>"),
 * CREATED (time and by whom), EXPIRES (the certificate's notAfter, relative), sorted by name.
 */
export function renderOperators(resp: pb.ListOperatorsResponse__Output, now: Date, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  if (resp.operators.length === 0) return 'no operators\n';
  const rows = [...resp.operators]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((o) => [
      cell(o.name, undefined, color),
      cell(o.role, o.role === 'admin' ? 'yellow' : undefined, color),
      o.revoked
        ? cell(`revoked${o.revokedBy ? ` by ${o.revokedBy}` : ''}${o.revokedAt ? ` ${stamp(o.revokedAt)}` : ''}`, 'red', color)
        : cell('active', 'green', color),
      cell(`${stamp(o.createdAt) || '-'} by ${o.createdBy || '-'}`, undefined, color),
      cell(o.notAfter === '' ? '-' : stampRel(o.notAfter, now), undefined, color),
    ]);
  return table(['NAME', 'ROLE', 'STATE', 'CREATED', 'EXPIRES'], rows);
}

/** What `operators create` prints once the credentials file is written. */
export function renderOperatorCreated(o: pb.Operator__Output, file: string): string {
  return (
    `operator ${o.name} created with role ${o.role}; credentials written to ${file} (mode 0600)\n` +
    `hand the file over privately; use it with --credentials ${file} or CERTFLEET_CREDENTIALS; ` +
    `revoke it with: certfleet operators revoke ${o.name}\n`
  );
}

/** What `operators revoke` prints. */
export function renderOperatorRevoked(o: pb.Operator__Output): string {
  return `operator ${o.name} revoked: the controller refuses its credentials from now on\n`;
}

/** What `operators set-role` prints. */
export function renderOperatorRole(resp: pb.SetOperatorRoleResponse__Output): string {
  const o = resp.operator;
  const name = o?.name ?? '?';
  const role = o?.role ?? '?';
  return resp.previousRole === role ? `operator ${name} already has role ${role}\n` : `operator ${name}: role ${resp.previousRole} -> ${role} (from the next call on)\n`;
}

/** What `agents remove` prints. */
export function renderAgentRemoved(resp: pb.RemoveAgentResponse__Output): string {
  const when = resp.removedAt === '' ? '' : ` at ${resp.removedAt}`;
  if (resp.alreadyRemoved) return `agent ${resp.name} was already removed (by ${resp.removedBy || '?'}${when})\n`;
  const tokens = resp.tokensWithdrawn > 0 ? `; ${resp.tokensWithdrawn} unused enrolment token(s) for it withdrawn` : '';
  return (
    `agent ${resp.name} removed by ${resp.removedBy}${when}: its certificate is refused from its next call, ` +
    `it answers no more HTTP-01 challenges${tokens}\n` +
    `to bring the node back: certfleet token create ${resp.name} --label ... and enrol it again\n`
  );
}

/** What `whoami` prints. */
export function renderWhoAmI(resp: pb.WhoAmIResponse__Output): string {
  return `${resp.name} (role ${resp.role})\n`;
}

// ---- tokens and enrolment ----

/** The line `token create` writes to stderr beside the bare token on stdout. */
export function renderTokenNote(resp: pb.CreateEnrollmentTokenResponse__Output, agent: string, now: Date): string {
  const rel = relativeTime(resp.expiresAt, now);
  const expiry = resp.expiresAt === '' ? '' : ` until ${resp.expiresAt}${rel === '' ? '' : ` (${rel})`}`;
  return `one-time token for agent ${agent}, valid${expiry}; on the node: certfleet agent enroll --config FILE --token-file FILE\n`;
}

/** What `agent enroll` prints once the controller accepted the token. */
export function renderEnrolled(result: { name: string; labels: Readonly<Record<string, string>>; serves?: ReadonlyArray<{ name: string; names: readonly string[] }> | { error: string } }): string {
  let out = `enrolled as ${result.name}\nlabels: ${formatLabels(result.labels) || '-'}\n`;
  const serves = result.serves;
  if (serves === undefined) return out;
  if ('error' in serves) out += `will serve: unknown (asking the controller failed: ${serves.error})\n`;
  else if (serves.length === 0) out += 'will serve: nothing yet (no issued certificate is assigned to these labels)\n';
  else out += `will serve: ${serves.map((c) => `${c.name} (${c.names.join(', ')})`).join('; ')}\n`;
  return out;
}

/**
 * What `controller signing-key` prints: one line per key of the ring (state, id, created)
 * and, after a rotation step, what to do next. Private keys are never passed in.
 */
export function renderSigningKeys(ring: ReadonlyArray<{ keyId: string; state: string; createdAt: string }>, step: string): string {
  const rows = ring.map((k) => [cell(k.state, undefined, false), cell(k.keyId, undefined, false), cell(k.createdAt || '-', undefined, false)]);
  const next: Record<string, string> = {
    prepare: 'next: restart the controller, wait one agent resyncInterval, then `activate`',
    activate: 'next: restart the controller (it signs every desired pointer again), wait one resyncInterval, then `retire`',
    retire: 'next: restart the controller; agents drop the retired key at their next resync',
  };
  return table(['STATE', 'KEY ID', 'CREATED'], rows) + (next[step] === undefined ? '' : `${next[step]}\n`);
}

/** Machine output of every command's --json: the response object, camelCase field names, 2-space indent. */
export function renderJson(resp: unknown): string {
  return JSON.stringify(resp, null, 2) + '\n';
}

// ---- dry run and check ----

/** A step's time: "850ms" under a second, "1.2s" under two minutes, else {@link formatDuration}. */
export function formatStepTime(ms: number): string {
  if (ms < SECOND) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 2 * MINUTE) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  return formatDuration(ms);
}

/**
 * `renew NAME --dry-run`: the staging CA, one row per step (STEP, IDENTIFIER, TIME,
 * RESULT, DETAIL), then one line saying what came of it and that nothing was kept.
 */
export function renderDryRun(resp: pb.DryRunResponse__Output, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const rows = resp.steps.map((s) => [
    cell(s.step, undefined, color),
    cell(s.identifier || '-', undefined, color),
    cell(formatStepTime(s.durationMs), undefined, color),
    cell(s.ok ? 'ok' : 'FAILED', s.ok ? 'green' : 'red', color),
    cell(oneLine(s.detail), undefined, color),
  ]);
  const head = `${resp.name}: dry run against ${resp.directoryUrl}\n`;
  const end = resp.ok
    ? `${resp.name}: dry run succeeded in ${formatStepTime(resp.durationMs)}: staging certificate serial ${resp.serial}, notAfter ${resp.notAfter}; nothing stored, published or charged\n`
    : `${resp.name}: dry run FAILED${resp.errorCode === '' ? '' : ` (${resp.errorCode})`}: ${oneLine(resp.error)}; nothing stored, published or charged\n`;
  return `${head}${table(['STEP', 'IDENTIFIER', 'TIME', 'RESULT', 'DETAIL'], rows)}${end}`;
}

/**
 * `check [NAME]`: one row per check (CERTIFICATE, CHECK, IDENTIFIER, AGENT, RESULT,
 * DETAIL), then "N checks, all passed" or "F of N checks failed" naming what failed.
 */
export function renderChecks(resp: pb.CheckChallengesResponse__Output, opts: RenderOptions = {}): string {
  const color = opts.color === true;
  const rows = resp.checks.map((c) => [
    cell(c.certificate, undefined, color),
    cell(c.check, undefined, color),
    cell(c.identifier || '-', undefined, color),
    cell(c.agent || '-', undefined, color),
    cell(c.ok ? 'ok' : 'FAILED', c.ok ? 'green' : 'red', color),
    cell(oneLine(c.detail), undefined, color),
  ]);
  const failed = resp.checks.filter((c) => !c.ok);
  const total = resp.checks.length;
  if (total === 0) return 'no certificates to check\n';
  const end =
    failed.length === 0
      ? `${total} check${total === 1 ? '' : 's'}, all passed\n`
      : `${failed.length} of ${total} check${total === 1 ? '' : 's'} failed: ${failed.map(checkTarget).join(', ')}\n`;
  return `${table(['CERTIFICATE', 'CHECK', 'IDENTIFIER', 'AGENT', 'RESULT', 'DETAIL'], rows)}${end}`;
}

/** "web http-01 www.example.test on edge-b": what a failed check was about. */
export function checkTarget(c: pb.ChallengeCheck__Output): string {
  return `${c.certificate} ${c.check} ${c.identifier || '(no names)'}${c.agent === '' ? '' : ` on ${c.agent}`}`;
}

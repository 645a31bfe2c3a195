// certfleet console: the page's script. Plain JavaScript for current browsers, no
// framework, no build step, nothing fetched from anywhere but this console. Every value
// from the controller goes into the page as text (textContent), never as markup.
'use strict';

(() => {
  const view = document.getElementById('view');
  const banner = document.getElementById('banner');
  const REFRESH_MS = 5000;
  /** What the current page started (a refresh timer, an event stream); undone on navigation. */
  let cleanup = [];
  let me = { name: '', role: '' };

  // ---- helpers ----

  /** Element with attributes and children (strings become text nodes). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'onclick' || k === 'onchange') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, text) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /** GET or POST one API path; resolves with the JSON, rejects with the error the console or controller gave. */
  async function api(path, body) {
    const init = body === undefined ? {} : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
    const res = await fetch(`/api/${path}`, { credentials: 'same-origin', ...init });
    let data;
    try {
      data = await res.json();
    } catch {
      data = { error: { code: 'HTTP_' + res.status, message: res.statusText } };
    }
    if (!res.ok) {
      const err = new Error((data.error && data.error.message) || `HTTP ${res.status}`);
      err.code = (data.error && data.error.code) || `HTTP_${res.status}`;
      throw err;
    }
    return data;
  }

  function show(kind, text) {
    banner.hidden = false;
    banner.className = kind;
    banner.textContent = text;
  }
  function hideBanner() {
    banner.hidden = true;
    banner.textContent = '';
  }

  const DAY = 86400000;
  function parse(t) {
    const n = Date.parse(t || '');
    return Number.isNaN(n) ? undefined : n;
  }
  function duration(ms) {
    const a = Math.abs(ms);
    if (a < 120000) return `${Math.floor(a / 1000)}s`;
    if (a < 7200000) return `${Math.floor(a / 60000)}m`;
    if (a < 2 * DAY) return `${Math.floor(a / 3600000)}h`;
    if (a < 730 * DAY) return `${Math.floor(a / DAY)}d`;
    return `${Math.floor(a / (365 * DAY))}y`;
  }
  function rel(t) {
    const n = parse(t);
    if (n === undefined) return '';
    const d = n - Date.now();
    if (Math.abs(d) < 1000) return 'now';
    return d > 0 ? `in ${duration(d)}` : `${duration(d)} ago`;
  }
  function stamp(t) {
    const n = parse(t);
    return n === undefined ? '-' : new Date(n).toISOString().replace('T', ' ').slice(0, 16) + 'Z';
  }
  function day(t) {
    const n = parse(t);
    return n === undefined ? '-' : new Date(n).toISOString().slice(0, 10);
  }
  const v = (n) => (n > 0 ? `v${n}` : '-');
  const short = (fp) => (fp || '').slice(0, 12);

  /** The state the CLI's `certs` shows: ready but pinned reads "pinned". */
  function displayState(c) {
    return c.state === 'ready' && c.pinnedVersion > 0 ? 'pinned' : c.state || '-';
  }
  const chip = (text, cls) => h('span', { class: `chip ${cls || text}` }, text);
  const canChange = () => me.role === 'operator' || me.role === 'admin';

  // ---- pages ----

  async function overview() {
    const [status, certs, agents, budgets] = await Promise.all([api('status'), api('certs'), api('agents'), api('budgets')]);
    const byState = new Map();
    for (const c of certs.certificates) byState.set(displayState(c), (byState.get(displayState(c)) || 0) + 1);
    const live = agents.agents.filter((a) => !a.removedAt);
    const online = live.filter((a) => a.online).length;

    const stats = h('div', { class: 'grid' },
      h('div', { class: 'stat' }, h('div', { class: 'n', id: 'stat-certs' }, `${status.certificatesReady}/${status.certificates}`), h('div', { class: 'l' }, 'certificates ready')),
      h('div', { class: 'stat' }, h('div', { class: 'n', id: 'stat-agents' }, `${online}/${live.length}`), h('div', { class: 'l' }, 'agents online')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, status.nats || '-'), h('div', { class: 'l' }, 'NATS')),
      h('div', { class: 'stat' }, h('div', { class: 'n' }, status.store || '-'), h('div', { class: 'l' }, `store · controller ${status.controllerVersion || '?'}`)),
    );

    const certRows = [...certs.certificates].sort((a, b) => a.name.localeCompare(b.name)).map((c) => {
      const newest = c.newestVersion || (c.current && c.current.version) || 0;
      const exp = c.current ? parse(c.current.notAfter) : undefined;
      const next = c.deferredUntil ? `deferred ${rel(c.deferredUntil)} (budget)` : c.backoffUntil ? `retry ${rel(c.backoffUntil)} (backoff)` : c.renewalRequested ? 'requested' : c.nextRenewal ? `${day(c.nextRenewal)} (${rel(c.nextRenewal)})` : '-';
      return h('tr', { 'data-cert': c.name },
        h('td', {}, h('a', { href: `#/cert/${encodeURIComponent(c.name)}` }, c.name)),
        h('td', {}, chip(displayState(c))),
        h('td', {}, v(newest)),
        h('td', {}, v(c.desiredVersion)),
        h('td', {}, v(c.pinnedVersion)),
        h('td', {}, `${c.agentsCurrent}/${c.agentsAssigned}`),
        h('td', {}, exp === undefined ? '-' : `${day(c.current.notAfter)} (${rel(c.current.notAfter)})`),
        h('td', {}, next),
        h('td', { class: 'mono' }, c.names.join(', ')),
      );
    });
    const certsCard = h('section', { class: 'card' },
      h('h2', {}, 'Certificates by state'),
      h('div', { class: 'chips', id: 'cert-states' }, [...byState].sort().map(([st, n]) => h('span', {}, chip(`${st} ${n}`, st)))),
      certRows.length === 0
        ? h('p', { class: 'muted' }, 'No certificates configured.')
        : h('table', { id: 'certs' }, h('thead', {}, h('tr', {}, ['Name', 'State', 'Newest', 'Desired', 'Pinned', 'Serving', 'Expires', 'Next renewal', 'Names'].map((t) => h('th', {}, t)))), h('tbody', {}, certRows)),
    );

    const agentRows = [...agents.agents].sort((a, b) => a.name.localeCompare(b.name)).map((a) => {
      const state = a.removedAt ? 'removed' : a.online ? 'online' : 'offline';
      const labels = Object.entries(a.labels || {}).sort().map(([k, val]) => `${k}=${val}`).join(', ');
      const certsCell = [...a.certificates].sort((x, y) => x.name.localeCompare(y.name)).map((c) => {
        const ver = c.desiredVersion > 0 && c.desiredVersion !== c.version ? `${c.version}→${c.desiredVersion}` : String(c.version);
        return h('div', {}, h('a', { href: `#/cert/${encodeURIComponent(c.name)}` }, c.name), ` v${ver} `, chip(c.state || 'unknown'));
      });
      return h('tr', { 'data-agent': a.name },
        h('td', {}, a.name),
        h('td', {}, chip(state)),
        h('td', {}, a.lastSeen ? rel(a.lastSeen) : 'never'),
        h('td', { class: 'mono' }, labels || '-'),
        h('td', {}, certsCell.length ? certsCell : '-'),
      );
    });
    const agentsCard = h('section', { class: 'card' },
      h('h2', {}, `Agents (${online} of ${live.length} online)`),
      agentRows.length === 0
        ? h('p', { class: 'muted' }, 'No agents enrolled.')
        : h('table', { id: 'agents' }, h('thead', {}, h('tr', {}, ['Agent', 'State', 'Last seen', 'Labels', 'Certificates'].map((t) => h('th', {}, t)))), h('tbody', {}, agentRows)),
    );

    const budgetRows = budgets.budgets.map((b) =>
      h('tr', {},
        h('td', { class: 'mono' }, b.name),
        h('td', {}, b.limit),
        h('td', {}, h('meter', { min: 0, max: b.capacity || 1, low: (b.capacity || 1) * 0.25, high: (b.capacity || 1) * 0.6, optimum: b.capacity || 1, value: b.available }), ` ${Math.floor(b.available)}/${b.capacity}`),
        h('td', {}, String(b.reserved)),
        h('td', {}, b.nextTokenAt ? rel(b.nextTokenAt) : '-'),
      ));
    const budgetsCard = h('section', { class: 'card' },
      h('h2', {}, `Rate-limit budgets (preset ${budgets.preset || '-'})`),
      budgetRows.length === 0
        ? h('p', { class: 'muted', id: 'budgets' }, 'No budgets kept: this preset puts no limit on orders.')
        : h('table', { id: 'budgets' }, h('thead', {}, h('tr', {}, ['Budget', 'Limit', 'Available', 'Reserved', 'Next token'].map((t) => h('th', {}, t)))), h('tbody', {}, budgetRows)),
    );
    return [h('h1', {}, 'Fleet overview'), stats, certsCard, agentsCard, budgetsCard];
  }

  /** Each version's validity as a bar on one time axis, with a line at now. */
  function timeline(versions, pinned) {
    const rows = [...versions].sort((a, b) => a.version.version - b.version.version);
    const now = Date.now();
    const starts = rows.map((r) => parse(r.version.notBefore)).filter((n) => n !== undefined);
    const ends = rows.map((r) => parse(r.version.notAfter)).filter((n) => n !== undefined);
    if (starts.length === 0) return h('p', { class: 'muted' }, 'No version issued yet.');
    const t0 = Math.min(...starts, now);
    const t1 = Math.max(...ends, now);
    const W = 1000, L = 60, R = 20, ROW = 26, top = 24;
    const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
    const H = top + rows.length * ROW + 34;
    const svg = s('svg', { class: 'timeline', id: 'timeline', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'validity of each version' });
    rows.forEach((r, i) => {
      const y = top + i * ROW;
      const a = parse(r.version.notBefore), b = parse(r.version.notAfter);
      const cls = r.expired ? 'expired' : r.version.version === pinned ? 'pinned' : r.desired ? 'desired' : '';
      svg.append(s('text', { x: 8, y: y + 16 }, `v${r.version.version}`));
      if (a !== undefined && b !== undefined) {
        const rect = s('rect', { class: `bar ${cls}`, x: x(a), y: y + 4, width: Math.max(2, x(b) - x(a)), height: ROW - 10, rx: 3, 'data-version': r.version.version });
        rect.append(s('title', {}, `v${r.version.version}: ${stamp(r.version.notBefore)} – ${stamp(r.version.notAfter)}${r.desired ? ' (desired)' : ''}`));
        svg.append(rect);
        const label = `until ${day(r.version.notAfter)}`;
        // Near the right edge the label goes inside the bar's end instead.
        const inside = x(b) + 6 > W - R - 110;
        svg.append(s('text', inside ? { x: x(b) - 6, y: y + 16, 'text-anchor': 'end', class: 'inbar' } : { x: x(b) + 6, y: y + 16 }, label));
      }
    });
    const axisY = top + rows.length * ROW + 6;
    svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: axisY, y2: axisY }));
    svg.append(s('text', { x: L, y: axisY + 18 }, day(new Date(t0).toISOString())));
    svg.append(s('text', { x: W - R, y: axisY + 18, 'text-anchor': 'end' }, day(new Date(t1).toISOString())));
    svg.append(s('line', { class: 'now', x1: x(now), x2: x(now), y1: top - 6, y2: axisY }));
    // Above the bars, so it never covers the axis dates.
    svg.append(s('text', { class: 'nowlabel', x: x(now), y: top - 10, 'text-anchor': x(now) > W - R - 40 ? 'end' : 'start' }, 'now'));
    return svg;
  }

  async function certificate(name) {
    const [show, history, agents] = await Promise.all([api(`certs/${encodeURIComponent(name)}`), api(`certs/${encodeURIComponent(name)}/history`), api('agents')]);
    const c = show.summary || {};
    const versions = [...history.versions].sort((a, b) => b.version.version - a.version.version);
    const desired = show.desiredVersion;
    const pinned = show.pinnedVersion;

    const facts = h('dl', { class: 'facts' },
      h('dt', {}, 'Names'), h('dd', { class: 'mono' }, (c.names || []).join(', ') || '-'),
      h('dt', {}, 'Agents'), h('dd', {}, `${c.selector || '-'} · ${c.agentsCurrent || 0}/${c.agentsAssigned || 0} serve the desired version`),
      h('dt', {}, 'Desired'), h('dd', { id: 'desired' }, `${v(desired)} (newest ${v(c.newestVersion)})${pinned > 0 ? `, pinned to v${pinned} by a rollback` : ''}`),
      h('dt', {}, 'Next renewal'), h('dd', {}, c.nextRenewal ? `${stamp(c.nextRenewal)} (${rel(c.nextRenewal)})${show.reason ? ` — ${show.reason}` : ''}` : '-'),
      show.ariWindowStart ? [h('dt', {}, 'ARI window'), h('dd', {}, `${stamp(show.ariWindowStart)} – ${stamp(show.ariWindowEnd)}`)] : null,
      show.deferredUntil ? [h('dt', {}, 'Deferred'), h('dd', {}, `until ${stamp(show.deferredUntil)} (${rel(show.deferredUntil)}): ${show.deferredReason}`)] : null,
      show.backoffUntil ? [h('dt', {}, 'Backoff'), h('dd', {}, `${show.failures} failure(s); next try ${stamp(show.backoffUntil)} (${rel(show.backoffUntil)})`)] : null,
      c.lastError ? [h('dt', {}, 'Last error'), h('dd', { class: 'mono' }, c.lastError)] : null,
    );

    // Roll back to: any stored, unexpired version other than the desired one; default the one before it.
    const targets = versions.filter((r) => !r.expired && r.version.version !== desired);
    const before = targets.find((r) => r.version.version < desired);
    const select = h('select', { id: 'rollback-to', 'aria-label': 'version to roll back to' },
      targets.map((r) => h('option', { value: r.version.version, selected: before && r.version.version === before.version.version }, `v${r.version.version} (until ${day(r.version.notAfter)})`)));
    const allowed = canChange();
    const actions = h('section', { class: 'card' },
      h('h2', {}, 'Actions'),
      h('div', { class: 'actions' },
        h('button', { id: 'renew', disabled: !allowed, onclick: () => act('renew', name, {}, `Renew ${name} now? The controller orders a new certificate (rate-limit budgets apply).`) }, 'Renew now'),
        h('span', {}, h('button', { id: 'rollback', class: 'danger', disabled: !allowed || targets.length === 0, onclick: () => {
          const to = Number(select.value);
          act('rollback', name, { to }, `Roll ${name} back from v${desired} to v${to} and pin it there? Every agent installs v${to}; renewals do not move it until released.`);
        } }, 'Roll back to'), ' ', select),
        h('button', { id: 'release', disabled: !allowed || pinned === 0, onclick: () => act('release', name, {}, `Release the pin of ${name}? The newest version v${c.newestVersion} is served again.`) }, 'Release pin'),
      ),
      h('p', { class: 'note' }, allowed
        ? `You act as ${me.name} (role ${me.role}); each change asks for confirmation.`
        : `Your role (${me.role || 'unknown'}) may only read: renew, rollback and release need role operator or admin, and the controller refuses them.`),
    );

    const histRows = versions.map((r) =>
      h('tr', { 'data-version': r.version.version },
        h('td', {}, `v${r.version.version}`),
        h('td', {}, r.expired ? chip('expired') : r.version.version === pinned ? chip('pinned') : r.desired ? chip('desired', 'ready') : ''),
        h('td', { class: 'mono' }, short(r.version.fingerprint)),
        h('td', { class: 'mono' }, r.version.serial.slice(0, 16)),
        h('td', {}, stamp(r.version.notBefore)),
        h('td', {}, `${stamp(r.version.notAfter)} (${rel(r.version.notAfter)})`),
        h('td', {}, stamp(r.version.issuedAt)),
        h('td', {}, r.agents.length ? [...r.agents].sort().join(', ') : '-'),
      ));

    // The agents the controller assigns this certificate to, or that report it.
    const rows = agents.agents
      .filter((a) => !a.removedAt && (a.certificates.some((x) => x.name === name) || (a.drift || []).some((d) => d.certificate === name)))
      .sort((a, b) => a.name.localeCompare(b.name));
    const cols = [...versions].reverse();
    const matrix = rows.length === 0
      ? h('p', { class: 'muted' }, 'No agent reports this certificate yet.')
      : h('table', { class: 'matrix', id: 'matrix' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Agent'), cols.map((r) => h('th', { class: r.version.version === desired ? 'desired' : '' }, `v${r.version.version}${r.version.version === desired ? ' (desired)' : ''}`)))),
        h('tbody', {}, rows.map((a) => {
          const st = a.certificates.find((x) => x.name === name);
          return h('tr', { 'data-agent': a.name }, h('td', {}, a.name, ' ', chip(a.online ? 'online' : 'offline')), cols.map((r) => {
            const ver = r.version.version;
            let cls = '', text = '';
            if (st && st.version === ver && st.state === 'installed') { cls = 'serving'; text = 'serving'; }
            else if (st && st.state === 'failed' && (st.desiredVersion || st.version) === ver) { cls = 'failed'; text = `failed${st.errorCode ? ` (${st.errorCode})` : ''}`; }
            else if (st && st.version === ver) { cls = 'pending'; text = st.state || 'reported'; }
            else if (ver === desired && (!st || st.version !== ver)) { cls = 'pending'; text = 'wanted'; }
            return h('td', { class: `cell ${cls}`, 'data-version': ver }, text);
          }));
        })));

    const evCard = h('section', { class: 'card' }, h('h2', {}, 'Recent events ', h('a', { href: `#/events/${encodeURIComponent(name)}` }, '(live feed)')), h('div', { id: 'cert-events' }, h('p', { class: 'muted' }, 'Loading…')));
    api(`events?cert=${encodeURIComponent(name)}&limit=10`).then((e) => {
      const box = document.getElementById('cert-events');
      if (box) box.replaceChildren(eventsTable(e.events.slice().reverse(), 'cert-events-table'));
    }).catch((err) => show('error', `events: ${err.message}`));

    return [
      h('h1', {}, name, chip(displayState({ state: c.state, pinnedVersion: pinned }))),
      h('section', { class: 'card' }, facts),
      actions,
      h('section', { class: 'card' }, h('h2', {}, 'Expiry timeline'), timeline(versions, pinned)),
      h('section', { class: 'card' }, h('h2', {}, 'Version history'), h('table', { id: 'history' }, h('thead', {}, h('tr', {}, ['Version', '', 'Fingerprint', 'Serial', 'Not before', 'Not after', 'Issued', 'Installed on'].map((t) => h('th', {}, t)))), h('tbody', {}, histRows))),
      h('section', { class: 'card' }, h('h2', {}, 'Which agent serves which version'), matrix),
      evCard,
    ];
  }

  /** Asks for confirmation, then sends a change; shows what the controller answered or why it refused. */
  async function act(what, name, body, question) {
    if (!window.confirm(question)) return;
    document.querySelectorAll('.actions button').forEach((b) => { b.disabled = true; });
    try {
      const r = await api(`certs/${encodeURIComponent(name)}/${what}`, body);
      if (what === 'rollback') show('ok', `${name}: rolled back from v${r.fromVersion} to v${r.toVersion} and pinned; agents are installing it.`);
      else if (what === 'release') show('ok', `${name}: pin released; v${r.version} is the desired version again.`);
      else show('ok', `${name}: ${r.message || r.outcome}`);
    } catch (err) {
      show('error', `${what} ${name} refused: ${err.message} (${err.code})`);
    }
    await render();
  }

  function eventsTable(events, id) {
    return h('table', { id },
      h('thead', {}, h('tr', {}, ['Time', 'Type', 'Certificate', 'Agent', 'Version', 'Actor', 'Message'].map((t) => h('th', {}, t)))),
      h('tbody', {}, events.map((e) => eventRow(e, false))));
  }
  function eventRow(e, fresh) {
    const bad = /fail|halt|refus|deferred/.test(e.type);
    return h('tr', { 'data-type': e.type, 'data-cert': e.cert, class: fresh ? 'fresh' : '' },
      h('td', { class: 'mono' }, stamp(e.at)),
      h('td', {}, chip(e.type, bad ? 'failed' : e.type === 'rolled-back' ? 'pinned' : /issued|installed|served|released/.test(e.type) ? 'ready' : 'other')),
      h('td', {}, e.cert ? h('a', { href: `#/cert/${encodeURIComponent(e.cert)}` }, e.cert) : '-'),
      h('td', {}, e.agent || '-'),
      h('td', {}, e.version ? `v${e.version}` : '-'),
      h('td', {}, e.actor || '-'),
      h('td', {}, e.message || ''));
  }

  /** The live feed: the most recent events, then each new one on top as the controller records it. */
  function events(cert) {
    const table = eventsTable([], 'events');
    const tbody = table.querySelector('tbody');
    const dot = h('span', { class: 'live', id: 'live' });
    const state = h('span', { id: 'live-state' }, 'connecting…');
    const src = new EventSource(`/api/events/stream${cert ? `?cert=${encodeURIComponent(cert)}` : ''}`);
    let first = true;
    src.onopen = () => { dot.className = 'live on'; state.textContent = 'live'; };
    src.onmessage = (m) => {
      const e = JSON.parse(m.data);
      tbody.prepend(eventRow(e, !first));
      while (tbody.children.length > 500) tbody.lastChild.remove();
    };
    src.addEventListener('problem', (m) => {
      const p = JSON.parse(m.data);
      if (p.message) { dot.className = 'live off'; state.textContent = `controller: ${p.message}`; }
      else { dot.className = 'live on'; state.textContent = 'live'; }
    });
    src.onerror = () => { dot.className = 'live off'; state.textContent = 'disconnected; retrying…'; };
    // Rows that arrive with the first answer are history; later ones are highlighted.
    const t = setTimeout(() => { first = false; }, 1500);
    cleanup.push(() => { src.close(); clearTimeout(t); });
    return [
      h('h1', {}, cert ? `Events of ${cert}` : 'Fleet events'),
      h('section', { class: 'card' }, h('p', {}, dot, state, h('span', { class: 'muted' }, ' · newest first; the console asks the controller every 2 s')), table),
    ];
  }

  // ---- routing ----

  function route() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const cert = /^\/cert\/([^/]+)$/.exec(hash);
    const ev = /^\/events(?:\/([^/]+))?$/.exec(hash);
    if (cert) return { page: 'cert', name: decodeURIComponent(cert[1]) };
    if (ev) return { page: 'events', name: ev[1] ? decodeURIComponent(ev[1]) : '' };
    return { page: 'overview' };
  }

  let rendering = 0;
  async function render() {
    const r = route();
    const ticket = ++rendering;
    try {
      const nodes = r.page === 'cert' ? await certificate(r.name) : await overview();
      if (ticket !== rendering) return;
      view.replaceChildren(...nodes.flat());
      document.body.dataset.loaded = r.page;
    } catch (err) {
      if (ticket !== rendering) return;
      show('error', `${err.message} (${err.code || 'error'})`);
    }
  }

  async function navigate() {
    for (const f of cleanup) f();
    cleanup = [];
    hideBanner();
    const r = route();
    document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === (r.page === 'cert' ? 'overview' : r.page)));
    if (r.page === 'events') {
      view.replaceChildren(...events(r.name));
      document.body.dataset.loaded = 'events';
      return;
    }
    delete document.body.dataset.loaded;
    await render();
    const timer = setInterval(() => { render(); }, REFRESH_MS);
    cleanup.push(() => clearInterval(timer));
  }

  window.addEventListener('hashchange', () => { navigate(); });
  api('whoami').then((w) => {
    me = w;
    document.getElementById('whoami').textContent = `${w.name} · role ${w.role}`;
  }).catch((err) => show('error', `whoami: ${err.message}`)).finally(() => { navigate(); });
})();

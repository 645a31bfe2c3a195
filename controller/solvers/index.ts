/**
 * Challenge solvers. HTTP-01 is answered by the agents on the nodes that serve the
 * names: the controller publishes the key authorization (public data) on NATS, every
 * agent selected by the certificate's selector serves it on its HTTP-01 listener, and
 * the controller confirms each of them really answers before it asks the CA to
 * validate — a failed validation would spend the CA's authorization-failure budget.
 *
 * An agent that is offline cannot answer. Whether the order waits for it or goes ahead
 * without it is the `http01.offlineAgents` policy ({@link offlineDuty}): `grace` (the
 * default) waits `offlineGrace` from the moment the agent went offline, then proceeds
 * without it; `block` always waits; `skip` proceeds at once. Proceeding has a price: if
 * DNS still points at the dead node, the CA may pick it and the validation fails.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { deadline as deadlineOn, type Clock } from '../../shared/clock/index.js';
import type { ChallengeRecord } from '../../shared/model/index.js';
import { LogKey } from '../../shared/log/index.js';

/** Where pending challenges are published (the NATS `challenges` bucket in production). */
export interface ChallengeBoard {
  present(record: ChallengeRecord): Promise<void>;
  /** Removes a challenge; absent is fine. */
  remove(token: string): Promise<void>;
  /** Every challenge published now (malformed records skipped). */
  list(): Promise<ChallengeRecord[]>;
}

/** An agent that should answer a challenge, with the address it said it answers on. */
export interface Responder {
  agent: string;
  http01Address: string;
  /** Why this agent cannot answer now ('' when it can): offline, no HTTP-01 listener. */
  unavailable: string;
  /** For an offline agent: since when (epoch ms), as the offline policy counts it. */
  offlineSince?: number;
}

/** What to do about selected agents that are offline (config `http01.offlineAgents`). */
export type OfflineAgentsMode = 'grace' | 'block' | 'skip';

export interface OfflinePolicy {
  mode: OfflineAgentsMode;
  /** With `grace`: how long an offline agent blocks before it is left out. */
  graceMs: number;
}

/** The default: wait an hour for an offline agent, then go ahead without it. */
export const DEFAULT_OFFLINE_POLICY: OfflinePolicy = { mode: 'grace', graceMs: 3600_000 };

/** An offline agent the challenge goes ahead without. */
export interface SkippedResponder {
  responder: Responder;
  /** How long it had been offline, ms. */
  offlineForMs: number;
}

/** The outcome of {@link offlineDuty}. */
export interface Http01Duty {
  /** Agents that must serve the challenge before the CA is asked. */
  serve: Responder[];
  /** Agents that cannot answer and hold the order back, each with why (and until when). */
  blocking: Array<{ responder: Responder; why: string; until?: number }>;
  /** Offline agents left out by the policy. */
  skipped: SkippedResponder[];
}

/**
 * Which selected agents must serve an HTTP-01 challenge now, which hold it back, and
 * which are left out. Pure. Only offline agents are subject to the policy: `block`
 * keeps them blocking, `skip` leaves them out, `grace` leaves out those offline for at
 * least `graceMs` (an agent without `offlineSince` counts as offline just now). Any
 * other reason (no HTTP-01 listener) always blocks: that is a configuration to fix.
 * The caller must still refuse when nothing is left to serve.
 */
export function offlineDuty(responders: readonly Responder[], policy: OfflinePolicy, now: number): Http01Duty {
  const duty: Http01Duty = { serve: [], blocking: [], skipped: [] };
  for (const r of responders) {
    if (r.unavailable === '') {
      duty.serve.push(r);
      continue;
    }
    if (r.unavailable !== 'offline') {
      duty.blocking.push({ responder: r, why: r.unavailable });
      continue;
    }
    const offlineForMs = Math.max(0, now - (r.offlineSince ?? now));
    if (policy.mode === 'skip' || (policy.mode === 'grace' && offlineForMs >= policy.graceMs)) {
      duty.skipped.push({ responder: r, offlineForMs });
    } else if (policy.mode === 'grace') {
      const until = (r.offlineSince ?? now) + policy.graceMs;
      duty.blocking.push({ responder: r, why: `offline; left out after ${new Date(until).toISOString()} (http01.offlineGrace)`, until });
    } else {
      duty.blocking.push({ responder: r, why: 'offline (http01.offlineAgents: block)' });
    }
  }
  return duty;
}

/** Finds every enrolled agent selected by `selector` (controller/fleet implements it). */
export type ResponderLookup = (selector: string) => Responder[];

export interface Http01SolverOptions {
  board: ChallengeBoard;
  responders: ResponderLookup;
  clock: Clock;
  log: Logger;
  /** How long every responder has to serve the challenge. */
  selfCheckTimeoutMs: number;
  /** Poll interval of the self-check. Default 200 ms. */
  pollMs?: number;
  /** What offline agents do to an order; default {@link DEFAULT_OFFLINE_POLICY}. */
  offlinePolicy?: OfflinePolicy;
  /**
   * One GET of the challenge URL on one responder: the body, or null when it did not
   * answer. Must not reject. Default: HTTP on the responder's address (3 s socket timeout).
   */
  fetch?: ChallengeFetch;
  /** Told about each offline agent a challenge goes ahead without (event, metric). Must not throw. */
  onSkipped?: (skip: { cert: string; identifier: string; agent: string; offlineSince: number; offlineForMs: number }) => void;
}

/** How the self-check asks one responder for a challenge (see {@link Http01SolverOptions.fetch}). */
export type ChallengeFetch = (address: string, identifier: string, token: string) => Promise<{ status: number; body: string } | null>;

/**
 * One GET of the challenge URL on one responder; resolves with the body or null. The
 * 3 s socket timeout stays real time: it bounds a socket, not a wait of ours.
 */
async function fetchChallenge(address: string, identifier: string, token: string): Promise<{ status: number; body: string } | null> {
  const idx = address.lastIndexOf(':');
  const host = address.slice(0, idx).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(idx + 1));
  return new Promise((resolve) => {
    const req = http.get(
      { host, port, path: `/.well-known/acme-challenge/${token}`, headers: { host: identifier }, timeout: 3000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (body.length < 4096) body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', () => resolve(null));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

/** A challenge record the janitor removes, and why. */
export interface StaleChallenge {
  token: string;
  cert: string;
  reason: string;
}

/**
 * Which published challenges are leftovers. Pure. A record is kept while this process
 * presents it (`active`), while it is younger than `minAgeMs` (another controller may
 * be presenting it), and while it belongs to the saved order of its certificate (it is
 * presented again when that order resumes); otherwise it goes: no order of its
 * certificate is in flight, or it is older than that order (an earlier, dead one).
 * Agents serve every record they see, so a killed controller's records would otherwise
 * be served for ever (issue #8).
 */
export function staleChallenges(
  records: readonly ChallengeRecord[],
  ctx: { active: ReadonlySet<string>; orders: ReadonlyMap<string, { createdAt: number }>; now: number; minAgeMs: number },
): StaleChallenge[] {
  const out: StaleChallenge[] = [];
  for (const r of records) {
    if (ctx.active.has(r.token)) continue;
    const created = Date.parse(r.createdAt);
    const at = Number.isFinite(created) ? created : 0;
    if (ctx.now - at < ctx.minAgeMs) continue;
    const order = ctx.orders.get(r.cert);
    if (!order) out.push({ token: r.token, cert: r.cert, reason: 'no order in flight' });
    else if (at < order.createdAt) out.push({ token: r.token, cert: r.cert, reason: 'older than the order in flight' });
  }
  return out;
}

/** Start-up: nothing is presented yet, so every record not of a saved order goes. */
export const CHALLENGE_SWEEP_START_MIN_AGE_MS = 0;
/** Periodic sweeps leave records younger than this alone (another controller's, in HA). */
export const CHALLENGE_SWEEP_MIN_AGE_MS = 10 * 60_000;
/** How often the running controller sweeps. */
export const CHALLENGE_SWEEP_INTERVAL_MS = 10 * 60_000;

/** HTTP-01 through the agents. */
export class Http01Solver {
  /** Tokens this process has published and not yet withdrawn. */
  private readonly active = new Set<string>();
  /** When a challenge last went ahead without each (certificate, agent), for the metrics. */
  private readonly lastSkipped = new Map<string, { cert: string; agent: string; at: number }>();

  /** Every (certificate, agent) a challenge went ahead without since start, with the latest time (epoch ms). */
  skips(): Array<{ cert: string; agent: string; at: number }> {
    return [...this.lastSkipped.values()];
  }

  constructor(private readonly opts: Http01SolverOptions) {}

  /**
   * Removes leftover challenge records (see {@link staleChallenges}); `orders` gives the
   * creation time of each certificate's saved order. Never throws for one record (it
   * stays for the next sweep); rejects when the board cannot be listed.
   */
  async sweep(orders: ReadonlyMap<string, { createdAt: number }>, minAgeMs: number): Promise<StaleChallenge[]> {
    const stale = staleChallenges(await this.opts.board.list(), { active: this.active, orders, now: this.opts.clock.now(), minAgeMs });
    const removed: StaleChallenge[] = [];
    for (const s of stale) {
      try {
        await this.opts.board.remove(s.token);
        removed.push(s);
        this.opts.log.info({ [LogKey.cert]: s.cert, [LogKey.token]: s.token, reason: s.reason }, 'leftover challenge removed');
      } catch (err) {
        this.opts.log.warn({ [LogKey.cert]: s.cert, [LogKey.token]: s.token, [LogKey.err]: (err as Error).message }, 'leftover challenge not removed');
      }
    }
    return removed;
  }

  /**
   * Publishes the challenge and waits until every selected online agent serves it.
   * CHALLENGE_NOT_SERVED (retryable) when no agent is selected/online or one does not
   * answer in time; the message names the agents that lag.
   */
  async present(record: ChallengeRecord): Promise<void> {
    // Every selected agent must answer: the CA may reach any node that serves the name,
    // and a failed validation spends its authorization-failure budget. So an agent that
    // cannot answer blocks the order (with its name in the error) rather than risk it,
    // except an offline one the offline policy leaves out (issue #9: one dead node used
    // to block the renewal of every certificate it served, for ever).
    const all = this.opts.responders(record.selector);
    const now = this.opts.clock.now();
    const duty = offlineDuty(all, this.opts.offlinePolicy ?? DEFAULT_OFFLINE_POLICY, now);
    if (all.length === 0 || duty.blocking.length > 0 || duty.serve.length === 0) {
      const why =
        all.length === 0
          ? `no enrolled agent matches "${record.selector}"`
          : duty.blocking.length > 0
            ? `agents selected by "${record.selector}" cannot answer: ${duty.blocking.map((b) => `${b.responder.agent} (${b.why})`).join(', ')}`
            : `every agent selected by "${record.selector}" is offline: ${duty.skipped.map((s) => s.responder.agent).join(', ')}`;
      const graceEnds = duty.blocking.map((b) => b.until).filter((u): u is number => u !== undefined);
      throw new CertfleetError(ErrorCode.ChallengeNotServed, `HTTP-01 for ${record.identifier}: ${why}`, {
        retryable: true,
        // A hint only: the work loop retries no earlier than its own backoff.
        ...(graceEnds.length > 0 && duty.blocking.length === graceEnds.length ? { retryAfterMs: Math.max(0, Math.max(...graceEnds) - now) } : {}),
        details: {
          identifier: record.identifier,
          selector: record.selector,
          unavailable: [...duty.blocking.map((b) => b.responder.agent), ...duty.skipped.map((s) => s.responder.agent)],
        },
      });
    }
    for (const s of duty.skipped) {
      this.lastSkipped.set(`${record.cert}\u0000${s.responder.agent}`, { cert: record.cert, agent: s.responder.agent, at: now });
      this.opts.log.warn(
        { [LogKey.cert]: record.cert, [LogKey.identifier]: record.identifier, [LogKey.agent]: s.responder.agent, offlineForMs: s.offlineForMs },
        'offline agent left out of HTTP-01',
      );
      this.opts.onSkipped?.({
        cert: record.cert,
        identifier: record.identifier,
        agent: s.responder.agent,
        offlineSince: s.responder.offlineSince ?? now,
        offlineForMs: s.offlineForMs,
      });
    }
    const responders = duty.serve;
    this.active.add(record.token);
    await this.opts.board.present(record);
    const log = this.opts.log.child({ [LogKey.cert]: record.cert, [LogKey.identifier]: record.identifier });
    const lagging = await this.awaitServed(record, responders);
    if (lagging.size > 0) {
      const list = [...lagging].map(([a, seen]) => `${a} (${seen})`).join(', ');
      throw new CertfleetError(ErrorCode.ChallengeNotServed, `HTTP-01 challenge for ${record.identifier} not served by: ${list}`, {
        retryable: true,
        details: { identifier: record.identifier, lagging: [...lagging.keys()] },
      });
    }
    log.debug({ agents: responders.map((r) => r.agent) }, 'challenge served by every agent');
  }

  /**
   * `certfleet check`: publishes `record` (a synthetic challenge, not an ACME one), asks
   * every agent `record.selector` selects whether it serves it, withdraws it, and says per
   * agent. Unlike {@link present} no offline policy applies: an offline agent, or one
   * without an HTTP-01 listener, is a failed check with the reason; so is a selector
   * that selects nobody (one result with agent ''). Never rejects for an agent; rejects
   * only when the board cannot take the record.
   */
  async selfCheck(record: ChallengeRecord): Promise<Array<{ agent: string; ok: boolean; detail: string }>> {
    const all = this.opts.responders(record.selector);
    if (all.length === 0) return [{ agent: '', ok: false, detail: `no enrolled agent matches "${record.selector}"` }];
    const out = new Map<string, { agent: string; ok: boolean; detail: string }>();
    for (const r of all) {
      if (r.unavailable === '') continue;
      const since = r.unavailable === 'offline' && r.offlineSince !== undefined && r.offlineSince > 0 ? ` since ${new Date(r.offlineSince).toISOString()}` : '';
      out.set(r.agent, { agent: r.agent, ok: false, detail: `${r.unavailable}${since}` });
    }
    const ask = all.filter((r) => r.unavailable === '');
    if (ask.length > 0) {
      this.active.add(record.token);
      try {
        await this.opts.board.present(record);
        const lagging = await this.awaitServed(record, ask);
        for (const r of ask) {
          const seen = lagging.get(r.agent);
          out.set(r.agent, seen === undefined ? { agent: r.agent, ok: true, detail: `serves it on ${r.http01Address}` } : { agent: r.agent, ok: false, detail: `not served on ${r.http01Address}: ${seen}` });
        }
      } finally {
        await this.cleanup(record.token);
      }
    }
    return all.map((r) => out.get(r.agent) ?? { agent: r.agent, ok: false, detail: 'not asked' });
  }

  /**
   * Asks each responder for the published `record` until all serve it or the self-check
   * timeout ends; the agents that still do not serve it then, with what they answered last.
   */
  private async awaitServed(record: ChallengeRecord, responders: readonly Responder[]): Promise<Map<string, string>> {
    // Measured and waited on the same clock: under a ManualClock the check times out on clock time.
    const deadline = deadlineOn(this.opts.clock, this.opts.selfCheckTimeoutMs);
    const pending = new Map(responders.map((r) => [r.agent, r]));
    const lastSeen = new Map<string, string>();
    for (;;) {
      for (const r of [...pending.values()]) {
        const got = await (this.opts.fetch ?? fetchChallenge)(r.http01Address, record.identifier, record.token);
        if (got?.status === 200 && got.body.trim() === record.keyAuthorization) {
          pending.delete(r.agent);
        } else {
          lastSeen.set(r.agent, got === null ? 'no answer' : `HTTP ${got.status}`);
        }
      }
      if (pending.size === 0 || deadline.expired()) break;
      await deadline.sleep(this.opts.pollMs ?? 200);
    }
    return new Map([...pending.keys()].map((a) => [a, lastSeen.get(a) ?? 'no answer']));
  }

  /** The tokens among `tokens` still published on the board (a dry run's cleanup check). */
  async stillPublished(tokens: readonly string[]): Promise<string[]> {
    const want = new Set(tokens);
    return (await this.opts.board.list()).filter((r) => want.has(r.token)).map((r) => r.token);
  }

  /** Withdraws a challenge (after validation, success or not). Never throws. */
  async cleanup(token: string): Promise<void> {
    // Not ours to keep any more, removed or not: a failed removal is left to the sweep.
    this.active.delete(token);
    try {
      await this.opts.board.remove(token);
    } catch (err) {
      this.opts.log.warn({ [LogKey.err]: err, [LogKey.token]: token }, 'challenge cleanup failed');
    }
  }
}

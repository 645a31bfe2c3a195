/**
 * What is desired of this agent: which version each assigned certificate should be at,
 * and which HTTP-01 challenges to answer. agent/apply does the work; agent/sync wires
 * the two.
 *
 * Inputs: the `desired` and `challenges` buckets watched over NATS (instant), and a
 * full resynchronisation over gRPC (GetAssignments) at start, every `resyncInterval`,
 * and every 30 s while NATS is unreachable — so an agent converges even with NATS down.
 * Output: {@link DesiredFeed.records} (one accepted record per certificate, the pointer
 * to converge on) and a call of `onChange` whenever it may have changed (`resynced`:
 * after a resynchronisation, when failed versions are due for a retry). Accepted
 * challenges go straight to the HTTP-01 responder, until their cleanup or expiry.
 *
 * Record intake (issue #9): a desired record, from NATS or from GetAssignments alike, is
 * acted on only when its signature verifies with a key the controller gave over mTLS and
 * its (epoch, generation) is not older than one already accepted (agent/trust); a challenge only
 * when signed, unexpired, and for a name of a certificate assigned to this agent. Anything
 * else is refused and counted, and the agent keeps what it has. A record signed with a
 * key not known yet, or a challenge for a certificate not known yet, makes the agent
 * resynchronise first (a key rotation, a new certificate) and is checked again after it.
 */
import type { Clock, Timer } from '../../shared/clock/index.js';
import type { ChallengeRecord, DesiredRecord } from '../../shared/model/index.js';
import { openKv, type KvWatch, type NatsHandle } from '../../shared/nats/index.js';
import { parseChallengeRecord, parseDesiredRecord } from '../../shared/records/index.js';
import { desiredFor } from '../../shared/rollout/index.js';
import { selects } from '../../shared/selector/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { LogKey, type Logger } from '../log/index.js';
import type { RecordStamp } from '../../shared/signing/index.js';
import { challengeVerdict, desiredVerdict, type Trust } from '../trust/index.js';

/** Resync period while NATS is unreachable. */
export const OFFLINE_RESYNC_MS = 30_000;
/** How often the resync schedule is checked. */
const RESYNC_CHECK_MS = 5_000;
/** Least time between resyncs asked for by records signed with an unknown key or for an unknown certificate. */
const REFRESH_MIN_MS = 10_000;
/** Records kept for a second look after such a resync. */
const MAX_RECHECK = 256;
/** The longest delay a timer can take (setTimeout's limit, ~24.8 days): a challenge that claims a later expiry is dropped then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the controller says at a resynchronisation (the link's GetAssignments), records unchecked. */
export interface AssignmentSource {
  assignments(): Promise<{ desired: unknown[]; signingKeys: Array<{ keyId: string; publicKey: string }>; assigned: Array<{ name: string; names: string[] }> }>;
}

/** Where accepted challenges are answered (the HTTP-01 responder). */
export interface ChallengeSink {
  set(token: string, keyAuthorization: string): void;
  delete(token: string): void;
}

export interface DesiredOptions {
  /** This agent's labels: selectors and rollout waves are matched against them. */
  labels: Record<string, string>;
  /** Normal resynchronisation period (ms). */
  resyncInterval: number;
  source: AssignmentSource;
  /**
   * NATS for instant updates; null: gRPC resynchronisation only; a promise: NATS was
   * unreachable at start and is still being tried (shared/nats connectNatsWhenUp): the
   * feed polls over gRPC until it resolves with a handle, then watches (and resyncs once
   * to catch up); resolving null leaves it polling.
   */
  nats: NatsHandle | null | Promise<NatsHandle | null>;
  /** Where challenges are served; null: this agent answers no HTTP-01 challenges. */
  http01: ChallengeSink | null;
  trust: Trust;
  clock: Clock;
  log: Logger;
  /** Called when the records may have changed; `resynced` after a resynchronisation. Must not throw. */
  onChange(resynced: boolean): void;
}

/** A record waiting for a resync before it is checked again. */
type Recheck = { kind: 'desired'; record: DesiredRecord } | { kind: 'challenge'; record: ChallengeRecord };

/** The desired side: checked records in, one pointer per certificate out. */
export class DesiredFeed {
  private readonly desired = new Map<string, DesiredRecord>();
  private readonly watches: KvWatch[] = [];
  private timer: Timer | undefined;
  /** The resync asked for within REFRESH_MIN_MS of the last, at the end of that window. */
  private refreshTimer: Timer | undefined;
  private lastResync = 0;
  /** Names per certificate the controller assigns to this agent (GetAssignments). */
  private assignedNames = new Map<string, string[]>();
  /** Newest challenge (epoch, generation) accepted per certificate and identifier. */
  private readonly challengeGenerations = new Map<string, RecordStamp>();
  private readonly challengeTimers = new Map<string, Timer>();
  private readonly recheck = new Map<string, Recheck>();
  private lastRefresh = Number.NEGATIVE_INFINITY;
  /** The connection watched; null while there is none (yet). */
  private nats: NatsHandle | null;
  private stopped = false;
  /** The next attempt to watch a NATS that connected late (see joinNats). */
  private joinTimer: Timer | undefined;

  constructor(private readonly opts: DesiredOptions) {
    this.nats = opts.nats instanceof Promise ? null : opts.nats;
  }

  /** The accepted pointer per certificate (live: it changes as records arrive). */
  records(): ReadonlyMap<string, DesiredRecord> {
    return this.desired;
  }

  /**
   * Learns the signing keys first when none are known (enrolled before records were
   * signed), starts the NATS watches, resynchronises once, and then on schedule.
   */
  async start(): Promise<void> {
    if (!this.opts.trust.hasKeys()) await this.resync();
    if (this.nats) await this.startWatches(this.nats);
    else if (this.opts.nats instanceof Promise) void this.opts.nats.then((h) => this.joinNats(h), () => undefined);
    await this.resync();
    this.timer = this.opts.clock
      .every(RESYNC_CHECK_MS, () => {
        const nats = this.nats;
        // No connection at all (NATS unreachable when the agent started) is offline too:
        // such an agent waited for the normal interval (5 minutes) to learn a new version.
        const offline = nats === null || !nats.isConnected();
        const every = offline ? Math.min(OFFLINE_RESYNC_MS, this.opts.resyncInterval) : this.opts.resyncInterval;
        if (this.opts.clock.now() - this.lastResync >= every) void this.resync();
      })
      .unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.joinTimer?.stop();
    this.timer?.stop();
    this.timer = undefined;
    this.refreshTimer?.stop();
    this.refreshTimer = undefined;
    for (const token of [...this.challengeTimers.keys()]) this.stopServing(token);
    for (const w of this.watches) await w.stop();
  }

  /**
   * Full resynchronisation over gRPC: the signing keys, the assigned certificates, and
   * the signed desired records (checked like NATS records). A record refused here leaves
   * the certificate's pointer as it was. Ends with `onChange(true)`, failed or not.
   */
  async resync(): Promise<void> {
    this.lastResync = this.opts.clock.now();
    try {
      const a = await this.opts.source.assignments();
      await this.opts.trust.setKeys(a.signingKeys);
      this.assignedNames = new Map(a.assigned.map((c) => [c.name, c.names]));
      const names = new Set<string>();
      for (const raw of a.desired) {
        const name = typeof raw === 'object' && raw !== null && typeof (raw as { name?: unknown }).name === 'string' ? (raw as { name: string }).name : '';
        let record: DesiredRecord;
        try {
          record = parseDesiredRecord(raw, name);
        } catch (err) {
          this.opts.trust.refuse('malformed', { [LogKey.source]: 'GetAssignments', [LogKey.cert]: name === '' ? undefined : name }, err instanceof Error ? err.message : 'invalid');
          if (name !== '') names.add(name);
          continue;
        }
        names.add(record.name);
        this.takeDesired(record, 'GetAssignments', false);
      }
      for (const name of [...this.desired.keys()]) if (!names.has(name)) this.desired.delete(name);
      // Records that waited for fresh keys or assignments get their second, final look.
      const waiting = [...this.recheck.values()];
      this.recheck.clear();
      for (const item of waiting) {
        if (item.kind === 'desired') this.takeDesired(item.record, Bucket.desired, false);
        else this.takeChallenge(item.record, false);
      }
    } catch (err) {
      this.opts.log.warn({ [LogKey.err]: (err as Error).message }, 'resync failed');
    }
    this.opts.onChange(true);
  }

  private assigned(selector: string): boolean {
    try {
      return selects(selector, this.opts.labels);
    } catch {
      return false;
    }
  }

  /** Counts a malformed value of a bucket only the controller writes as a refused record. */
  private refuseMalformed(bucket: string): (key: string, reason: string) => void {
    return (key, reason) => this.opts.trust.refuse('malformed', { [LogKey.bucket]: bucket, [LogKey.kvKey]: key }, reason);
  }

  /**
   * NATS came up after the start: watch it from now on, and resync for what was missed.
   * Without the buckets yet (its controller not started) it tries again every
   * RESYNC_CHECK_MS, polling meanwhile.
   */
  private async joinNats(nats: NatsHandle | null): Promise<void> {
    if (nats === null || this.stopped) return;
    try {
      await this.startWatches(nats);
    } catch (err) {
      for (const w of this.watches.splice(0)) await w.stop().catch(() => undefined);
      if (this.stopped) return;
      if (this.joinTimer === undefined) this.opts.log.warn({ [LogKey.err]: (err as Error).message }, 'nats connected but not watched yet; polling the controller over gRPC');
      this.joinTimer = this.opts.clock.after(RESYNC_CHECK_MS, () => void this.joinNats(nats)).unref();
      return;
    }
    if (this.stopped) {
      for (const w of this.watches.splice(0)) await w.stop();
      return;
    }
    this.nats = nats;
    this.opts.log.info('nats joined; watching desired records');
    await this.resync();
  }

  private async startWatches(nats: NatsHandle): Promise<void> {
    const desiredKv = await openKv<DesiredRecord>(nats, Bucket.desired, { create: false, parse: parseDesiredRecord, onMalformed: this.refuseMalformed(Bucket.desired) });
    const w1 = await desiredKv.watch((key, value) => {
      // A deletion only stops tracking; what is installed stays, and the next resync restores the pointer.
      if (value === null) {
        this.desired.delete(key);
        return;
      }
      if (this.takeDesired(value, Bucket.desired, true)) this.opts.onChange(false);
    });
    this.watches.push(w1);
    if (this.opts.http01) {
      const http01 = this.opts.http01;
      const challengesKv = await openKv<ChallengeRecord>(nats, Bucket.challenges, { create: false, parse: parseChallengeRecord, onMalformed: this.refuseMalformed(Bucket.challenges) });
      const w2 = await challengesKv.watch((key, value) => {
        if (value === null) {
          this.recheck.delete(`challenge/${key}`);
          this.stopServing(key);
          http01.delete(key);
        } else {
          this.takeChallenge(value, true);
        }
      });
      this.watches.push(w2);
    }
  }

  /**
   * Checks a desired record (from NATS or gRPC) and, when it passes, makes it this
   * agent's pointer for its certificate (or drops the certificate when it is not
   * assigned here). Returns whether the pointers changed. A refused record changes
   * nothing. `canWait`: a record signed with an unknown key waits for a resync.
   */
  private takeDesired(record: DesiredRecord, source: string, canWait: boolean): boolean {
    const trust = this.opts.trust;
    const verdict = desiredVerdict(record, trust.keys(), trust.highestFor(record.name));
    if (!verdict.ok) {
      if (verdict.reason === 'unknown-key' && canWait && this.waitForResync(`desired/${record.name}`, { kind: 'desired', record })) return false;
      trust.refuse(verdict.reason, { [LogKey.source]: source, [LogKey.cert]: record.name, [LogKey.generation]: record.generation }, verdict.message);
      return false;
    }
    trust.accept(record.name, verdict.stamp);
    if (!this.assigned(record.selector)) return this.desired.delete(record.name);
    // During a staged rollout, an agent of an unreleased wave keeps the previous version.
    this.desired.set(record.name, desiredFor(record, this.opts.labels));
    return true;
  }

  /** Names of `cert` as assigned to this agent: from the controller's list, or its desired record. */
  private namesOf(cert: string): string[] | undefined {
    const listed = this.assignedNames.get(cert);
    const fromDesired = this.desired.get(cert)?.names;
    if (listed === undefined) return fromDesired;
    return fromDesired === undefined ? listed : [...new Set([...listed, ...fromDesired])];
  }

  /** Checks a challenge and serves it when it passes (see challengeVerdict in agent/trust). */
  private takeChallenge(record: ChallengeRecord, canWait: boolean): void {
    const http01 = this.opts.http01;
    if (!http01) return;
    const trust = this.opts.trust;
    const idKey = `${record.cert}\n${record.identifier}`;
    // Signature first: a forged record is refused whatever selector it claims.
    const verdict = challengeVerdict(record, trust.keys(), this.opts.clock.now(), this.assigned(record.selector) ? this.namesOf(record.cert) : [], this.challengeGenerations.get(idKey) ?? { epoch: 0, generation: 0 });
    const forged = !verdict.ok && (verdict.reason === 'unsigned' || verdict.reason === 'unknown-key' || verdict.reason === 'bad-signature');
    if (!forged && !this.assigned(record.selector)) return; // signed, for other agents
    if (!verdict.ok) {
      const waits = verdict.reason === 'unknown-key' || verdict.reason === 'not-assigned';
      if (waits && canWait && this.waitForResync(`challenge/${record.token}`, { kind: 'challenge', record })) return;
      trust.refuse(
        verdict.reason,
        { [LogKey.bucket]: Bucket.challenges, [LogKey.kvKey]: record.token, [LogKey.cert]: record.cert, [LogKey.identifier]: record.identifier, [LogKey.generation]: record.generation },
        verdict.message,
      );
      this.stopServing(record.token);
      http01.delete(record.token);
      return;
    }
    this.challengeGenerations.set(idKey, verdict.stamp);
    http01.set(record.token, record.keyAuthorization);
    this.opts.log.info({ [LogKey.cert]: record.cert, [LogKey.identifier]: record.identifier, [LogKey.generation]: verdict.generation }, 'challenge served');
    // Served until its cleanup, or its expiry if the cleanup never comes.
    this.stopServing(record.token);
    const ms = Math.max(0, Date.parse(record.expiresAt ?? '') - this.opts.clock.now());
    const timer = this.opts.clock
      .after(Math.min(ms, MAX_TIMER_MS), () => {
        this.challengeTimers.delete(record.token);
        http01.delete(record.token);
      })
      .unref();
    this.challengeTimers.set(record.token, timer);
  }

  private stopServing(token: string): void {
    this.challengeTimers.get(token)?.stop();
    this.challengeTimers.delete(token);
  }

  /**
   * Keeps `item` for a second look after a resync and asks for one: now, or at the end
   * of the 10 s since the last one asked for (at most one per 10 s). False when the item
   * cannot wait (too many waiting): refuse it now.
   */
  private waitForResync(key: string, item: Recheck): boolean {
    if (!this.recheck.has(key) && this.recheck.size >= MAX_RECHECK) return false;
    this.recheck.set(key, item);
    const now = this.opts.clock.now();
    if (now - this.lastRefresh >= REFRESH_MIN_MS) {
      this.lastRefresh = now;
      void this.resync();
    } else if (this.refreshTimer === undefined) {
      // Deferred, not dropped: a challenge of a second new certificate must not wait for
      // the periodic resync (minutes; the controller's self-check gives up long before).
      this.refreshTimer = this.opts.clock
        .after(this.lastRefresh + REFRESH_MIN_MS - now, () => {
          this.refreshTimer = undefined;
          this.lastRefresh = this.opts.clock.now();
          void this.resync();
        })
        .unref();
    }
    return true;
  }
}

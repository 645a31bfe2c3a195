/**
 * The fleet as the controller sees it: enrolled agents (registry in the store, see
 * controller/enroll), what each last reported (NATS `agents` bucket, shared by every
 * controller), and who should serve what (label selectors).
 *
 * Reads come from memory (kept current by a watch of the bucket); a report is taken
 * into memory first and then written through to NATS in the background, so an agent
 * reporting over gRPC stays online while NATS is away (issue #8: every agent showed
 * offline during a NATS outage). Writes per agent are chained, newest last.
 *
 * A removed agent (controller/enroll removeAgent) stays listed, marked removed, so
 * `certfleet agents` shows who left and when; it is selected by no certificate (no
 * HTTP-01 duty, not counted as assigned) and its record in the agents bucket is deleted.
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import type { CertStatus, RecordRefusals } from '../../shared/model/index.js';
import { openKv, type JsonKv, type KvWatch, type NatsHandle } from '../../shared/nats/index.js';
import { matches, parseSelector } from '../../shared/selector/index.js';
import { parseAgentRecord, type AgentRecord } from '../../shared/records/index.js';
import { Bucket } from '../../shared/wire/index.js';
import type { AgentReport } from '../api/index.js';
import type { AgentRegistration, Enrollment } from '../enroll/index.js';
import type { Responder } from '../solvers/index.js';

/** The value kept per agent in the `agents` bucket (schema: shared/records). */
export type { AgentRecord };

/** One agent: registration plus last report. */
export interface AgentView {
  registration: AgentRegistration;
  report: AgentRecord | undefined;
  online: boolean;
  /** Removed from the fleet (`certfleet agents remove`): listed, selected by nothing. */
  removed: boolean;
}

export interface FleetOptions {
  nats: NatsHandle;
  enrollment: Enrollment;
  clock: Clock;
  log: Logger;
  /** An agent silent for longer is offline. */
  offlineAfterMs: number;
  /** Called when an agent reports for the first time or comes back online. */
  onAgentOnline?: (agent: string) => void;
  /** Called when an agent's report shows records refused since its previous report (SECURITY). */
  onRefusals?: (agent: string, refusals: RecordRefusals) => void;
  /**
   * Called for each certificate of each report, with what the agent said of it in its
   * previous report (undefined the first time). Must not throw.
   */
  onCertificateReport?: (agent: string, before: CertStatus | undefined, now: CertStatus) => void;
}

export class Fleet {
  private readonly registrations = new Map<string, AgentRegistration>();
  private readonly reports = new Map<string, AgentRecord>();
  /** Tail of the NATS writes per agent (reports are written in order, never awaited by callers). */
  private readonly writes = new Map<string, Promise<void>>();
  private writeFailing = false;
  private watch: KvWatch | undefined;
  /**
   * Bumped on every change of a registration: the views below are kept until it moves.
   * `certfleet certs` over 10,000 certificates asked for the selected agents of each
   * one, sorting and filtering the whole fleet every time (issue #13). A report does not
   * move it: a view reads its agent's last report when asked, so 1,000 agents reporting
   * every 30 s do not rebuild the views 33 times a second.
   */
  private generation = 0;
  private view: { generation: number; all: AgentView[]; bySelector: Map<string, AgentView[]> } | undefined;
  /** Selectors parsed so far (a few hundred at most: one per configured certificate). */
  private readonly parsed = new Map<string, ReturnType<typeof parseSelector>>();

  private constructor(
    private readonly kv: JsonKv<AgentRecord>,
    private readonly opts: FleetOptions,
  ) {}

  /** Loads the registry and every last report. */
  static async open(opts: FleetOptions): Promise<Fleet> {
    const kv = await openKv<AgentRecord>(opts.nats, Bucket.agents, { create: false, parse: parseAgentRecord });
    const fleet = new Fleet(kv, opts);
    for (const reg of await opts.enrollment.listAgents()) fleet.registrations.set(reg.name, reg);
    fleet.watch = await kv.watch((key, value) => {
      if (value === null) {
        fleet.reports.delete(key);
        return;
      }
      // A write that lagged behind (NATS was away) must not replace a newer report in memory.
      const mine = fleet.reports.get(key);
      if (mine && Date.parse(mine.lastSeen) > Date.parse(value.lastSeen)) return;
      fleet.reports.set(key, value);
    });
    await fleet.watch.initialDone;
    return fleet;
  }

  /**
   * Remembers a (re-)enrolled agent, or a registration that changed (renewed identity).
   * Called on every agent call with the registration just read from the store (a new
   * object each time): one equal to the known one changes nothing, so the views stay
   * (at 10,000 certificates a rebuild for every agent call made `status` and `certs`
   * filter the whole fleet again each time, ~0.3 s of the thread during a burst).
   */
  registered(reg: AgentRegistration): void {
    const known = this.registrations.get(reg.name);
    if (known !== undefined && sameRegistration(known, reg)) return;
    this.generation++;
    this.registrations.set(reg.name, reg);
  }

  /**
   * Takes a removed agent out of duty: remembers its registration (marked removed),
   * forgets its last report and deletes its record in the agents bucket, after any
   * write of it still queued. Resolves when the delete is done; rejects when NATS
   * refused it (the agent is out of duty in memory either way; a retry deletes it).
   */
  async removed(reg: AgentRegistration): Promise<void> {
    this.generation++;
    this.registrations.set(reg.name, reg);
    this.reports.delete(reg.name);
    const previous = this.writes.get(reg.name) ?? Promise.resolve();
    const next = previous.then(() => this.kv.delete(reg.name));
    // Later writes of this agent queue behind the delete; they skip themselves (no report).
    const tail = next.catch(() => undefined);
    this.writes.set(reg.name, tail);
    void tail.finally(() => {
      if (this.writes.get(reg.name) === tail) this.writes.delete(reg.name);
    });
    await next;
    this.opts.log.info({ agent: reg.name }, 'agent status record deleted');
  }

  private isOnline(report: AgentRecord | undefined): boolean {
    return report !== undefined && this.opts.clock.now() - Date.parse(report.lastSeen) <= this.opts.offlineAfterMs;
  }

  /** Stores a status report: in memory at once, in NATS when it is reachable. */
  report(agent: string, report: AgentReport): Promise<void> {
    const before = this.reports.get(agent);
    const record: AgentRecord = {
      name: agent,
      http01Address: report.http01Address,
      agentVersion: report.agentVersion,
      lastSeen: isoAt(this.opts.clock.now()),
      certificates: report.certificates,
      ...(report.refusals ? { refusals: report.refusals } : {}),
    };
    const refusals = report.refusals;
    // A restarted agent counts from zero again: a new refusal is one with a new time.
    if (refusals && refusals.total > 0 && refusals.lastAt !== before?.refusals?.lastAt) {
      this.opts.log.warn({ agent, code: ErrorCode.RecordRefused, total: refusals.total, byReason: refusals.byReason, last: refusals.last }, 'agent refused records');
      this.opts.onRefusals?.(agent, refusals);
    }
    if (this.opts.onCertificateReport !== undefined) {
      const previous = new Map((before?.certificates ?? []).map((c) => [c.name, c]));
      for (const c of report.certificates) this.opts.onCertificateReport(agent, previous.get(c.name), c);
    }
    this.reports.set(agent, record);
    this.writeThrough(agent, record);
    if (!this.isOnline(before)) {
      this.opts.log.info({ agent }, 'agent online');
      this.opts.onAgentOnline?.(agent);
    }
    return Promise.resolve();
  }

  /** Writes `record` to the agents bucket after the agent's earlier writes; failures are logged once per outage. */
  private writeThrough(agent: string, record: AgentRecord): void {
    const previous = this.writes.get(agent) ?? Promise.resolve();
    const next = previous.then(async () => {
      // A newer report queued behind this one makes it moot.
      if (this.reports.get(agent) !== record) return;
      try {
        await this.kv.put(agent, record);
        if (this.writeFailing) this.opts.log.info('agent status written to NATS again');
        this.writeFailing = false;
      } catch (err) {
        if (!this.writeFailing) this.opts.log.warn({ agent, err: (err as Error).message }, 'agent status not written to NATS; kept in memory');
        this.writeFailing = true;
      }
    });
    this.writes.set(agent, next);
    void next.finally(() => {
      if (this.writes.get(agent) === next) this.writes.delete(agent);
    });
  }

  /**
   * Every enrolled agent with its last report, sorted by name; removed ones included,
   * marked. The array is shared until a registration changes (frozen: do not modify it);
   * `report` is the agent's last report when it is read (a new object per report, never
   * modified), and `online` is worked out from it against the clock.
   */
  agents(): AgentView[] {
    return this.current().all;
  }

  /** Enrolled agents selected by `selector` (online or not); removed agents never are. Shared and frozen like {@link agents}. */
  selected(selector: string): AgentView[] {
    const view = this.current();
    let picked = view.bySelector.get(selector);
    if (picked === undefined) {
      let sel = this.parsed.get(selector);
      if (sel === undefined) {
        sel = parseSelector(selector);
        this.parsed.set(selector, sel);
      }
      picked = Object.freeze(view.all.filter((a) => !a.removed && matches(sel, a.registration.labels))) as AgentView[];
      view.bySelector.set(selector, picked);
    }
    return picked;
  }

  /** The views of the fleet as it is now (rebuilt only after a change). */
  private current(): { all: AgentView[]; bySelector: Map<string, AgentView[]> } {
    if (this.view?.generation === this.generation) return this.view;
    // A registration change bumps the generation and the next read rebuilds; a report is
    // read live (a removed agent's is deleted, and it never has one).
    const isOnline = (report: AgentRecord | undefined): boolean => this.isOnline(report);
    const reports = this.reports;
    const all = [...this.registrations.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((registration): AgentView => {
        const removed = registration.removedAt !== undefined;
        const name = registration.name;
        return {
          registration,
          get report() {
            return removed ? undefined : reports.get(name);
          },
          get online() {
            return isOnline(removed ? undefined : reports.get(name));
          },
          removed,
        };
      });
    this.view = { generation: this.generation, all: Object.freeze(all) as AgentView[], bySelector: new Map() };
    return this.view;
  }

  /**
   * Every enrolled agent selected by `selector`, as an HTTP-01 responder: its address
   * when it is online and answers HTTP-01, else the reason it cannot, and for an offline
   * one since when (its last report plus `offlineAfterMs`; its enrolment if it never
   * reported), which the solver's offline policy weighs.
   */
  responders(selector: string): Responder[] {
    return this.selected(selector).map((a) => {
      const address = a.report?.http01Address ?? '';
      if (!a.online) {
        const since = a.report ? Date.parse(a.report.lastSeen) + this.opts.offlineAfterMs : Date.parse(a.registration.enrolledAt);
        return { agent: a.registration.name, http01Address: address, unavailable: 'offline', offlineSince: Number.isFinite(since) ? since : 0 };
      }
      return { agent: a.registration.name, http01Address: address, unavailable: address === '' ? 'no http01.listen configured' : '' };
    });
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.writes.values()]);
    await this.watch?.stop();
  }
}

/** Whether two registrations say the same (every field; labels key by key): a field added to AgentRegistration must be added here. */
function sameRegistration(a: AgentRegistration, b: AgentRegistration): boolean {
  if (a === b) return true;
  if (
    a.name !== b.name ||
    a.certSerial !== b.certSerial ||
    a.enrolledAt !== b.enrolledAt ||
    a.certNotAfter !== b.certNotAfter ||
    a.pendingSerial !== b.pendingSerial ||
    a.pendingNotAfter !== b.pendingNotAfter ||
    a.removedAt !== b.removedAt ||
    a.removedBy !== b.removedBy
  ) {
    return false;
  }
  const ak = Object.keys(a.labels);
  if (ak.length !== Object.keys(b.labels).length) return false;
  return ak.every((k) => Object.hasOwn(b.labels, k) && a.labels[k] === b.labels[k]);
}

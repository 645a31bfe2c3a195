/**
 * The fleet as the controller sees it: enrolled agents (registry in the store, see
 * controller/enroll), what each last reported (NATS `agents` bucket, shared by every
 * controller), and who should serve what (label selectors).
 *
 * Reads come from memory (kept current by a watch of the bucket); a report writes
 * through to NATS.
 */
import type { Logger } from 'pino';
import { isoAt, type Clock } from '../../shared/clock/index.js';
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
}

export class Fleet {
  private readonly registrations = new Map<string, AgentRegistration>();
  private readonly reports = new Map<string, AgentRecord>();
  private watch: KvWatch | undefined;

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
      if (value === null) fleet.reports.delete(key);
      else fleet.reports.set(key, value);
    });
    await fleet.watch.initialDone;
    return fleet;
  }

  /** Remembers a (re-)enrolled agent. */
  registered(reg: AgentRegistration): void {
    this.registrations.set(reg.name, reg);
  }

  private isOnline(report: AgentRecord | undefined): boolean {
    return report !== undefined && this.opts.clock.now() - Date.parse(report.lastSeen) <= this.opts.offlineAfterMs;
  }

  /** Stores a status report. */
  async report(agent: string, report: AgentReport): Promise<void> {
    const before = this.reports.get(agent);
    const record: AgentRecord = {
      name: agent,
      http01Address: report.http01Address,
      agentVersion: report.agentVersion,
      lastSeen: isoAt(this.opts.clock.now()),
      certificates: report.certificates,
    };
    await this.kv.put(agent, record);
    this.reports.set(agent, record);
    if (!this.isOnline(before)) {
      this.opts.log.info({ agent }, 'agent online');
      this.opts.onAgentOnline?.(agent);
    }
  }

  /** Every enrolled agent with its last report, sorted by name. */
  agents(): AgentView[] {
    return [...this.registrations.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((registration) => {
        const report = this.reports.get(registration.name);
        return { registration, report, online: this.isOnline(report) };
      });
  }

  /** Enrolled agents selected by `selector` (online or not). */
  selected(selector: string): AgentView[] {
    const sel = parseSelector(selector);
    return this.agents().filter((a) => matches(sel, a.registration.labels));
  }

  /**
   * Every enrolled agent selected by `selector`, as an HTTP-01 responder: its address
   * when it is online and answers HTTP-01, else the reason it cannot.
   */
  responders(selector: string): Responder[] {
    return this.selected(selector).map((a) => {
      const address = a.report?.http01Address ?? '';
      const unavailable = !a.online ? 'offline' : address === '' ? 'no http01.listen configured' : '';
      return { agent: a.registration.name, http01Address: address, unavailable };
    });
  }

  async close(): Promise<void> {
    await this.watch?.stop();
  }
}

/**
 * In-memory stand-ins for the work loop's collaborators, for unit tests on a ManualClock:
 * a CertStore kept in Maps (no disk, so every await settles within a clock tick), the
 * NATS-backed publishers reduced to recorders, and budgets that are the real Budget read
 * at the manual clock's time. Fakes of our own interfaces only; the real servers are
 * exercised by test/integration and test/e2e.
 */
import { Budget, PRESETS, type BudgetLimits } from '../../../controller/budget/index.js';
import type { LoopBudget } from '../../../controller/reconcile/index.js';
import type { DesiredState, EventPublisher } from '../../../controller/publish/index.js';
import type { Pins } from '../../../controller/rollback/index.js';
import type { CertStore, VersionInput } from '../../../controller/store/index.js';
import type { Clock } from '../../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../../shared/errors/index.js';
import type { Bundle, VersionMeta } from '../../../shared/model/index.js';

/** A CertStore in memory: versions per name, JSON objects by key (copied, as a real store would). */
export class MemoryStore implements CertStore {
  /** Behaves as the file store does (one process, no CAS across controllers). */
  readonly kind = 'file' as const;
  readonly versions = new Map<string, Bundle[]>();
  readonly objects = new Map<string, string>();

  putVersion(name: string, input: VersionInput, expectedLatest: number): Promise<VersionMeta> {
    const list = this.versions.get(name) ?? [];
    const current = list.at(-1)?.meta.version ?? 0;
    if (current !== expectedLatest) return Promise.reject(new CertfleetError(ErrorCode.StoreConflict, `${name}: latest is ${current}, not ${expectedLatest}`, { retryable: true }));
    const meta: VersionMeta = { ...input.meta, version: current + 1 };
    list.push({ meta, certPem: input.certPem, chainPem: input.chainPem, keyPem: input.keyPem });
    this.versions.set(name, list);
    return Promise.resolve(meta);
  }
  getVersion(name: string, version: number): Promise<Bundle | null> {
    return Promise.resolve(this.versions.get(name)?.find((b) => b.meta.version === version) ?? null);
  }
  latest(name: string): Promise<VersionMeta | null> {
    return Promise.resolve(this.versions.get(name)?.at(-1)?.meta ?? null);
  }
  listVersions(name: string): Promise<VersionMeta[]> {
    return Promise.resolve((this.versions.get(name) ?? []).map((b) => b.meta));
  }
  listNames(): Promise<string[]> {
    return Promise.resolve([...this.versions.keys()].sort());
  }
  getObject<T>(key: string): Promise<T | null> {
    const v = this.objects.get(key);
    return Promise.resolve(v === undefined ? null : (JSON.parse(v) as T));
  }
  putObject(key: string, value: unknown): Promise<void> {
    this.objects.set(key, JSON.stringify(value));
    return Promise.resolve();
  }
  deleteObject(key: string): Promise<boolean> {
    return Promise.resolve(this.objects.delete(key));
  }
  listObjects(prefix: string): Promise<string[]> {
    return Promise.resolve([...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort());
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The real Budget, read and spent at `clock`'s time, with the calls the loop makes counted. */
export function clockBudget(clock: Clock, limits: BudgetLimits = PRESETS.letsencrypt): LoopBudget & { budget: Budget; commits: number; refunds: number; authzFailures: string[] } {
  const budget = new Budget(limits);
  const out = {
    budget,
    commits: 0,
    refunds: 0,
    authzFailures: [] as string[],
    check: (req: Parameters<LoopBudget['check']>[0]) => budget.check(req, clock.now()),
    commit: (spend: Parameters<LoopBudget['commit']>[0]) => {
      out.commits++;
      budget.commit(spend, clock.now());
    },
    refund: (spend: Parameters<LoopBudget['refund']>[0]) => {
      out.refunds++;
      budget.refund(spend, clock.now());
    },
    flushed: () => Promise.resolve(),
    recordAuthorizationFailure: (identifier: string) => {
      out.authzFailures.push(identifier);
      budget.recordAuthorizationFailure(identifier, clock.now());
    },
  };
  return out;
}

/** Desired pointers kept in a Map (what NATS would hold). */
export function memoryDesired(): DesiredState {
  const records = new Map<string, Record<string, unknown>>();
  return {
    get: (name: string) => records.get(name),
    publish: (meta: VersionMeta, selector: string, opts: { pinned?: boolean } = {}) => {
      const rec = { name: meta.name, version: meta.version, fingerprint: meta.fingerprint, notAfter: meta.notAfter, names: meta.names, selector, pinned: opts.pinned ?? false };
      records.set(meta.name, rec);
      return Promise.resolve(rec);
    },
    put: (rec: Record<string, unknown> & { name: string }) => {
      records.set(rec.name, rec);
      return Promise.resolve();
    },
    flush: () => Promise.resolve([]),
  } as unknown as DesiredState;
}

/** Events recorded in order: `type` and `cert`. */
export function recordedEvents(): { events: EventPublisher; seen: Array<{ type: string; cert: string; message: string }> } {
  const seen: Array<{ type: string; cert: string; message: string }> = [];
  const events = {
    emit: (type: string, e: { cert?: string; message?: string }) => {
      seen.push({ type, cert: e.cert ?? '', message: e.message ?? '' });
      return Promise.resolve();
    },
  } as unknown as EventPublisher;
  return { events, seen };
}

/** No rollback pins. */
export const noPins = { get: () => Promise.resolve(null), release: () => Promise.resolve(false) } as unknown as Pins;

/**
 * The spool: issued certificates the store could not take yet.
 *
 * Once the CA has issued a certificate, losing it would cost a rate-limit slot and leave
 * a valid key pair nobody knows about. So when `putVersion` fails because the store is
 * unavailable (Vault down, sealed, a policy mistake, a full disk), the issuer hands the
 * version to the spool: it is written durably to local disk before the call returns, then
 * delivered to the store with backoff until the store takes it — also after a restart,
 * because {@link Spool.open} reads what an earlier process left.
 *
 * Layout: `<dir>/<id>.json`, one file per spooled version, `<dir>` 0700 and files 0600
 * (they hold private keys), written to a dot-temp file, fsynced and renamed, then the
 * directory fsynced. Dot files are ignored on read (an interrupted write). A file that
 * cannot be parsed is left where it is and reported in the log, never deleted.
 *
 * Delivery and compare-and-set, per entry:
 *
 * ```
 *   putVersion(name, input, expectedLatest) ── ok ──────────────────────────▶ stored
 *        │ STORE_CONFLICT (the latest moved while we waited)
 *        ▼
 *   is a version > expectedLatest this very certificate (serial + fingerprint)?
 *        │ yes: an earlier attempt was stored but its answer got lost ────▶ already-stored
 *        │ no
 *        ▼
 *   putVersion(name, input, latest) ── ok ───────────────────────────────▶ stored-after-conflict
 *   anything else: keep the file, attempts+1, retry after the backoff
 * ```
 *
 * Delivering after a conflict as the *next* version, rather than dropping it, is
 * deliberate: the certificate was issued and is valid, so it belongs in the history (for
 * audit and revocation), and versions are numbered by when the store took them. Whether
 * it should also become the *desired* version is the caller's decision: `onDelivered`
 * reports the outcome so it can, e.g., publish it only if its notAfter is later than
 * what agents already serve.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { fsyncDir, writeFileAtomic } from '../../shared/files/index.js';
import { CertfleetError, ErrorCode, isCertfleetError, toCertfleetError } from '../../shared/errors/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { systemClock, isoAt, type Clock, type Timer } from '../../shared/clock/index.js';
import type { CertStore, VersionInput } from '../store/index.js';
import { checkCertName, checkExpectedLatest, checkVersionInput } from '../store/index.js';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const FORMAT = 1;
const ENTRY_FILE = /^[0-9]{14}-[a-z0-9-]+-[0-9a-f]{12}\.json$/;

export interface SpoolOptions {
  /** Directory; created 0700 (tightened if looser). The controller uses `<stateDir>/spool`. */
  dir: string;
  log: Logger;
  /** For backoff decisions and timestamps; default the system clock. */
  clock?: Clock;
  /** First retry delay; doubles per failed attempt. Default 5 s. */
  baseDelayMs?: number;
  /** Retry delay cap. Default 5 min. */
  maxDelayMs?: number;
}

/** What the spool holds about one entry, without the key material. */
export interface SpoolEntry {
  id: string;
  name: string;
  expectedLatest: number;
  serial: string;
  fingerprint: string;
  notAfter: string;
  spooledAt: string;
  /** Failed delivery attempts by this process. */
  attempts: number;
  /** Message of the last failed attempt ('' if none yet). */
  lastError: string;
  /** Earliest next attempt (RFC 3339); due at once after a restart. */
  nextAttemptAt: string;
}

/** One spooled version that reached the store. */
export interface Delivery {
  id: string;
  name: string;
  /** `stored`: as planned; `stored-after-conflict`: as the next version after others; `already-stored`: an earlier attempt had made it. */
  outcome: 'stored' | 'stored-after-conflict' | 'already-stored';
  meta: VersionMeta;
}

interface Held {
  summary: SpoolEntry;
  input: VersionInput;
  nextAttemptMs: number;
}

interface SpoolFile {
  format: number;
  id: string;
  name: string;
  expectedLatest: number;
  spooledAt: string;
  input: VersionInput;
}

/**
 * Retry delay after `attempts` failed deliveries: base · 2^(attempts−1), capped. Pure;
 * no jitter, because entries retry independently of any other controller.
 */
export function spoolRetryDelay(attempts: number, baseDelayMs = 5_000, maxDelayMs = 300_000): number {
  if (attempts <= 0) return 0;
  return Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(attempts - 1, 30));
}

/** The durable spool. See the module comment. Methods may be called concurrently. */
export class Spool {
  private readonly dir: string;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly held = new Map<string, Held>();
  private delivering: Promise<Delivery[]> | undefined;

  private constructor(options: SpoolOptions) {
    this.dir = path.resolve(options.dir);
    this.log = componentLogger(options.log, 'spool');
    this.clock = options.clock ?? systemClock;
    this.baseDelayMs = options.baseDelayMs ?? 5_000;
    this.maxDelayMs = options.maxDelayMs ?? 300_000;
  }

  /**
   * Prepares the directory and loads what is spooled there (from this or an earlier
   * process). STORE_UNAVAILABLE if the directory cannot be created or read.
   */
  static async open(options: SpoolOptions): Promise<Spool> {
    const spool = new Spool(options);
    await spool.load();
    return spool;
  }

  /**
   * Writes a version the store did not take, durably, before resolving. USAGE_INVALID for
   * input the store would refuse anyway (a bad name); STORE_UNAVAILABLE if the local disk
   * fails too — then the caller must not drop the certificate silently (log it loudly).
   */
  async put(name: string, input: VersionInput, expectedLatest: number): Promise<SpoolEntry> {
    checkCertName(name);
    checkExpectedLatest(expectedLatest);
    checkVersionInput(name, input);
    const now = this.clock.now();
    const id = `${String(now).padStart(14, '0')}-${name}-${crypto.randomBytes(6).toString('hex')}`;
    const file: SpoolFile = { format: FORMAT, id, name, expectedLatest, spooledAt: isoAt(now), input };
    try {
      await writeFileAtomic(path.join(this.dir, `${id}.json`), JSON.stringify(file), FILE_MODE);
    } catch (err) {
      throw new CertfleetError(ErrorCode.StoreUnavailable, `spool: cannot write ${this.dir}: ${errno(err) ?? String(err)}`, {
        retryable: true,
        cause: err,
        details: { dir: this.dir, cert: name },
      });
    }
    const held = this.hold(file, now);
    this.log.warn({ [LogKey.cert]: name, id, expectedLatest }, 'version spooled');
    return { ...held.summary };
  }

  /** Every entry not yet delivered, oldest first, without key material. */
  pending(): SpoolEntry[] {
    return [...this.held.values()].map((h) => ({ ...h.summary })).sort((a, b) => a.id.localeCompare(b.id));
  }

  /**
   * Tries every entry whose backoff has passed (all of them with `force`), oldest first,
   * and returns those the store took; their files are removed. Failures are recorded on
   * the entry (attempts, lastError, nextAttemptAt) and never thrown. Concurrent calls
   * share one run.
   */
  deliverAll(store: CertStore, options: { force?: boolean } = {}): Promise<Delivery[]> {
    this.delivering ??= this.deliverDue(store, options.force === true).finally(() => {
      this.delivering = undefined;
    });
    return this.delivering;
  }

  /**
   * Runs {@link Spool.deliverAll} every `intervalMs` (default 1 s; each entry still waits
   * for its own backoff) until stopped; `onDelivered` is called for each delivery (its
   * errors are logged). stop() waits for a run in progress. `active`: asked at every run;
   * false skips it (a follower controller: only the leader writes the store).
   */
  startDelivery(
    store: CertStore,
    options: { intervalMs?: number; onDelivered?: (d: Delivery) => void | Promise<void>; active?: () => boolean } = {},
  ): { stop(): Promise<void> } {
    let stopped = false;
    let timer: Timer | undefined;
    let running: Promise<void> = Promise.resolve();
    const tick = (): void => {
      running = (async () => {
        // `active`: only the leader writes the store (controller/lease); a follower keeps its spool.
        if (this.held.size > 0 && (options.active?.() ?? true)) {
          for (const d of await this.deliverAll(store)) {
            try {
              await options.onDelivered?.(d);
            } catch (err) {
              this.log.error({ [LogKey.err]: toCertfleetError(err), [LogKey.cert]: d.name, [LogKey.version]: d.meta.version }, 'spool delivery callback failed');
            }
          }
        }
      })().finally(() => {
        if (!stopped) {
          timer = this.clock.after(options.intervalMs ?? 1_000, tick).unref();
        }
      });
    };
    tick();
    return {
      stop: async () => {
        stopped = true;
        timer?.stop();
        await running;
      },
    };
  }

  // ---- internals ----

  private async deliverDue(store: CertStore, force: boolean): Promise<Delivery[]> {
    const delivered: Delivery[] = [];
    const due = [...this.held.values()]
      .filter((h) => force || h.nextAttemptMs <= this.clock.now())
      .sort((a, b) => a.summary.id.localeCompare(b.summary.id));
    for (const h of due) {
      const { id, name } = h.summary;
      try {
        const d = await this.deliverOne(store, h);
        await this.remove(id);
        delivered.push(d);
        this.log.info({ [LogKey.cert]: name, [LogKey.version]: d.meta.version, id, outcome: d.outcome }, 'spooled version delivered');
      } catch (err) {
        const e = toCertfleetError(err);
        h.summary.attempts += 1;
        h.summary.lastError = `${e.code}: ${e.message}`;
        h.nextAttemptMs = this.clock.now() + spoolRetryDelay(h.summary.attempts, this.baseDelayMs, this.maxDelayMs);
        h.summary.nextAttemptAt = isoAt(h.nextAttemptMs);
        this.log.warn({ [LogKey.cert]: name, id, [LogKey.code]: e.code, attempts: h.summary.attempts, nextAttemptAt: h.summary.nextAttemptAt }, 'spooled version not delivered');
      }
    }
    return delivered;
  }

  private async deliverOne(store: CertStore, h: Held): Promise<Delivery> {
    const { id, name, expectedLatest } = h.summary;
    try {
      return { id, name, outcome: 'stored', meta: await store.putVersion(name, h.input, expectedLatest) };
    } catch (err) {
      if (!isCertfleetError(err, ErrorCode.StoreConflict)) throw err;
    }
    const later = (await store.listVersions(name)).filter((m) => m.version > expectedLatest);
    const same = later.find((m) => m.serial === h.input.meta.serial && m.fingerprint === h.input.meta.fingerprint);
    if (same !== undefined) return { id, name, outcome: 'already-stored', meta: same };
    const latest = await store.latest(name);
    return { id, name, outcome: 'stored-after-conflict', meta: await store.putVersion(name, h.input, latest?.version ?? 0) };
  }

  private hold(file: SpoolFile, nowMs: number): Held {
    const held: Held = {
      input: file.input,
      nextAttemptMs: nowMs,
      summary: {
        id: file.id,
        name: file.name,
        expectedLatest: file.expectedLatest,
        serial: file.input.meta.serial,
        fingerprint: file.input.meta.fingerprint,
        notAfter: file.input.meta.notAfter,
        spooledAt: file.spooledAt,
        attempts: 0,
        lastError: '',
        nextAttemptAt: isoAt(nowMs),
      },
    };
    this.held.set(file.id, held);
    return held;
  }

  private async load(): Promise<void> {
    let names: string[];
    try {
      await fs.mkdir(this.dir, { recursive: true, mode: DIR_MODE });
      const st = await fs.stat(this.dir);
      if ((st.mode & 0o077) !== 0) {
        this.log.warn({ dir: this.dir, mode: (st.mode & 0o777).toString(8) }, 'spool directory mode tightened to 0700');
        await fs.chmod(this.dir, DIR_MODE);
      }
      names = await fs.readdir(this.dir);
    } catch (err) {
      throw new CertfleetError(ErrorCode.StoreUnavailable, `spool: cannot open ${this.dir}: ${errno(err) ?? String(err)}`, {
        retryable: true,
        cause: err,
        details: { dir: this.dir },
      });
    }
    const now = this.clock.now();
    for (const n of names.sort()) {
      if (n.startsWith('.')) continue; // an interrupted write: its rename never happened
      const file = path.join(this.dir, n);
      try {
        if (!ENTRY_FILE.test(n)) throw new Error('unexpected file name');
        const parsed = parseSpoolFile(JSON.parse(await fs.readFile(file, 'utf8')), n.slice(0, -'.json'.length));
        this.hold(parsed, now);
      } catch (err) {
        // Never delete what might be the only copy of an issued key; an operator decides.
        this.log.error({ file, why: err instanceof Error ? err.message : String(err) }, 'spool file unreadable, left in place');
      }
    }
    if (this.held.size > 0) this.log.warn({ pending: this.held.size }, 'spool has undelivered versions');
  }

  private async remove(id: string): Promise<void> {
    this.held.delete(id);
    try {
      await fs.unlink(path.join(this.dir, `${id}.json`));
      await fsyncDir(this.dir);
    } catch (err) {
      // Stored already; a leftover file is redelivered after a restart and recognised as already-stored.
      if (errno(err) !== 'ENOENT') this.log.warn({ id, errno: errno(err) }, 'delivered spool file not removed');
    }
  }
}

/**
 * Stores a freshly issued version, or spools it when the store is unavailable, so that
 * nothing the CA issued is lost. STORE_CONFLICT and USAGE_INVALID are thrown as usual
 * (the caller re-reads and decides); a spool write failure is thrown too.
 */
export async function storeOrSpool(
  store: CertStore,
  spool: Spool,
  name: string,
  input: VersionInput,
  expectedLatest: number,
): Promise<{ status: 'stored'; meta: VersionMeta } | { status: 'spooled'; entry: SpoolEntry; cause: CertfleetError }> {
  try {
    return { status: 'stored', meta: await store.putVersion(name, input, expectedLatest) };
  } catch (err) {
    if (!isCertfleetError(err, ErrorCode.StoreUnavailable)) throw err;
    return { status: 'spooled', entry: await spool.put(name, input, expectedLatest), cause: err };
  }
}

function parseSpoolFile(raw: unknown, id: string): SpoolFile {
  if (typeof raw !== 'object' || raw === null) throw new Error('not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o['format'] !== FORMAT) throw new Error(`unknown format ${String(o['format'])}`);
  if (o['id'] !== id) throw new Error('id does not match the file name');
  const input = o['input'] as VersionInput | undefined;
  const name = o['name'];
  if (typeof name !== 'string' || typeof o['spooledAt'] !== 'string' || typeof input !== 'object' || input === null || typeof input.meta !== 'object') {
    throw new Error('missing fields');
  }
  checkCertName(name);
  checkExpectedLatest(o['expectedLatest'] as number);
  checkVersionInput(name, input);
  return { format: FORMAT, id, name, expectedLatest: o['expectedLatest'] as number, spooledAt: o['spooledAt'], input };
}

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}



/**
 * What an agent believes of the records it is sent (issue #9): the controller's
 * record-signing keys, the highest generation accepted per certificate, and the count of
 * records refused.
 *
 * Files under `<stateDir>/trust/` (0700, files 0600):
 *   - `signing-keys.json`: the public keys the controller gave over mutual TLS (at
 *     enrolment, then at every resynchronisation). Only these verify records.
 *   - `generations.json`: the highest (epoch, generation) accepted per certificate, as
 *     `{ "<cert>": { "epoch": E, "generation": G } }` (a bare number, written before
 *     epochs, is a generation of epoch 0). Kept on disk so a restarted agent still
 *     refuses a replayed older record.
 *
 * The decisions ({@link desiredVerdict}, {@link challengeVerdict}) are pure; the class
 * keeps the state and reports refusals: a `record refused` warning with code
 * RECORD_REFUSED (bucket or source, key, reason; never the value), and counts per reason
 * that go out with every status report (`certfleet agents` shows them).
 */
import fs from 'node:fs';
import path from 'node:path';
import { LogKey, type Logger } from '../log/index.js';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { ErrorCode } from '../../shared/errors/index.js';
import { writeFileAtomic } from '../../shared/files/index.js';
import type { ChallengeRecord, DesiredRecord, RecordRefusals, SigningPublicKey } from '../../shared/model/index.js';
import { generationVerdict, stampOf, trustedKeys, verifyRecord, type RecordStamp, type SignatureProblem, type TrustedKeys } from '../../shared/signing/index.js';

/** Why a record was refused. */
export type RefusalReason = SignatureProblem | 'replay' | 'malformed' | 'expired' | 'not-assigned' | 'fingerprint-mismatch';

/** The outcome of checking one record. */
export type Verdict = { ok: true; generation: number; stamp: RecordStamp } | { ok: false; reason: RefusalReason; message: string };

function describe(s: RecordStamp): string {
  return s.epoch === 0 ? `generation ${s.generation}` : `epoch ${s.epoch} generation ${s.generation}`;
}

/**
 * Whether to act on a desired record: its signature must verify with a trusted key and
 * its (epoch, generation) must not be below `highest`, the highest accepted for its
 * certificate (a bare number: a generation of epoch 0). A record of an older leader
 * epoch is a replay whatever its generation (a deposed controller's write).
 */
export function desiredVerdict(record: DesiredRecord, keys: TrustedKeys, highest: number | RecordStamp): Verdict {
  const sig = verifyRecord('desired', record, keys);
  if (!sig.ok) return { ok: false, reason: sig.problem, message: sig.message };
  const stamp = stampOf(record);
  const top = typeof highest === 'number' ? { epoch: 0, generation: highest } : highest;
  if (generationVerdict(stamp, top) === 'older') {
    return { ok: false, reason: 'replay', message: `${describe(stamp)} is older than ${describe(top)}, already accepted` };
  }
  return { ok: true, generation: stamp.generation, stamp };
}

/**
 * Whether to serve an HTTP-01 challenge: signed by a trusted key, not expired at `now`,
 * its identifier one of the names of its certificate as assigned to this agent
 * (`assignedNames(cert)`, undefined when the certificate is not assigned), and its
 * generation not below `highest`, the newest accepted for that certificate and
 * identifier (an older challenge is a replay of a finished order).
 */
export function challengeVerdict(record: ChallengeRecord, keys: TrustedKeys, now: number, assignedNames: readonly string[] | undefined, highest: number | RecordStamp): Verdict {
  const sig = verifyRecord('challenge', record, keys);
  if (!sig.ok) return { ok: false, reason: sig.problem, message: sig.message };
  const expires = record.expiresAt === undefined ? Number.NaN : Date.parse(record.expiresAt);
  if (Number.isNaN(expires) || now >= expires) return { ok: false, reason: 'expired', message: `challenge for ${record.identifier} has expired` };
  if (assignedNames === undefined) return { ok: false, reason: 'not-assigned', message: `certificate ${record.cert} is not assigned to this agent` };
  if (!assignedNames.includes(record.identifier)) return { ok: false, reason: 'not-assigned', message: `${record.identifier} is not a name of certificate ${record.cert}` };
  const stamp = stampOf(record);
  const top = typeof highest === 'number' ? { epoch: 0, generation: highest } : highest;
  if (generationVerdict(stamp, top) === 'older') {
    return { ok: false, reason: 'replay', message: `challenge ${describe(stamp)} is older than ${describe(top)}, already accepted` };
  }
  return { ok: true, generation: stamp.generation, stamp };
}

function trustDir(stateDir: string): string {
  return path.join(stateDir, 'trust');
}

const KEYS_FILE = 'signing-keys.json';
const GENERATIONS_FILE = 'generations.json';

/** Writes the controller's public keys (enrolment; the Trust class on refresh). */
export async function saveSigningKeys(stateDir: string, keys: readonly SigningPublicKey[]): Promise<void> {
  trustedKeys(keys); // refuse a malformed set before it replaces a good one
  const dir = trustDir(stateDir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path.join(dir, KEYS_FILE), JSON.stringify({ keys }, null, 2) + '\n', 0o600);
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The agent's trust state. One per agent process. */
export class Trust {
  private keySet: SigningPublicKey[] = [];
  private trusted: TrustedKeys = new Map();
  private readonly highest = new Map<string, RecordStamp>();
  private readonly counts = new Map<string, number>();
  private last = '';
  private lastAt = '';
  /** Serialises writes of generations.json; the newest content wins. */
  private saving: Promise<void> = Promise.resolve();
  /** A write is queued and has not started: it will carry every generation accepted until it starts. */
  private writeQueued = false;

  private constructor(
    private readonly stateDir: string,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly writeFile: (file: string, content: string, mode: number) => Promise<void>,
  ) {}

  /**
   * Loads keys and generations from `<stateDir>/trust/`. An unreadable or malformed file
   * is logged and treated as empty (no keys: nothing verifies until the next
   * resynchronisation brings them; no generations: replay protection starts over).
   */
  static open(stateDir: string, clock: Clock, log: Logger, writeFile: (file: string, content: string, mode: number) => Promise<void> = writeFileAtomic): Trust {
    const t = new Trust(stateDir, clock, log, writeFile);
    const dir = trustDir(stateDir);
    try {
      const raw = readJson(path.join(dir, KEYS_FILE)) as { keys?: SigningPublicKey[] } | undefined;
      if (raw !== undefined) t.useKeys(raw.keys ?? []);
    } catch (err) {
      log.error({ [LogKey.err]: (err as Error).message }, 'signing keys unreadable; waiting for the controller to send them');
    }
    try {
      const raw = readJson(path.join(dir, GENERATIONS_FILE)) as Record<string, unknown> | undefined;
      for (const [cert, g] of Object.entries(raw ?? {})) {
        if (typeof g === 'number' && Number.isSafeInteger(g)) t.highest.set(cert, { epoch: 0, generation: g });
        const o = g as Partial<RecordStamp> | null;
        if (typeof o === 'object' && o !== null && Number.isSafeInteger(o.epoch) && Number.isSafeInteger(o.generation)) t.highest.set(cert, { epoch: o.epoch as number, generation: o.generation as number });
      }
    } catch (err) {
      log.error({ [LogKey.err]: (err as Error).message }, 'record generations unreadable; replay protection starts over');
    }
    return t;
  }

  private useKeys(keys: SigningPublicKey[]): void {
    this.trusted = trustedKeys(keys);
    this.keySet = keys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey }));
  }

  /** The keys records are verified with. */
  keys(): TrustedKeys {
    return this.trusted;
  }

  hasKeys(): boolean {
    return this.trusted.size > 0;
  }

  /**
   * Replaces the key set with what the controller sent over mTLS and saves it. A set that
   * is empty or malformed is refused (logged); the old one stays.
   */
  async setKeys(keys: SigningPublicKey[]): Promise<void> {
    const same = keys.length === this.keySet.length && keys.every((k) => this.keySet.some((o) => o.keyId === k.keyId && o.publicKey === k.publicKey));
    if (same) return;
    if (keys.length === 0) {
      this.log.warn('controller sent no signing keys; keeping the ones known');
      return;
    }
    try {
      this.useKeys(keys);
    } catch (err) {
      this.log.error({ [LogKey.err]: (err as Error).message }, 'controller sent malformed signing keys; keeping the ones known');
      return;
    }
    this.log.info({ [LogKey.keys]: keys.map((k) => k.keyId) }, 'signing keys updated');
    try {
      await saveSigningKeys(this.stateDir, keys);
    } catch (err) {
      this.log.warn({ [LogKey.err]: (err as Error).message }, 'signing keys not saved');
    }
  }

  /** Highest (epoch, generation) accepted for `cert` ({0, 0}: none). */
  highestFor(cert: string): RecordStamp {
    return this.highest.get(cert) ?? { epoch: 0, generation: 0 };
  }

  /**
   * Records `stamp` (a bare number: a generation of epoch 0) as accepted for `cert`;
   * saving happens in the background ({@link saved}). Accepts that come while a write is
   * queued ride on it: the file is written from the stamps as they are when the write
   * starts. (Each accept used to queue a write of its own snapshot: an agent starting
   * against 10,000 desired records queued 10,000 copies of a 400 KB file, issue #13.)
   */
  accept(cert: string, stamp: number | RecordStamp): void {
    const s = typeof stamp === 'number' ? { epoch: 0, generation: stamp } : stamp;
    if (generationVerdict(s, this.highestFor(cert)) !== 'newer') return;
    this.highest.set(cert, s);
    if (this.writeQueued) return;
    this.writeQueued = true;
    this.saving = this.saving.then(async () => {
      this.writeQueued = false;
      const content = JSON.stringify(Object.fromEntries(this.highest), null, 2) + '\n';
      try {
        fs.mkdirSync(trustDir(this.stateDir), { recursive: true, mode: 0o700 });
        await this.writeFile(path.join(trustDir(this.stateDir), GENERATIONS_FILE), content, 0o600);
      } catch (err) {
        this.log.error({ [LogKey.err]: (err as Error).message }, 'record generations not saved');
      }
    });
  }

  /** Resolves once every accepted generation so far is on disk (or failed, logged). */
  saved(): Promise<void> {
    return this.saving;
  }

  /**
   * Counts and logs one refused record. `where` names it (bucket or source, key, cert,
   * generation); values are never logged.
   */
  refuse(reason: RefusalReason, where: Record<string, unknown>, message: string): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
    const at = Object.entries(where)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ');
    this.last = `${reason}: ${message}${at === '' ? '' : ` (${at})`}`.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 1024);
    this.lastAt = isoAt(this.clock.now());
    this.log.warn({ [LogKey.code]: ErrorCode.RecordRefused, [LogKey.reason]: reason, ...where, [LogKey.err]: message }, 'record refused');
  }

  /** Refusals since start, for the status report. */
  refusals(): RecordRefusals {
    let total = 0;
    for (const n of this.counts.values()) total += n;
    return { total, byReason: Object.fromEntries(this.counts), last: this.last, lastAt: this.lastAt };
  }
}

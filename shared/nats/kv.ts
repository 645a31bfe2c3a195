/**
 * Typed JSON key-value buckets over JetStream KV.
 *
 * A revision is the JetStream stream sequence of a write: it grows with every write to
 * the bucket (not per key), which is what compare-and-set (`update`) compares against.
 * Values are JSON, and every value read is checked by the `parse` function the bucket
 * was opened with (shared/records has one per certfleet bucket): a record on the bus can
 * come from any writer, so nothing reaches our code unvalidated. A value that is not
 * JSON (or not even UTF-8) or fails `parse` is "malformed": `get` throws STORE_CORRUPT
 * for it, while `entries` and `watch` skip it, so one bad write cannot stop a whole
 * fleet from reading the rest. Each malformed revision is logged once (bucket, key,
 * revision and what is wrong, never the value) and counted ({@link malformedRecords}).
 */
import type { JsMsg } from '@nats-io/jetstream';
import type { KV, KvEntry as LibKvEntry } from '@nats-io/kv';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { LogKey, type Logger } from '../log/index.js';
import { impl, type NatsHandle, type NatsHandleImpl } from './connection.js';
import { isStreamNotFound, isWrongLastSequence, toNatsError } from './errors.js';
import { follow, scan } from './follow.js';

/** A value with the revision it was written at. */
export interface KvValue<T> {
  value: T;
  revision: number;
}

/** One key of a bucket with its current value. */
export interface KvItem<T> extends KvValue<T> {
  key: string;
}

/** A running watch. */
export interface KvWatch {
  /** Stops the watch; no callback runs after it resolves. Idempotent. */
  stop(): Promise<void>;
  /**
   * Resolves once every value present when the watch started has been delivered (at
   * once for an empty bucket). Also resolves if the watch is stopped first.
   */
  initialDone: Promise<void>;
}

/**
 * Called for every change. `value` null means the key was deleted; deletions are only
 * reported for keys this watch reported present. Must not throw (errors are logged).
 */
export type KvChangeHandler<T> = (key: string, value: T | null, revision: number) => void;

export interface JsonKv<T> {
  readonly bucket: string;
  /** The current value, or null when the key is absent or deleted. Malformed → STORE_CORRUPT. */
  get(key: string): Promise<KvValue<T> | null>;
  /** Writes unconditionally; returns the new revision. */
  put(key: string, value: T): Promise<number>;
  /**
   * Writes only if the key's last revision is `expectedRevision` (0: only if the key is
   * absent or deleted). Returns the new revision; STORE_CONFLICT (not retryable: re-read
   * first) when someone else wrote in between.
   */
  update(key: string, value: T, expectedRevision: number): Promise<number>;
  /**
   * Deletes the key (a delete marker; history keeps older values). With
   * `expectedRevision`, only if nobody wrote since (else STORE_CONFLICT).
   * Deleting an absent key succeeds.
   */
  delete(key: string, expectedRevision?: number): Promise<void>;
  /** Keys that currently have a value, in no particular order. */
  keys(): Promise<string[]>;
  /** Every key with its current value; malformed values are skipped with a warning. */
  entries(): Promise<KvItem<T>[]>;
  /**
   * Delivers every current value first (deleted keys are not reported), then each change
   * as it happens, until stopped. Survives server restarts and reconnects: it resumes
   * right after the last revision it delivered, so no change is missed; a value may be
   * delivered twice only if the connection dropped before the initial values were all
   * delivered. Malformed values are skipped with a warning. Rejects with
   * NATS_UNAVAILABLE when it cannot start (bucket missing, server away).
   * History replay is not offered (`includeHistory` must be false or absent).
   */
  watch(onChange: KvChangeHandler<T>, opts?: { includeHistory?: false }): Promise<KvWatch>;
  /** Bucket facts for status pages: values kept per key, messages stored (all revisions), copies in the cluster. */
  info(): Promise<{ bucket: string; history: number; messages: number; replicas: number }>;
}

export interface OpenKvOptions<T> {
  /**
   * true: create the bucket if it is missing (controller). false: it must exist, else
   * NATS_UNAVAILABLE, retryable (agents: the controller has not initialised it yet).
   */
  create: boolean;
  /** Values kept per key when creating; default 1. An existing bucket is updated to it. */
  history?: number;
  /**
   * Copies of the bucket's stream across a NATS cluster when creating; default 1 (one
   * server). 3 in a three-node cluster: writes then need a quorum of two.
   */
  replicas?: number;
  /**
   * Validates a parsed JSON value stored under `key` and returns it typed; throws when
   * it is invalid, with a message that says what is wrong without repeating values
   * (it is logged). Required: pass `(v) => v` only where the value is not looked at.
   */
  parse: (value: unknown, key: string) => T;
  /**
   * Called once per malformed revision this view meets (not JSON, or refused by `parse`),
   * after it is logged and counted, with the same reason. Must not throw. The agent counts
   * these as refused records (a bucket only the controller writes holds garbage).
   */
  onMalformed?: (key: string, reason: string) => void;
}

/** Malformed revisions seen per bucket by this process, each counted once. */
const malformedCounts = new Map<string, number>();

/**
 * How many malformed values (not JSON, or refused by the bucket's `parse`) this process
 * has skipped, per bucket; each bad revision counts once however often it is read.
 */
export function malformedRecords(): Record<string, number> {
  return Object.fromEntries(malformedCounts);
}

/** Keys allowed by JetStream KV (and by our names: certificate names, ACME tokens). */
const KEY_PATTERN = /^[-/=\w]+(?:\.[-/=\w]+)*$/;
const OPERATION_HEADER = 'KV-Operation';

/**
 * Opens (and, with `create`, creates) a bucket as a typed JSON store.
 * Only settings nats-server 2.9 understands are sent: no compression, no metadata,
 * no per-key TTL.
 */
export async function openKv<T>(handle: NatsHandle, bucket: string, opts: OpenKvOptions<T>): Promise<JsonKv<T>> {
  const h = impl(handle);
  const history = opts.history ?? 1;
  let kv: KV;
  try {
    if (opts.create) {
      kv = await h.kvm.create(bucket, { history, replicas: opts.replicas ?? 1 });
      const status = await kv.status();
      if (status.history !== history) {
        // The controller owns bucket settings: bring an older bucket to what it asks for.
        await h.jsm.streams.update(status.streamInfo.config.name, { max_msgs_per_subject: history });
        h.log.info({ [LogKey.bucket]: bucket, [LogKey.from]: status.history, [LogKey.to]: history }, 'kv bucket history changed');
      }
      const replicas = opts.replicas ?? 1;
      if (status.streamInfo.config.num_replicas !== replicas) {
        // Growing a single-node deployment into a cluster: JetStream copies the data over.
        await h.jsm.streams.update(status.streamInfo.config.name, { num_replicas: replicas });
        h.log.info({ bucket, from: status.streamInfo.config.num_replicas, to: replicas }, 'kv bucket replicas changed');
      }
    } else {
      kv = await h.kvm.open(bucket);
      // open() does not touch the server; status() proves the bucket exists.
      await kv.status();
    }
  } catch (err) {
    if (isStreamNotFound(err)) {
      throw new CertfleetError(
        ErrorCode.NatsUnavailable,
        `KV bucket ${bucket} does not exist (the controller creates it when it starts)`,
        { cause: err, retryable: true, details: { bucket } },
      );
    }
    throw toNatsError(err, `cannot open KV bucket ${bucket}`, { bucket });
  }
  return new JsonKvImpl<T>(h, bucket, kv, opts.parse, opts.onMalformed);
}

class JsonKvImpl<T> implements JsonKv<T> {
  private readonly log: Logger;
  private readonly subjectPrefix: string;
  /** `key@revision` of malformed values already logged and counted. */
  private readonly reported = new Set<string>();

  constructor(
    private readonly h: NatsHandleImpl,
    readonly bucket: string,
    private readonly kv: KV,
    private readonly parse: (value: unknown, key: string) => T,
    private readonly onMalformed?: (key: string, reason: string) => void,
  ) {
    this.log = h.log.child({ [LogKey.bucket]: bucket });
    this.subjectPrefix = `$KV.${bucket}.`;
  }

  async get(key: string): Promise<KvValue<T> | null> {
    checkKey(key);
    let e: LibKvEntry | null;
    try {
      e = await this.kv.get(key);
    } catch (err) {
      throw toNatsError(err, `kv get ${this.bucket}/${key}`, { bucket: this.bucket, kvKey: key });
    }
    if (e === null || e.operation !== 'PUT') return null;
    const decoded = this.decode(key, e.value);
    if (!decoded.ok) {
      this.reportMalformed(key, e.revision, decoded.reason);
      throw new CertfleetError(ErrorCode.StoreCorrupt, `malformed value in ${this.bucket}/${key}: ${decoded.reason}`, {
        details: { bucket: this.bucket, kvKey: key, revision: e.revision },
      });
    }
    return { value: decoded.value, revision: e.revision };
  }

  async put(key: string, value: T): Promise<number> {
    checkKey(key);
    try {
      return await this.kv.put(key, encode(value));
    } catch (err) {
      throw toNatsError(err, `kv put ${this.bucket}/${key}`, { bucket: this.bucket, kvKey: key });
    }
  }

  async update(key: string, value: T, expectedRevision: number): Promise<number> {
    checkKey(key);
    if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 0) {
      throw new CertfleetError(ErrorCode.Internal, `invalid expected revision ${expectedRevision}`);
    }
    try {
      return expectedRevision === 0
        ? await this.kv.create(key, encode(value))
        : await this.kv.update(key, encode(value), expectedRevision);
    } catch (err) {
      throw this.writeError(err, 'update', key, expectedRevision);
    }
  }

  async delete(key: string, expectedRevision?: number): Promise<void> {
    checkKey(key);
    try {
      await this.kv.delete(key, expectedRevision === undefined ? undefined : { previousSeq: expectedRevision });
    } catch (err) {
      throw this.writeError(err, 'delete', key, expectedRevision);
    }
  }

  async keys(): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const k of await this.kv.keys()) out.push(k);
    } catch (err) {
      throw toNatsError(err, `kv keys ${this.bucket}`, { bucket: this.bucket });
    }
    return out;
  }

  async entries(): Promise<KvItem<T>[]> {
    const latest = new Map<string, KvItem<T> | null>();
    await scan(
      this.h,
      { stream: this.streamName(), filterSubject: `${this.subjectPrefix}>`, start: { kind: 'lastPerSubject' }, what: `kv entries ${this.bucket}` },
      (m) => {
        const change = this.toChange(m);
        if (change === undefined) return;
        latest.set(change.key, change.value === null ? null : { key: change.key, value: change.value, revision: m.seq });
      },
    );
    return [...latest.values()].filter((v): v is KvItem<T> => v !== null);
  }

  async watch(onChange: KvChangeHandler<T>, opts: { includeHistory?: false } = {}): Promise<KvWatch> {
    // The type says false; this guards JavaScript callers and casts.
    if ((opts as { includeHistory?: boolean }).includeHistory === true) {
      throw new CertfleetError(ErrorCode.Internal, 'kv watch does not replay history');
    }
    /** Last revision seen per key, so a replay after a resume is not delivered twice. */
    const seen = new Map<string, number>();
    /** Keys reported present, so deletes are only reported for them. */
    const present = new Set<string>();
    const follower = await follow(this.h, {
      stream: this.streamName(),
      filterSubject: `${this.subjectPrefix}>`,
      start: { kind: 'lastPerSubject' },
      what: `kv watch ${this.bucket}`,
      onStreamReset: () => seen.clear(),
      onMessage: (m) => {
        const key = m.subject.slice(this.subjectPrefix.length);
        const previous = seen.get(key);
        if (previous !== undefined && m.seq <= previous) return;
        seen.set(key, m.seq);
        const change = this.toChange(m);
        if (change === undefined) return;
        if (change.value === null) {
          if (!present.delete(key)) return;
        } else {
          present.add(key);
        }
        try {
          onChange(key, change.value, m.seq);
        } catch (err) {
          this.log.error({ [LogKey.err]: err, [LogKey.kvKey]: key, [LogKey.revision]: m.seq }, 'kv watch handler failed');
        }
      },
    });
    return { stop: () => follower.stop(), initialDone: follower.caughtUp };
  }

  async info(): Promise<{ bucket: string; history: number; messages: number; replicas: number }> {
    try {
      const st = await this.kv.status();
      return { bucket: this.bucket, history: st.history, messages: st.values, replicas: st.replicas };
    } catch (err) {
      throw toNatsError(err, `kv info ${this.bucket}`, { bucket: this.bucket });
    }
  }

  private streamName(): string {
    return `KV_${this.bucket}`;
  }

  /** A KV message as a change; undefined (with a warning) when its value is malformed. */
  private toChange(m: JsMsg): { key: string; value: T | null } | undefined {
    const key = m.subject.slice(this.subjectPrefix.length);
    const op = m.headers?.get(OPERATION_HEADER) ?? '';
    if (op === 'DEL' || op === 'PURGE') return { key, value: null };
    const decoded = this.decode(key, m.data);
    if (!decoded.ok) {
      this.reportMalformed(key, m.seq, decoded.reason);
      return undefined;
    }
    return { key, value: decoded.value };
  }

  /** Logs and counts a malformed revision the first time this bucket view meets it. */
  private reportMalformed(key: string, revision: number, reason: string): void {
    const id = `${key}@${revision}`;
    if (this.reported.has(id)) return;
    this.reported.add(id);
    malformedCounts.set(this.bucket, (malformedCounts.get(this.bucket) ?? 0) + 1);
    this.log.warn({ [LogKey.kvKey]: key, [LogKey.revision]: revision, [LogKey.reason]: reason }, 'malformed kv value skipped');
    try {
      this.onMalformed?.(key, reason);
    } catch (err) {
      this.log.error({ [LogKey.kvKey]: key, [LogKey.err]: (err as Error).message }, 'malformed value handler failed');
    }
  }

  private decode(key: string, data: Uint8Array): { ok: true; value: T } | { ok: false; reason: string } {
    let raw: unknown;
    try {
      // fatal: bytes that are not UTF-8 are refused, not replaced with U+FFFD.
      raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
    } catch {
      return { ok: false, reason: 'not JSON' };
    }
    try {
      return { ok: true, value: this.parse(raw, key) };
    } catch (err) {
      // parse functions say what is wrong without values (shared/records); anything else
      // (a library error) is not trusted to: its class name is enough.
      const reason = err instanceof Error && err.name === 'RecordError' ? err.message : err instanceof Error ? `invalid (${err.name})` : 'invalid';
      return { ok: false, reason: reason.slice(0, 500) };
    }
  }

  private writeError(err: unknown, op: string, key: string, expectedRevision: number | undefined): CertfleetError {
    if (isWrongLastSequence(err)) {
      return new CertfleetError(
        ErrorCode.StoreConflict,
        `kv ${op} ${this.bucket}/${key}: revision is no longer ${expectedRevision ?? 0}`,
        { cause: err, details: { bucket: this.bucket, kvKey: key, expectedRevision } },
      );
    }
    return toNatsError(err, `kv ${op} ${this.bucket}/${key}`, { bucket: this.bucket, kvKey: key });
  }
}

function encode(value: unknown): string {
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) throw new CertfleetError(ErrorCode.Internal, 'kv value is not JSON-serialisable');
  return text;
}

function checkKey(key: string): void {
  if (!KEY_PATTERN.test(key)) {
    throw new CertfleetError(ErrorCode.Internal, `invalid KV key ${JSON.stringify(key)}`, { details: { kvKey: key } });
  }
}

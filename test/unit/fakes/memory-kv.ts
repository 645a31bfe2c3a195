/**
 * An in-memory JsonKv with the semantics of shared/nats openKv that the intents rely on:
 * one revision counter per bucket, compare-and-set (0: only if absent), deletes with an
 * expected revision, a watch that delivers current values then changes, values checked
 * by `parse` (malformed ones skipped by watch and entries, as openKv does). For unit tests
 * on a ManualClock; test/integration/intents.test.ts runs the same code on nats-server.
 */
import { CertfleetError, ErrorCode } from '../../../shared/errors/index.js';
import type { JsonKv, KvChangeHandler, KvItem, KvValue, KvWatch } from '../../../shared/nats/index.js';

export class MemoryKv<T> implements JsonKv<T> {
  private revision = 0;
  private readonly data = new Map<string, { raw: unknown; revision: number } | { raw: null; revision: number }>();
  private readonly watchers = new Set<KvChangeHandler<T>>();

  constructor(
    readonly bucket: string,
    private readonly parse: (value: unknown, key: string) => T,
  ) {}

  private decode(key: string, raw: unknown): T | undefined {
    try {
      return this.parse(JSON.parse(JSON.stringify(raw)), key);
    } catch {
      return undefined;
    }
  }

  get(key: string): Promise<KvValue<T> | null> {
    const e = this.data.get(key);
    if (e === undefined || e.raw === null) return Promise.resolve(null);
    const value = this.decode(key, e.raw);
    if (value === undefined) return Promise.reject(new CertfleetError(ErrorCode.StoreCorrupt, `malformed value in ${this.bucket}/${key}`));
    return Promise.resolve({ value, revision: e.revision });
  }

  /** Writes anything (also what `T` forbids): what a foreign writer to the bucket can do. */
  putRaw(key: string, raw: unknown): number {
    const revision = ++this.revision;
    this.data.set(key, { raw, revision });
    const value = this.decode(key, raw);
    if (value !== undefined) for (const w of this.watchers) w(key, value, revision);
    return revision;
  }

  put(key: string, value: T): Promise<number> {
    return Promise.resolve(this.putRaw(key, value));
  }

  update(key: string, value: T, expectedRevision: number): Promise<number> {
    const e = this.data.get(key);
    const last = e === undefined ? 0 : e.raw === null && expectedRevision === 0 ? 0 : e.revision;
    if (last !== expectedRevision) return Promise.reject(new CertfleetError(ErrorCode.StoreConflict, `kv update ${this.bucket}/${key}: wrong last revision`));
    return this.put(key, value);
  }

  delete(key: string, expectedRevision?: number): Promise<void> {
    const e = this.data.get(key);
    if (expectedRevision !== undefined && (e?.revision ?? 0) !== expectedRevision) {
      return Promise.reject(new CertfleetError(ErrorCode.StoreConflict, `kv delete ${this.bucket}/${key}: wrong last revision`));
    }
    if (e === undefined) return Promise.resolve();
    const revision = ++this.revision;
    this.data.set(key, { raw: null, revision });
    for (const w of this.watchers) w(key, null, revision);
    return Promise.resolve();
  }

  keys(): Promise<string[]> {
    return Promise.resolve([...this.data].filter(([, e]) => e.raw !== null).map(([k]) => k));
  }

  entries(): Promise<KvItem<T>[]> {
    const out: KvItem<T>[] = [];
    for (const [key, e] of this.data) {
      if (e.raw === null) continue;
      const value = this.decode(key, e.raw);
      if (value !== undefined) out.push({ key, value, revision: e.revision });
    }
    return Promise.resolve(out);
  }

  async watch(onChange: KvChangeHandler<T>): Promise<KvWatch> {
    for (const item of await this.entries()) onChange(item.key, item.value, item.revision);
    this.watchers.add(onChange);
    return { stop: () => Promise.resolve(void this.watchers.delete(onChange)), initialDone: Promise.resolve() };
  }

  info(): Promise<{ bucket: string; history: number; messages: number; replicas: number }> {
    return Promise.resolve({ bucket: this.bucket, history: 1, messages: this.data.size, replicas: 1 });
  }
}

/**
 * The DNS-01 record journal kept in the controller's store, so a record written before
 * a crash is known after it and the janitor can remove it. One object per record under
 * `dns01/<sha256 of the entry id>`; `add` is durable when it resolves (the store's
 * writes are).
 */
import crypto from 'node:crypto';
import { ObjectKey, ObjectPrefix, type CertStore } from '../../store/index.js';
import type { Dns01Journal, Dns01JournalEntry } from './solver.js';

const PREFIX = ObjectPrefix.dns01;

function keyOf(id: string): string {
  return ObjectKey.dns01(crypto.createHash('sha256').update(id).digest('hex'));
}

function isEntry(v: unknown): v is Dns01JournalEntry {
  const e = v as Partial<Dns01JournalEntry> | null;
  return typeof e?.id === 'string' && typeof e.provider === 'string' && typeof e.fqdn === 'string' && typeof e.value === 'string';
}

export class StoreDns01Journal implements Dns01Journal {
  constructor(private readonly store: Pick<CertStore, 'getObject' | 'putObject' | 'deleteObject' | 'listObjects'>) {}

  async add(entry: Dns01JournalEntry): Promise<void> {
    await this.store.putObject(keyOf(entry.id), entry);
  }

  async remove(id: string): Promise<void> {
    await this.store.deleteObject(keyOf(id));
  }

  async list(): Promise<Dns01JournalEntry[]> {
    const out: Dns01JournalEntry[] = [];
    for (const key of await this.store.listObjects(PREFIX)) {
      const v = await this.store.getObject<unknown>(key);
      if (isEntry(v)) out.push(v);
    }
    return out;
  }
}

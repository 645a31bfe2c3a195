/**
 * The controller registry (issue #12): each controller writes a record about itself into
 * the `controllers` bucket every ttl/3 (its name is the key), and `status` on any
 * controller lists them all. Display only: nothing decides on it (who leads is the lease).
 *
 * Health ({@link controllerHealth}, pure): `deposed` when it last claimed to lead at an
 * epoch the lease has moved past (a crashed or paused leader: its own record cannot say
 * so), `stale` when the record was not rewritten for a lease time (three writes missed:
 * the process is gone, paused or cut off from NATS), `degraded` when it reports its store
 * unreachable, else `ok`.
 */
import { z } from 'zod';
import { isoAt, type Clock, type Timer } from '../../shared/clock/index.js';
import { LogKey, type Logger } from '../../shared/log/index.js';
import { recordParser } from '../../shared/records/index.js';

/** A value of the `controllers` bucket (key: `name`). */
export interface ControllerRecord {
  /** `ha.name`. */
  name: string;
  /** The lease holder id of this process, `name#incarnation`. */
  self: string;
  /** `api.advertise`. */
  address: string;
  version: string;
  role: 'leader' | 'follower';
  /** The lease epoch while leader; 0 when follower. */
  epoch: number;
  /** RFC 3339. */
  startedAt: string;
  /** RFC 3339: when this record was written (the writer's clock). */
  seenAt: string;
  nats: 'connected';
  /** `ok`, or the error code of the last store check. */
  store: string;
}

const controllerRecordSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9-]{1,63}$/),
  self: z.string().min(1).max(128),
  address: z.string().min(1).max(300),
  version: z.string().max(64),
  role: z.enum(['leader', 'follower']),
  epoch: z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  startedAt: z.iso.datetime(),
  seenAt: z.iso.datetime(),
  nats: z.literal('connected'),
  store: z.string().min(1).max(64),
});

const leaseRecordSchema = z.strictObject({
  holder: z.string().min(1).max(128),
  epoch: z.int().min(1).max(Number.MAX_SAFE_INTEGER),
  address: z.string().max(300),
  renewedAt: z.iso.datetime(),
  ttlMs: z.int().min(1).max(Number.MAX_SAFE_INTEGER),
  released: z.boolean().optional(),
});

/** Validates the value of the lease key (bucket `leader`): a malformed lease is never obeyed. */
export const parseLeaseRecord = recordParser(leaseRecordSchema);

/** Validates a value read from the `controllers` bucket. */
export const parseControllerRecord = recordParser(controllerRecordSchema, 'name');

export type ControllerHealth = 'ok' | 'stale' | 'degraded' | 'deposed';

/**
 * See the module comment. `ttlMs` is the reader's lease time; `leaseEpoch` the epoch of
 * the lease record as the reader last saw it (undefined: not known).
 */
export function controllerHealth(record: Pick<ControllerRecord, 'seenAt' | 'store'> & Partial<Pick<ControllerRecord, 'role' | 'epoch'>>, now: number, ttlMs: number, leaseEpoch?: number): ControllerHealth {
  if (record.role === 'leader' && leaseEpoch !== undefined && (record.epoch ?? 0) < leaseEpoch) return 'deposed';
  const seen = Date.parse(record.seenAt);
  if (Number.isNaN(seen) || now - seen > ttlMs) return 'stale';
  return record.store === 'ok' ? 'ok' : 'degraded';
}

/** The part of a JSON KV bucket the registry needs (shared/nats JsonKv satisfies it). */
export interface RegistryKv {
  put(key: string, value: ControllerRecord): Promise<number>;
  entries(): Promise<Array<{ key: string; value: ControllerRecord }>>;
}

export interface RegistryOptions {
  kv: RegistryKv;
  clock: Clock;
  log: Logger;
  ttlMs: number;
  /** This controller's record as of now, without `seenAt` (stamped at each write). */
  record: () => Promise<Omit<ControllerRecord, 'seenAt'>>;
}

/** Writes this controller's record every ttl/3 and lists everyone's. */
export class ControllerRegistry {
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly opts: RegistryOptions) {}

  /** Writes once now (a failure is logged), then every ttl/3. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = this.opts.clock.every(Math.max(1, Math.floor(this.opts.ttlMs / 3)), () => this.beat()).unref();
  }

  /** One write; never throws (NATS away: logged, the next beat tries again). */
  beat(): Promise<void> {
    this.running ??= (async () => {
      try {
        const r = await this.opts.record();
        await this.opts.kv.put(r.name, { ...r, seenAt: isoAt(this.opts.clock.now()) });
      } catch (err) {
        this.opts.log.warn({ [LogKey.err]: (err as Error).message }, 'controller registry not written');
      }
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Every controller's record with its health as seen now, sorted by name. */
  /** Every controller's record with its health; `leaseEpoch` as in {@link controllerHealth}. */
  async list(leaseEpoch?: number): Promise<Array<ControllerRecord & { health: ControllerHealth }>> {
    const now = this.opts.clock.now();
    return (await this.opts.kv.entries())
      .map((e) => ({ ...e.value, health: controllerHealth(e.value, now, this.opts.ttlMs, leaseEpoch) }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async stop(): Promise<void> {
    this.timer?.stop();
    await this.running;
  }
}

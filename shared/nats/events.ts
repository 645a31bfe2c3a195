/**
 * The fleet event log: a JetStream stream of {@link FleetEvent}s, one subject per event
 * type and certificate (see eventSubject in shared/wire). Publishing waits for the
 * stream's acknowledgement, so an event that was published is stored.
 */
import { nanos } from '@nats-io/transport-node';
import { DiscardPolicy, RetentionPolicy, StorageType, type JsMsg } from '@nats-io/jetstream';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { LogKey, type Logger } from '../log/index.js';
import type { FleetEvent } from '../model/index.js';
import { CERT_NAME_PATTERN, EventStream } from '../wire/index.js';
import { impl, type NatsHandle } from './connection.js';
import { isStreamNotFound, toNatsError } from './errors.js';
import { follow, scan, type FollowStart } from './follow.js';

export interface EventStreamOptions {
  name: string;
  subjects: string[];
  /** How long events are kept. */
  maxAgeMs: number;
  /** Copies across a NATS cluster; default 1. */
  replicas?: number;
}

/**
 * Creates the events stream, or brings an existing one to these subjects and max age.
 * Idempotent. File storage, `replicas` copies (default 1), oldest events dropped first. Fails with
 * NATS_UNAVAILABLE (retryable when the server is away).
 */
export async function ensureEventStream(handle: NatsHandle, opts: EventStreamOptions): Promise<void> {
  const h = impl(handle);
  const maxAge = nanos(opts.maxAgeMs);
  try {
    let existing;
    try {
      existing = await h.jsm.streams.info(opts.name);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    if (existing === undefined) {
      await h.jsm.streams.add({
        name: opts.name,
        subjects: opts.subjects,
        max_age: maxAge,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        num_replicas: opts.replicas ?? 1,
      });
      h.log.info({ [LogKey.stream]: opts.name }, 'event stream created');
      return;
    }
    const c = existing.config;
    const sameSubjects = [...c.subjects].sort().join(' ') === [...opts.subjects].sort().join(' ');
    if (!sameSubjects || c.max_age !== maxAge || c.num_replicas !== (opts.replicas ?? 1)) {
      await h.jsm.streams.update(opts.name, { subjects: opts.subjects, max_age: maxAge, num_replicas: opts.replicas ?? 1 });
      h.log.info({ [LogKey.stream]: opts.name }, 'event stream updated');
    }
  } catch (err) {
    throw toNatsError(err, `cannot create event stream ${opts.name}`, { stream: opts.name });
  }
}

export interface PublishEventOptions {
  /**
   * Deduplication id: the stream drops a second publish with the same id within two
   * minutes, so a retried publish does not log the event twice.
   */
  msgId?: string;
}

/**
 * Publishes one event on `subject` (use eventSubject(type, cert)) and waits for the
 * stream to store it; returns its stream sequence. NATS_UNAVAILABLE (retryable) when the
 * server is away or no stream captures the subject.
 */
export async function publishEvent(handle: NatsHandle, subject: string, event: FleetEvent, opts: PublishEventOptions = {}): Promise<number> {
  const h = impl(handle);
  try {
    const ack = await h.js.publish(subject, JSON.stringify(event), opts.msgId === undefined ? {} : { msgID: opts.msgId });
    return ack.seq;
  } catch (err) {
    throw toNatsError(err, `cannot publish event on ${subject}`, { subject });
  }
}

export interface ReadEventsOptions {
  /** At most this many, the most recent ones; default 100. */
  limit?: number;
  /** Only events stored at or after this time. */
  since?: Date;
  /** Only events about this certificate. */
  cert?: string;
}

/** Default and ceiling of {@link ReadEventsOptions.limit}. */
export const DEFAULT_EVENT_LIMIT = 100;
export const MAX_EVENT_LIMIT = 10_000;

/**
 * Reads stored events from the events stream ({@link EventStream.name}), oldest first,
 * keeping the most recent `limit`. Without a certificate filter it starts reading
 * `limit` events before the end; with one it reads that certificate's events (since
 * `since`) and keeps the tail. Malformed messages are skipped with a warning.
 * NATS_UNAVAILABLE when the stream is missing or the server is away.
 */
export async function readEvents(handle: NatsHandle, opts: ReadEventsOptions = {}): Promise<FleetEvent[]> {
  const h = impl(handle);
  const limit = Math.min(Math.max(1, Math.floor(opts.limit ?? DEFAULT_EVENT_LIMIT)), MAX_EVENT_LIMIT);
  const filterSubject = eventFilter(opts.cert);
  let start: FollowStart;
  if (opts.since !== undefined) {
    start = { kind: 'time', at: opts.since };
  } else if (opts.cert === undefined) {
    let lastSeq: number;
    let firstSeq: number;
    try {
      const si = await h.jsm.streams.info(EventStream.name);
      lastSeq = si.state.last_seq;
      firstSeq = si.state.first_seq;
    } catch (err) {
      throw streamError(err);
    }
    if (lastSeq === 0) return [];
    start = { kind: 'seq', seq: Math.max(firstSeq, lastSeq - limit + 1) };
  } else {
    start = { kind: 'seq', seq: 1 };
  }
  const tail: FleetEvent[] = [];
  await scan(h, { stream: EventStream.name, filterSubject, start, what: 'read events' }, (m) => {
    const event = decodeEvent(m, h.log);
    if (event === undefined) return;
    tail.push(event);
    if (tail.length > limit) tail.shift();
  });
  return tail;
}

/** A running event follower. */
export interface EventFollower {
  /** Stops following; no callback runs after it resolves. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Calls `onEvent` for each event published from now on (optionally only those about
 * `cert`), in stream order, across server restarts and reconnects (it resumes after the
 * last event delivered). `onEvent` must not throw (errors are logged). Rejects with
 * NATS_UNAVAILABLE when it cannot start.
 */
export async function followEvents(
  handle: NatsHandle,
  onEvent: (event: FleetEvent) => void,
  opts: { cert?: string } = {},
): Promise<EventFollower> {
  const h = impl(handle);
  const filterSubject = eventFilter(opts.cert);
  let lastSeq: number;
  try {
    lastSeq = (await h.jsm.streams.info(EventStream.name)).state.last_seq;
  } catch (err) {
    throw streamError(err);
  }
  // An explicit start sequence rather than "deliver new": nats.js would recreate a
  // "new" consumer from sequence 1 after a reset, replaying the whole log.
  const follower = await follow(h, {
    stream: EventStream.name,
    filterSubject,
    start: { kind: 'seq', seq: lastSeq + 1 },
    what: 'follow events',
    onMessage: (m) => {
      const event = decodeEvent(m, h.log);
      if (event !== undefined) onEvent(event);
    },
  });
  return { stop: () => follower.stop() };
}

function eventFilter(cert: string | undefined): string {
  if (cert === undefined) return `${EventStream.subjectPrefix}.>`;
  if (!CERT_NAME_PATTERN.test(cert)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `invalid certificate name ${JSON.stringify(cert)}`, { details: { cert } });
  }
  return `${EventStream.subjectPrefix}.*.${cert}`;
}

function streamError(err: unknown): CertfleetError {
  if (isStreamNotFound(err)) {
    return new CertfleetError(ErrorCode.NatsUnavailable, `event stream ${EventStream.name} does not exist (the controller creates it when it starts)`, {
      cause: err,
      retryable: true,
      details: { stream: EventStream.name },
    });
  }
  return toNatsError(err, 'cannot read events', { stream: EventStream.name });
}

/** Parses and checks one event message; undefined (logged) when malformed. */
function decodeEvent(m: JsMsg, log: Logger): FleetEvent | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(m.data));
  } catch {
    raw = undefined;
  }
  const event = asFleetEvent(raw);
  if (event === undefined) log.warn({ [LogKey.seq]: m.seq, [LogKey.subject]: m.subject }, 'malformed event skipped');
  return event;
}

/** The value as a FleetEvent if it has the required shape (type, at, message strings). */
export function asFleetEvent(raw: unknown): FleetEvent | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r['type'] !== 'string' || typeof r['at'] !== 'string' || typeof r['message'] !== 'string') return undefined;
  if (r['cert'] !== undefined && typeof r['cert'] !== 'string') return undefined;
  if (r['agent'] !== undefined && typeof r['agent'] !== 'string') return undefined;
  if (r['version'] !== undefined && typeof r['version'] !== 'number') return undefined;
  if (r['actor'] !== undefined && typeof r['actor'] !== 'string') return undefined;
  if (r['details'] !== undefined && (typeof r['details'] !== 'object' || r['details'] === null || Array.isArray(r['details']))) {
    return undefined;
  }
  return raw as FleetEvent;
}

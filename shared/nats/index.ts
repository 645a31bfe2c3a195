/**
 * The NATS adapter: the only code that imports @nats-io/*. Controller and agent use
 * NATS through these functions and the {@link NatsHandle} they share.
 *
 * - connection: connectNats (fails fast at start, reconnects forever afterwards),
 *   connectNatsWhenUp (keeps trying in the background until a first connect succeeds);
 * - kv: openKv, a typed JSON view of a JetStream KV bucket with CAS and a watch that
 *   survives server restarts;
 * - events: the audit stream (ensureEventStream, publishEvent, readEvents, followEvents);
 * - fleet: ensureFleetNats, which the controller runs at start to create all of it;
 * - claims: pushAccountClaims, account JWT updates (revocations) in operator mode.
 *
 * Written for nats-server 2.9 and later: nothing here needs 2.10 features (no
 * compression, metadata, subject transforms, multiple consumer filters, per-key TTL).
 */
export { connectNats, connectNatsWhenUp, DEFAULT_REQUEST_TIMEOUT_MS, FIRST_CONNECT_RETRY_MS } from './connection.js';
export type { ConnectNatsOptions, NatsHandle } from './connection.js';
export { malformedRecords, openKv } from './kv.js';
export type { JsonKv, KvChangeHandler, KvItem, KvValue, KvWatch, OpenKvOptions } from './kv.js';
export {
  asFleetEvent,
  DEFAULT_EVENT_LIMIT,
  ensureEventStream,
  followEvents,
  MAX_EVENT_LIMIT,
  publishEvent,
  readEvents,
} from './events.js';
export type { EventFollower, EventStreamOptions, PublishEventOptions, ReadEventsOptions } from './events.js';
export { BUCKET_HISTORY, ensureFleetNats } from './fleet.js';
export { pushAccountClaims } from './claims.js';

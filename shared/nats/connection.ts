/**
 * The NATS connection: one per process, reconnecting forever, with its JetStream
 * clients. Everything else in this adapter takes the {@link NatsHandle} it returns.
 *
 * Connection lifecycle, as the rest of certfleet sees it:
 *
 *   connectNats ──ok──> connected ──server lost──> disconnected ──back──> connected ...
 *        │                   │                          │
 *        └─refused: throws   └──────── close() ─────────┴──> closed (final)
 *          NATS_UNAVAILABLE
 *
 * While disconnected, calls fail after their request timeout with NATS_UNAVAILABLE
 * (retryable); watchers and followers resume by themselves once connected again.
 */
import fs from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection, type Status } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { systemClock, type Clock } from '../clock/index.js';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { componentLogger, LogKey, type Logger } from '../log/index.js';
import { toNatsError } from './errors.js';

/** How long one JetStream request (KV get/put, publish ack, stream info) may take. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
/** Pause between reconnect attempts (plus up to 100 ms of jitter). */
const RECONNECT_WAIT_MS = 500;
/**
 * A server that vanished without closing the socket (host down, network cut) is noticed
 * after pingInterval × maxPingOut; the nats.js default (2 min × 2) is too slow for agents
 * that fall back to gRPC polling while NATS is away.
 */
const PING_INTERVAL_MS = 20_000;
const MAX_PINGS_OUT = 3;

export interface ConnectNatsOptions {
  /** Server URLs (nats://host:4222, tls://host:4222). Tried in order at start. */
  servers: string[];
  /** Client name the server shows in its connection list, e.g. "certfleet-agent edge-1". */
  name: string;
  /** A .creds file (JWT + nkey seed). Re-read on every (re)connect, so rotation works. */
  credentialsFile?: string;
  /**
   * The text of a .creds file, held in memory (the controller's own user, minted at
   * start). Mutually exclusive with credentialsFile and token.
   */
  credentials?: string;
  /** A server token; mutually exclusive with credentialsFile. */
  token?: string;
  /**
   * Prefix of this connection's reply subjects and push-consumer deliveries instead of
   * `_INBOX`; an agent's NATS user may subscribe only below its own (shared/wire
   * agentInboxPrefix).
   */
  inboxPrefix?: string;
  /**
   * Check at connect that JetStream answers (default true). False for a system-account
   * connection, whose account has no JetStream.
   */
  checkJetStream?: boolean;
  /** PEM of the CA that signed the servers' certificates, when it is not a public one. */
  tlsCaPem?: string;
  /** Per-request timeout for JetStream calls; default {@link DEFAULT_REQUEST_TIMEOUT_MS}. */
  requestTimeoutMs?: number;
  /**
   * Times what this folder waits for itself (follower resume backoff, scan stall timeout);
   * default systemClock. The nats.js client keeps its own real-time timers (reconnect,
   * pings, request timeouts): they bound a socket.
   */
  clock?: Clock;
  log: Logger;
}

/**
 * An open NATS connection. Opaque outside shared/nats: pass it to openKv, publishEvent...
 */
export interface NatsHandle {
  /** The client name given at connect. */
  readonly name: string;
  /** True while a server is connected (false while reconnecting and after close). */
  isConnected(): boolean;
  /**
   * Calls `listener(false)` when the connection drops and `listener(true)` when it is back.
   * Returns a function that removes the listener. Listener errors are logged, not thrown.
   */
  onConnectionChange(listener: (connected: boolean) => void): () => void;
  /** Resolves when the connection is closed for good (by close() or a fatal error). */
  readonly closed: Promise<void>;
  /** Closes the connection and stops every watcher on it. Idempotent. */
  close(): Promise<void>;
}

/** The implementation; only this folder reaches the library objects inside. */
export class NatsHandleImpl implements NatsHandle {
  readonly closed: Promise<void>;
  private connected = true;
  private readonly listeners = new Set<(connected: boolean) => void>();
  /** Watchers and followers to stop before the connection closes. */
  private readonly stoppers = new Set<() => Promise<void>>();

  constructor(
    readonly name: string,
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly kvm: Kvm,
    readonly log: Logger,
    readonly requestTimeoutMs: number,
    /** Times the followers' resume backoff and the scans' stall timeout. */
    readonly clock: Clock = systemClock,
  ) {
    this.closed = nc.closed().then((err) => {
      this.setConnected(false);
      if (err) log.error({ [LogKey.err]: err }, 'nats connection closed by error');
      else log.info('nats connection closed');
    });
    void this.followStatus();
  }

  isConnected(): boolean {
    return this.connected && !this.nc.isClosed();
  }

  onConnectionChange(listener: (connected: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    await Promise.all([...this.stoppers].map((stop) => stop()));
    if (!this.nc.isClosed()) await this.nc.close();
    await this.closed;
  }

  /** Registers something close() must stop first; returns the unregister function. */
  track(stop: () => Promise<void>): () => void {
    this.stoppers.add(stop);
    return () => this.stoppers.delete(stop);
  }

  private setConnected(connected: boolean): void {
    if (this.connected === connected) return;
    this.connected = connected;
    for (const listener of [...this.listeners]) {
      try {
        listener(connected);
      } catch (err) {
        this.log.error({ [LogKey.err]: err }, 'nats connection listener failed');
      }
    }
  }

  private async followStatus(): Promise<void> {
    for await (const s of this.nc.status()) this.onStatus(s);
  }

  private onStatus(s: Status): void {
    switch (s.type) {
      case 'disconnect':
        this.log.warn({ [LogKey.server]: redactUrl(s.server) }, 'nats disconnected');
        this.setConnected(false);
        break;
      case 'reconnect':
        this.log.info({ [LogKey.server]: redactUrl(s.server) }, 'nats reconnected');
        this.setConnected(true);
        break;
      case 'reconnecting':
        this.log.debug('nats reconnecting');
        break;
      case 'ldm':
        this.log.warn({ [LogKey.server]: redactUrl(s.server) }, 'nats server entering lame duck mode');
        break;
      case 'staleConnection':
        this.log.warn('nats connection stale');
        break;
      case 'slowConsumer':
        this.log.warn({ [LogKey.pending]: s.pending }, 'nats slow consumer');
        break;
      case 'error':
        this.log.warn({ [LogKey.err]: s.error }, 'nats async error');
        break;
      default:
        // ping, update, forceReconnect, close: nothing an operator needs per event.
        break;
    }
  }
}

/** Returns the implementation behind a handle; throws if it came from elsewhere. */
export function impl(handle: NatsHandle): NatsHandleImpl {
  if (handle instanceof NatsHandleImpl) return handle;
  throw new CertfleetError(ErrorCode.Internal, 'not a NatsHandle from connectNats');
}

/** Drops user:password from a server URL before it is logged. */
function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//');
}

/**
 * Connects to NATS and checks that JetStream answers.
 *
 * Fails fast: when no server accepts the connection at start, throws NATS_UNAVAILABLE
 * (retryable), so the binary's start-up retry decides what happens. Bad credentials →
 * UNAUTHENTICATED; an unreadable credentials file → CONFIG_UNREADABLE. Once connected,
 * the client reconnects forever (every 0.5 s) and logs "nats disconnected" /
 * "nats reconnected".
 */
export async function connectNats(opts: ConnectNatsOptions): Promise<NatsHandle> {
  // The daemons hand in a logger already bound to component "nats": bind it only when missing.
  const log = componentLogger(opts.log, 'nats');
  if (opts.servers.length === 0) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, 'no NATS server configured');
  }
  if ([opts.credentialsFile, opts.credentials, opts.token].filter((v) => v !== undefined).length > 1) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, 'NATS credentials file, credentials and token are mutually exclusive');
  }
  let authenticator: ReturnType<typeof credsAuthenticator> | undefined;
  if (opts.credentialsFile !== undefined) {
    const file = opts.credentialsFile;
    let last = readCreds(file);
    authenticator = credsAuthenticator(() => {
      // Keep the last good copy if a rotation is caught half-written.
      try {
        last = readCreds(file);
      } catch (err) {
        log.warn({ [LogKey.err]: err, [LogKey.file]: file }, 'nats credentials unreadable, using previous copy');
      }
      return last;
    });
  } else if (opts.credentials !== undefined) {
    authenticator = credsAuthenticator(new TextEncoder().encode(opts.credentials));
  }
  const timeout = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: opts.servers,
      name: opts.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: RECONNECT_WAIT_MS,
      reconnectJitter: 100,
      reconnectJitterTLS: 100,
      pingInterval: PING_INTERVAL_MS,
      maxPingOut: MAX_PINGS_OUT,
      timeout,
      // Without it every request (each KV put and JetStream publish) builds an Error up
      // front, for a stack trace of where it started should it fail: ~2 % of the
      // controller's thread in an issuance burst (issue #13). The errors a failure gives
      // are of the same classes (toNatsError reads their type and message, not the stack).
      noAsyncTraces: true,
      ...(authenticator === undefined ? {} : { authenticator }),
      ...(opts.token === undefined ? {} : { token: opts.token }),
      ...(opts.inboxPrefix === undefined ? {} : { inboxPrefix: opts.inboxPrefix }),
      ...(opts.tlsCaPem === undefined ? {} : { tls: { ca: opts.tlsCaPem } }),
    });
  } catch (err) {
    const e = toNatsError(err, `cannot connect to NATS at ${opts.servers.map(redactUrl).join(', ')}`);
    throw e.code === ErrorCode.NatsUnavailable || e.code === ErrorCode.Internal
      ? new CertfleetError(ErrorCode.NatsUnavailable, e.message, { cause: err, retryable: true })
      : e;
  }
  try {
    const js = jetstream(nc, { timeout });
    const jsm = await jetstreamManager(nc, { timeout, checkAPI: opts.checkJetStream ?? true });
    const handle = new NatsHandleImpl(opts.name, nc, js, jsm, new Kvm(js), log, timeout, opts.clock ?? systemClock);
    log.info({ [LogKey.server]: redactUrl(nc.getServer()), [LogKey.serverVersion]: nc.info?.version }, 'nats connected');
    return handle;
  } catch (err) {
    // A server that accepts the connection and then drops it for its credentials (an
    // expired or revoked user) says so in the close reason: report that, not JetStream.
    const closedBy = nc.isClosed() ? await nc.closed() : undefined;
    await nc.close().catch(() => undefined);
    if (closedBy instanceof Error) {
      const reason = toNatsError(closedBy, 'NATS closed the connection');
      if (reason.code === ErrorCode.Unauthenticated) throw reason;
    }
    throw toNatsError(err, 'JetStream is not available on the NATS server');
  }
}

/** Pause between the background attempts of {@link connectNatsWhenUp}. */
export const FIRST_CONNECT_RETRY_MS = 5000;

/**
 * Keeps calling {@link connectNats} every `retryMs` (default {@link FIRST_CONNECT_RETRY_MS},
 * timed by `opts.clock`) until a server accepts, and resolves with the handle; for a
 * process that went on without NATS when it was unreachable at start (an agent), which
 * otherwise never joined NATS later. Every error is retried (credentials can be fixed or
 * rotated meanwhile); each distinct one is logged once at warn. Resolves null once
 * `signal` aborts, closing a connection that completes after that.
 */
export async function connectNatsWhenUp(opts: ConnectNatsOptions & { retryMs?: number }, signal: AbortSignal): Promise<NatsHandle | null> {
  const clock = opts.clock ?? systemClock;
  const log = componentLogger(opts.log, 'nats');
  let lastError = '';
  while (!signal.aborted) {
    try {
      await clock.sleep(opts.retryMs ?? FIRST_CONNECT_RETRY_MS, signal);
    } catch {
      return null; // aborted
    }
    try {
      const handle = await connectNats(opts);
      if (!signal.aborted) return handle;
      await handle.close();
      return null;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== lastError) log.warn({ [LogKey.err]: message }, 'nats still unreachable; retrying in the background');
      lastError = message;
    }
  }
  return null;
}

function readCreds(file: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new CertfleetError(ErrorCode.ConfigUnreadable, `cannot read NATS credentials file ${file}`, { cause: err, details: { file } });
  }
}

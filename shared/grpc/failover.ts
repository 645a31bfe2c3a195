/**
 * A gRPC client that knows several controllers and moves between them on its own
 * (issue #12, HA spec decision 9). Used by the agent's link and the operator CLI.
 *
 * One generated client per address, built on first use; the index of the controller in
 * use. A call starts at that controller; when it fails in a way another controller may
 * not (below), it is tried on the next address, each address at most once per call,
 * and the controller that answered becomes the one in use ("remembered"). A controller
 * that failed is dropped (its channel closed) so that the next try builds a fresh
 * channel instead of waiting out grpc-js's reconnect backoff.
 *
 * ```
 *   attempt on address i
 *     wait for a ready connection (connectTimeoutMs) ──fails──> phase 'connect': next address
 *     send the call ──fails──> phase 'sent': failoverVerdict(error, 'sent', safety)
 *     answer ──> index = i (one onSwitch when it changed)
 * ```
 *
 * With several addresses a call first waits for a READY connection, so that "the
 * request never left" is known rather than guessed from error text: refused, reset
 * during the handshake, a TLS failure, or no handshake before `connectTimeoutMs` (a
 * paused process whose kernel still accepts) are all 'connect' failures, and trying the
 * next controller is safe for every call, even enrolment (a token sent nowhere was not
 * redeemed). With one address nothing is gained by waiting, and the call runs exactly
 * as a plain client's would (the same errors as before there was failover).
 */
import * as grpc from '@grpc/grpc-js';
import { systemClock, type Clock } from '../clock/index.js';
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { deadline, fromServiceError } from './status.js';

/**
 * Whether a call may be carried out twice.
 *
 * - `idempotent`: reads, and writes whose repetition changes nothing (an agent's status
 *   report replaces the previous one). After the request was sent, an unavailable
 *   controller (the connection dropped, no answer before the deadline, the controller
 *   stopping, its NATS or store unreachable) sends it to the next controller.
 * - `once`: everything else (enrolment redeems a one-time token; identity renewal signs
 *   a certificate and rotates the NATS user; an operator's renew, rollback, release,
 *   token create...). Once sent, only NOT_LEADER (the controller refused before doing
 *   anything) moves it to the next controller; any other failure is the caller's to
 *   retry, because the first controller may have carried it out.
 */
export type CallSafety = 'idempotent' | 'once';

/** Where an attempt failed: before the request left (no ready connection), or after. */
export type AttemptPhase = 'connect' | 'sent';

/** What to do after a failed attempt: try the next address, and leave this one (next call starts elsewhere). */
export interface FailoverVerdict {
  tryNext: boolean;
  leave: boolean;
}

/** Codes a controller answers when it cannot serve right now while another may. */
const SERVER_UNAVAILABLE: ReadonlySet<string> = new Set([ErrorCode.NatsUnavailable, ErrorCode.StoreUnavailable]);

/**
 * The failover decision for one failed attempt. Pure.
 *
 * - not connected (`connect`): next, for every call (nothing was sent);
 * - NOT_LEADER: next, for every call (the controller refused before doing anything);
 * - CONTROLLER_UNAVAILABLE after sending (connection lost, deadline, stopping): leave
 *   this controller; try the next one within the call only when `idempotent`;
 * - NATS_UNAVAILABLE / STORE_UNAVAILABLE from the controller: next when `idempotent`
 *   (another controller may reach them); a `once` call stays put (it answered);
 * - anything else (refused, not found, invalid): the answer, no failover.
 */
export function failoverVerdict(err: CertfleetError, phase: AttemptPhase, safety: CallSafety): FailoverVerdict {
  if (phase === 'connect' || err.code === ErrorCode.NotLeader) return { tryNext: true, leave: true };
  if (err.code === ErrorCode.ControllerUnavailable) return { tryNext: safety === 'idempotent', leave: true };
  if (SERVER_UNAVAILABLE.has(err.code) && safety === 'idempotent') return { tryNext: true, leave: true };
  return { tryNext: false, leave: false };
}

/** A switch from one controller to another, for one log line. */
export interface ControllerSwitch {
  from: string;
  to: string;
  /** Why `from` was left (the error's message), or 'answered' when `to` answered first. */
  reason: string;
}

export interface FailoverOptions<C extends grpc.Client> {
  /** host:port of each controller, in the order they are tried; non-empty. */
  addresses: readonly string[];
  /** Builds the generated client for one address (see {@link failoverChannelOptions}). */
  connect: (address: string) => C;
  /** How long an attempt waits for a connection before the next address; default 5 s. */
  connectTimeoutMs?: number;
  /** Clock of the connect deadline (grpc-js compares it with the wall clock). */
  clock?: Clock;
  /** Told each time the controller in use changes (once per switch). Must not throw. */
  onSwitch?: (s: ControllerSwitch) => void;
  /**
   * What an error message says a failed call was; default `what` with one address,
   * `<what> at <address>` with several.
   */
  label?: (what: string, address: string) => string;
}

/** Extra facts a call's `run` may report. */
export interface Attempt {
  /** The controller accepted the call (a stream opened): it becomes the one in use now. */
  opened(): void;
}

/**
 * Channel options for a failover client's channels: the TLS name when it differs from
 * the dialled host, and a subchannel pool of the channel's own, so that a channel built
 * after a failure connects at once instead of sharing the old one's reconnect backoff.
 *
 * Channelz off (`grpc.enable_channelz: 0`): grpc-js tracks every call of every channel,
 * subchannel and socket for its channelz service by default (counters, timestamps, a
 * trace), and no client here serves or reads channelz. That bookkeeping was up to ~10 % of an
 * agent's CPU per unary call (issue #13, docs/performance.md Fan-out). Client side only:
 * what the controller's server does is unchanged.
 */
export function failoverChannelOptions(serverName: string | undefined, extra: grpc.ChannelOptions = {}): grpc.ChannelOptions {
  const options: grpc.ChannelOptions = { ...extra, 'grpc.use_local_subchannel_pool': 1, 'grpc.enable_channelz': 0 };
  if (serverName !== undefined) {
    options['grpc.ssl_target_name_override'] = serverName;
    options['grpc.default_authority'] = serverName;
  }
  return options;
}

/** Default wait for a connection before trying the next controller. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

/**
 * Several controllers behind one client. Not safe to share across identities: after an
 * identity change call {@link rebuild}. Calls may run concurrently; each keeps its own
 * attempt order.
 */
export class FailoverClient<C extends grpc.Client> {
  readonly addresses: readonly string[];
  private readonly clients: Array<C | undefined>;
  private connectFn: (address: string) => C;
  private index = 0;
  private readonly connectTimeoutMs: number;
  private readonly clock: Clock;
  private readonly onSwitch: ((s: ControllerSwitch) => void) | undefined;
  private readonly label: (what: string, address: string) => string;

  constructor(opts: FailoverOptions<C>) {
    if (opts.addresses.length === 0) throw new CertfleetError(ErrorCode.UsageInvalid, 'a failover client needs at least one controller address');
    this.addresses = Object.freeze([...opts.addresses]);
    this.clients = this.addresses.map(() => undefined);
    this.connectFn = opts.connect;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.clock = opts.clock ?? systemClock;
    this.onSwitch = opts.onSwitch;
    this.label = opts.label ?? ((what, address) => (this.addresses.length > 1 ? `${what} at ${address}` : what));
  }

  /** The controller in use now (the next call starts there). */
  get address(): string {
    return this.addresses[this.index] ?? '';
  }

  /**
   * Runs `run` against the controller in use, failing over as {@link failoverVerdict}
   * says. `run` gets the client and rejects with the gRPC error as it came (a
   * CertfleetError passes through unchanged). Rejects with the CertfleetError of the
   * last attempt; with several addresses tried, its message names each address and
   * why it failed, and keeps the last code and retryability.
   */
  async call<T>(what: string, safety: CallSafety, run: (client: C, address: string, attempt: Attempt) => Promise<T>): Promise<T> {
    const n = this.addresses.length;
    const start = this.index;
    const failures: Array<{ address: string; err: CertfleetError }> = [];
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      const address = this.addresses[i] ?? '';
      const client = this.clientAt(i);
      let phase: AttemptPhase = 'connect';
      const attempt: Attempt = { opened: () => this.use(i, failures) };
      try {
        // One address: nothing to choose, so no separate wait (errors as a plain client's).
        if (n > 1) await waitReady(client, Math.max(1, this.connectTimeoutMs), this.clock, this.label(what, address));
        phase = 'sent';
        const result = await run(client, address, attempt);
        this.use(i, failures);
        return result;
      } catch (err) {
        const cf = err instanceof CertfleetError ? err : fromServiceError(err, this.label(what, address));
        const verdict = failoverVerdict(cf, phase, safety);
        failures.push({ address, err: cf });
        if (verdict.leave) this.drop(i, client);
        if (!verdict.tryNext || k === n - 1) {
          // A controller left by a call that may not move on: the next call starts elsewhere.
          if (verdict.leave && !verdict.tryNext && n > 1 && this.index === i) this.switchTo((i + 1) % n, cf.message);
          throw summarise(failures);
        }
      }
    }
    /* c8 ignore next */
    throw summarise(failures);
  }

  /**
   * Replaces how clients are built (a new identity's certificate) and closes every
   * channel; the next call builds its client anew. Calls in flight finish on the old
   * channels (grpc-js close() lets them). The controller in use stays.
   */
  rebuild(connect: (address: string) => C): void {
    this.connectFn = connect;
    for (let i = 0; i < this.clients.length; i++) this.drop(i, this.clients[i]);
  }

  /** Closes every channel. */
  close(): void {
    for (let i = 0; i < this.clients.length; i++) this.drop(i, this.clients[i]);
  }

  private clientAt(i: number): C {
    let c = this.clients[i];
    if (c === undefined) {
      c = this.connectFn(this.addresses[i] ?? '');
      this.clients[i] = c;
    }
    return c;
  }

  private drop(i: number, client: C | undefined): void {
    if (client === undefined) return;
    if (this.clients[i] === client) this.clients[i] = undefined;
    client.close();
  }

  /** Address `i` answered: it is the controller in use from now on. */
  private use(i: number, failures: ReadonlyArray<{ address: string; err: CertfleetError }>): void {
    if (i === this.index) return;
    const left = failures.find((f) => f.address === this.address);
    this.switchTo(i, left?.err.message ?? 'answered');
  }

  private switchTo(i: number, reason: string): void {
    if (i === this.index) return;
    const from = this.address;
    this.index = i;
    this.onSwitch?.({ from, to: this.address, reason });
  }
}

/** The error a call fails with: the only one, or every address's failure in one message. */
function summarise(failures: ReadonlyArray<{ address: string; err: CertfleetError }>): CertfleetError {
  const last = failures[failures.length - 1];
  if (last === undefined) return new CertfleetError(ErrorCode.Internal, 'no controller address was tried');
  if (failures.length === 1) return last.err;
  const message = `no controller answered (${failures.length} tried): ${failures.map((f) => f.err.message).join('; ')}`;
  return new CertfleetError(last.err.code, message, {
    cause: last.err,
    retryable: last.err.retryable,
    ...(last.err.retryAfterMs === undefined ? {} : { retryAfterMs: last.err.retryAfterMs }),
    ...(last.err.details === undefined ? {} : { details: last.err.details }),
  });
}

const { READY, TRANSIENT_FAILURE, SHUTDOWN } = grpc.connectivityState;

/**
 * Resolves once `client`'s channel is READY (starting a connection if idle); rejects
 * with CONTROLLER_UNAVAILABLE when it fails to connect (TRANSIENT_FAILURE: refused,
 * reset, TLS handshake failed), is closed, or is not ready within `ms`. The client is
 * dropped after a failure, so a failure state seen here is always this attempt's own.
 */
function waitReady(client: grpc.Client, ms: number, clock: Clock, what: string): Promise<void> {
  const channel = client.getChannel();
  const until = deadline(ms, clock);
  const fail = (why: string): CertfleetError =>
    new CertfleetError(ErrorCode.ControllerUnavailable, `${what}: controller unreachable (${why})`, { retryable: true });
  return new Promise<void>((resolve, reject) => {
    const check = (): void => {
      const state = channel.getConnectivityState(true);
      if (state === READY) return resolve();
      if (state === TRANSIENT_FAILURE) return reject(fail('no connection: refused, reset, or the TLS handshake failed'));
      if (state === SHUTDOWN) return reject(fail('the channel was closed'));
      channel.watchConnectivityState(state, until, (err) => {
        if (err) reject(fail(`no connection within ${ms} ms`));
        else check();
      });
    };
    check();
  });
}

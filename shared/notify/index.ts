/**
 * systemd `Type=notify` for both daemons: READY, STATUS, STOPPING and WATCHDOG, spoken
 * as the sd_notify protocol itself - one datagram of newline-separated `KEY=value`
 * lines sent to the AF_UNIX SOCK_DGRAM socket named by NOTIFY_SOCKET (a name starting
 * with '@' is an abstract socket: leading NUL, and the length is part of the name).
 *
 * Two transports, chosen once when the notifier is created:
 *   * our own 100-line Node-API addon (./native). It ships prebuilt for linux-x64 and
 *     linux-arm64 (native/prebuilds, made by native/build-prebuilds.sh), so `npm ci`
 *     compiles nothing on those; elsewhere its install script compiles it with node-gyp.
 *     Datagrams leave from the daemon's own PID, as NotifyAccess=main requires.
 *   * the fallback when the addon does not load (another CPU and no compiler): the
 *     `systemd-notify --pid=<ours>` command, one process per message, run one at a time
 *     so messages keep their order. systemd-notify waits until systemd has read the
 *     message (BARRIER=1), so systemd can still tell which service sent it. Run as root
 *     it sends with our PID (NotifyAccess=main works); as another user the sender is the
 *     helper, and the unit needs NotifyAccess=all (docs/operations.md).
 *
 * Why not a package: Node's core has no unix datagram sockets and there is no pure-JS
 * way to make one; `unix-dgram` (npm) copies the address with strncpy and passes
 * sizeof(sockaddr_un) as its length, so it cannot reach an abstract socket (tried:
 * ECONNREFUSED against a real one); `sd-notify` (npm) links libsystemd (headers on every
 * node), uses the V8 API (rebuilt per Node major) and has no receive side for tests. Ours
 * is ABI-stable, speaks both address kinds, and has a receive side that reports the
 * sender's PID, so tests play systemd with the same code.
 *
 * Nothing is loaded unless NOTIFY_SOCKET is set: outside systemd nothing here can fail.
 * Sending never blocks the event loop; a failed send is logged (once per failure streak)
 * and never thrown - a daemon does not stop serving because systemd is being re-executed.
 *
 * Watchdog: when WATCHDOG_USEC is set (and WATCHDOG_PID is unset or ours), WATCHDOG=1
 * is sent every WATCHDOG_USEC/2 from a timer on the event loop - a stuck loop stops the
 * pings, which is the point - and only while the daemon's health check passes.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { LogKey, type Logger } from '../log/index.js';
import { systemClock, type Clock, type Timer } from '../clock/index.js';
import { CertfleetError, ErrorCode } from '../errors/index.js';

/** What systemd told this process, read from its environment by the binaries' config. */
export interface NotifySettings {
  /** NOTIFY_SOCKET: an absolute path or '@abstract'; undefined outside Type=notify. */
  readonly socket: string | undefined;
  /** WATCHDOG_USEC in microseconds; undefined when no watchdog is configured. */
  readonly watchdogUsec: number | undefined;
  /** WATCHDOG_PID: the process the watchdog is meant for; undefined means "the main process". */
  readonly watchdogPid: number | undefined;
}

function positiveInt(v: string | undefined): number | undefined {
  if (v === undefined || !/^[0-9]+$/.test(v.trim())) return undefined;
  const n = Number(v.trim());
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from `env` (never from process.env
 * itself: config modules pass it). Empty or malformed numbers read as unset, as
 * libsystemd's sd_watchdog_enabled does.
 */
export function notifySettingsFrom(env: NodeJS.ProcessEnv): NotifySettings {
  const socket = env['NOTIFY_SOCKET'];
  return {
    socket: socket === undefined || socket === '' ? undefined : socket,
    watchdogUsec: positiveInt(env['WATCHDOG_USEC']),
    watchdogPid: positiveInt(env['WATCHDOG_PID']),
  };
}

/**
 * Reads the settings from `env`, then deletes the three variables from it, as
 * libsystemd's sd_notify(unset_environment=1) does: reload hooks and other children
 * inherit the environment, and must neither notify on our behalf (systemd rejects them
 * under NotifyAccess=main, with a log line each time) nor think the watchdog is theirs.
 */
export function takeNotifySettings(env: NodeJS.ProcessEnv): NotifySettings {
  const settings = notifySettingsFrom(env);
  delete env['NOTIFY_SOCKET'];
  delete env['WATCHDOG_USEC'];
  delete env['WATCHDOG_PID'];
  return settings;
}

/**
 * The sockaddr_un path bytes for a NOTIFY_SOCKET value: '@name' → NUL + name (exact
 * length), '/path' → path + NUL. Throws CONFIG_INVALID for anything else (relative
 * paths, `vsock:` addresses we cannot speak, names longer than sun_path's 108 bytes).
 */
export function socketAddress(socket: string): Buffer {
  let addr: Buffer;
  if (socket.startsWith('@')) addr = Buffer.concat([Buffer.from([0]), Buffer.from(socket.slice(1), 'utf8')]);
  else if (socket.startsWith('/')) addr = Buffer.concat([Buffer.from(socket, 'utf8'), Buffer.from([0])]);
  else throw new CertfleetError(ErrorCode.ConfigInvalid, `NOTIFY_SOCKET=${socket}: only absolute paths and @abstract names are supported`);
  if (addr.length > 108 || socket.includes('\0') || socket.length < 2) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, `NOTIFY_SOCKET=${socket}: not a valid unix socket name`);
  }
  return addr;
}

/** The addon's surface (native/sd_notify.c): every call returns -errno on failure. */
export interface DatagramBinding {
  socket(): number;
  sendto(fd: number, address: Buffer, data: Buffer): number;
  bind(fd: number, address: Buffer): number;
  recv(fd: number): { data: Buffer; pid: number } | number;
  close(fd: number): number;
}

let binding: DatagramBinding | undefined;

/** Loads the native transport. Throws INTERNAL when no addon loads (no prebuild for this CPU, and none compiled). */
export function datagramBinding(): DatagramBinding {
  if (binding) return binding;
  try {
    binding = createRequire(import.meta.url)('certfleet-sd-notify') as DatagramBinding;
  } catch (err) {
    throw new CertfleetError(
      ErrorCode.Internal,
      `the sd_notify addon does not load (no prebuilt one for ${process.platform}-${process.arch} and none compiled; "npm rebuild certfleet-sd-notify" compiles one with python3, make and a C compiler): ${(err as Error).message}`,
      { cause: err },
    );
  }
  return binding;
}

/** Where Debian (and every other systemd distribution) installs the command; /bin is /usr/bin. */
export const SYSTEMD_NOTIFY = '/usr/bin/systemd-notify';

function errnoMessage(rc: number): string {
  const names: Record<number, string> = { 2: 'ENOENT', 11: 'EAGAIN', 13: 'EACCES', 111: 'ECONNREFUSED', 22: 'EINVAL', 36: 'ENAMETOOLONG', 98: 'EADDRINUSE' };
  return names[-rc] ?? `errno ${-rc}`;
}

/**
 * A bound AF_UNIX datagram socket that receives, for tests that play systemd (and for
 * nothing else). `address` is a NOTIFY_SOCKET-style name ('/path' or '@abstract').
 * Throws INTERNAL when the socket cannot be made or bound.
 */
export class DatagramReceiver {
  private readonly fd: number;
  private constructor(fd: number) {
    this.fd = fd;
  }

  static bind(address: string): DatagramReceiver {
    const b = datagramBinding();
    const fd = b.socket();
    if (fd < 0) throw new CertfleetError(ErrorCode.Internal, `socket: ${errnoMessage(fd)}`);
    const rc = b.bind(fd, socketAddress(address));
    if (rc < 0) {
      b.close(fd);
      throw new CertfleetError(ErrorCode.Internal, `bind ${address}: ${errnoMessage(rc)}`);
    }
    return new DatagramReceiver(fd);
  }

  /** The next queued datagram and its sender's PID, or null when none is queued. */
  receive(): { data: Buffer; pid: number } | null {
    const r = datagramBinding().recv(this.fd);
    if (typeof r !== 'number') return r;
    if (r === -11) return null;
    throw new CertfleetError(ErrorCode.Internal, `recv: ${errnoMessage(r)}`);
  }

  close(): void {
    datagramBinding().close(this.fd);
  }
}

/** Answers whether the daemon is healthy: null when it is, else a short reason. Must be cheap and synchronous. */
export type HealthCheck = () => string | null;

/** Options of {@link createNotifier}. */
export interface NotifierOptions {
  settings: NotifySettings;
  log: Logger;
  /** Gates WATCHDOG pings; default: always healthy (only a stuck event loop stops the pings). */
  health?: HealthCheck;
  /** A one-line summary, asked every `statusIntervalMs` after ready(); sent when it changed. */
  summary?: () => string;
  /** Default 30 s. */
  statusIntervalMs?: number;
  /** This process's PID, compared with WATCHDOG_PID; default process.pid. */
  pid?: number;
  /** Loads the addon; default {@link datagramBinding}. Tests pass one that throws to get the fallback. */
  loadBinding?: () => DatagramBinding;
  /** The systemd-notify command used when the addon does not load; default {@link SYSTEMD_NOTIFY}. */
  systemdNotify?: string;
  /** Times the watchdog pings and the summary; default systemClock (its timers are unref'd). */
  clock?: Clock;
}

/** A daemon's channel to systemd. Every method is a no-op when NOTIFY_SOCKET is unset, and none throws. */
export interface Notifier {
  /** True when NOTIFY_SOCKET is set. */
  readonly enabled: boolean;
  /** How messages leave: 'addon' (our datagram socket), 'systemd-notify' (the fallback), or null when disabled. */
  readonly transport: 'addon' | 'systemd-notify' | null;
  /** Milliseconds between watchdog pings (WATCHDOG_USEC/2), or null without a watchdog for us. */
  readonly watchdogIntervalMs: number | null;
  /** READY=1 (with STATUS when given); starts the watchdog and the periodic summary. */
  ready(status?: string): void;
  /** STATUS=line, sent only when it differs from the last one sent. */
  status(line: string): void;
  /** STOPPING=1 (with STATUS); stops the watchdog and the summary: a slow shutdown is TimeoutStopSec's business. */
  stopping(status?: string): void;
  /** Stops the timers and closes the socket. */
  close(): void;
}

/** One STATUS value: a newline would start another assignment (MAINPID=...), so it becomes a space. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').trim();
}

/**
 * Creates the notifier. Throws CONFIG_INVALID for a NOTIFY_SOCKET we cannot speak and
 * INTERNAL when the addon is missing: under Type=notify either would otherwise end in a
 * start timeout with no reason given, so the daemon fails at once and says why.
 */
export function createNotifier(opts: NotifierOptions): Notifier {
  const { settings, log } = opts;
  if (settings.socket === undefined) {
    log.debug('NOTIFY_SOCKET unset: not running as a systemd Type=notify service');
    return {
      enabled: false,
      transport: null,
      watchdogIntervalMs: null,
      ready: () => undefined,
      status: () => undefined,
      stopping: () => undefined,
      close: () => undefined,
    };
  }
  const address = socketAddress(settings.socket);
  const pid = opts.pid ?? process.pid;
  const transport = openTransport(settings.socket, address, pid, opts);
  if (transport.kind === 'systemd-notify') {
    log.warn(
      { [LogKey.reason]: transport.why },
      'sd_notify addon unavailable: using systemd-notify (needs NotifyAccess=all unless the daemon runs as root)',
    );
  }

  const forUs = settings.watchdogPid === undefined || settings.watchdogPid === pid;
  const watchdogIntervalMs = settings.watchdogUsec !== undefined && forUs ? Math.max(1, Math.floor(settings.watchdogUsec / 2000)) : null;
  let closed = false;
  let failing = false;
  let lastStatus: string | undefined;
  let unhealthy: string | null = null;
  const clock = opts.clock ?? systemClock;
  const timers: Timer[] = [];

  const report = (error: string | null): void => {
    if (error !== null) {
      if (!failing) log.warn({ [LogKey.socket]: settings.socket, [LogKey.reason]: error }, 'sd_notify send failed');
      failing = true;
    } else if (failing) {
      failing = false;
      log.info({ [LogKey.socket]: settings.socket }, 'sd_notify send works again');
    }
  };
  const send = (text: string): void => {
    if (closed) return;
    transport.send(text, report);
  };
  const statusLine = (s: string | undefined): string => {
    if (s === undefined) return '';
    lastStatus = oneLine(s);
    return `\nSTATUS=${lastStatus}`;
  };
  const stopTimers = (): void => {
    for (const t of timers.splice(0)) t.stop();
  };

  const ping = (): void => {
    const reason = opts.health ? opts.health() : null;
    if (reason === null) {
      if (unhealthy !== null) log.info('healthy again: watchdog pings resume');
      unhealthy = null;
      send('WATCHDOG=1');
      return;
    }
    if (unhealthy === null) {
      // Withholding the ping is the whole remedy: systemd restarts the daemon after
      // WatchdogSec. The STATUS says why, for `systemctl status`.
      log.error({ [LogKey.reason]: reason }, 'unhealthy: watchdog pings withheld');
      send(`STATUS=${oneLine(`unhealthy: ${reason}`)}`);
      lastStatus = undefined;
    }
    unhealthy = reason;
  };

  const status = (line: string): void => {
    const l = oneLine(line);
    if (closed || l === lastStatus) return;
    lastStatus = l;
    send(`STATUS=${l}`);
  };

  let started = false;
  return {
    enabled: true,
    transport: transport.kind,
    watchdogIntervalMs,
    ready(line) {
      if (closed) return;
      send(`READY=1${statusLine(line)}`);
      if (started) return;
      started = true;
      if (watchdogIntervalMs !== null) {
        timers.push(clock.every(watchdogIntervalMs, ping).unref());
        log.info({ [LogKey.intervalMs]: watchdogIntervalMs }, 'systemd watchdog pings started');
      }
      const summary = opts.summary;
      if (summary) {
        const every = opts.statusIntervalMs ?? 30_000;
        timers.push(
          clock
            .every(every, () => {
              if (unhealthy === null) status(summary());
            })
            .unref(),
        );
      }
    },
    status,
    stopping(line) {
      stopTimers();
      send(`STOPPING=1${statusLine(line)}`);
    },
    close() {
      stopTimers();
      if (closed) return;
      closed = true;
      transport.close();
    },
  };
}

/** One way of getting a message to systemd. `send` never throws; it reports the outcome (null: sent), maybe later. */
interface Transport {
  kind: 'addon' | 'systemd-notify';
  /** Why the addon was not used (systemd-notify only). */
  why?: string;
  send(text: string, report: (error: string | null) => void): void;
  close(): void;
}

function openTransport(socket: string, address: Buffer, pid: number, opts: NotifierOptions): Transport {
  let b: DatagramBinding;
  try {
    b = (opts.loadBinding ?? datagramBinding)();
  } catch (err) {
    const command = opts.systemdNotify ?? SYSTEMD_NOTIFY;
    try {
      fs.accessSync(command, fs.constants.X_OK);
    } catch {
      throw new CertfleetError(
        ErrorCode.Internal,
        `NOTIFY_SOCKET is set, but neither the sd_notify addon nor ${command} is available: ${(err as Error).message}`,
        { cause: err },
      );
    }
    return commandTransport(command, socket, pid, (err as Error).message);
  }
  const fd = b.socket();
  if (fd < 0) throw new CertfleetError(ErrorCode.Internal, `sd_notify socket: ${errnoMessage(fd)}`);
  return {
    kind: 'addon',
    send(text, report) {
      const rc = b.sendto(fd, address, Buffer.from(text, 'utf8'));
      report(rc < 0 ? errnoMessage(rc) : null);
    },
    close() {
      b.close(fd);
    },
  };
}

/** How long one systemd-notify may take (it waits for systemd to read the message). */
const COMMAND_TIMEOUT_MS = 10_000;

/**
 * The fallback: `systemd-notify --pid=<pid> KEY=value...`, one at a time (a queue), so
 * READY is never overtaken by the STATUS sent after it. Only NOTIFY_SOCKET is passed on,
 * explicitly (the daemon removed it from its own environment).
 */
function commandTransport(command: string, socket: string, pid: number, why: string): Transport {
  let queue: Promise<void> = Promise.resolve();
  return {
    kind: 'systemd-notify',
    why,
    send(text, report) {
      const args = [`--pid=${pid}`, ...text.split('\n')];
      queue = queue.then(
        () =>
          new Promise<void>((resolve) => {
            execFile(command, args, { env: { NOTIFY_SOCKET: socket }, timeout: COMMAND_TIMEOUT_MS }, (err, _stdout, stderr) => {
              report(err ? `${command}: ${stderr.trim() || err.message}` : null);
              resolve();
            });
          }),
      );
    },
    close() {
      // Messages already queued still go (STOPPING=1 is usually the last one).
    },
  };
}

/**
 * A real HAProxy (Debian's /usr/sbin/haproxy) for tests, from a private directory: its
 * configuration, pid file and sockets live there, its one TLS frontend listens on a
 * loopback port and answers every request itself (`http-request return`), so no backend
 * is needed.
 *
 * Two ways to run it, as operators do:
 *  - daemon (`-D -p <pid file>`), started and reloaded by {@link haproxyReloadCommand}:
 *    the classic `haproxy -D -p PID -sf OLD` reload, the command an agent's fallback runs;
 *  - master-worker in the foreground (`-W -S <master socket> -db`), by {@link startHaproxyMaster}.
 *
 * Every pid file of a daemon started from a directory written by writeHaproxyConfig is
 * remembered, and whatever runs from it is killed when the test process exits.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { eventually, startProcess, waitForPort, type Started } from './process.js';

export interface HaproxySetup {
  /** Directory for the configuration, pid file and sockets (a test's own temp dir). */
  dir: string;
  host: string;
  port: number;
  /** `crt` argument: a directory (HAProxy loads every file in it) or one PEM file. */
  crt: string;
  /** Level of the stats socket; default admin. */
  statsLevel?: 'admin' | 'operator' | 'user';
}

export interface HaproxyFiles {
  config: string;
  pidFile: string;
  statsSocket: string;
  masterSocket: string;
}

const pidFiles = new Set<string>();
/** Every daemon pid seen: a process replaced by a reload may still finish its connections. */
const seenPids = new Set<number>();

/** The HAProxy binary: `$CERTFLEET_HAPROXY`, else /usr/sbin/haproxy. Fails (never skips) when missing. */
export function haproxyBinary(): string {
  const bin = process.env['CERTFLEET_HAPROXY'] ?? '/usr/sbin/haproxy';
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`haproxy not found at ${bin}: install the Debian package haproxy (or set CERTFLEET_HAPROXY)`);
  }
  return bin;
}

/** Writes `<dir>/haproxy.cfg` for one TLS frontend on `host:port` with a stats socket. */
export function writeHaproxyConfig(setup: HaproxySetup): HaproxyFiles {
  if (!setup.host.startsWith('127.')) throw new Error(`tests listen on loopback only, not ${setup.host}`);
  const files: HaproxyFiles = {
    config: path.join(setup.dir, 'haproxy.cfg'),
    pidFile: path.join(setup.dir, 'haproxy.pid'),
    statsSocket: path.join(setup.dir, 'admin.sock'),
    masterSocket: path.join(setup.dir, 'master.sock'),
  };
  fs.writeFileSync(
    files.config,
    [
      'global',
      `  stats socket ${files.statsSocket} mode 600 level ${setup.statsLevel ?? 'admin'}`,
      'defaults',
      '  mode http',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      'frontend tls',
      `  bind ${setup.host}:${setup.port} ssl crt ${setup.crt}`,
      '  http-request return status 200 content-type text/plain string ok',
      '',
    ].join('\n'),
  );
  pidFiles.add(files.pidFile);
  return files;
}

/**
 * A shell command that starts the daemon, or reloads it when it runs (`-sf <old pid>`: the
 * old process stops listening and finishes its open connections), and returns once only
 * the new process listens on the port, so a handshake right after it sees the new
 * configuration and certificates. Exits non-zero with HAProxy's messages when the
 * configuration or a certificate is refused.
 */
export function haproxyReloadCommand(files: HaproxyFiles, port: number): string {
  const bin = haproxyBinary();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return [
    `old=$(cat '${files.pidFile}' 2>/dev/null || true)`,
    `if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then '${bin}' -f '${files.config}' -D -p '${files.pidFile}' -sf "$old" || exit 1; else '${bin}' -f '${files.config}' -D -p '${files.pidFile}' || exit 1; fi`,
    // Listening sockets of the port in state 0A (LISTEN); with -sf there are two until
    // the old process has stopped listening.
    'i=0',
    `while [ "$(awk '$2 ~ /:${hexPort}$/ && $4 == "0A"' /proc/net/tcp | wc -l)" != 1 ]; do i=$((i+1)); [ $i -lt 500 ] || { echo 'old haproxy still listening' >&2; exit 1; }; sleep 0.01; done`,
  ].join('\n');
}

/** The pid in `pidFile` when that process runs, else undefined. */
export function haproxyPid(files: HaproxyFiles): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(files.pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || !processRuns(pid)) return undefined;
  seenPids.add(pid);
  return pid;
}

/** True while `pid` is a live process (not a zombie). */
export function processRuns(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Stops the daemon started from `files` (SIGTERM), if it runs. */
export function stopHaproxy(files: HaproxyFiles): void {
  const pid = haproxyPid(files);
  if (pid !== undefined) process.kill(pid, 'SIGTERM');
}

/** Starts HAProxy in master-worker mode in the foreground (`-W -S <masterSocket> -db`); resolves once it listens and its master CLI is there. */
export async function startHaproxyMaster(files: HaproxyFiles, host: string, port: number): Promise<Started> {
  const proc = startProcess('haproxy', haproxyBinary(), ['-W', '-S', `${files.masterSocket},mode,600`, '-f', files.config, '-db']);
  await waitForPort(host, port, 15_000, proc);
  // The listeners are bound before the master CLI listens and before the worker is up.
  await eventually('a worker listed by the master CLI', async () => /# workers\n\d+\s+worker/.test(await cliCommand(files.masterSocket, 'show proc')), 15_000, 20);
  return proc;
}

/** One command over a HAProxy CLI socket; resolves with the answer, rejects when the socket does not answer. */
export function cliCommand(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let answer = '';
    const conn = net.createConnection(socket, () => conn.end(`${command}\n`));
    conn.on('data', (d: Buffer) => (answer += d.toString('utf8')));
    conn.once('error', reject);
    conn.once('close', (hadError) => {
      if (!hadError) resolve(answer);
    });
  });
}

// Daemons are not our children: kill what still runs from a remembered pid file. Runs
// before other exit listeners (tempDir's removal would delete the pid file first).
process.prependListener('exit', () => {
  const pids = new Set(seenPids);
  for (const file of pidFiles) {
    try {
      pids.add(Number(fs.readFileSync(file, 'utf8').trim()));
    } catch {
      // No pid file: nothing started from there.
    }
  }
  for (const pid of pids) {
    try {
      // Only a haproxy: a pid seen earlier may belong to another process by now.
      if (pid > 0 && processRuns(pid) && fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'haproxy') process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

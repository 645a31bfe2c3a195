/**
 * A real nginx (Debian's /usr/sbin/nginx) for tests, run from a private prefix directory.
 *
 * Everything nginx writes lives under the prefix: the pid file and error log in
 * `<prefix>/logs/`, every *_temp_path in `<prefix>/temp/`; access logs are off. nginx
 * always runs as a daemon with a pid file, the way an operator runs it, because agents
 * reload it by running a shell command (nginxReloadCommand) and that same command must
 * also START nginx on a first install: nginx cannot start before a certificate exists,
 * and a command that starts a foreground nginx would never return.
 *
 * The reload command is the shipped hook, deploy/nginx-reload.sh, run from the source
 * tree: what the suite exercises is what operators install. Reloads are synchronous:
 * `nginx -s reload` (SIGHUP) returns before the master has even read the new
 * configuration, and old workers keep accepting connections with the old certificate
 * until they are told to quit. The agent verifies the served certificate right after its
 * hook returns, so the script waits until every worker that existed before the reload has
 * gone and a new one is running (its header says how). `worker_shutdown_timeout` bounds
 * how long an old worker may linger on an idle keep-alive connection.
 *
 * Every prefix passed to writeNginxConfig is remembered; when the test process exits
 * (even on failure) any nginx still running from one of them — whether the test or an
 * agent's hook started it — is killed with its workers, so a failed run leaves nothing
 * listening.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** One TLS `server` block. */
export interface NginxServer {
  /** `127.x.y.z:port` (or `[::1]:port`): tests listen on loopback only. */
  listen: string;
  /** Names this block answers for (SNI); the first server for a listen address is its default. */
  serverNames: string[];
  /** Absolute paths; nginx reads them (as root when the test runs as root) on start and on every reload. */
  certFile: string;
  keyFile: string;
}

/** A running nginx started by startNginx. */
export interface RunningNginx {
  /** Runs nginxReloadCommand; resolves once new connections get the new configuration. Rejects with nginx's errors. */
  reload(): Promise<void>;
  /** Fast shutdown (SIGTERM); resolves when the master and its workers are gone. Idempotent. */
  stop(): Promise<void>;
  /** The master's pid now (it changes only if nginx was stopped and started again, e.g. by a hook). */
  pid(): number;
}

/** deploy/nginx-reload.sh in the source tree; this file runs compiled, from dist/test/harness/. */
export const SHIPPED_RELOAD_SCRIPT = fileURLToPath(new URL('../../../deploy/nginx-reload.sh', import.meta.url));
const prefixes = new Set<string>();
const lastKnownMaster = new Map<string, number>();

/**
 * The nginx binary: `$CERTFLEET_NGINX`, else /usr/sbin/nginx. Fails (never skips) when it
 * is missing, naming the Debian package.
 */
export function nginxBinary(): string {
  const bin = process.env['CERTFLEET_NGINX'] ?? '/usr/sbin/nginx';
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`nginx not found at ${bin}: install the Debian package nginx-light (or set CERTFLEET_NGINX)`);
  }
  return bin;
}

function pidFile(prefix: string): string {
  return path.join(prefix, 'logs', 'nginx.pid');
}

function errorLog(prefix: string): string {
  return path.join(prefix, 'logs', 'error.log');
}

// nginx config strings are double-quoted; a path with a quote, backslash, `$` (nginx
// would treat it as a variable) or a control character is a test bug, not something to escape.
function quoted(value: string, what: string): string {
  if (!path.isAbsolute(value)) throw new Error(`nginx ${what} must be an absolute path: ${value}`);
  if (/["\\$\u0000-\u001f;{}]/.test(value)) throw new Error(`nginx ${what} has characters the harness refuses: ${JSON.stringify(value)}`);
  return `"${value}"`;
}

function checkListen(listen: string): void {
  const m = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) throw new Error(`nginx listen must be a loopback address:port, got ${JSON.stringify(listen)}`);
}

// Debian's packages differ in which modules they build: a *_temp_path directive of a
// module that is not compiled in is a configuration error, and one that is compiled in
// but left unset points outside the prefix (/var/lib/nginx), which a non-root run cannot create.
let compiledTempPaths: string[] | undefined;
function tempPathDirectives(): string[] {
  if (compiledTempPaths !== undefined) return compiledTempPaths;
  const version = spawnSync(nginxBinary(), ['-V'], { encoding: 'utf8' });
  if (version.status !== 0) throw new Error(`nginx -V failed: ${version.stderr}`);
  const configure = `${version.stdout}${version.stderr}`;
  compiledTempPaths = ['client_body', ...['proxy', 'fastcgi', 'uwsgi', 'scgi'].filter((m) => !configure.includes(`--without-http_${m}_module`))];
  return compiledTempPaths;
}

/**
 * Writes `<prefix>/nginx.conf` for `servers` and returns its path. Creates the prefix's
 * `logs/` and `temp/` (0700). Remembers the prefix so that an nginx running from it is
 * killed when the test process exits. Throws on a non-loopback listen address, a relative
 * path, or characters the harness refuses in a path.
 *
 * When the test runs as root the config says `user root;`: the master loads the
 * certificates, but workers would otherwise run as `nobody` and could not open anything
 * under the 0700 root-owned prefix or the agent's 0600 key files should a directive need
 * them at run time. Acceptable in tests only. As another user the directive is left out
 * (nginx ignores it with a warning) and workers run as that user.
 */
export function writeNginxConfig(opts: { prefix: string; servers: NginxServer[] }): string {
  if (!path.isAbsolute(opts.prefix)) throw new Error(`nginx prefix must be absolute: ${opts.prefix}`);
  if (opts.servers.length === 0) throw new Error('nginx needs at least one server');
  const prefix = path.resolve(opts.prefix);
  const logs = path.join(prefix, 'logs');
  const temp = path.join(prefix, 'temp');
  fs.mkdirSync(logs, { recursive: true, mode: 0o700 });
  fs.mkdirSync(temp, { recursive: true, mode: 0o700 });
  prefixes.add(prefix);

  const lines: string[] = [
    '# Written by test/harness/nginx.ts; every path nginx writes is under this prefix.',
    'worker_processes 1;',
    `pid ${quoted(pidFile(prefix), 'pid file')};`,
    `error_log ${quoted(errorLog(prefix), 'error log')} notice;`,
    // An old worker holding an idle keep-alive connection would otherwise delay the end of a reload by up to keepalive_timeout.
    'worker_shutdown_timeout 2s;',
  ];
  if (process.getuid?.() === 0) lines.push('user root;');
  lines.push('events {', '  worker_connections 256;', '}', 'http {', '  access_log off;', '  keepalive_timeout 5s;');
  for (const name of tempPathDirectives()) {
    lines.push(`  ${name}_temp_path ${quoted(path.join(temp, name), 'temp path')};`);
  }
  for (const server of opts.servers) {
    checkListen(server.listen);
    if (server.serverNames.length === 0) throw new Error(`nginx server on ${server.listen} needs at least one server name`);
    const names = server.serverNames.map((n) => {
      if (!/^[A-Za-z0-9*._-]+$/.test(n)) throw new Error(`nginx server name refused: ${JSON.stringify(n)}`);
      return n;
    });
    lines.push(
      '  server {',
      `    listen ${server.listen} ssl;`,
      `    server_name ${names.join(' ')};`,
      `    ssl_certificate ${quoted(server.certFile, 'certificate path')};`,
      `    ssl_certificate_key ${quoted(server.keyFile, 'key path')};`,
      '    return 204;',
      '  }',
    );
  }
  lines.push('}', '');
  const confPath = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(confPath, lines.join('\n'), { mode: 0o600 });
  return confPath;
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The exact shell command a reload hook runs for the nginx at `confPath`/`prefix`: the
 * shipped deploy/nginx-reload.sh with the harness's nginx binary (nginxBinary) in `NGINX`.
 * The script runs `nginx -t` (a failed test fails the command, nginx untouched), then a
 * reload - or a start when nginx is not running yet (first install: it cannot start before
 * a certificate exists). It returns once new connections are served by workers that
 * loaded the new configuration, so the agent can verify the served certificate right
 * away; it exits non-zero, with nginx's messages on stderr, when the test, the start or
 * the reload fails, or when the workers are not replaced within 15 s.
 *
 * The command is one plain simple command (`/usr/bin/env NGINX=... script CONF PREFIX`),
 * never `NGINX=... script`: test hooks wrap it as `exec <command>` or `<command> || exit`,
 * and after `exec` a leading assignment is taken for the program name ("exec:
 * NGINX=/usr/sbin/nginx: not found" - why the first switch to the shipped script was
 * reverted).
 */
export function nginxReloadCommand(confPath: string, prefix: string): string {
  return ['/usr/bin/env', `NGINX=${nginxBinary()}`, SHIPPED_RELOAD_SCRIPT, path.resolve(confPath), path.resolve(prefix)].map(shellQuote).join(' ');
}

interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
}

function procStat(pid: number): ProcStat | undefined {
  let line: string;
  try {
    line = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
  const fields = line.slice(line.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', ppid: Number(fields[1]), pgrp: Number(fields[2]) };
}

// A zombie has exited and closed its sockets; nginx's master is reparented to init,
// and init on a test machine may reap late (or never), so a zombie counts as gone.
function isLive(pid: number): boolean {
  const st = procStat(pid);
  return st !== undefined && !/^[ZXx]/.test(st.state);
}

function childrenOf(parent: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = procStat(Number(entry));
    if (st && st.ppid === parent && !/^[ZXx]/.test(st.state)) out.push(Number(entry));
  }
  return out;
}

/** The live nginx master named by `<prefix>/logs/nginx.pid`, or undefined. */
function masterPid(prefix: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(pidFile(prefix), 'utf8').trim();
  } catch {
    return undefined;
  }
  const pid = Number(text);
  if (!/^\d+$/.test(text) || !isNginxMaster(pid)) return undefined;
  lastKnownMaster.set(prefix, pid);
  return pid;
}

// A stale pid file may name a pid the kernel has since given to another process.
function isNginxMaster(pid: number): boolean {
  if (!isLive(pid)) return false;
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('nginx: master process');
  } catch {
    return false;
  }
}

function errorLogTail(prefix: string): string {
  try {
    return fs.readFileSync(errorLog(prefix), 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no error log)';
  }
}

function runShell(command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('/bin/sh', ['-c', command], { timeout: 60_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`${command} failed: ${err.message}\n${stderr}`, { cause: err }));
      else resolve();
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function killTree(pid: number): void {
  const st = procStat(pid);
  if (st === undefined) return;
  const targets = st.pgrp === pid ? [-pid] : [...childrenOf(pid), pid];
  for (const target of targets) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Stops the nginx running from `prefix`, whoever started it (a test or an agent's hook):
 * SIGTERM, wait for the master and its workers, SIGKILL the lot after `graceMs`
 * (default 10 s). Resolves immediately when none is running.
 */
export async function stopNginx(prefix: string, graceMs = 10_000): Promise<void> {
  const dir = path.resolve(prefix);
  const pid = masterPid(dir);
  if (pid === undefined) return;
  const tree = [pid, ...childrenOf(pid)];
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const until = Date.now() + graceMs;
  while (tree.some(isLive)) {
    if (Date.now() > until) {
      killTree(pid);
      for (const p of tree) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      while (tree.some(isLive)) await sleep(20);
      break;
    }
    await sleep(20);
  }
  lastKnownMaster.delete(dir);
}

/**
 * Starts nginx as a daemon from `prefix` with the config at `confPath`, by running
 * nginxReloadCommand (so tests exercise the very command hooks run). Resolves once a
 * master and a worker are running; rejects with nginx's messages when the configuration
 * is invalid or nginx cannot start, and when an nginx is already running from `prefix`.
 */
export async function startNginx(confPath: string, prefix: string): Promise<RunningNginx> {
  const dir = path.resolve(prefix);
  prefixes.add(dir);
  const already = masterPid(dir);
  if (already !== undefined) throw new Error(`an nginx is already running from ${dir} (pid ${already})`);
  await runShell(nginxReloadCommand(confPath, dir));
  const first = masterPid(dir);
  if (first === undefined) throw new Error(`nginx started but no master is running from ${dir}:\n${errorLogTail(dir)}`);
  return {
    reload: () => runShell(nginxReloadCommand(confPath, dir)),
    stop: () => stopNginx(dir),
    pid: () => masterPid(dir) ?? lastKnownMaster.get(dir) ?? first,
  };
}

// Runs before other exit listeners (tempDir's removal would delete the pid file first).
process.prependListener('exit', () => {
  for (const prefix of prefixes) {
    const pid = masterPid(prefix) ?? lastKnownMaster.get(prefix);
    if (pid !== undefined && isNginxMaster(pid)) killTree(pid);
  }
});

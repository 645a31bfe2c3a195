/**
 * Child processes for tests: real servers (Pebble, nats-server, nginx, ...) and our own
 * binaries. Every process started here is killed when the test process exits, even on
 * failure, so a failed run leaves nothing listening.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';

const running = new Set<ChildProcess>();

function killAll(): void {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}
process.once('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });
}

export interface Started {
  child: ChildProcess;
  /** Everything the process printed so far (stdout and stderr, interleaved). */
  output(): string;
  /** Sends SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL, no grace: for crash tests. */
  kill(): Promise<void>;
  /** Resolves with the exit code (or -1 for a signal) when the process ends. */
  exited: Promise<number>;
}

/** Starts `command` and records its output. Fails fast when the binary is missing. */
export function startProcess(name: string, command: string, args: string[], options: SpawnOptions = {}): Started {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  running.add(child);
  let out = '';
  const append = (chunk: Buffer): void => {
    out += chunk.toString('utf8');
    if (out.length > 1_000_000) out = out.slice(-500_000);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code ?? -1);
    });
    child.once('error', (err) => {
      out += `\n[${name}] spawn error: ${err.message}\n`;
      running.delete(child);
      resolve(-1);
    });
  });
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null || !running.has(child);
  return {
    child,
    output: () => out,
    exited,
    async stop(graceMs = 5000) {
      if (gone()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (gone()) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A TCP port free on `host` right now (the OS picks it). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  server.listen(0, host);
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** A UDP+TCP port free on `host` (for DNS servers that bind both). */
export async function freeDualPort(host = '127.0.0.1'): Promise<number> {
  const dgram = await import('node:dgram');
  for (let i = 0; i < 50; i++) {
    const port = await freePort(host);
    const sock = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      sock.once('error', () => resolve(false));
      sock.bind(port, host, () => resolve(true));
    });
    sock.close();
    if (ok) return port;
  }
  throw new Error(`no free TCP+UDP port on ${host}`);
}

/** Resolves once something accepts TCP connections on host:port; rejects after `timeoutMs`. */
export async function waitForPort(host: string, port: number, timeoutMs = 15000, proc?: Started): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect({ host, port });
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      throw new Error(`process exited before listening on ${host}:${port}:\n${proc.output()}`);
    }
    if (Date.now() > until) {
      throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms${proc ? `:\n${proc.output()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls `check` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30000, intervalMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > until) {
      const why = lastError instanceof Error ? `: last error: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

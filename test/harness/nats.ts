/**
 * A real nats-server with JetStream for tests: bound to 127.0.0.1 on a free port, file
 * storage in a temporary directory, no HTTP monitor. `restart()` brings the same server
 * back on the same port with the same store, which is what outage tests need: clients
 * reconnect to the address they know and find their buckets and streams again.
 */
import { freePort, startProcess, waitForPort, type Started } from './process.js';
import { tempDir } from './tmp.js';

/** Debian's nats-server. A missing binary fails the test (it never skips). */
export const NATS_SERVER_BIN = '/usr/sbin/nats-server';

export interface NatsServer {
  /** nats://127.0.0.1:PORT */
  url: string;
  port: number;
  /** The JetStream store directory (kept across restarts). */
  storeDir: string;
  /** Everything the current server process printed so far (for failure messages). */
  output(): string;
  /** The current server process (to crash it at a chosen moment); undefined before the first start. */
  current(): Started | undefined;
  /** Stops the server (SIGTERM, then SIGKILL after a grace period). Idempotent. */
  stop(): Promise<void>;
  /** Stops the server if it runs, then starts it again on the same port and store. */
  restart(): Promise<void>;
}

export interface StartNatsOptions {
  /** JetStream store directory; default a fresh temporary directory. */
  dir?: string;
  /** Port on 127.0.0.1; default a free one. */
  port?: number;
  /** More nats-server flags, e.g. ['--auth', token]. */
  extraArgs?: string[];
}

/**
 * Starts nats-server with JetStream and resolves once it accepts client connections
 * (it prints "Server is ready" only after JetStream has recovered its streams, so a
 * client connecting after that finds every bucket). Rejects with the server's output if
 * it exits or does not get ready within 15 s.
 */
export async function startNats(opts: StartNatsOptions = {}): Promise<NatsServer> {
  const port = opts.port ?? (await freePort());
  const storeDir = opts.dir ?? tempDir('certfleet-nats-');
  // No -m: the HTTP monitor stays off. -a pins the client listener to loopback.
  const args = ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir, '-n', `certfleet-test-${port}`, ...(opts.extraArgs ?? [])];
  let proc: Started | undefined;

  const launch = async (): Promise<void> => {
    const started = startProcess('nats-server', NATS_SERVER_BIN, args);
    proc = started;
    await waitForPort('127.0.0.1', port, 15000, started);
    const until = Date.now() + 15000;
    while (!started.output().includes('Server is ready')) {
      if (started.child.exitCode !== null || started.child.signalCode !== null) {
        throw new Error(`nats-server exited before getting ready:\n${started.output()}`);
      }
      if (Date.now() > until) throw new Error(`nats-server not ready after 15 s:\n${started.output()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  await launch();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    output: () => proc?.output() ?? '',
    current: () => proc,
    async stop() {
      await proc?.stop();
    },
    async restart() {
      await proc?.stop();
      await launch();
    },
  };
}

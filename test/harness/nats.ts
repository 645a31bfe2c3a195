/**
 * A real nats-server with JetStream for tests: bound to 127.0.0.1 on a free port, file
 * storage in a temporary directory, no HTTP monitor. `restart()` brings the same server
 * back on the same port with the same store, which is what outage tests need: clients
 * reconnect to the address they know and find their buckets and streams again.
 *
 * Authorization is on by default, as in every documented deployment: operator mode with
 * a memory resolver, from a NATS authority made here (controller/natsauth over an
 * in-memory store), or from the include a controller wrote (`auth: { include }`). Plain
 * mode (`auth: 'none'`) is for tests that deliberately simulate a misconfigured
 * deployment.
 */
import fs from 'node:fs';
import path from 'node:path';
import { NatsAuthority } from '../../controller/natsauth/index.js';
import { systemClock } from '../../shared/clock/index.js';
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
  /**
   * A .creds text with every right in the certfleet account (what the controller holds),
   * or undefined in plain mode. Pass it as connectNats({ credentials }).
   */
  creds: string | undefined;
  /** The authorization include the server reads at each (re)start (undefined in plain mode). */
  include: string | undefined;
  /** The authority made for this server (operator mode without `include`), to mint more users. */
  authority: NatsAuthority | undefined;
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
  /**
   * 'operator' (default): operator mode from a fresh authority made here.
   * { include: FILE }: operator mode from a controller's nats-server include (no `creds`).
   * 'none': no authorization at all: a misconfigured deployment, on purpose.
   */
  auth?: 'operator' | 'none' | { include: string };
}

/** An in-memory object store: enough for a NatsAuthority that lives as long as the test. */
export function memoryStore(): { getObject<T>(key: string): Promise<T | null>; putObject(key: string, value: unknown): Promise<void> } {
  const objects = new Map<string, string>();
  return {
    getObject: <T>(key: string) => Promise.resolve(objects.has(key) ? (JSON.parse(objects.get(key) ?? 'null') as T) : null),
    putObject: (key: string, value: unknown) => {
      objects.set(key, JSON.stringify(value));
      return Promise.resolve();
    },
  };
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
  const auth = opts.auth ?? 'operator';
  let creds: string | undefined;
  let authority: NatsAuthority | undefined;
  let include: string | undefined;
  if (auth !== 'none') {
    // nats-server resolves `include` relative to the including file: keep it relative.
    const confDir = tempDir('certfleet-nats-conf-');
    if (auth === 'operator') {
      authority = await NatsAuthority.open(memoryStore(), systemClock);
      include = path.join(confDir, 'auth.conf');
      fs.writeFileSync(include, authority.serverConfig());
      creds = (await authority.controllerCredentials('test-controller')).creds;
    } else {
      include = auth.include;
    }
    const conf = path.join(confDir, 'nats.conf');
    fs.writeFileSync(conf, `include ${JSON.stringify(path.relative(confDir, include))}\n`);
    args.push('-c', conf);
  }
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
    creds,
    include,
    authority,
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

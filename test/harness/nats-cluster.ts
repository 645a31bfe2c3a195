/**
 * A real three-node nats-server cluster with JetStream for tests: each node on its own
 * free loopback client and route port, its own store directory, and the same operator-mode
 * authorization (one NATS authority for the whole cluster, as a deployment has). Nodes can
 * be killed and restarted one by one (same ports, same store), which is what the quorum and
 * failover tests need. Every process is killed when the test process exits (harness/process).
 */
import fs from 'node:fs';
import path from 'node:path';
import { NatsAuthority } from '../../controller/natsauth/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { memoryStore, NATS_SERVER_BIN } from './nats.js';
import { freePort, startProcess, waitForPort, type Started } from './process.js';
import { tempDir } from './tmp.js';

export interface ClusterNode {
  name: string;
  url: string;
  port: number;
  routePort: number;
  storeDir: string;
  current(): Started | undefined;
  output(): string;
  /** SIGKILL: the node is gone at once, as when its machine dies. */
  kill(): Promise<void>;
  stop(): Promise<void>;
  /** Starts it again on the same ports and store; resolves when it serves clients. */
  start(): Promise<void>;
}

export interface NatsCluster {
  nodes: ClusterNode[];
  /** Every node's client URL (what a client gives connectNats as `servers`). */
  urls: string[];
  /**
   * Credentials with every right in the certfleet account (what a controller holds);
   * empty with `auth: { include }` (the authority lives in the controller's store then).
   */
  creds: string;
  /** The authority made here; undefined with `auth: { include }`. */
  authority: NatsAuthority | undefined;
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /**
   * Default: operator mode from an authority made here. `{ include: FILE }`: every node
   * reads the authorization include a controller wrote (`certfleet controller
   * --write-nats-config`), as a deployment of several controllers on one store does.
   */
  auth?: { include: string };
}

/**
 * Starts `size` (default 3) clustered nodes and resolves once every node serves clients
 * and JetStream has a meta leader (a stream can be created). Rejects with the nodes' output
 * when one does not get ready within 30 s.
 */
export async function startNatsCluster(size = 3, opts: NatsClusterOptions = {}): Promise<NatsCluster> {
  const confDir = tempDir('certfleet-nats-cluster-');
  let authority: NatsAuthority | undefined;
  let creds = '';
  let authInclude = 'auth.conf';
  if (opts.auth === undefined) {
    authority = await NatsAuthority.open(memoryStore(), systemClock);
    creds = (await authority.controllerCredentials('test-controller')).creds;
    fs.writeFileSync(path.join(confDir, 'auth.conf'), authority.serverConfig());
  } else {
    // nats-server resolves `include` relative to the including file.
    authInclude = path.relative(confDir, opts.auth.include);
  }
  const ports = await Promise.all(Array.from({ length: size }, async () => ({ client: await freePort(), route: await freePort() })));
  const clusterName = `certfleet-test-${ports[0]!.client}`;
  const nodes: ClusterNode[] = ports.map((p, i) => {
    const name = `n${i + 1}`;
    const storeDir = tempDir(`certfleet-nats-${name}-`);
    const routes = ports.filter((_, j) => j !== i).map((o) => `nats-route://127.0.0.1:${o.route}`);
    const conf = path.join(confDir, `${name}.conf`);
    fs.writeFileSync(
      conf,
      [
        `server_name: ${name}`,
        `listen: 127.0.0.1:${p.client}`,
        `include ${JSON.stringify(authInclude)}`,
        `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
        'cluster {',
        `  name: ${clusterName}`,
        `  listen: 127.0.0.1:${p.route}`,
        `  routes: [${routes.map((r) => JSON.stringify(r)).join(', ')}]`,
        '}',
        '',
      ].join('\n'),
    );
    let proc: Started | undefined;
    const node: ClusterNode = {
      name,
      url: `nats://127.0.0.1:${p.client}`,
      port: p.client,
      routePort: p.route,
      storeDir,
      current: () => proc,
      output: () => proc?.output() ?? '',
      async kill() {
        await proc?.kill();
      },
      async stop() {
        await proc?.stop();
      },
      async start() {
        proc = startProcess(`nats-${name}`, NATS_SERVER_BIN, ['-c', conf]);
        await waitForPort('127.0.0.1', p.client, 30_000, proc);
      },
    };
    return node;
  });
  await Promise.all(nodes.map((n) => n.start()));
  // Every node ready and agreeing on a JetStream metadata leader: before that, JetStream
  // requests time out and a client's connect check fails.
  const until = systemClock.now() + 30_000;
  while (!nodes.every((n) => n.output().includes('Server is ready') && /metadata leader/i.test(n.output()))) {
    if (systemClock.now() > until) throw new Error(`nats cluster not ready after 30 s:\n${nodes.map((n) => `--- ${n.name}\n${n.output()}`).join('\n')}`);
    await systemClock.sleep(50);
  }
  return {
    nodes,
    urls: nodes.map((n) => n.url),
    creds,
    authority,
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}

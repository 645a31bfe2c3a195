/**
 * An agent as `agent enroll` leaves it (identity signed by a throwaway CA, config file),
 * with nothing started: for tests of an agent process on its own, before or without its
 * controller and NATS.
 */
import fs from 'node:fs';
import path from 'node:path';
import { makeLeaf, makeTestCa } from './certs.js';
import { freePort } from './process.js';

export interface LoneAgent {
  /** The agent's config file (`certfleet agent --config`). */
  config: string;
  /** The NATS port its config names (nothing listens there yet). */
  natsPort: number;
}

/** Writes `name`'s identity and config under `dir`; its controller and NATS ports are free ports nobody listens on. */
export async function writeLoneAgent(dir: string, name: string): Promise<LoneAgent> {
  const ca = await makeTestCa();
  const leaf = await makeLeaf(ca, { names: [name] });
  const identity = path.join(dir, 'state', 'identity');
  fs.mkdirSync(identity, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(identity, 'agent.json'), JSON.stringify({ name, labels: { role: 'edge' } }));
  fs.writeFileSync(path.join(identity, 'cert.pem'), leaf.certPem);
  fs.writeFileSync(path.join(identity, 'key.pem'), leaf.keyPem, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'ca.pem'), ca.certPem);
  const natsPort = await freePort();
  const config = path.join(dir, 'agent.yaml');
  fs.writeFileSync(
    config,
    [
      `stateDir: ${path.join(dir, 'state')}`,
      'log: { level: info }',
      `controller: { address: "127.0.0.1:${await freePort()}", caFile: ${path.join(dir, 'ca.pem')}, serverName: localhost }`,
      `nats: { servers: ["nats://127.0.0.1:${natsPort}"] }`,
      'certificates: {}',
      '',
    ].join('\n'),
  );
  return { config, natsPort };
}

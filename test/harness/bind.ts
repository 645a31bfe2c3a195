/**
 * A real BIND 9 (`named`, Debian) for DNS-01 tests: authoritative only (no recursion),
 * on 127.0.0.1 at a free UDP+TCP port, every file in a temp dir, rndc switched off.
 *
 * Zones are primaries whose `allow-update` names one TSIG key each, so a test can give a
 * provider credentials for exactly one zone (the point of CNAME delegation). The
 * defaults: `example.test` (key `certfleet-key`) and the validation zone
 * `validation.test` (key `validation-key`), both with `ns1.<zone>` at 127.0.0.1.
 *
 * With `forward`, the server is instead a recursive resolver for the given zones (what
 * Pebble validates through when a test needs CNAMEs followed across zones).
 *
 * `txt(name)` asks with `dig` — not with certfleet's own DNS code — so a test that checks
 * a record really is (or is not) on the server does not trust the code under test.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freeDualPort, startProcess, waitForPort, type Started } from './process.js';
import { tempDir } from './tmp.js';

const execFileAsync = promisify(execFile);

/** Debian's named. A missing binary fails the test (it never skips). */
export const NAMED_BIN = '/usr/sbin/named';

export interface BindKey {
  name: string;
  algorithm: 'hmac-sha256' | 'hmac-sha512';
  /** base64 */
  secret: string;
}

export interface BindZone {
  name: string;
  /** Key allowed to update the zone; none: the zone is static. */
  updateKey?: string;
  /** Extra zone-file lines (relative names are relative to the zone). SOA, `@ NS ns1` and `ns1 A 127.0.0.1` are always there. */
  records?: string[];
  /** A primary zone only: let any client transfer it (AXFR/IXFR), for a secondary. Default: no transfers. */
  allowTransfer?: boolean;
  /**
   * Makes this a secondary zone copied from `primary` (`host:port`), refreshed every
   * `refreshSeconds` and never told by NOTIFY: a server that lags behind the primary by up
   * to that long, as a real secondary can. `updateKey` and `records` do not apply.
   */
  secondary?: { primary: string; refreshSeconds: number };
}

export interface BindOptions {
  /** Default: `certfleet-key` (hmac-sha256) and `validation-key` (hmac-sha512), random secrets. */
  keys?: Array<Pick<BindKey, 'name' | 'algorithm'> & { secret?: string }>;
  /** Default: example.test (certfleet-key) and validation.test (validation-key). */
  zones?: BindZone[];
  /**
   * Listen address. Default 127.0.0.1. named only binds addresses of interfaces, and
   * here `lo` has only 127.0.0.1: a second server needs another port, not 127.0.0.2.
   */
  address?: string;
  /** Port; default a free one. */
  port?: number;
  /**
   * Makes this server a recursive resolver that forwards `zones` to `server` (host:port),
   * as a CA's resolver would reach the authoritative servers. An authoritative-only BIND
   * does not chase a CNAME into another zone; a resolver does — and so must the one the
   * CA validates through, for CNAME delegation to work. Caching is capped at 1 s.
   */
  forward?: { server: string; zones: string[] };
}

export interface BindHandle {
  port: number;
  address: string;
  /** `address:port` */
  server: string;
  keys: BindKey[];
  /** The key called `name`; throws if there is none. */
  key(name: string): BindKey;
  /** TXT values at `name` as BIND answers them now (via `dig`, no recursion). */
  txt(name: string): Promise<string[]>;
  dir: string;
  output(): string;
  stop(): Promise<void>;
}

const DEFAULT_KEYS: BindOptions['keys'] = [
  { name: 'certfleet-key', algorithm: 'hmac-sha256' },
  { name: 'validation-key', algorithm: 'hmac-sha512' },
];

const DEFAULT_ZONES: BindZone[] = [
  { name: 'example.test', updateKey: 'certfleet-key' },
  { name: 'validation.test', updateKey: 'validation-key' },
];

/** Starts named and resolves once it has loaded its zones and answers on TCP. */
export async function startBind(opts: BindOptions = {}): Promise<BindHandle> {
  const dir = tempDir('certfleet-bind-');
  fs.chmodSync(dir, 0o700);
  const address = opts.address ?? '127.0.0.1';
  const port = opts.port ?? (await freeDualPort(address));
  const keys: BindKey[] = (opts.keys ?? DEFAULT_KEYS ?? []).map((k) => ({ ...k, secret: k.secret ?? crypto.randomBytes(32).toString('base64') }));
  const zones = opts.zones ?? DEFAULT_ZONES;

  const conf: string[] = [
    'options {',
    `  directory "${dir}";`,
    `  pid-file "${path.join(dir, 'named.pid')}";`,
    `  session-keyfile "${path.join(dir, 'session.key')}";`,
    `  managed-keys-directory "${dir}";`,
    `  listen-on port ${port} { ${address}; };`,
    '  listen-on-v6 { none; };',
    ...(opts.forward
      ? ['  recursion yes;', '  allow-recursion { 127.0.0.0/8; };', '  max-cache-ttl 1;', '  max-ncache-ttl 1;']
      : ['  recursion no;']),
    '  allow-query { any; };',
    '  dnssec-validation no;',
    '  notify no;',
    '};',
    // No rndc: nothing else needs a control channel, and it would need a key file.
    'controls { };',
  ];
  if (opts.forward) {
    const idx = opts.forward.server.lastIndexOf(':');
    const target = `${opts.forward.server.slice(0, idx)} port ${opts.forward.server.slice(idx + 1)}`;
    for (const z of opts.forward.zones) conf.push(`zone "${z}" { type forward; forward only; forwarders { ${target}; }; };`);
  }
  for (const k of keys) conf.push(`key "${k.name}" { algorithm ${k.algorithm}; secret "${k.secret}"; };`);
  for (const z of zones) {
    const file = path.join(dir, `${z.name}.db`);
    if (z.secondary) {
      const idx = z.secondary.primary.lastIndexOf(':');
      const from = `${z.secondary.primary.slice(0, idx)} port ${z.secondary.primary.slice(idx + 1)}`;
      const r = z.secondary.refreshSeconds;
      // The refresh bounds override the SOA's (3600): the lag is at most `r`.
      conf.push(
        `zone "${z.name}" { type secondary; primaries { ${from}; }; file "${file}"; min-refresh-time ${r}; max-refresh-time ${r}; min-retry-time ${r}; max-retry-time ${r}; };`,
      );
      continue;
    }
    const lines = [
      '$TTL 60',
      `@ IN SOA ns1.${z.name}. hostmaster.${z.name}. 1 3600 600 86400 60`,
      `@ IN NS ns1.${z.name}.`,
      'ns1 IN A 127.0.0.1',
      ...(z.records ?? []),
    ];
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
    const update = z.updateKey === undefined ? 'allow-update { none; };' : `allow-update { key "${z.updateKey}"; };`;
    const transfer = z.allowTransfer === true ? ' allow-transfer { any; };' : '';
    conf.push(`zone "${z.name}" { type primary; file "${file}"; ${update}${transfer} };`);
  }
  const confFile = path.join(dir, 'named.conf');
  fs.writeFileSync(confFile, `${conf.join('\n')}\n`, { mode: 0o600 });

  // -g: foreground, log to stderr; -4: no IPv6 sockets.
  const proc: Started = startProcess('named', NAMED_BIN, ['-g', '-4', '-c', confFile, '-p', String(port)], { cwd: dir });
  try {
    await waitForPort(address, port, 15000, proc);
    const until = Date.now() + 15000;
    while (!proc.output().includes('running')) {
      if (proc.child.exitCode !== null) throw new Error(`named exited:\n${proc.output()}`);
      if (Date.now() > until) throw new Error(`named not running after 15 s:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  } catch (err) {
    await proc.kill();
    throw err;
  }
  return {
    port,
    address,
    server: `${address}:${port}`,
    keys,
    dir,
    key(name) {
      const k = keys.find((x) => x.name === name);
      if (!k) throw new Error(`no BIND key ${name}`);
      return k;
    },
    async txt(name) {
      const { stdout } = await execFileAsync('dig', ['@' + address, '-p', String(port), '+norecurse', '+short', '+tries=1', '+time=3', 'TXT', name]);
      return stdout
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '')
        .map((l) => [...l.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1] ?? '').join(''));
    },
    output: () => proc.output(),
    stop: () => proc.stop(),
  };
}

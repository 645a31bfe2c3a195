/**
 * A real ACME CA for tests and the quick start: Debian's Pebble 2.4 plus
 * pebble-challtestsrv as its DNS server, both on free loopback ports.
 *
 * Debian's Pebble ships no TLS certificate for its own HTTPS endpoints (the ACME "WFE"
 * and the management API), so each start makes a throwaway CA and a certificate for
 * 127.0.0.1/localhost with the openssl CLI and
 * hands the CA back as `caPem`. That CA is unrelated to the one that signs issued
 * certificates: Pebble makes that one fresh on every launch (see `rootsPem()`).
 *
 * Pebble's validation authority resolves names through challtestsrv, so a test points
 * a name at a loopback address with `addA` and answers HTTP-01 on `httpPort` there.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freeDualPort, freePort, startProcess, waitForPort, type Started } from './process.js';
import { tempDir } from './tmp.js';

const execFileAsync = promisify(execFile);

export interface PebbleOptions {
  /** Port Pebble's VA connects to for HTTP-01 (on whatever address the name resolves to). */
  httpPort: number;
  /** Lifetime of issued certificates, seconds (Pebble's `certificateValidityPeriod`). */
  validityPeriodSeconds?: number;
  /** Percentage of valid nonces Pebble rejects with badNonce. Default 0. */
  nonceReject?: number;
  /** Where config, certificates and logs go. Default: a fresh temp dir. */
  dir?: string;
  /**
   * `host:port` of the DNS server Pebble's VA resolves with (e.g. a test's BIND, for
   * DNS-01). Default: challtestsrv's, which `addA` controls; with another server `addA`
   * has no effect on validation.
   */
  dnsServer?: string;
  /**
   * External account binding (RFC 8555 §7.3.4): Pebble refuses a newAccount without a
   * binding signed by one of these keys (key id → base64url HMAC key).
   */
  eabKeys?: Record<string, string>;
}

export interface PebbleHandle {
  /** The ACME directory, e.g. https://127.0.0.1:PORT/dir */
  directoryUrl: string;
  /** CA that signed Pebble's own HTTPS certificate (WFE and management API). */
  caPem: string;
  /** Pebble's management API base URL (https, same trust as `caPem`). */
  managementUrl: string;
  /** pebble-challtestsrv's management API base URL (plain http). */
  challtestsrvUrl: string;
  /** UDP+TCP port of challtestsrv's DNS server on 127.0.0.1 (what Pebble resolves with). */
  dnsPort: number;
  /** Makes `host` resolve to `ip` for Pebble's VA. */
  addA(host: string, ip: string): Promise<void>;
  /** PEM of the root that (through an intermediate) signs issued certificates. */
  rootsPem(): Promise<string>;
  /**
   * What Pebble's management API says of the certificate with serial `serialHex`
   * (GET /cert-status-by-serial/<serial>): `Status` "Valid" or "Revoked", the RFC 5280
   * `Reason` code once revoked.
   */
  certStatus(serialHex: string): Promise<{ Status: string; Reason?: number; RevokedAt?: string; Serial?: string }>;
  /** Everything Pebble and challtestsrv printed, for failure messages. */
  output(): string;
  /**
   * Stops Pebble (not challtestsrv) and starts it again on the same ports and config, with
   * `nonceReject` when given (else the value it ran with). Pebble keeps nothing on disk:
   * the restarted CA has forgotten every account, order and authorization, and signs with
   * a new root — what an ACME CA that lost its state looks like to a client.
   */
  restart(opts?: { nonceReject?: number }): Promise<void>;
  /** Stops both processes. */
  stop(): Promise<void>;
}

/** Starts Pebble and challtestsrv; resolves once both accept connections. */
export async function startPebble(opts: PebbleOptions): Promise<PebbleHandle> {
  const dir = opts.dir ?? tempDir('certfleet-pebble-');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tlsMaterial = await makeServerCertificate(dir);
  const certFile = path.join(dir, 'wfe-cert.pem');
  const keyFile = path.join(dir, 'wfe-key.pem');

  const [listenPort, mgmtPort, tlsPort, dnsPort, challMgmtPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freeDualPort(),
    await freePort(),
  ];

  const pebbleConfig: Record<string, unknown> = {
    listenAddress: `127.0.0.1:${listenPort}`,
    managementListenAddress: `127.0.0.1:${mgmtPort}`,
    certificate: certFile,
    privateKey: keyFile,
    httpPort: opts.httpPort,
    tlsPort,
    ocspResponderURL: '',
    externalAccountBindingRequired: opts.eabKeys !== undefined,
    ...(opts.eabKeys === undefined ? {} : { externalAccountMACKeys: opts.eabKeys }),
  };
  if (opts.validityPeriodSeconds !== undefined) pebbleConfig['certificateValidityPeriod'] = opts.validityPeriodSeconds;
  const configFile = path.join(dir, 'pebble-config.json');
  fs.writeFileSync(configFile, JSON.stringify({ pebble: pebbleConfig }, null, 2));

  // challtestsrv binds every interface by default; keep it on loopback and switch off the
  // challenge responders we do not use. Pebble asks for AAAA first, so no default IPv6.
  const chall = startProcess('pebble-challtestsrv', '/usr/bin/pebble-challtestsrv', [
    '-management', `127.0.0.1:${challMgmtPort}`,
    '-dns01', `127.0.0.1:${dnsPort}`,
    '-http01', '',
    '-https01', '',
    '-tlsalpn01', '',
    '-defaultIPv6', '',
    '-defaultIPv4', '127.0.0.1',
  ]);
  let nonceReject = opts.nonceReject ?? 0;
  const launchPebble = (reject: number): Started =>
    startProcess('pebble', '/usr/bin/pebble', ['-config', configFile, '-dnsserver', opts.dnsServer ?? `127.0.0.1:${dnsPort}`], {
      cwd: dir,
      env: {
        ...process.env,
        PEBBLE_VA_NOSLEEP: '1',
        PEBBLE_AUTHZREUSE: '0',
        PEBBLE_WFE_NONCEREJECT: String(reject),
      },
    });
  let pebble: Started | undefined;
  try {
    await waitForPort('127.0.0.1', challMgmtPort, 15000, chall);
    await waitForPort('127.0.0.1', dnsPort, 15000, chall);
    pebble = launchPebble(nonceReject);
    await waitForPort('127.0.0.1', listenPort, 15000, pebble);
    await waitForPort('127.0.0.1', mgmtPort, 15000, pebble);
  } catch (err) {
    await pebble?.kill();
    await chall.kill();
    throw err;
  }
  let pebbleProc = pebble;
  let earlierOutput = '';

  const managementUrl = `https://127.0.0.1:${mgmtPort}`;
  const challtestsrvUrl = `http://127.0.0.1:${challMgmtPort}`;
  return {
    directoryUrl: `https://127.0.0.1:${listenPort}/dir`,
    caPem: tlsMaterial.caPem,
    managementUrl,
    challtestsrvUrl,
    dnsPort,
    async addA(host, ip) {
      const fqdn = host.endsWith('.') ? host : `${host}.`;
      const res = await fetch(`${challtestsrvUrl}/add-a`, {
        method: 'POST',
        body: JSON.stringify({ host: fqdn, addresses: [ip] }),
      });
      if (!res.ok) throw new Error(`challtestsrv add-a ${host} -> ${ip}: HTTP ${res.status} ${await res.text()}`);
    },
    async rootsPem() {
      return httpsGet(`${managementUrl}/roots/0`, tlsMaterial.caPem);
    },
    async certStatus(serialHex) {
      // Pebble prints serials as big.Int hex: no leading zeros.
      const serial = serialHex.toLowerCase().replace(/^0+(?=.)/, '');
      return JSON.parse(await httpsGet(`${managementUrl}/cert-status-by-serial/${serial}`, tlsMaterial.caPem)) as { Status: string; Reason?: number };
    },
    output() {
      return `--- pebble ---\n${earlierOutput}${pebbleProc.output()}\n--- pebble-challtestsrv ---\n${chall.output()}`;
    },
    async restart(o = {}) {
      await pebbleProc.stop();
      earlierOutput += `${pebbleProc.output()}\n--- pebble restarted ---\n`;
      nonceReject = o.nonceReject ?? nonceReject;
      pebbleProc = launchPebble(nonceReject);
      await waitForPort('127.0.0.1', listenPort, 15000, pebbleProc);
      await waitForPort('127.0.0.1', mgmtPort, 15000, pebbleProc);
    },
    async stop() {
      await Promise.all([pebbleProc.stop(), chall.stop()]);
    },
  };
}

/** GET over HTTPS trusting only `caPem`; rejects on a non-2xx status. */
function httpsGet(url: string, caPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: caPem }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) reject(new Error(`GET ${url}: HTTP ${status} ${body}`));
        else resolve(body);
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

interface ServerTls {
  caPem: string;
}

/**
 * A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it, made
 * with the openssl CLI in `dir`. (openssl rather than @peculiar/x509 because x509 2.x
 * needs a global reflect polyfill loaded before it, which a harness should not impose.)
 */
async function makeServerCertificate(dir: string): Promise<ServerTls> {
  const f = (name: string): string => path.join(dir, name);
  const ecParams = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl([
    'req', '-x509', ...ecParams, '-keyout', f('wfe-ca-key.pem'), '-out', f('wfe-ca.pem'),
    '-days', '7', '-subj', '/CN=certfleet test Pebble HTTPS CA',
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await openssl([
    'req', '-new', ...ecParams, '-keyout', f('wfe-key.pem'), '-out', f('wfe.csr'), '-subj', '/CN=localhost',
  ]);
  fs.writeFileSync(
    f('wfe-ext.cnf'),
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n',
  );
  await openssl([
    'x509', '-req', '-in', f('wfe.csr'), '-CA', f('wfe-ca.pem'), '-CAkey', f('wfe-ca-key.pem'), '-CAcreateserial',
    '-days', '7', '-extfile', f('wfe-ext.cnf'), '-out', f('wfe-cert.pem'),
  ]);
  fs.chmodSync(f('wfe-key.pem'), 0o600);
  fs.chmodSync(f('wfe-ca-key.pem'), 0o600);
  return {
    caPem: fs.readFileSync(f('wfe-ca.pem'), 'utf8'),
  };
}

async function openssl(args: string[]): Promise<void> {
  try {
    await execFileAsync('openssl', args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`openssl ${args[0] ?? ''} failed: ${stderr || String(err)}`, { cause: err });
  }
}

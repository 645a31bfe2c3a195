/**
 * Proof that a certificate is really served: a TLS handshake with SNI to a local
 * listener, comparing the leaf it presents with the installed version's fingerprint.
 * Trust is not checked here (we compare fingerprints, which is stronger for this
 * purpose); the handshake only needs to complete.
 */
import crypto from 'node:crypto';
import tls from 'node:tls';
import { deadline, type Clock } from '../../shared/clock/index.js';
import { splitHostPort } from '../../shared/configfile/index.js';

export interface ServedCheck {
  address: string;
  serverName: string;
  /** Fingerprint served, lower-case hex SHA-256; empty when the handshake failed. */
  served: string;
  ok: boolean;
  error: string;
}

/** Fingerprint of the certificate `address` serves for `serverName`. Never throws. */
export async function servedFingerprint(address: string, serverName: string, timeoutMs = 5000): Promise<{ fingerprint: string; error: string }> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, servername: serverName, rejectUnauthorized: false, timeout: timeoutMs });
    const done = (fingerprint: string, error: string): void => {
      socket.destroy();
      resolve({ fingerprint, error });
    };
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate();
      if (!peer?.raw) return done('', 'no certificate presented');
      done(crypto.createHash('sha256').update(peer.raw).digest('hex'), '');
    });
    socket.once('timeout', () => done('', `timed out after ${timeoutMs} ms`));
    socket.once('error', (err: Error) => done('', err.message));
  });
}

/** One probe of one endpoint: the fingerprint it serves, or why there is none. Never throws. */
export type Probe = (address: string, serverName: string) => Promise<{ fingerprint: string; error: string }>;

/** A listener that must serve a certificate: host:port and the SNI to ask for. */
export interface Endpoint {
  address: string;
  serverName: string;
}

/** Time allowed by default for a reloaded server to serve the new certificate. */
export const SETTLE_MS = 10_000;
/** Pause between two probes of an endpoint that does not serve the fingerprint yet. */
export const PROBE_INTERVAL_MS = 200;

/**
 * Proves endpoints serve a fingerprint. The agent's apply step takes one injected, so it
 * can be tested with a scripted probe on a manual clock. Contract: never throws; one
 * result per endpoint, in order.
 */
export interface Verifier {
  /**
   * Checks every endpoint serves `fingerprint`, probing again every
   * {@link PROBE_INTERVAL_MS} for up to `settleMs` of clock time (default
   * {@link SETTLE_MS}) because a reloaded server may take a moment to swap its workers.
   * `settleMs` 0: one probe each.
   */
  verify(endpoints: readonly Endpoint[], fingerprint: string, settleMs?: number): Promise<ServedCheck[]>;
}

/**
 * The verifier: `probe` (default a TLS handshake, {@link servedFingerprint}) retried on
 * `clock` time. The handshake's own timeout stays a socket timeout (real time).
 */
export function tlsVerifier(clock: Clock, probe: Probe = servedFingerprint): Verifier {
  return {
    async verify(endpoints, fingerprint, settleMs = SETTLE_MS) {
      const results: ServedCheck[] = [];
      for (const ep of endpoints) {
        const until = deadline(clock, settleMs);
        let last = await probe(ep.address, ep.serverName);
        while (last.fingerprint !== fingerprint && !until.expired()) {
          await clock.sleep(PROBE_INTERVAL_MS);
          last = await probe(ep.address, ep.serverName);
        }
        const ok = last.fingerprint === fingerprint;
        results.push({
          ...ep,
          served: last.fingerprint,
          ok,
          error: ok ? '' : last.error !== '' ? last.error : `serves ${last.fingerprint.slice(0, 16)}…, expected ${fingerprint.slice(0, 16)}…`,
        });
      }
      return results;
    },
  };
}

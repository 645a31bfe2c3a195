/**
 * Proof that a certificate is really served: a TLS handshake with SNI to a local
 * listener, comparing the leaf it presents with the installed version's fingerprint.
 * Trust is not checked here (we compare fingerprints, which is stronger for this
 * purpose); the handshake only needs to complete.
 */
import crypto from 'node:crypto';
import tls from 'node:tls';
import { splitHostPort } from '../../shared/config/index.js';

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

/**
 * Checks every endpoint serves `fingerprint`, retrying for up to `settleMs` because a
 * reloaded server may take a moment to swap its workers.
 */
export async function verifyServed(
  endpoints: ReadonlyArray<{ address: string; serverName: string }>,
  fingerprint: string,
  settleMs = 10_000,
): Promise<ServedCheck[]> {
  const results: ServedCheck[] = [];
  for (const ep of endpoints) {
    const until = Date.now() + settleMs;
    let last = await servedFingerprint(ep.address, ep.serverName);
    while (last.fingerprint !== fingerprint && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 200));
      last = await servedFingerprint(ep.address, ep.serverName);
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
}

/**
 * What a TLS listener really serves: a handshake with SNI that returns the leaf
 * certificate. Tests use it to prove that nginx/HAProxy serve what an agent installed,
 * by fingerprint, so the chain is deliberately not verified (test CAs are not trusted
 * and trust is not the question here).
 */
import { createHash } from 'node:crypto';
import tls from 'node:tls';

/** The leaf certificate a listener presented. */
export interface ServedCertificate {
  /** Lower-case hex SHA-256 of the DER (the project's fingerprint format, shared/model). */
  fingerprint: string;
  /** Serial number, lower-case hex as node:crypto prints it (shared/pki's format). */
  serial: string;
  /** DNS names (lower case) and IP addresses from subjectAltName, in certificate order. */
  names: string[];
  pem: string;
}

/**
 * Connects to `host:port`, sends `servername` as SNI, and returns the leaf certificate
 * of the handshake. Each call is a fresh connection without session resumption, so it
 * sees what the listener serves now. Rejects when the connection or handshake fails, when
 * no certificate is presented, or after `timeoutMs` (default 10 s).
 */
export function servedCertificate(opts: { host: string; port: number; servername: string; timeoutMs?: number }): Promise<ServedCertificate> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const where = `${opts.host}:${opts.port} (SNI ${opts.servername})`;
  return new Promise((resolve, reject) => {
    let settled = false;
    const socket = tls.connect({
      host: opts.host,
      port: opts.port,
      servername: opts.servername,
      rejectUnauthorized: false,
    });
    const finish = (err: Error | undefined, value?: ServedCertificate): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else if (value) resolve(value);
    };
    const timer = setTimeout(() => finish(new Error(`TLS handshake with ${where} timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once('error', (err: Error) => finish(new Error(`TLS handshake with ${where} failed: ${err.message}`, { cause: err })));
    socket.once('close', () => finish(new Error(`connection to ${where} closed before the handshake completed`)));
    socket.once('secureConnect', () => {
      const cert = socket.getPeerX509Certificate();
      if (cert === undefined) {
        finish(new Error(`${where} presented no certificate`));
        return;
      }
      finish(undefined, {
        fingerprint: createHash('sha256').update(cert.raw).digest('hex'),
        serial: cert.serialNumber.toLowerCase(),
        names: sanNames(cert.subjectAltName),
        pem: cert.toString(),
      });
    });
  });
}

// node:crypto renders subjectAltName as "DNS:a.example, IP Address:127.0.0.1, ..."; values
// that need it are JSON-quoted (DNS:"a,b"), which never happens for valid host names.
function sanNames(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const names: string[] = [];
  for (const entry of subjectAltName.split(', ')) {
    if (entry.startsWith('DNS:')) names.push(unquote(entry.slice(4)).toLowerCase());
    else if (entry.startsWith('IP Address:')) names.push(unquote(entry.slice(11)));
  }
  return names;
}

function unquote(value: string): string {
  return value.startsWith('"') ? (JSON.parse(value) as string) : value;
}

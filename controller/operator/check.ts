/**
 * `certfleet check [NAME]`: does each certificate's challenge path work right now?
 * Nothing is ordered. HTTP-01: a synthetic challenge (a random token, not an ACME one) is
 * published through the challenge board, every agent the certificate selects is asked
 * for it on its HTTP-01 listener (the solver's own self-check), then it is withdrawn.
 * DNS-01: a TXT record with a random value is written at `_acme-challenge.<name>` through
 * the provider a real challenge would use (CNAME delegation, zone routes), waited for on
 * every authoritative server, and removed (journalled like a real one, so a crash in
 * between leaves nothing the janitor does not know of).
 */
import crypto from 'node:crypto';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { toCertfleetError } from '../../shared/errors/index.js';
import type { pb } from '../../shared/grpc/index.js';
import type { CertificateConfig } from '../config/index.js';
import type { Http01Solver } from '../solvers/index.js';
import { dns01Value, type Dns01Solver } from '../solvers/dns01/index.js';

/** The solvers a check goes through (the controller's own). */
export interface ChallengePaths {
  http01: Pick<Http01Solver, 'selfCheck'>;
  /** Absent when no DNS provider is configured. */
  dns01?: Pick<Dns01Solver, 'present' | 'cleanup' | 'leftovers'> | undefined;
}

/** A random key authorization shaped like an ACME one (`token.thumbprint`), which no CA issued. */
function syntheticKeyAuthorization(): { token: string; keyAuthorization: string } {
  const token = crypto.randomBytes(32).toString('base64url');
  return { token, keyAuthorization: `${token}.certfleet-check` };
}

/** Every check of one certificate; never rejects (a failure is a check with `ok: false`). */
export async function checkCertificate(cert: CertificateConfig, paths: ChallengePaths, clock: Clock): Promise<pb.ChallengeCheck[]> {
  return cert.challenge === 'dns-01' ? checkDns01(cert, paths, clock) : checkHttp01(cert, paths, clock);
}

async function checkHttp01(cert: CertificateConfig, paths: ChallengePaths, clock: Clock): Promise<pb.ChallengeCheck[]> {
  // One synthetic challenge per name, all at once: an agent that does not answer costs
  // the self-check timeout once, not once per name.
  const per = await Promise.all(
    cert.names.map(async (identifier): Promise<pb.ChallengeCheck[]> => {
      const started = clock.now();
      const { token, keyAuthorization } = syntheticKeyAuthorization();
      try {
        const results = await paths.http01.selfCheck({ token, keyAuthorization, identifier, cert: cert.name, selector: cert.agents, createdAt: isoAt(started) });
        const ms = Math.max(0, clock.now() - started);
        return results.map((r) => ({ certificate: cert.name, check: 'http-01', identifier, agent: r.agent, ok: r.ok, detail: r.detail, durationMs: ms }));
      } catch (err) {
        const cf = toCertfleetError(err);
        return [{ certificate: cert.name, check: 'http-01', identifier, agent: '', ok: false, detail: `${cf.code}: ${cf.message}`, durationMs: Math.max(0, clock.now() - started) }];
      }
    }),
  );
  return per.flat();
}

async function checkDns01(cert: CertificateConfig, paths: ChallengePaths, clock: Clock): Promise<pb.ChallengeCheck[]> {
  const out: pb.ChallengeCheck[] = [];
  for (const identifier of cert.names) {
    const started = clock.now();
    const row = (ok: boolean, detail: string): pb.ChallengeCheck => ({ certificate: cert.name, check: 'dns-01', identifier, agent: '', ok, detail, durationMs: Math.max(0, clock.now() - started) });
    const solver = paths.dns01;
    if (!solver) {
      out.push(row(false, 'CONFIG_INVALID: the certificate uses dns-01 but no DNS provider is configured'));
      continue;
    }
    const { keyAuthorization } = syntheticKeyAuthorization();
    try {
      const presentation = await solver.present([{ cert: cert.name, identifier, keyAuthorization, ...(cert.dnsProvider === undefined ? {} : { provider: cert.dnsProvider }) }]);
      await solver.cleanup(presentation);
      const where = presentation.records.map((r) => `${r.fqdn} via ${r.provider}`).join(', ');
      const left = await solver.leftovers([dns01Value(keyAuthorization)]);
      out.push(
        left.length === 0
          ? row(true, `TXT written at ${where}, seen on every authoritative server, removed`)
          : row(false, `TXT written at ${where} and seen, but not removed (the janitor retries): check the provider's delete rights`),
      );
    } catch (err) {
      const cf = toCertfleetError(err);
      out.push(row(false, `${cf.code}: ${cf.message}`));
    }
  }
  return out;
}

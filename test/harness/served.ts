/**
 * What the fleet really serves, per agent: a TLS handshake with SNI against each nginx
 * an agent fronts (test/harness/tls.ts), compared with the fingerprint that should be
 * served. The ground truth of "0 wrong certificates served", independent of what agents
 * report.
 */
import type { FleetAgentSpec } from './fleet.js';
import { servedCertificate } from './tls.js';

/** One endpoint that does not serve what it should. */
export interface WrongServed {
  agent: string;
  cert: string;
  want: string;
  /** The served fingerprint, or the handshake's error. */
  got: string;
}

/** The SNI to ask a listener for `names`: the first plain name, else a host under the first wildcard. */
export function sniFor(names: readonly string[]): string {
  const plain = names.find((n) => !n.startsWith('*.'));
  if (plain !== undefined) return plain;
  return `served-check.${(names[0] ?? '*.invalid').slice(2)}`;
}

/**
 * Handshakes with every agent in `agents` that serves `cert` (its `serves` list) on
 * `ip:tlsPort` and returns those not presenting `want`. Empty: every one serves it.
 */
export async function wrongServed(opts: { agents: readonly FleetAgentSpec[]; tlsPort: number; cert: string; names: readonly string[]; want: string }): Promise<WrongServed[]> {
  const wrong: WrongServed[] = [];
  for (const a of opts.agents) {
    if (!a.serves.includes(opts.cert)) continue;
    let got: string;
    try {
      got = (await servedCertificate({ host: a.ip, port: opts.tlsPort, servername: sniFor(opts.names), timeoutMs: 5000 })).fingerprint;
    } catch (err) {
      got = `(${(err as Error).message})`;
    }
    if (got !== opts.want) wrong.push({ agent: a.name, cert: opts.cert, want: opts.want, got });
  }
  return wrong;
}

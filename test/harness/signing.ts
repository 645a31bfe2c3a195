/**
 * Record signing for tests that play the controller: a key of their own, records signed
 * the way controller/signing signs them, and the agent's trust state (agent/trust) set
 * up to trust that key.
 */
import type { ChallengeRecord, DesiredRecord, SigningPublicKey } from '../../shared/model/index.js';
import { systemClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { generateSigningKey, signRecord } from '../../shared/signing/index.js';
import { saveSigningKeys, Trust } from '../../agent/trust/index.js';
import type { Logger } from 'pino';

export interface TestSigner {
  keyId: string;
  publicKeys: SigningPublicKey[];
  /** `record` signed with generation `generation` (default: the next of this signer's counter for its certificate). */
  desired(record: DesiredRecord, generation?: number): DesiredRecord;
  challenge(record: ChallengeRecord, generation?: number): ChallengeRecord;
}

/** A fresh Ed25519 key with its own per-certificate generation counter. */
export function testSigner(): TestSigner {
  const k = generateSigningKey();
  const key = { keyId: k.publicKey.keyId, privateKeyPem: k.privateKeyPem };
  const counters = new Map<string, number>();
  const next = (cert: string, g: number | undefined): number => {
    const n = g ?? (counters.get(cert) ?? 0) + 1;
    counters.set(cert, Math.max(n, counters.get(cert) ?? 0));
    return n;
  };
  return {
    keyId: key.keyId,
    publicKeys: [k.publicKey],
    desired: (r, g) => signRecord('desired', { ...r, generation: next(r.name, g) }, key),
    challenge: (r, g) => signRecord('challenge', { ...r, generation: next(r.cert, g) }, key),
  };
}

/** An agent trust state in `stateDir` that trusts `signer`'s key. */
export async function trustFor(stateDir: string, signer: TestSigner | null, log: Logger = silentLogger()): Promise<Trust> {
  if (signer) await saveSigningKeys(stateDir, signer.publicKeys);
  return Trust.open(stateDir, systemClock, log);
}

/**
 * The agent's identity: enrolment with a one-time token, and the files it leaves.
 *
 * `<stateDir>/identity/` (0700) holds `key.pem` (0600, generated here, never sent),
 * `cert.pem` (client certificate from the controller), `ca.pem` (the controller CA as
 * returned at enrolment) and `agent.json` ({ name, labels }). The controller's
 * record-signing public keys go to `<stateDir>/trust/` (agent/trust). Files are written to a
 * temporary name and renamed, key first, so a crash never leaves a certificate without
 * its key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';
import { writeFileAtomic } from '../../shared/files/index.js';
import { ControllerLink } from '../link/index.js';
import { saveSigningKeys } from '../trust/index.js';

/** An enrolled agent's identity. `keyPem` is secret. */
export interface AgentIdentity {
  name: string;
  labels: Record<string, string>;
  certPem: string;
  keyPem: string;
}

function identityDir(stateDir: string): string {
  return path.join(stateDir, 'identity');
}


/** Reads the identity; UNAUTHENTICATED with a hint when the agent was never enrolled. */
export function loadIdentity(stateDir: string): AgentIdentity {
  const dir = identityDir(stateDir);
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'agent.json'), 'utf8')) as { name: string; labels: Record<string, string> };
    return {
      name: meta.name,
      labels: meta.labels,
      certPem: fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8'),
      keyPem: fs.readFileSync(path.join(dir, 'key.pem'), 'utf8'),
    };
  } catch (err) {
    throw new CertfleetError(ErrorCode.Unauthenticated, `agent not enrolled (no identity in ${dir}): run "certfleet agent enroll --config FILE --token TOKEN"`, {
      cause: err,
    });
  }
}

/**
 * Enrols with the controller: makes a key and CSR, redeems `token`, and saves the
 * identity. ENROLL_TOKEN_INVALID when the token is unknown, used or expired.
 */
export async function enroll(opts: { stateDir: string; address: string; caPem: string; serverName?: string; token: string }): Promise<AgentIdentity> {
  const { keyPem, csrPem } = await createAgentKeyAndCsr('agent');
  const link = new ControllerLink({ address: opts.address, caPem: opts.caPem, ...(opts.serverName === undefined ? {} : { serverName: opts.serverName }) });
  try {
    const res = await link.enroll(opts.token.trim(), csrPem);
    const dir = identityDir(opts.stateDir);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    await writeFileAtomic(path.join(dir, 'key.pem'), keyPem, 0o600);
    await writeFileAtomic(path.join(dir, 'cert.pem'), res.certificatePem, 0o644);
    await writeFileAtomic(path.join(dir, 'ca.pem'), res.caPem, 0o644);
    await writeFileAtomic(path.join(dir, 'agent.json'), JSON.stringify({ name: res.agent, labels: res.labels }, null, 2) + '\n', 0o644);
    // The controller's record-signing keys, from this mTLS-protected answer (agent/trust).
    if (res.signingKeys.length > 0) await saveSigningKeys(opts.stateDir, res.signingKeys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })));
    return { name: res.agent, labels: res.labels, certPem: res.certificatePem, keyPem };
  } finally {
    link.close();
  }
}

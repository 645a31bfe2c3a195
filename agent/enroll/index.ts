/**
 * The agent's identity: enrolment with a one-time token, and the files it leaves.
 *
 * `<stateDir>/identity/` (0700) holds `key.pem` (0600, generated here, never sent),
 * `cert.pem` (client certificate from the controller), `ca.pem` (the controller CA as
 * returned at enrolment), `agent.json` ({ name, labels }) and, when the controller is the
 * NATS authority, `nats.creds` (0600: the agent's NATS user, minted for this identity and
 * read-only on the buckets the agent watches). Files are written to a temporary name and
 * renamed, key first, so a crash never leaves a certificate without its key. Enrolling
 * again replaces all of them: the NATS credentials rotate with the identity (the
 * controller revokes the previous NATS user).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';
import { writeFileAtomic } from '../../shared/files/index.js';
import { ControllerLink } from '../link/index.js';

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

/** The NATS credentials file the controller handed over at enrolment (may be absent). */
export function natsCredentialsFile(stateDir: string): string {
  return path.join(identityDir(stateDir), 'nats.creds');
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
    const creds = natsCredentialsFile(opts.stateDir);
    if (res.natsCredentials !== '') {
      await writeFileAtomic(creds, res.natsCredentials, 0o600);
    } else {
      // A controller that mints no NATS users now: credentials of an earlier enrolment are revoked.
      fs.rmSync(creds, { force: true });
    }
    await writeFileAtomic(path.join(dir, 'agent.json'), JSON.stringify({ name: res.agent, labels: res.labels }, null, 2) + '\n', 0o644);
    return { name: res.agent, labels: res.labels, certPem: res.certificatePem, keyPem };
  } finally {
    link.close();
  }
}

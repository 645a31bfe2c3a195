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
 * controller revokes the previous NATS user). The controller's record-signing public keys
 * go to `<stateDir>/trust/` (agent/trust).
 *
 * Renewal (issue #9): the identity renews itself at 2/3 of the certificate's lifetime
 * ({@link identityRenewalPlan}): a new key and CSR, `RenewIdentity` over the current
 * mTLS link, then the pair is committed in two steps so a crash never mixes an old
 * certificate with a new key:
 *
 * ```
 *   write key.next.pem (0600), cert.next.pem   <- cert.next.pem existing is the commit point
 *   rename key.next.pem -> key.pem
 *   rename cert.next.pem -> cert.pem
 * ```
 *
 * {@link loadIdentity} finishes a commit a crash interrupted and drops a key.next.pem
 * without its certificate (the old pair is intact; the controller keeps accepting the
 * old certificate until the new one is used).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Clock, Timer } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { LogKey } from '../log/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';
import { fsyncDir, writeFileAtomic } from '../../shared/files/index.js';
import type { ControllerLink as ControllerLinkType, ControllerSwitch } from '../link/index.js';
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

/** The NATS credentials file the controller handed over at enrolment (may be absent). */
export function natsCredentialsFile(stateDir: string): string {
  return path.join(identityDir(stateDir), 'nats.creds');
}


const NEXT_KEY = 'key.next.pem';
const NEXT_CERT = 'cert.next.pem';

/**
 * Finishes or drops a renewal a crash interrupted (see the module comment). Synchronous:
 * it runs before anything reads the identity.
 */
function recoverRenewal(dir: string): void {
  const nextKey = path.join(dir, NEXT_KEY);
  const nextCert = path.join(dir, NEXT_CERT);
  if (fs.existsSync(nextCert)) {
    if (fs.existsSync(nextKey)) fs.renameSync(nextKey, path.join(dir, 'key.pem'));
    fs.renameSync(nextCert, path.join(dir, 'cert.pem'));
  } else if (fs.existsSync(nextKey)) {
    fs.rmSync(nextKey, { force: true });
  }
}

/**
 * Reads the identity (first finishing an interrupted renewal); UNAUTHENTICATED with a
 * hint when the agent was never enrolled.
 */
export function loadIdentity(stateDir: string): AgentIdentity {
  const dir = identityDir(stateDir);
  try {
    if (fs.existsSync(dir)) recoverRenewal(dir);
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
 * Enrols with a controller: makes a key and CSR, redeems `token`, and saves the
 * identity. ENROLL_TOKEN_INVALID when the token is unknown, used or expired. With
 * several `addresses` any controller will do (the token and the CA are in the shared
 * store): the next one is tried when one cannot be reached (the token was not sent, so
 * not redeemed) or answers NOT_LEADER, never after the token was sent (agent/link).
 */
export async function enroll(opts: {
  stateDir: string;
  addresses: readonly string[];
  caPem: string;
  serverName?: string;
  token: string;
  onSwitch?: (s: ControllerSwitch) => void;
}): Promise<AgentIdentity> {
  const { keyPem, csrPem } = await createAgentKeyAndCsr('agent');
  const link = new ControllerLink({
    addresses: opts.addresses,
    caPem: opts.caPem,
    ...(opts.serverName === undefined ? {} : { serverName: opts.serverName }),
    ...(opts.onSwitch === undefined ? {} : { onSwitch: opts.onSwitch }),
  });
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
    // The controller's record-signing keys, from this mTLS-protected answer (agent/trust).
    if (res.signingKeys.length > 0) await saveSigningKeys(opts.stateDir, res.signingKeys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })));
    return { name: res.agent, labels: res.labels, certPem: res.certificatePem, keyPem };
  } finally {
    link.close();
  }
}

/** What the renewal loop does next about the agent's identity. */
export type IdentityPlan = { action: 'renew'; reason: string } | { action: 'wait'; at: number; reason: string };

/** Renewal point: this share of the lifetime after notBefore (the same 2/3 as certificates). */
export const IDENTITY_RENEW_AT = 2 / 3;

/**
 * When to renew an identity certificate valid from `notBefore` to `notAfter` (epoch ms).
 * Pure. Due at 2/3 of its lifetime; after `failures` failed attempts since it became
 * due, the next try waits a twentieth of the lifetime (at least 5 s, at most 5 min), so a
 * controller that is away is asked again well before the certificate expires.
 * `lastFailureAt` is when the latest attempt failed.
 */
export function identityRenewalPlan(cert: { notBefore: number; notAfter: number }, now: number, retry?: { failures: number; lastFailureAt: number }): IdentityPlan {
  const lifetime = Math.max(0, cert.notAfter - cert.notBefore);
  const due = cert.notBefore + Math.floor(lifetime * IDENTITY_RENEW_AT);
  const expiry = new Date(cert.notAfter).toISOString();
  if (now < due) return { action: 'wait', at: due, reason: `identity valid until ${expiry}; renewal at 2/3 of its lifetime` };
  if (retry !== undefined && retry.failures > 0) {
    const next = retry.lastFailureAt + Math.min(300_000, Math.max(5_000, Math.floor(lifetime / 20)));
    if (now < next) return { action: 'wait', at: next, reason: `identity renewal failed ${retry.failures} time(s); next try before it expires at ${expiry}` };
  }
  return { action: 'renew', reason: now >= cert.notAfter ? `identity expired at ${expiry}` : `identity expires at ${expiry}; past 2/3 of its lifetime` };
}

/** Validity of a PEM certificate, epoch ms. Throws when it cannot be read. */
export function certificateValidity(certPem: string): { notBefore: number; notAfter: number; serial: string } {
  const cert = new crypto.X509Certificate(certPem);
  return { notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo), serial: cert.serialNumber.toLowerCase() };
}

/**
 * Renews the identity of the agent in `stateDir` over `link` (authenticated by the
 * current certificate): a new key and CSR, the controller signs, the pair is committed
 * (module comment), and the link presents the new certificate from its next call.
 * Errors from the controller (UNAUTHENTICATED for a removed agent) propagate with
 * nothing written.
 */
export async function renewIdentity(opts: { stateDir: string; link: ControllerLinkType; identity: AgentIdentity }): Promise<AgentIdentity> {
  const { keyPem, csrPem } = await createAgentKeyAndCsr(opts.identity.name);
  const res = await opts.link.renewIdentity(csrPem);
  const got = new crypto.X509Certificate(res.certificatePem);
  // The controller signs what we sent; a certificate for another key would lock us out.
  if (!got.checkPrivateKey(crypto.createPrivateKey(keyPem))) {
    throw new CertfleetError(ErrorCode.CsrInvalid, 'the renewed identity certificate is not for the key this agent sent');
  }
  const dir = identityDir(opts.stateDir);
  await writeFileAtomic(path.join(dir, NEXT_KEY), keyPem, 0o600);
  await writeFileAtomic(path.join(dir, NEXT_CERT), res.certificatePem, 0o644);
  // Committed: from here loadIdentity finishes the job after a crash.
  fs.renameSync(path.join(dir, NEXT_KEY), path.join(dir, 'key.pem'));
  fs.renameSync(path.join(dir, NEXT_CERT), path.join(dir, 'cert.pem'));
  await fsyncDir(dir);
  // NATS re-reads the file at its next reconnect: the controller revoked the previous user.
  if (res.natsCredentials !== '') await writeFileAtomic(natsCredentialsFile(opts.stateDir), res.natsCredentials, 0o600);
  const next: AgentIdentity = { ...opts.identity, certPem: res.certificatePem, keyPem };
  opts.link.useIdentity(next);
  return next;
}

/** A running identity renewal loop. */
export interface IdentityRenewal {
  /** The identity in use now (renewed ones included). */
  current(): AgentIdentity;
  stop(): void;
}

/**
 * Keeps the agent's identity renewed: sleeps until {@link identityRenewalPlan} says
 * renew (re-planning at least hourly, so a clock jump is noticed), renews, and retries
 * on failure; the one place identity renewal retries. `onRenewed` is told the new
 * identity (never throws into the loop). Logs without key material.
 */
export function startIdentityRenewal(opts: {
  stateDir: string;
  link: ControllerLinkType;
  identity: AgentIdentity;
  /** Plans and waits on this clock (a manual one in tests). */
  clock: Clock;
  log: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
  onRenewed?: (identity: AgentIdentity) => void;
}): IdentityRenewal {
  let identity = opts.identity;
  let timer: Timer | undefined;
  let stopped = false;
  let retry = { failures: 0, lastFailureAt: 0 };
  const schedule = (): void => {
    if (stopped) return;
    let validity: { notBefore: number; notAfter: number; serial: string };
    try {
      validity = certificateValidity(identity.certPem);
    } catch (err) {
      opts.log.warn({ [LogKey.err]: (err as Error).message }, 'identity certificate unreadable; not renewing it');
      return;
    }
    const plan = identityRenewalPlan(validity, opts.clock.now(), retry);
    if (plan.action === 'wait') {
      const delay = Math.min(Math.max(plan.at - opts.clock.now(), 1000), 3600_000);
      timer = opts.clock.after(delay, schedule).unref();
      return;
    }
    opts.log.info({ [LogKey.reason]: plan.reason, [LogKey.serial]: validity.serial }, 'renewing identity');
    renewIdentity({ stateDir: opts.stateDir, link: opts.link, identity }).then(
      (next) => {
        identity = next;
        retry = { failures: 0, lastFailureAt: 0 };
        const v = certificateValidity(next.certPem);
        opts.log.info({ [LogKey.serial]: v.serial, [LogKey.notAfter]: new Date(v.notAfter).toISOString() }, 'identity renewed');
        opts.onRenewed?.(next);
        schedule();
      },
      (err: unknown) => {
        retry = { failures: retry.failures + 1, lastFailureAt: opts.clock.now() };
        const cf = err instanceof CertfleetError ? err : undefined;
        opts.log.warn({ [LogKey.code]: cf?.code, [LogKey.err]: (err as Error).message, [LogKey.failures]: retry.failures }, 'identity renewal failed');
        schedule();
      },
    );
  };
  schedule();
  return {
    current: () => identity,
    stop() {
      stopped = true;
      timer?.stop();
    },
  };
}

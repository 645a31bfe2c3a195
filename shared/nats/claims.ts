/**
 * Account JWT updates pushed to running servers (operator mode). nats-server listens on
 * `$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE` for a newer account JWT signed by its
 * operator, also with `resolver: MEMORY`, and applies it at once: a user revoked in it is
 * disconnected and refused from then on. Only a system-account user may publish there.
 */
import { CertfleetError, ErrorCode } from '../errors/index.js';
import { impl, type NatsHandle } from './connection.js';
import { toNatsError } from './errors.js';

/**
 * Sends `accountJwt` as the new claims of account `accountId` over a system-account
 * connection and resolves with the server's message ("jwt updated"). In a cluster every
 * server subscribed receives the update; the first reply is the one read. Fails with
 * NATS_UNAVAILABLE (retryable) when no server answers, and with PERMISSION_DENIED when
 * the server refuses the update (not signed by its operator, another account, or a
 * connection outside the system account).
 */
export async function pushAccountClaims(handle: NatsHandle, accountId: string, accountJwt: string): Promise<string> {
  const h = impl(handle);
  const subject = `$SYS.REQ.ACCOUNT.${accountId}.CLAIMS.UPDATE`;
  let text: string;
  try {
    const reply = await h.nc.request(subject, accountJwt, { timeout: h.requestTimeoutMs });
    text = reply.string();
  } catch (err) {
    throw toNatsError(err, `account claims update for ${accountId}`, { account: accountId });
  }
  let parsed: { data?: { code?: number; message?: string }; error?: { code?: number; description?: string } };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    throw new CertfleetError(ErrorCode.Internal, `account claims update: unreadable reply ${JSON.stringify(text.slice(0, 200))}`);
  }
  if (parsed.error !== undefined || parsed.data?.code !== 200) {
    const why = parsed.error?.description ?? parsed.data?.message ?? text;
    throw new CertfleetError(ErrorCode.PermissionDenied, `account claims update for ${accountId} refused: ${why}`, { details: { account: accountId } });
  }
  return parsed.data.message ?? 'jwt updated';
}

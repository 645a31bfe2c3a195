/**
 * Turning what an ACME CA answers into CertfleetErrors (pure; no I/O).
 *
 * RFC 8555 §6.7: a CA reports failures as RFC 7807 problem documents
 * (`{type, detail, status, subproblems}`), and rate limits as
 * `urn:ietf:params:acme:error:rateLimited` with a Retry-After header (§6.6). The one
 * place that retries needs the type and the Retry-After, so they are kept in `details`
 * and `retryAfterMs` instead of being flattened into a message.
 */
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';

/** The ACME error namespace (RFC 8555 §6.7). */
export const ACME_ERROR_PREFIX = 'urn:ietf:params:acme:error:';
export const PROBLEM_RATE_LIMITED = `${ACME_ERROR_PREFIX}rateLimited`;
export const PROBLEM_BAD_NONCE = `${ACME_ERROR_PREFIX}badNonce`;
/** RFC 8555 §7.3.1: the CA does not know the account (onlyReturnExisting, or a kid it forgot). */
export const PROBLEM_ACCOUNT_DOES_NOT_EXIST = `${ACME_ERROR_PREFIX}accountDoesNotExist`;
/** RFC 9773 §7.4: the certificate named in `replaces` was already replaced by another order (HTTP 409). */
export const PROBLEM_ALREADY_REPLACED = `${ACME_ERROR_PREFIX}alreadyReplaced`;
/** RFC 8555 §6.7: the certificate to revoke is revoked already. */
export const PROBLEM_ALREADY_REVOKED = `${ACME_ERROR_PREFIX}alreadyRevoked`;
/** draft-ietf-acme-profiles §4: newOrder (or finalize) named a profile the CA does not offer. */
export const PROBLEM_INVALID_PROFILE = `${ACME_ERROR_PREFIX}invalidProfile`;

/** An RFC 7807 / RFC 8555 problem document, as far as certfleet reads it. */
export interface AcmeProblemDocument {
  type: string;
  detail?: string;
  status?: number;
  identifier?: { type: string; value: string };
  subproblems?: AcmeProblemDocument[];
}

/** The response fields the translation needs (a structural slice of an axios response). */
export interface HttpResponseLike {
  status: number;
  headers: Record<string, unknown>;
  data: unknown;
}

/** The problem document in `data`, or undefined when `data` is not one. */
export function asProblem(data: unknown): AcmeProblemDocument | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const d = data as Record<string, unknown>;
  if (typeof d['type'] !== 'string') return undefined;
  const problem: AcmeProblemDocument = { type: d['type'] };
  if (typeof d['detail'] === 'string') problem.detail = d['detail'];
  if (typeof d['status'] === 'number') problem.status = d['status'];
  const ident = d['identifier'] as Record<string, unknown> | undefined;
  if (typeof ident === 'object' && ident !== null && typeof ident['type'] === 'string' && typeof ident['value'] === 'string') {
    problem.identifier = { type: ident['type'], value: ident['value'] };
  }
  if (Array.isArray(d['subproblems'])) {
    problem.subproblems = d['subproblems'].map(asProblem).filter((p): p is AcmeProblemDocument => p !== undefined);
  }
  return problem;
}

/** True for a 400 badNonce answer, which acme-client retries itself with the fresh nonce. */
export function isBadNonce(resp: HttpResponseLike): boolean {
  return resp.status === 400 && asProblem(resp.data)?.type === PROBLEM_BAD_NONCE;
}

/**
 * Retry-After (RFC 9110 §10.2.3) in milliseconds from `nowMs`: delay-seconds or an
 * HTTP-date. Undefined when absent or unreadable; never negative.
 */
export function parseRetryAfterMs(value: unknown, nowMs: number): number | undefined {
  const text: unknown = Array.isArray(value) ? (value as unknown[])[0] : value;
  if (typeof text !== 'string') return undefined;
  const v = text.trim();
  if (v === '') return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

/** The problem's fields as `details` of a CertfleetError (all public data). */
export function problemDetails(problem: AcmeProblemDocument | undefined, status: number | undefined, url?: string): Record<string, unknown> {
  return {
    type: problem?.type,
    status: problem?.status ?? status,
    detail: problem?.detail,
    subproblems: problem?.subproblems,
    ...(url === undefined ? {} : { url }),
  };
}

/**
 * Translates an HTTP error answer (status >= 400) from the CA:
 * - rateLimited (or a bare 429) → ACME_RATE_LIMITED, retryable, with Retry-After;
 * - any other problem document → ACME_PROBLEM, retryable for 5xx (and 429, and badNonce);
 * - an error without a problem document (a proxy's HTML page, say) → ACME_PROBLEM,
 *   retryable for 5xx, with the status only.
 */
export function errorFromResponse(resp: HttpResponseLike, url: string | undefined, nowMs: number): CertfleetError {
  const problem = asProblem(resp.data);
  const retryAfterMs = parseRetryAfterMs(resp.headers['retry-after'], nowMs);
  const details = problemDetails(problem, resp.status, url);
  const what = problem?.detail ?? (problem ? problem.type : `HTTP ${resp.status}`);
  if (problem?.type === PROBLEM_RATE_LIMITED || (problem === undefined && resp.status === 429)) {
    return new CertfleetError(ErrorCode.AcmeRateLimited, `ACME CA rate limit: ${what}`, {
      retryable: true,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      details,
    });
  }
  const retryable = resp.status >= 500 || resp.status === 429 || problem?.type === PROBLEM_BAD_NONCE;
  const label = problem ? problem.type.replace(ACME_ERROR_PREFIX, '') : 'error';
  return new CertfleetError(ErrorCode.AcmeProblem, `ACME CA answered ${resp.status} ${label}: ${what}`, {
    retryable,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    details,
  });
}

/**
 * Translates a request that got no HTTP answer (refused, reset, TLS verification,
 * timeout, DNS) into ACME_TRANSPORT, retryable. The cause is the low-level error (an
 * axios error wraps it), so its `code` (ECONNREFUSED, UNABLE_TO_VERIFY_LEAF_SIGNATURE...)
 * survives without dragging the request config (signed body, agent) into logs.
 */
export function transportError(err: unknown, url: string | undefined): CertfleetError {
  const outer = err as { code?: unknown; message?: unknown; cause?: unknown } | null;
  const root = outer?.cause instanceof Error ? outer.cause : err instanceof Error ? err : new Error(String(err));
  const rootCode = (root as { code?: unknown }).code;
  const code = typeof rootCode === 'string' ? rootCode : typeof outer?.code === 'string' ? outer.code : undefined;
  const where = url === undefined ? 'the ACME CA' : originOf(url);
  return new CertfleetError(ErrorCode.AcmeTransport, `ACME request to ${where} failed: ${root.message}`, {
    retryable: true,
    cause: root,
    details: { url, errno: code },
  });
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

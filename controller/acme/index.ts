/**
 * controller/acme — the ACME adapter, and the only module that imports acme-client.
 *
 * `openAcmeAccount` (account.ts) opens the controller's account at a CA, its key kept in
 * the store; `accountId` names it (and its budgets).
 *
 * `createAcmeClient` talks to one CA as one account, step by step (order, challenges,
 * finalize, download) so the controller can persist between steps and resume an order
 * after a crash. Every failure is a CertfleetError with a stable code; the CA's problem
 * documents (rateLimited with Retry-After included) survive into `details` and
 * `retryAfterMs`. Keys and CSRs for orders come from the helpers in keys.ts.
 *
 * `client.revokeCertificate(certPem, reason)` revokes with the account key (RFC 8555 §7.6);
 * the CA's alreadyRevoked counts as done.
 *
 * ARI (RFC 9773, ari.ts): `ariCertId(certPem)` names a certificate for the CA;
 * `client.renewalInfoUrl()` says whether the CA offers ARI, `client.getRenewalInfo()`
 * fetches its suggested window and when to ask again, and `placeOrder(names, { replaces })`
 * marks an order as the renewal of that certificate.
 *
 * Profiles (draft-ietf-acme-profiles, profiles.ts): `client.profiles()` lists what the
 * directory offers, `profileProblems` checks configured profiles against it, and
 * `placeOrder(names, { profile })` asks for one.
 */
export {
  createAcmeClient,
  type AcmeClient,
  type AcmeClientOptions,
  type AcmeOrder,
  type AcmeOrderStatus,
  type AcmeAuthorization,
  type AcmeAuthorizationStatus,
  type AcmeChallenge,
  type AcmeIdentifier,
  type AcmeCertificate,
  type PlaceOrderOptions,
} from './client.js';
export {
  ariCertId,
  ariCertIdFromParts,
  isAriCertId,
  ariRetryAfterMs,
  parseRenewalInfo,
  ARI_MIN_RETRY_MS,
  ARI_MAX_RETRY_MS,
  ARI_ERROR_RETRY_MS,
  ARI_JITTER_FRACTION,
  type RenewalInfo,
  type RenewalWindow,
} from './ari.js';
export { generateKey, generateKeyObject, generateAccountKey, createCsr, type NewKey } from './keys.js';
export { accountId, openAcmeAccount, type AccountDoc, type OpenAccountOptions } from './account.js';
export { PROBLEM_RATE_LIMITED, PROBLEM_BAD_NONCE, PROBLEM_ALREADY_REPLACED, PROBLEM_ALREADY_REVOKED, PROBLEM_INVALID_PROFILE, type AcmeProblemDocument } from './problem.js';
export { profileProblems, type ProfileWish } from './profiles.js';
/** Every ACME HTTP request, timed, by resource and status (for the controller's metrics). */
export { observeAcmeRequests, type AcmeRequestObserver, type AcmeRequestObservation } from './transport.js';

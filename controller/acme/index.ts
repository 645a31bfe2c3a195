/**
 * controller/acme — the ACME adapter, and the only module that imports acme-client.
 *
 * `createAcmeClient` talks to one CA as one account, step by step (order, challenges,
 * finalize, download) so the controller can persist between steps and resume an order
 * after a crash. Every failure is a CertfleetError with a stable code; the CA's problem
 * documents (rateLimited with Retry-After included) survive into `details` and
 * `retryAfterMs`. Keys and CSRs for orders come from the helpers in keys.ts.
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
} from './client.js';
export { generateKey, generateAccountKey, createCsr } from './keys.js';
export { PROBLEM_RATE_LIMITED, PROBLEM_BAD_NONCE, type AcmeProblemDocument } from './problem.js';

/**
 * The one registry of object keys: every JSON document the controller keeps in its
 * CertStore is named here, so the layout can be read (and changed) in one place.
 *
 * These strings ARE the stored layout. The file store keeps `objects/<key>.json`, Vault
 * `<mount>/data/<prefix>/objects/<key>`; a key spelled differently here is a document a
 * running fleet can no longer find. test/unit/store-objects.test.ts pins every key to the
 * text earlier controllers wrote; change one only together with a migration.
 *
 * The builders do not validate their argument: the owner of each document checks its
 * names (certificate, agent, operator) before it asks for a key, and the store refuses
 * any key outside OBJECT_KEY_PATTERN.
 */

/** Prefixes of the keyed families, for `listObjects` (each ends with `/`). */
export const ObjectPrefix = {
  /** ACME accounts, one per CA directory (controller/acme). */
  acmeAccounts: 'acme/account/',
  /** Registered agents (controller/enroll). */
  agents: 'agents/',
  /** Unredeemed enrolment tokens, by SHA-256 of the token (controller/enroll). */
  enrollTokens: 'enroll/',
  /** Markers of redeemed tokens, by the same hash (controller/enroll). */
  enrollUsed: 'enroll-used/',
  /** Operators of the OperatorService (controller/access). */
  operators: 'operators/',
  /** Each agent's current NATS user (controller/natsauth). */
  natsUsers: 'nats/users/',
  /** Per-certificate record generations (controller/signing). */
  signingGenerations: 'signing/generations/',
  /** Orders in flight, resumed after a crash (controller/issuer). */
  orders: 'orders/',
  /** Rollback pins (controller/rollback). */
  pins: 'pins/',
  /** ARI windows per certificate (controller/ari). */
  ari: 'ari/',
  /** DNS-01 records to remove, by SHA-256 of the journal id (controller/solvers/dns01). */
  dns01: 'dns01/',
  /** Durable renewal intents (controller/reconcile). */
  renewals: 'renewals/',
  /** Certificates imported from certbot (controller/certbot). */
  imports: 'imports/',
  /** Revocation marks of certificate versions (controller/rollback); `<cert>/<version>` below it. */
  revocations: 'revocations/',
} as const;

/** Every object key the controller writes. */
export const ObjectKey = {
  /** The controller's own CA (controller/pki). */
  controllerCa: 'pki/ca',
  /** The record-signing key ring (controller/signing). */
  signingKeys: 'pki/signing-keys',
  /** The NATS operator and accounts (controller/natsauth). */
  natsAuthority: 'nats/authority',
  /** The ACME account for the CA whose directory hashes to `id` (see controller/acme accountId). */
  acmeAccount: (id: string): string => ObjectPrefix.acmeAccounts + id,
  agent: (name: string): string => ObjectPrefix.agents + name,
  /** `hash`: hex SHA-256 of the bootstrap token; the token itself is never stored. */
  enrollToken: (hash: string): string => ObjectPrefix.enrollTokens + hash,
  enrollUsed: (hash: string): string => ObjectPrefix.enrollUsed + hash,
  operator: (name: string): string => ObjectPrefix.operators + name,
  natsUser: (agent: string): string => ObjectPrefix.natsUsers + agent,
  signingGeneration: (cert: string): string => ObjectPrefix.signingGenerations + cert,
  order: (cert: string): string => ObjectPrefix.orders + cert,
  pin: (cert: string): string => ObjectPrefix.pins + cert,
  ari: (cert: string): string => ObjectPrefix.ari + cert,
  /** `hash`: hex SHA-256 of the journal entry id. */
  dns01: (hash: string): string => ObjectPrefix.dns01 + hash,
  renewal: (cert: string): string => ObjectPrefix.renewals + cert,
  importRecord: (cert: string): string => ObjectPrefix.imports + cert,
  /**
   * The revocation mark of one version: versions are immutable, so that a version was
   * revoked is a document beside it, never a change of the version.
   */
  revocation: (cert: string, version: number): string => `${ObjectPrefix.revocations}${cert}/${version}`,
  /** Listing prefix of every revocation mark of `cert`. */
  revocationsOf: (cert: string): string => `${ObjectPrefix.revocations}${cert}/`,
} as const;

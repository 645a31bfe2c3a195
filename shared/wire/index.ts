/**
 * The wire vocabulary: every NATS bucket, stream, subject and event type certfleet
 * uses, defined here and nowhere else. Changing a value is a protocol change.
 *
 * What travels over NATS is public data only: names, versions, fingerprints, dates,
 * label selectors and HTTP-01 key authorizations (which the CA publishes anyway).
 * Private keys never do; they move only over gRPC with mutual TLS.
 */

/** JetStream key-value buckets. */
export const Bucket = {
  /**
   * Desired state. Key: certificate name. Value: {@link DesiredRecord} as JSON.
   * History 10 so an operator can see the last pointer moves with `nats kv history`.
   */
  desired: 'certfleet_desired',
  /**
   * Pending HTTP-01 challenges. Key: ACME token. Value: {@link ChallengeRecord}.
   * Deleted when the authorization is done; agents serve what is present.
   */
  challenges: 'certfleet_challenges',
  /**
   * Last status each agent reported. Key: agent name. Value: AgentRecord (controller/fleet).
   * Written by the controller from gRPC ReportStatus, read by every controller.
   */
  agents: 'certfleet_agents',
  /**
   * Rate-limit budget levels, so a restart does not forget what was spent. Key: the
   * ACME account id. Value: BudgetState (controller/budget), written with CAS.
   */
  budgets: 'certfleet_budgets',
} as const;

/** JetStream stream holding the audit log of fleet events. */
export const EventStream = {
  name: 'CERTFLEET_EVENTS',
  /** Subject of one event: certfleet.events.<type>.<cert or "-">. */
  subjectPrefix: 'certfleet.events',
  /** Events are kept this long (ms). */
  maxAgeMs: 90 * 24 * 3600 * 1000,
} as const;

/** Subject an event of `type` about `cert` is published on. */
export function eventSubject(type: EventType, cert?: string): string {
  return `${EventStream.subjectPrefix}.${type}.${cert ?? '-'}`;
}

/** Every event type, with what it means. */
export const EventType = {
  /** An ACME order was placed for a certificate. */
  ordered: 'ordered',
  /** The CA issued a certificate and its version was stored. */
  issued: 'issued',
  /** Issuance failed; details carry the error code and whether it will be retried. */
  failed: 'failed',
  /** The desired pointer of a certificate moved to a version. */
  published: 'published',
  /** An agent installed a version and its hook succeeded. */
  installed: 'installed',
  /** An agent refused a bundle or its install/hook failed. */
  installFailed: 'install-failed',
  /** An agent enrolled with a bootstrap token. */
  enrolled: 'enrolled',
  /** An operator rolled a certificate back to an older version (pinned). */
  rolledBack: 'rolled-back',
  /** A rollback pin was released (by an operator or by a new issuance). */
  released: 'released',
  /** A staged rollout released its next wave, or completed. */
  rolloutAdvanced: 'rollout-advanced',
  /** A staged rollout stopped because an agent of a released wave failed. */
  rolloutHalted: 'rollout-halted',
  /** The CA issued a certificate but the store was down: it waits in the local spool. */
  spooled: 'spooled',
  /** An order was not sent because it would break a rate-limit budget; details say until when. */
  deferred: 'deferred',
  /** An operator asked for a renewal now. */
  renewRequested: 'renew-requested',
  /**
   * SECURITY: an agent refused records (unsigned, unknown key, bad signature, replayed
   * generation, malformed, unassigned or expired challenge, bundle fingerprint not the
   * signed one); details carry the counts per reason and the last refusal.
   */
  security: 'security',
} as const;

export type EventType = (typeof EventType)[keyof typeof EventType];

/** Validity of certificate names, which are also KV keys and subject tokens. */
export const CERT_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Validity of agent names (same rules as certificate names). */
export const AGENT_NAME_PATTERN = CERT_NAME_PATTERN;

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
  /**
   * The leader lease of the controllers. Key: `leader`. Value: LeaseRecord
   * (controller/lease), every write compare-and-set on the revision.
   */
  leader: 'certfleet_leader',
  /**
   * The controller registry. Key: a controller's `ha.name`. Value: ControllerRecord
   * (controller/lease registry.ts), written by each controller every ttl/3, read by
   * `status` on every controller.
   */
  controllers: 'certfleet_controllers',
  /**
   * Operator calls a follower controller hands to the leader (controller/intents). Key: a
   * random id. Value: a signed IntentRecord (pending, taken, done), every step written
   * compare-and-set. Only controllers may read or write it: a result can carry a sealed
   * enrolment token.
   */
  intents: 'certfleet_intents',
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
  /**
   * An operator revoked a version at the CA (`certfleet revoke`); details: reason, serial,
   * what the fleet was moved to, whether a renewal was requested.
   */
  revoked: 'revoked',
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
  /** An operator withdrew an outstanding renewal request (`certfleet renew --cancel`). */
  renewCancelled: 'renew-cancelled',
  /** An operator created a one-time enrolment token (details: the agent name, labels, expiry; never the token). */
  tokenCreated: 'token-created',
  /** An admin created operator credentials (details: name, role, serial). */
  operatorCreated: 'operator-created',
  /** An admin revoked operator credentials: the controller refuses them from now on. */
  operatorRevoked: 'operator-revoked',
  /** An admin changed an operator's role (details: from, to). */
  operatorRoleChanged: 'operator-role-changed',
  /** An admin removed an agent (`certfleet agents remove`): its certificate is refused, it left HTTP-01 duty. */
  agentRemoved: 'agent-removed',
  /** An agent renewed its own client certificate before expiry (details: new serial, notAfter). */
  identityRenewed: 'identity-renewed',
  /**
   * An HTTP-01 challenge went ahead without a selected agent that was offline longer than
   * `http01.offlineGrace` (or at once under `offlineAgents: skip`); details: identifier, offline since.
   */
  http01AgentSkipped: 'http01-agent-skipped',
  /**
   * An operator rehearsed an issuance against the staging CA (`renew --dry-run`); nothing
   * was stored or published. details: directoryUrl, ok, failedStep, serial, notAfter.
   */
  dryRun: 'dry-run',
  /**
   * SECURITY: an agent refused records (unsigned, unknown key, bad signature, replayed
   * generation, malformed, unassigned or expired challenge, bundle fingerprint not the
   * signed one); details carry the counts per reason and the last refusal.
   */
  security: 'security',
} as const;

export type EventType = (typeof EventType)[keyof typeof EventType];

/**
 * The revocation reasons an operator may give (`certfleet revoke --reason`), with their
 * RFC 5280 §5.3.1 CRLReason codes. Only these: Let's Encrypt refuses every other code
 * from a subscriber, and the API carries the name, not the number.
 */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** True for a name of {@link REVOCATION_REASONS}. */
export function isRevocationReason(v: unknown): v is RevocationReason {
  return typeof v === 'string' && Object.hasOwn(REVOCATION_REASONS, v);
}

/** Validity of certificate names, which are also KV keys and subject tokens. */
export const CERT_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Validity of agent names (same rules as certificate names). */
export const AGENT_NAME_PATTERN = CERT_NAME_PATTERN;

/**
 * Inbox prefix of agent `agent`'s NATS connection. Its NATS user may subscribe only
 * below it, so one agent cannot read the replies (or push-consumer deliveries) meant for
 * another agent or for the controller, whose inboxes stay at the default `_INBOX.<nuid>`.
 */
export function agentInboxPrefix(agent: string): string {
  return `_INBOX.agent.${agent}`;
}

/** The JetStream stream behind KV bucket `bucket` (JetStream's own naming). */
export function kvStreamName(bucket: string): string {
  return `KV_${bucket}`;
}

/**
 * The `DnsProvider` contract: the only thing the DNS-01 solver knows about a DNS
 * service. A new provider (a cloud API) implements these three methods and is added to
 * the factory in config.ts; the solver does not change.
 */

/**
 * Adds and removes single TXT records.
 *
 * - `fqdn` is absolute (`_acme-challenge.example.com.`), already moved to the validation
 *   zone when `_acme-challenge` is a CNAME; `value` is the 43-character DNS-01 digest.
 * - Several values may live at one name at once (a wildcard and its bare name share
 *   `_acme-challenge.<name>`): `present` adds one value without touching the others and
 *   `cleanup` removes exactly that value.
 * - Calls may run concurrently, for the same or different names.
 * - `cleanup` of a value that is not there succeeds (the janitor may repeat it).
 * - Failures are CertfleetErrors: DNS_CREDENTIALS_REJECTED when the service refuses
 *   the credentials (not retryable), DNS_PROVIDER_FAILED otherwise (`retryable` when
 *   trying later can help). Credentials never appear in messages or logs.
 */
export interface DnsProvider {
  /** The provider's name in the configuration. */
  readonly name: string;
  /** `rfc2136`, `exec`, ... */
  readonly type: string;
  /**
   * Start-up check: credentials present and, where the service allows it without
   * changing anything, accepted (rfc2136 sends a signed SOA query). Throws like above.
   */
  check(): Promise<void>;
  present(fqdn: string, value: string): Promise<void>;
  cleanup(fqdn: string, value: string): Promise<void>;
}

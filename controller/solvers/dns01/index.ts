/**
 * controller/solvers/dns01 — DNS-01 challenges through DNS providers.
 *
 * `Dns01Solver.present(challenges)` writes one TXT record per challenge (following an
 * `_acme-challenge` CNAME to its validation zone), journals it, and returns only when
 * every authoritative server shows every value; `cleanup` removes them; `janitor`
 * removes records a crash left in the journal. Providers: `rfc2136` (DNS UPDATE signed
 * with TSIG, for BIND, Knot, PowerDNS...), `exec` (an operator's command), and the HTTP
 * APIs in providers/ (`cloudflare`, `route53`, `gcloud`, `acme-dns`). The
 * `dns01` configuration section and its factory live in config.ts. See docs/dns01.md.
 */
export type { DnsProvider } from './provider.js';
export {
  Dns01Solver,
  MemoryDns01Journal,
  janitor,
  dns01Value,
  challengeName,
  type Dns01Challenge,
  type Dns01Journal,
  type Dns01JournalEntry,
  type Dns01Presentation,
  type Dns01SolverOptions,
  type Dns01ZoneRoute,
  type JanitorOptions,
  type JanitorReport,
} from './solver.js';
export { Rfc2136Provider, type Rfc2136Options } from './rfc2136.js';
export { StoreDns01Journal } from './journal.js';
export { ExecProvider, type ExecOptions } from './exec.js';
export { DnsLookup, waitForPropagation, type LookupOptions, type Nameserver, type PropagationOptions } from './propagation.js';
export { dns01ConfigSchema, createDns01Providers, createDns01Solver, parseTsigSecret, type Dns01Config, type Dns01ProviderConfig, type Dns01FactoryOptions } from './config.js';
export { TSIG_ALGORITHMS, signMessage, verifyResponse, readTsig, type TsigKey, type TsigAlgorithm, type TsigVerdict, type SignedMessage } from './tsig.js';
export { parseServer, formatServer, type DnsServer } from './transport.js';
export * from './providers/index.js';

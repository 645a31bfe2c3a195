/**
 * controller/certbot — moving a certbot machine to certfleet (`certfleet import-certbot`).
 *
 * Reads certbot's configuration directory (renewal configurations, live certificates,
 * dns-rfc2136 credentials), decides for each lineage what certfleet declares and
 * stores (plan.ts: the authenticator mapping and the refusals), merges the declarations
 * into the controller's configuration (yaml.ts) and imports each current certificate
 * into the controller's store as a new version (import.ts), offline. Imported versions
 * carry an `imports/<name>` record, which the ARI tracker reads (controller/ari).
 * docs/migrating-from-certbot.md is the operator's side of this.
 */
export { importCertbot, importRecordKey, type ImportOptions, type ImportOutcome, type ImportRecord } from './import.js';
export { planImport, certNameFor, HTTP01_AUTHENTICATORS, type Plan, type PlannedImport, type PlannedProvider, type Refusal, type Declaration, type PlanOptions } from './plan.js';
export { readCertbotDir, type CertbotLineage } from './read.js';
export { parseRenewalConf, parseCredentialsIni, renewalKeyType, type RenewalConf } from './renewal.js';
export { mergeDeclarations, readConfigDocument, type ConfigDocument } from './yaml.js';

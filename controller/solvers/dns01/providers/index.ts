/**
 * controller/solvers/dns01/providers — DNS providers behind cloud HTTP APIs: Cloudflare
 * (API token), AWS Route 53 (SigV4, standard credential chain), Google Cloud DNS
 * (service account) and acme-dns. Each implements `DnsProvider` (../provider.ts); the
 * solver, its propagation check and the janitor are the same as for rfc2136 and exec.
 * Their configuration and factory are in config.ts. See docs/dns01.md.
 */
export { CloudflareProvider, CLOUDFLARE_API, type CloudflareOptions } from './cloudflare.js';
export { Route53Provider, ROUTE53_API, type Route53Options } from './route53.js';
export { GcloudProvider, GCLOUD_DNS_API, GCLOUD_DNS_SCOPE, parseServiceAccount, type GcloudOptions, type ServiceAccountKey } from './gcloud.js';
export { AcmeDnsProvider, ACMEDNS_SLOTS, parseAcmeDnsAccounts, type AcmeDnsAccount, type AcmeDnsOptions } from './acmedns.js';
export { signV4, uriEncode, amzDate, type AwsCredentials, type SigV4Request, type SigV4Scope, type SignedRequest } from './sigv4.js';
export { resolveAwsCredentials, parseIni, type AwsCredentialSource, type AwsCredentialResult } from './aws-credentials.js';
export { HttpClient, retryAfterMs, type HttpAnswer, type HttpRequest, type HttpClientOptions } from './http.js';
export { cloudProviderSchemas, createCloudProvider, resolveProviderPaths, PROVIDER_PATH_FIELDS, type CloudProviderConfig, type CloudFactoryOptions } from './config.js';

/**
 * The `route53` provider: TXT records in AWS Route 53 through its REST API (version
 * 2013-04-01), signed with SigV4 (sigv4.ts), credentials from the standard chain
 * (aws-credentials.ts).
 *
 * Route 53 keeps all values of a name in one record set, so adding or removing one value
 * is read (ListResourceRecordSets), modify, write (ChangeResourceRecordSets: UPSERT with
 * every value, or DELETE of the exact set when the last value goes). Changes to one name
 * are queued one after the other in this process. After each change the provider polls
 * GetChange on the clock until the change is INSYNC (on every Route 53 server) — only then
 * does the solver's own propagation check start.
 *
 * Zone: `hostedZoneId`, else discovered with ListHostedZonesByName for the record name and
 * each parent, following NextDNSName/NextHostedZoneId while the same name continues; the
 * first public zone wins (a private zone of the same name is not what the CA sees).
 *
 * Errors come as XML (`<ErrorResponse><Error><Code>`, or `<InvalidChangeBatch>`):
 * Throttling and PriorRequestNotComplete are retried with backoff on the clock; 403
 * (SignatureDoesNotMatch, InvalidClientTokenId, AccessDenied, ExpiredToken) is
 * DNS_CREDENTIALS_REJECTED.
 *
 * Contract-tested against test/harness/fake-route53.ts, not against the live service.
 */
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode } from '../../../../shared/errors/index.js';
import { deadline, type Clock } from '../../../../shared/clock/index.js';
import type { DnsProvider } from '../provider.js';
import { HttpClient, answerError, bare, zoneCandidates, KeyedQueue, type HttpAnswer } from './http.js';
import { signV4, type AwsCredentials } from './sigv4.js';
import { ZoneCache } from '../zones.js';

export interface Route53Options {
  name: string;
  /** Called for every request (the chain re-reads its files); throws DNS_CREDENTIALS_REJECTED when none. */
  credentials: () => AwsCredentials;
  hostedZoneId?: string;
  /** Default https://route53.amazonaws.com. */
  endpoint?: string;
  /** Signing region. Default us-east-1 (Route 53 is global and signs there). */
  region?: string;
  /** Seconds. Default 60. */
  ttl?: number;
  /** Per request. Default 30 000 ms. */
  timeoutMs?: number;
  /** Pause between GetChange polls. Default 5000 ms. */
  pollIntervalMs?: number;
  /** How long a change may stay PENDING. Default 120 000 ms. */
  changeTimeoutMs?: number;
  clock: Clock;
  log: Logger;
}

export const ROUTE53_API = 'https://route53.amazonaws.com';
const VERSION = '2013-04-01';
const XMLNS = `https://route53.amazonaws.com/doc/${VERSION}/`;

const THROTTLED = new Set(['Throttling', 'ThrottlingException', 'PriorRequestNotComplete', 'RequestLimitExceeded']);
const AUTH = new Set(['SignatureDoesNotMatch', 'InvalidClientTokenId', 'AccessDenied', 'AccessDeniedException', 'ExpiredToken', 'UnrecognizedClientException', 'IncompleteSignature', 'MissingAuthenticationToken']);

/** The text of each `<tag>...</tag>` in `xml` (non-nested tags only). */
export function xmlAll(xml: string, tag: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, 'g');
  for (let m = re.exec(xml); m; m = re.exec(xml)) out.push(m[1]!);
  return out;
}

/** The first `<tag>` text, XML entities decoded. */
export function xmlText(xml: string, tag: string): string | undefined {
  const v = xmlAll(xml, tag)[0];
  return v === undefined ? undefined : unescapeXml(v.trim());
}

function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp);/g, (_, e: string) => ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' })[e] ?? '');
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Route 53 escapes some characters in names as \\ddd (octal); `*` is \\052. */
function r53Name(s: string): string {
  return bare(s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

interface RecordSet {
  ttl: number;
  values: string[];
}

/** Route 53 through its REST API. */
export class Route53Provider implements DnsProvider {
  readonly type = 'route53';
  readonly name: string;
  private readonly http: HttpClient;
  private readonly endpoint: string;
  private readonly zones = new ZoneCache<string>();
  private readonly queue = new KeyedQueue();

  constructor(private readonly opts: Route53Options) {
    this.name = opts.name;
    this.endpoint = (opts.endpoint ?? ROUTE53_API).replace(/\/$/, '');
    this.http = new HttpClient({
      describe: this.describe(),
      provider: opts.name,
      clock: opts.clock,
      timeoutMs: opts.timeoutMs ?? 30_000,
      rateLimited: (a) => a.status === 400 && THROTTLED.has(xmlText(a.text, 'Code') ?? ''),
    });
  }

  /** One signed read (the configured zone, or one zone by name): proves the keys and the signing. */
  async check(): Promise<void> {
    if (this.opts.hostedZoneId !== undefined) await this.call('GET', `/hostedzone/${this.zoneIdOf(this.opts.hostedZoneId)}`, [], 'check credentials');
    else await this.call('GET', '/hostedzonesbyname', [['maxitems', '1']], 'check credentials');
  }

  present(fqdn: string, value: string): Promise<void> {
    return this.queue.run(bare(fqdn), async () => {
      const zone = await this.zoneOf(fqdn);
      const current = await this.recordSet(zone, fqdn);
      if (current?.values.includes(value)) return;
      const values = [...(current?.values ?? []), value];
      await this.change(zone, 'UPSERT', fqdn, { ttl: this.opts.ttl ?? 60, values }, `add TXT ${fqdn}`);
      this.opts.log.info({ provider: this.name, fqdn, zone }, 'dns record added');
    });
  }

  cleanup(fqdn: string, value: string): Promise<void> {
    return this.queue.run(bare(fqdn), async () => {
      const zone = await this.zoneOf(fqdn);
      const current = await this.recordSet(zone, fqdn);
      if (!current?.values.includes(value)) return;
      const rest = current.values.filter((v) => v !== value);
      // DELETE must name the set exactly as it is (TTL and every value).
      if (rest.length === 0) await this.change(zone, 'DELETE', fqdn, current, `delete TXT ${fqdn}`);
      else await this.change(zone, 'UPSERT', fqdn, { ttl: current.ttl, values: rest }, `delete TXT ${fqdn}`);
      this.opts.log.info({ provider: this.name, fqdn, zone }, 'dns record removed');
    });
  }

  private async change(zone: string, action: 'UPSERT' | 'DELETE', fqdn: string, set: RecordSet, what: string): Promise<void> {
    const body = [
      '<?xml version="1.0" encoding="UTF-8"?>',
      `<ChangeResourceRecordSetsRequest xmlns="${XMLNS}"><ChangeBatch><Comment>certfleet dns-01</Comment><Changes><Change>`,
      `<Action>${action}</Action><ResourceRecordSet><Name>${escapeXml(bare(fqdn))}.</Name><Type>TXT</Type><TTL>${set.ttl}</TTL><ResourceRecords>`,
      // TXT values are quoted character strings; ours are base64url and need no escaping inside the quotes.
      ...set.values.map((v) => `<ResourceRecord><Value>${escapeXml(`"${v}"`)}</Value></ResourceRecord>`),
      '</ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>',
    ].join('');
    const answer = await this.call('POST', `/hostedzone/${zone}/rrset/`, [], what, body);
    const changeId = (xmlText(answer.text, 'Id') ?? '').replace(/^\/change\//, '');
    if (changeId === '') throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: the answer has no change id`, { retryable: true, details: { provider: this.name } });
    await this.waitInSync(changeId, xmlText(answer.text, 'Status'), what);
  }

  /** Polls GetChange until INSYNC; DNS_PROVIDER_FAILED (retryable) when it stays PENDING past the limit. */
  private async waitInSync(changeId: string, status: string | undefined, what: string): Promise<void> {
    const limit = this.opts.changeTimeoutMs ?? 120_000;
    const until = deadline(this.opts.clock, limit);
    while (status !== 'INSYNC') {
      if (until.expired()) {
        throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: change ${changeId} still ${status ?? 'unknown'} after ${limit} ms`, {
          retryable: true,
          details: { provider: this.name, changeId, status },
        });
      }
      await until.sleep(this.opts.pollIntervalMs ?? 5000);
      const answer = await this.call('GET', `/change/${encodeURIComponent(changeId)}`, [], `wait for change ${changeId}`);
      status = xmlText(answer.text, 'Status');
    }
  }

  /** The TXT set at `fqdn`, or undefined. */
  private async recordSet(zone: string, fqdn: string): Promise<RecordSet | undefined> {
    const answer = await this.call('GET', `/hostedzone/${zone}/rrset`, [['name', `${bare(fqdn)}.`], ['type', 'TXT'], ['maxitems', '1']], `read TXT ${fqdn}`);
    for (const set of xmlAll(answer.text, 'ResourceRecordSet')) {
      if (r53Name(xmlText(set, 'Name') ?? '') !== bare(fqdn) || xmlText(set, 'Type') !== 'TXT') continue;
      const values = xmlAll(set, 'Value').map((v) => unescapeXml(v.trim()).replace(/^"(.*)"$/, '$1'));
      return { ttl: Number(xmlText(set, 'TTL') ?? this.opts.ttl ?? 60), values };
    }
    return undefined;
  }

  private zoneOf(fqdn: string): Promise<string> {
    if (this.opts.hostedZoneId !== undefined) return Promise.resolve(this.zoneIdOf(this.opts.hostedZoneId));
    return this.zones.get(bare(fqdn), (key) => this.findZone(key));
  }

  private async findZone(fqdn: string): Promise<string> {
    for (const candidate of zoneCandidates(fqdn)) {
      let query: Array<[string, string]> = [['dnsname', `${candidate}.`]];
      for (let page = 0; page < 100; page++) {
        const answer = await this.call('GET', '/hostedzonesbyname', query, `find the zone of ${fqdn}`);
        for (const z of xmlAll(answer.text, 'HostedZone')) {
          if (r53Name(xmlText(z, 'Name') ?? '') === candidate && xmlText(z, 'PrivateZone') !== 'true') return this.zoneIdOf(xmlText(z, 'Id') ?? '');
        }
        const nextName = xmlText(answer.text, 'NextDNSName');
        const nextId = xmlText(answer.text, 'NextHostedZoneId');
        // The list is sorted by name: once it has moved past the candidate, it is not there.
        if (xmlText(answer.text, 'IsTruncated') !== 'true' || nextName === undefined || nextId === undefined || r53Name(nextName) !== candidate) break;
        query = [['dnsname', nextName], ['hostedzoneid', nextId]];
      }
    }
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: no public hosted zone contains ${fqdn} (set hostedZoneId, or allow route53:ListHostedZonesByName)`, {
      details: { provider: this.name, fqdn },
    });
  }

  private zoneIdOf(id: string): string {
    return encodeURIComponent(id.replace(/^\/?hostedzone\//, ''));
  }

  /** A signed request to `/2013-04-01<path>`; answers other than 2xx become errors. */
  private async call(method: 'GET' | 'POST', path: string, query: Array<[string, string]>, what: string, body = ''): Promise<HttpAnswer> {
    const at = new Date(this.opts.clock.now());
    const signed = signV4(
      { method, url: `${this.endpoint}/${VERSION}${path}`, query, headers: body === '' ? {} : { 'content-type': 'application/xml' }, body },
      this.opts.credentials(),
      { region: this.opts.region ?? 'us-east-1', service: 'route53', at },
    );
    // fetch sets Host itself (from the URL: the same value that was signed) and refuses one given.
    const headers = Object.fromEntries(Object.entries(signed.headers).filter(([k]) => k !== 'host'));
    const answer = await this.http.send({ method, url: signed.url, headers, ...(body === '' ? {} : { body }) }, what);
    if (answer.status >= 200 && answer.status < 300) return answer;
    const code = xmlText(answer.text, 'Code') ?? (answer.text.includes('<InvalidChangeBatch') ? 'InvalidChangeBatch' : '');
    const message = xmlAll(answer.text, 'Message').map((m) => unescapeXml(m.trim())).join('; ');
    throw answerError(this.describe(), this.name, what, answer, [code, message].filter((s) => s !== '').join(': ') || answer.text.slice(0, 200), AUTH.has(code));
  }

  private describe(): string {
    return `route53 provider "${this.name}"`;
  }
}

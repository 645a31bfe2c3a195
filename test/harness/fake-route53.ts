/**
 * A fake of the Route 53 REST API (version 2013-04-01), the calls the route53 provider
 * makes, with the shapes AWS documents (docs.aws.amazon.com/Route53/latest/APIReference):
 *
 * - every request must carry a SigV4 `Authorization` for service route53: an unknown
 *   access key is 403 InvalidClientTokenId, a wrong signature 403 SignatureDoesNotMatch
 *   (the fake recomputes the signature from the request it received, with the signer
 *   that test/unit/sigv4.test.ts checks against AWS's published vectors);
 * - ListHostedZonesByName (`GET /hostedzonesbyname?dnsname=&hostedzoneid=&maxitems=`),
 *   zones ordered by name with labels reversed then by id, pages of at most `pageSize`
 *   with IsTruncated/NextDNSName/NextHostedZoneId;
 * - GetHostedZone, ListResourceRecordSets (`?name=&type=&maxitems=`),
 *   ChangeResourceRecordSets (CREATE/UPSERT/DELETE; DELETE must match the set exactly,
 *   else 400 InvalidChangeBatch), GetChange (PENDING for `pendingPolls` polls, then INSYNC);
 * - errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`;
 *   rate limiting as 400 Throttling "Rate exceeded".
 */
import crypto from 'node:crypto';
import type http from 'node:http';
import { signV4, type AwsCredentials } from '../../controller/solvers/dns01/providers/sigv4.js';
import { FakeApi, TxtData, bare, type FakeAnswer, type TxtMirror } from './fake-dns-api.js';

export interface FakeRoute53Zone {
  id: string;
  name: string;
  private?: boolean;
}

const NS = 'https://route53.amazonaws.com/doc/2013-04-01/';

function sortKey(name: string): string {
  return bare(name).split('.').reverse().join('.');
}

function xml(root: string, inner: string): string {
  return `<?xml version="1.0"?>\n<${root} xmlns="${NS}">${inner}</${root}>`;
}

function error(status: number, code: string, message: string): FakeAnswer {
  return { status, headers: { 'content-type': 'text/xml' }, body: xml('ErrorResponse', `<Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error><RequestId>${crypto.randomUUID()}</RequestId>`) };
}

function tags(text: string, tag: string): string[] {
  return [...text.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => m[1]!);
}

export class FakeRoute53 extends FakeApi {
  readonly txt: TxtData;
  /** change id -> polls left before INSYNC */
  private readonly changes = new Map<string, number>();
  /** Which zone each name's set is in. */
  private readonly zoneOfName = new Map<string, string>();
  /** Polls of GetChange answered PENDING before INSYNC. */
  pendingPolls = 1;
  getChangeCalls = 0;

  constructor(private readonly opts: { keys: Record<string, AwsCredentials>; zones: FakeRoute53Zone[]; pageSize?: number; mirror?: TxtMirror }) {
    super();
    this.txt = new TxtData(opts.mirror);
  }

  protected rateLimitAnswer(): FakeAnswer {
    return error(400, 'Throttling', 'Rate exceeded');
  }

  protected async handle(method: string, url: URL, headers: http.IncomingHttpHeaders, body: string): Promise<FakeAnswer> {
    const auth = this.authenticate(method, url, headers, body);
    if (auth) return auth;
    const path = url.pathname.replace(/^\/2013-04-01/, '');
    const q = url.searchParams;
    let m: RegExpExecArray | null;
    if (method === 'GET' && path === '/hostedzonesbyname') return this.listZones(q);
    if (method === 'GET' && (m = /^\/hostedzone\/([^/]+)$/.exec(path))) {
      const z = this.opts.zones.find((z) => z.id === m![1]);
      return z ? { status: 200, body: xml('GetHostedZoneResponse', `<HostedZone>${this.zoneXml(z)}</HostedZone>`) } : error(404, 'NoSuchHostedZone', `No hosted zone found with ID: ${m[1]}`);
    }
    if ((m = /^\/hostedzone\/([^/]+)\/rrset\/?$/.exec(path))) {
      const z = this.opts.zones.find((z) => z.id === m![1]);
      if (!z) return error(404, 'NoSuchHostedZone', `No hosted zone found with ID: ${m[1]}`);
      return method === 'GET' ? this.listSets(z, q) : this.changeSets(z, body);
    }
    if (method === 'GET' && (m = /^\/change\/([^/]+)$/.exec(path))) {
      this.getChangeCalls++;
      const left = this.changes.get(m[1]!);
      if (left === undefined) return error(404, 'NoSuchChange', `A change with the specified change ID does not exist.`);
      this.changes.set(m[1]!, Math.max(0, left - 1));
      return { status: 200, body: xml('GetChangeResponse', `<ChangeInfo><Id>/change/${m[1]}</Id><Status>${left > 0 ? 'PENDING' : 'INSYNC'}</Status><SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo>`) };
    }
    return error(404, 'UnknownOperationException', `no route for ${method} ${path}`);
  }

  /** Checks the SigV4 Authorization header; returns an error answer or undefined. */
  private authenticate(method: string, url: URL, headers: http.IncomingHttpHeaders, body: string): FakeAnswer | undefined {
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/route53\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(String(headers.authorization ?? ''));
    if (!m) return error(403, 'MissingAuthenticationToken', 'Missing Authentication Token');
    const creds = this.opts.keys[m[1]!];
    if (!creds) return error(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
    if (creds.sessionToken !== undefined && headers['x-amz-security-token'] !== creds.sessionToken) return error(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
    const date = String(headers['x-amz-date'] ?? '');
    const at = new Date(`${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${date.slice(9, 11)}:${date.slice(11, 13)}:${date.slice(13, 15)}Z`);
    const signedHeaders: Record<string, string> = {};
    for (const h of m[4]!.split(';')) signedHeaders[h] = String(headers[h] ?? '');
    const expected = signV4(
      { method, url: `http://${String(headers.host)}${url.pathname}`, query: [...url.searchParams.entries()], headers: signedHeaders, body },
      { accessKeyId: m[1]!, secretAccessKey: creds.secretAccessKey },
      { region: m[3]!, service: 'route53', at },
    );
    if (!expected.authorization.endsWith(`Signature=${m[5]}`)) {
      return error(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.');
    }
    return undefined;
  }

  private zoneXml(z: FakeRoute53Zone): string {
    return `<Id>/hostedzone/${z.id}</Id><Name>${bare(z.name)}.</Name><CallerReference>ref-${z.id}</CallerReference><Config><PrivateZone>${z.private === true}</PrivateZone></Config><ResourceRecordSetCount>2</ResourceRecordSetCount>`;
  }

  private listZones(q: URLSearchParams): FakeAnswer {
    const max = Math.min(Number(q.get('maxitems') ?? 100), this.opts.pageSize ?? 100);
    const sorted = [...this.opts.zones].sort((a, b) => (sortKey(a.name) < sortKey(b.name) ? -1 : sortKey(a.name) > sortKey(b.name) ? 1 : a.id < b.id ? -1 : 1));
    let start = 0;
    if (q.has('dnsname')) {
      const key = sortKey(q.get('dnsname')!);
      const id = q.get('hostedzoneid');
      start = sorted.findIndex((z) => sortKey(z.name) > key || (sortKey(z.name) === key && (id === null || z.id >= id)));
      if (start < 0) start = sorted.length;
    }
    const page = sorted.slice(start, start + max);
    const next = sorted[start + max];
    return {
      status: 200,
      body: xml(
        'ListHostedZonesByNameResponse',
        `<HostedZones>${page.map((z) => `<HostedZone>${this.zoneXml(z)}</HostedZone>`).join('')}</HostedZones>` +
          (q.has('dnsname') ? `<DNSName>${q.get('dnsname')}</DNSName>` : '') +
          `<IsTruncated>${next !== undefined}</IsTruncated>` +
          (next ? `<NextDNSName>${bare(next.name)}.</NextDNSName><NextHostedZoneId>${next.id}</NextHostedZoneId>` : '') +
          `<MaxItems>${max}</MaxItems>`,
      ),
    };
  }

  private listSets(z: FakeRoute53Zone, q: URLSearchParams): FakeAnswer {
    const names = [...this.txt.names.keys()].filter((n) => this.zoneOfName.get(n) === z.id).sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1));
    const from = q.get('name');
    const list = from === null ? names : names.filter((n) => sortKey(n) >= sortKey(from));
    const max = Number(q.get('maxitems') ?? 300);
    const sets = list.slice(0, max).map(
      (n) => `<ResourceRecordSet><Name>${n}.</Name><Type>TXT</Type><TTL>${this.txt.ttls.get(n) ?? 60}</TTL><ResourceRecords>${this.txt.get(n).map((v) => `<ResourceRecord><Value>"${v}"</Value></ResourceRecord>`).join('')}</ResourceRecords></ResourceRecordSet>`,
    );
    return { status: 200, body: xml('ListResourceRecordSetsResponse', `<ResourceRecordSets>${sets.join('')}</ResourceRecordSets><IsTruncated>${list.length > max}</IsTruncated><MaxItems>${max}</MaxItems>`) };
  }

  private async changeSets(z: FakeRoute53Zone, body: string): Promise<FakeAnswer> {
    if (!body.includes('<ChangeResourceRecordSetsRequest')) return error(400, 'InvalidInput', 'expected a ChangeResourceRecordSetsRequest');
    for (const change of tags(body, 'Change')) {
      const action = tags(change, 'Action')[0];
      const name = bare(tags(change, 'Name')[0] ?? '');
      const type = tags(change, 'Type')[0];
      const ttl = Number(tags(change, 'TTL')[0]);
      const values = tags(change, 'Value').map((v) => v.trim());
      if (type !== 'TXT') return error(400, 'InvalidInput', 'only TXT in this fake');
      if (name !== bare(z.name) && !name.endsWith(`.${bare(z.name)}`)) return error(400, 'InvalidChangeBatch', `RRSet with DNS name ${name}. is not permitted in zone ${bare(z.name)}.`);
      if (!values.every((v) => /^".*"$/.test(v))) {
        return { status: 400, body: xml('InvalidChangeBatch', `<Messages><Message>Invalid Resource Record: FATAL problem: InvalidCharacterString (Value should be enclosed in quotation marks)</Message></Messages><RequestId>x</RequestId>`) };
      }
      const unquoted = values.map((v) => v.slice(1, -1));
      const current = this.txt.get(name);
      if (action === 'DELETE') {
        const same = current.length === unquoted.length && current.every((v) => unquoted.includes(v)) && (this.txt.ttls.get(name) ?? 60) === ttl;
        if (!same) {
          return { status: 400, body: xml('InvalidChangeBatch', `<Messages><Message>Tried to delete resource record set [name='${name}.', type='TXT'] but the values provided do not match the current values</Message></Messages><RequestId>x</RequestId>`) };
        }
        await this.txt.set(name, []);
        this.zoneOfName.delete(name);
      } else if (action === 'UPSERT' || action === 'CREATE') {
        if (action === 'CREATE' && current.length > 0) return { status: 400, body: xml('InvalidChangeBatch', `<Messages><Message>Tried to create resource record set [name='${name}.', type='TXT'] but it already exists</Message></Messages><RequestId>x</RequestId>`) };
        this.zoneOfName.set(name, z.id);
        await this.txt.set(name, unquoted, ttl);
      } else {
        return error(400, 'InvalidInput', `unknown action ${action}`);
      }
    }
    const id = `C${crypto.randomBytes(6).toString('hex').toUpperCase()}`;
    this.changes.set(id, this.pendingPolls);
    return { status: 200, body: xml('ChangeResourceRecordSetsResponse', `<ChangeInfo><Id>/change/${id}</Id><Status>PENDING</Status><SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt><Comment>certfleet dns-01</Comment></ChangeInfo>`) };
  }
}

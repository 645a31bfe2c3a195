/**
 * The `rfc2136` provider: DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945), sent to the
 * zone's primary server — BIND, Knot, PowerDNS and most appliances accept it.
 *
 * Every message to the server is signed, queries included, and every answer's signature
 * is checked: an answer we cannot authenticate is not believed. The zone to update is
 * the configured one, or found by asking the primary for the SOA of the record name
 * (what `nsupdate` does).
 */
import crypto from 'node:crypto';
import { LogKey, type Logger } from '../../../shared/log/index.js';
import { CertfleetError, ErrorCode } from '../../../shared/errors/index.js';
import type { Clock } from '../../../shared/clock/index.js';
import type { DnsProvider } from './provider.js';
import { signMessage, verifyResponse, type TsigKey } from './tsig.js';
import { exchange, formatServer, isTransportError, type DnsServer } from './transport.js';
import { RRType, buildQuery, buildTxtUpdate, canonicalName, isSubdomain, labels, parseMessage, rcodeName, type Message } from './wire.js';
import { ZoneCache } from './zones.js';

export interface Rfc2136Options {
  name: string;
  /** The primary server that accepts updates. */
  server: DnsServer;
  key: TsigKey;
  /** The zone to update. Default: found by an SOA query to `server`. */
  zone?: string;
  /** TTL of added records, seconds. Default 60: a stale value must not linger in caches. */
  ttl?: number;
  /** Per request (UDP, then TCP). Default 10 000 ms. */
  timeoutMs?: number;
  clock: Clock;
  log: Logger;
}

const TSIG_ERRORS: Record<number, string> = {
  16: 'BADSIG: the server has a different secret for this key',
  17: 'BADKEY: the server does not know this key name or algorithm',
  18: 'BADTIME: the clocks of the controller and the server differ by more than the fudge (300 s)',
};

/** DNS UPDATE with TSIG to one primary server. */
export class Rfc2136Provider implements DnsProvider {
  readonly type = 'rfc2136';
  readonly name: string;
  private readonly zones = new ZoneCache<string>();

  constructor(private readonly opts: Rfc2136Options) {
    this.name = opts.name;
  }

  /** Sends a signed SOA query for the zone (or the root) and checks the signed answer. */
  async check(): Promise<void> {
    await this.send(buildQuery(randomId(), this.opts.zone ?? '.', RRType.SOA, false), 'check credentials');
  }

  /** Adds TXT `fqdn` = `value` with the configured TTL; other values at `fqdn` stay. */
  async present(fqdn: string, value: string): Promise<void> {
    const zone = await this.zoneOf(fqdn);
    await this.update(zone, [{ op: 'add', name: canonicalName(fqdn), value, ttl: this.opts.ttl ?? 60 }], `add TXT ${fqdn}`);
    this.opts.log.info({ [LogKey.provider]: this.name, [LogKey.fqdn]: fqdn, [LogKey.zone]: zone }, 'dns record added');
  }

  /** Deletes exactly TXT `fqdn` = `value`; succeeds when it is already gone. */
  async cleanup(fqdn: string, value: string): Promise<void> {
    const zone = await this.zoneOf(fqdn);
    await this.update(zone, [{ op: 'delete', name: canonicalName(fqdn), value, ttl: 0 }], `delete TXT ${fqdn}`);
    this.opts.log.info({ [LogKey.provider]: this.name, [LogKey.fqdn]: fqdn, [LogKey.zone]: zone }, 'dns record removed');
  }

  private async update(zone: string, changes: Parameters<typeof buildTxtUpdate>[2], what: string): Promise<void> {
    const answer = await this.send(buildTxtUpdate(randomId(), zone, changes), what);
    if (answer.rcode === 0) return;
    const rcode = rcodeName(answer.rcode);
    if (answer.rcode === 5) {
      throw new CertfleetError(
        ErrorCode.DnsCredentialsRejected,
        `${this.describe()}: ${what} refused (REFUSED): key ${this.opts.key.name} may not update zone ${zone} (check allow-update / update-policy)`,
        { details: this.details({ zone, rcode }) },
      );
    }
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what} in zone ${zone} failed: ${rcode}`, {
      // SERVFAIL is the server's own trouble; the others are our mistake and stay wrong.
      retryable: answer.rcode === 2,
      details: this.details({ zone, rcode }),
    });
  }

  /** The zone containing `fqdn`: configured, or the owner of the SOA the primary returns. */
  private zoneOf(fqdn: string): Promise<string> {
    if (this.opts.zone !== undefined) {
      const zone = canonicalName(this.opts.zone);
      if (!isSubdomain(fqdn, zone)) {
        return Promise.reject(
          new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${fqdn} is not in the configured zone ${zone}`, { details: this.details({ zone }) }),
        );
      }
      return Promise.resolve(zone);
    }
    return this.zones.get(canonicalName(fqdn), (key) => this.findZone(key));
  }

  private async findZone(fqdn: string): Promise<string> {
    const parts = labels(fqdn);
    for (let i = 0; i < parts.length; i++) {
      const candidate = canonicalName(parts.slice(i).join('.'));
      const answer = await this.send(buildQuery(randomId(), candidate, RRType.SOA, false), `find the zone of ${fqdn}`);
      const soa = [...answer.answers, ...answer.authority].find((rr) => rr.type === RRType.SOA);
      if (answer.rcode === 0 || answer.rcode === 3) {
        if (soa && isSubdomain(fqdn, soa.name)) return canonicalName(soa.name);
      }
      // REFUSED/NOTAUTH here: not authoritative for this name; try the parent.
    }
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: the server is not authoritative for any zone containing ${fqdn}`, {
      details: this.details({ fqdn }),
    });
  }

  /** Signs, sends, checks the answer's signature; returns the decoded answer. */
  private async send(message: Buffer, what: string): Promise<Message> {
    const signed = signMessage(message, this.opts.key, Math.floor(this.opts.clock.now() / 1000));
    let raw: Buffer;
    try {
      raw = await exchange(this.opts.server, signed.message, { timeoutMs: this.opts.timeoutMs ?? 10_000 });
    } catch (err) {
      throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: ${(err as Error).message}`, {
        retryable: true,
        cause: err,
        details: this.details({}),
      });
    }
    let answer: Message;
    let verdict: ReturnType<typeof verifyResponse>;
    try {
      answer = parseMessage(raw);
      verdict = verifyResponse(raw, this.opts.key, signed.mac, Math.floor(this.opts.clock.now() / 1000));
    } catch (err) {
      if (!isTransportError(err)) throw err;
      throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: malformed answer: ${err.message}`, {
        retryable: true,
        cause: err,
        details: this.details({}),
      });
    }
    if (verdict.ok) return answer;
    if (verdict.reason === 'server-error' || (verdict.reason === 'unsigned' && answer.rcode === 9)) {
      // The server could not verify *our* signature: wrong secret, unknown key, or clock.
      const why = verdict.error === undefined ? `${rcodeName(answer.rcode)} without a TSIG error` : (TSIG_ERRORS[verdict.error] ?? rcodeName(verdict.error));
      throw new CertfleetError(ErrorCode.DnsCredentialsRejected, `${this.describe()}: ${what}: TSIG key ${this.opts.key.name} rejected: ${why}`, {
        details: this.details({ rcode: rcodeName(answer.rcode), tsigError: verdict.error === undefined ? undefined : rcodeName(verdict.error) }),
      });
    }
    throw new CertfleetError(ErrorCode.DnsProviderFailed, `${this.describe()}: ${what}: answer not authenticated: ${verdict.detail}`, {
      details: this.details({ rcode: rcodeName(answer.rcode), tsig: verdict.reason }),
    });
  }

  private describe(): string {
    return `rfc2136 provider "${this.name}" (${formatServer(this.opts.server)})`;
  }

  private details(extra: Record<string, unknown>): Record<string, unknown> {
    return { provider: this.name, server: formatServer(this.opts.server), keyName: this.opts.key.name, ...extra };
  }
}

function randomId(): number {
  return crypto.randomInt(0, 0x10000);
}


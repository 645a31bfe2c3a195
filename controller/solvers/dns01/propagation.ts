/**
 * Looking things up before the CA does: where `_acme-challenge.<name>` really lives
 * (CNAME delegation), which zone holds it and which servers are authoritative for it,
 * and whether every one of those servers already answers every expected TXT value.
 *
 * Discovery (CNAME, SOA, NS, addresses) goes through recursive resolvers (configured,
 * else the system's). The propagation check itself asks each authoritative server
 * directly, without recursion: a resolver's cache says nothing about what the CA's
 * resolver will get, and a secondary that has not transferred the zone yet would make
 * the validation fail and spend the CA's authorization-failure budget.
 */
import crypto from 'node:crypto';
import dns from 'node:dns';
import net from 'node:net';
import { LogKey, type Logger } from '../../../shared/log/index.js';
import { CertfleetError, ErrorCode } from '../../../shared/errors/index.js';
import type { Clock } from '../../../shared/clock/index.js';
import { exchange, formatServer, parseServer, type DnsServer } from './transport.js';
import { RRType, addressValue, buildQuery, canonicalName, isSubdomain, labels, nameValue, parseMessage, rcodeName, sameName, txtValue, type Message } from './wire.js';

export interface LookupOptions {
  /** Recursive resolvers for discovery. Default: the system's (`/etc/resolv.conf`). */
  resolvers?: readonly DnsServer[];
  /** Port the authoritative servers found through NS records are asked on. Default 53. */
  nameserverPort?: number;
  /** Per query. Default 3000 ms. */
  queryTimeoutMs?: number;
}

/** An authoritative server of a zone: its NS name (or the configured address) and address. */
export interface Nameserver {
  name: string;
  server: DnsServer;
}

/** DNS discovery through resolvers and direct questions to authoritative servers. */
export class DnsLookup {
  private readonly resolvers: DnsServer[];
  private readonly nameserverPort: number;
  private readonly timeoutMs: number;

  constructor(opts: LookupOptions = {}) {
    this.resolvers = opts.resolvers && opts.resolvers.length > 0 ? [...opts.resolvers] : dns.getServers().map((s) => parseServer(s));
    this.nameserverPort = opts.nameserverPort ?? 53;
    this.timeoutMs = opts.queryTimeoutMs ?? 3000;
  }

  /** Asks the resolvers in turn (RD set) until one answers. DNS_LOOKUP_FAILED (retryable) when none does. */
  async resolve(name: string, type: number): Promise<Message> {
    const problems: string[] = [];
    for (const r of this.resolvers) {
      try {
        const msg = parseMessage(await exchange(r, buildQuery(crypto.randomInt(0, 0x10000), name, type, true), { timeoutMs: this.timeoutMs }));
        // SERVFAIL/REFUSED from one resolver: another may do better.
        if (msg.rcode === 0 || msg.rcode === 3) return msg;
        problems.push(`${formatServer(r)}: ${rcodeName(msg.rcode)}`);
      } catch (err) {
        problems.push(`${formatServer(r)}: ${(err as Error).message}`);
      }
    }
    throw new CertfleetError(ErrorCode.DnsLookupFailed, `cannot look up ${name} (type ${type}): ${problems.join('; ') || 'no resolvers configured'}`, {
      retryable: true,
      details: { name, type, problems },
    });
  }

  /**
   * Follows CNAMEs from `fqdn` (at most 8 hops) and returns where the TXT record must be
   * written: `fqdn` itself when it is no alias. A loop is DNS_LOOKUP_FAILED.
   */
  async followCnames(fqdn: string): Promise<string> {
    let current = canonicalName(fqdn);
    const seen = new Set<string>([current]);
    for (let hop = 0; hop < 8; hop++) {
      const msg = await this.resolve(current, RRType.CNAME);
      const cname = msg.answers.find((rr) => rr.type === RRType.CNAME && sameName(rr.name, current));
      if (!cname) return current;
      const target = canonicalName(nameValue(msg, cname));
      if (seen.has(target)) break;
      seen.add(target);
      current = target;
    }
    throw new CertfleetError(ErrorCode.DnsLookupFailed, `CNAME chain from ${fqdn} is a loop or longer than 8: ${[...seen].join(' -> ')}`, {
      details: { fqdn, chain: [...seen] },
    });
  }

  /** The zone `fqdn` belongs to: the owner of the SOA the resolvers return for it or a parent. */
  async zoneOf(fqdn: string): Promise<string> {
    const parts = labels(canonicalName(fqdn));
    for (let i = 0; i < parts.length; i++) {
      const candidate = canonicalName(parts.slice(i).join('.'));
      const msg = await this.resolve(candidate, RRType.SOA);
      const soa = [...msg.answers, ...msg.authority].find((rr) => rr.type === RRType.SOA);
      if (soa && isSubdomain(fqdn, soa.name)) return canonicalName(soa.name);
    }
    throw new CertfleetError(ErrorCode.DnsLookupFailed, `no zone found for ${fqdn}: the resolvers return no SOA for it or a parent`, {
      retryable: true,
      details: { fqdn },
    });
  }

  /** Every address of every NS of `zone`, on the nameserver port. DNS_LOOKUP_FAILED when there is none. */
  async nameserversOf(zone: string): Promise<Nameserver[]> {
    const msg = await this.resolve(zone, RRType.NS);
    const names = msg.answers.filter((rr) => rr.type === RRType.NS && sameName(rr.name, zone)).map((rr) => canonicalName(nameValue(msg, rr)));
    const out: Nameserver[] = [];
    for (const name of [...new Set(names)].sort()) {
      // Glue in the additional section saves a lookup; otherwise ask for A and AAAA.
      let addrs = msg.additional.filter((rr) => (rr.type === RRType.A || rr.type === RRType.AAAA) && sameName(rr.name, name)).map(addressValue);
      if (addrs.length === 0) {
        for (const type of [RRType.A, RRType.AAAA]) {
          const a = await this.resolve(name, type);
          addrs.push(...a.answers.filter((rr) => rr.type === type).map(addressValue));
        }
      }
      addrs = [...new Set(addrs)];
      for (const host of addrs) out.push({ name, server: { host, port: this.nameserverPort } });
    }
    if (out.length === 0) {
      throw new CertfleetError(ErrorCode.DnsLookupFailed, `zone ${zone} has no nameserver with an address`, { retryable: true, details: { zone, ns: names } });
    }
    return out;
  }

  /**
   * The TXT values at `fqdn` as `server` answers them, asked directly (no recursion).
   * Returns `{ values }` or `{ problem }` ("no answer", "NXDOMAIN", "not authoritative").
   */
  async txtAt(server: DnsServer, fqdn: string): Promise<{ values: string[] } | { problem: string }> {
    let msg: Message;
    try {
      msg = parseMessage(await exchange(server, buildQuery(crypto.randomInt(0, 0x10000), fqdn, RRType.TXT, false), { timeoutMs: this.timeoutMs }));
    } catch (err) {
      return { problem: (err as Error).message };
    }
    if (msg.rcode !== 0) return { problem: rcodeName(msg.rcode) };
    // A lame server (listed in NS but not serving the zone) answers without AA: the CA
    // may ask it too, so it counts as lagging.
    if (!msg.aa) return { problem: 'answer not authoritative (lame delegation?)' };
    return { values: msg.answers.filter((rr) => rr.type === RRType.TXT && sameName(rr.name, fqdn)).map(txtValue) };
  }
}

export interface PropagationOptions {
  /** Check these servers instead of the zone's NS (e.g. a hidden primary's secondaries). */
  nameservers?: readonly DnsServer[];
  /** How long to wait for every server. */
  timeoutMs: number;
  /** Pause between rounds. */
  intervalMs: number;
  /** Measures the timeout and times the pause between rounds (the per-query socket timeouts stay real: DnsLookup). */
  clock: Clock;
  log: Logger;
}

/**
 * Waits until every authoritative server of each name answers all its expected values
 * (`expected`: absolute name -> values). Rejects with DNS_PROPAGATION_TIMEOUT
 * (retryable) naming each server that lags and what it answered; DNS_LOOKUP_FAILED when
 * the servers cannot be found.
 */
export async function waitForPropagation(lookup: DnsLookup, expected: ReadonlyMap<string, readonly string[]>, opts: PropagationOptions): Promise<void> {
  const checks: Array<{ fqdn: string; values: readonly string[]; ns: Nameserver }> = [];
  for (const [fqdn, values] of expected) {
    const servers = opts.nameservers && opts.nameservers.length > 0
      ? opts.nameservers.map((s) => ({ name: formatServer(s), server: s }))
      : await lookup.nameserversOf(await lookup.zoneOf(fqdn));
    for (const ns of servers) checks.push({ fqdn, values, ns });
  }
  const deadline = opts.clock.now() + opts.timeoutMs;
  let pending = checks;
  const lastSeen = new Map<(typeof checks)[number], string>();
  for (;;) {
    const next: typeof checks = [];
    for (const c of pending) {
      const got = await lookup.txtAt(c.ns.server, c.fqdn);
      if ('values' in got && c.values.every((v) => got.values.includes(v))) continue;
      next.push(c);
      lastSeen.set(c, 'problem' in got ? got.problem : `has ${c.values.filter((v) => got.values.includes(v)).length} of ${c.values.length} values`);
    }
    pending = next;
    if (pending.length === 0) {
      opts.log.info({ [LogKey.names]: [...expected.keys()], [LogKey.servers]: [...new Set(checks.map((c) => c.ns.name))] }, 'dns records visible on every authoritative server');
      return;
    }
    if (opts.clock.now() >= deadline) {
      const lagging = pending.map((c) => {
        const where = c.ns.name === formatServer(c.ns.server) ? c.ns.name : `${c.ns.name} (${formatServer(c.ns.server)})`;
        return `${where} for ${c.fqdn}: ${lastSeen.get(c) ?? 'no answer'}`;
      });
      throw new CertfleetError(ErrorCode.DnsPropagationTimeout, `TXT records not visible after ${opts.timeoutMs} ms on: ${lagging.join('; ')}`, {
        retryable: true,
        details: {
          lagging: pending.map((c) => ({ nameserver: c.ns.name, server: formatServer(c.ns.server), fqdn: c.fqdn, seen: lastSeen.get(c) })),
        },
      });
    }
    await opts.clock.sleep(opts.intervalMs);
  }
}

/** True for an IP literal (what `nameservers` and `resolvers` must hold). */
export function isAddress(host: string): boolean {
  return net.isIP(host) !== 0;
}

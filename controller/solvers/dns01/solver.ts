/**
 * The DNS-01 solver: for a batch of challenges (normally every pending authorization of
 * one order) it finds where each TXT record goes, writes it through the right provider,
 * remembers it in the journal, and waits until every authoritative server shows every
 * value — only then may the caller ask the CA to validate.
 *
 * Record lifecycle (one journal entry per record):
 *
 *   journal.add ─► provider.present ─► (propagation) ─► caller validates ─► provider.cleanup ─► journal.remove
 *        │               └ fails: cleanup now ───────────────────────────────┘
 *        └ crash anywhere after journal.add: the entry stays; janitor() removes the record later
 *
 * The journal entry is written *before* the record, so no crash can leave a record the
 * controller does not know about.
 */
import crypto from 'node:crypto';
import { LogKey, type Logger } from '../../../shared/log/index.js';
import { CertfleetError, ErrorCode, toCertfleetError } from '../../../shared/errors/index.js';
import type { Clock } from '../../../shared/clock/index.js';
import { isoAt } from '../../../shared/clock/index.js';
import type { DnsProvider } from './provider.js';
import { DnsLookup, waitForPropagation, type LookupOptions } from './propagation.js';
import type { DnsServer } from './transport.js';
import { canonicalName, isSubdomain } from './wire.js';

/** The TXT value for a key authorization: base64url(SHA-256(keyAuthorization)) (RFC 8555 §8.4). */
export function dns01Value(keyAuthorization: string): string {
  return crypto.createHash('sha256').update(keyAuthorization).digest('base64url');
}

/** `_acme-challenge.<name>.` for an identifier (a wildcard's `*.` dropped: RFC 8555 §8.4). */
export function challengeName(identifier: string): string {
  return canonicalName(`_acme-challenge.${identifier.replace(/^\*\./, '')}`);
}

/** One DNS-01 challenge to answer. */
export interface Dns01Challenge {
  cert: string;
  /** The identifier, `example.com` or `*.example.com`. */
  identifier: string;
  /** `token.thumbprint`; the TXT value is derived from it. */
  keyAuthorization: string;
  /** The certificate's provider when configured per certificate; else chosen by zone. */
  provider?: string;
}

/** A record the controller created and has not yet removed. */
export interface Dns01JournalEntry {
  /** Stable for (provider, fqdn, value): adding the same record twice is one entry. */
  id: string;
  provider: string;
  /** Where the record was written (after CNAME delegation), absolute. */
  fqdn: string;
  value: string;
  cert: string;
  identifier: string;
  createdAt: string;
}

/**
 * Durable memory of created records (the lead backs it with the CertStore). `add` must be
 * durable when it resolves; `add` of an existing id and `remove` of an absent one succeed.
 */
export interface Dns01Journal {
  add(entry: Dns01JournalEntry): Promise<void>;
  remove(id: string): Promise<void>;
  list(): Promise<Dns01JournalEntry[]>;
}

/** A journal in memory, for tests and tools; a crash forgets it, so not for the controller. */
export class MemoryDns01Journal implements Dns01Journal {
  readonly entries = new Map<string, Dns01JournalEntry>();
  add(entry: Dns01JournalEntry): Promise<void> {
    this.entries.set(entry.id, { ...entry });
    return Promise.resolve();
  }
  remove(id: string): Promise<void> {
    this.entries.delete(id);
    return Promise.resolve();
  }
  list(): Promise<Dns01JournalEntry[]> {
    return Promise.resolve([...this.entries.values()].map((e) => ({ ...e })));
  }
}

/** The records of one `present`, to hand back to `cleanup`. */
export interface Dns01Presentation {
  records: Dns01JournalEntry[];
}

/** Which provider serves which zone (longest match wins). */
export interface Dns01ZoneRoute {
  zone: string;
  provider: string;
}

export interface Dns01SolverOptions {
  providers: ReadonlyMap<string, DnsProvider>;
  /** Zone routes; with none matching, the only provider when there is exactly one. */
  zones?: readonly Dns01ZoneRoute[];
  journal: Dns01Journal;
  /** Resolvers and the nameserver port, for CNAME, zone and NS discovery. */
  lookup?: LookupOptions;
  /** Check these servers instead of each zone's NS. */
  nameservers?: readonly DnsServer[];
  /** Follow `_acme-challenge` CNAMEs to a validation zone. Default true. */
  followCnames?: boolean;
  /** How long every authoritative server has to show every value. Default 120 000 ms. */
  propagationTimeoutMs?: number;
  /** Pause between propagation rounds. Default 2000 ms. */
  propagationIntervalMs?: number;
  clock: Clock;
  log: Logger;
}

/** DNS-01 through the configured providers. */
export class Dns01Solver {
  private readonly lookup: DnsLookup;

  constructor(private readonly opts: Dns01SolverOptions) {
    this.lookup = new DnsLookup(opts.lookup);
  }

  /**
   * Writes one TXT record per challenge and waits until every authoritative server
   * shows all of them (values sharing a name — a wildcard and its bare name — are
   * checked together, so both are present at once). On any failure the records already
   * written are removed before the error is rethrown, so the CA is never asked to
   * validate a half-presented batch. Errors: DNS_PROVIDER_FAILED,
   * DNS_CREDENTIALS_REJECTED, DNS_LOOKUP_FAILED, DNS_PROPAGATION_TIMEOUT.
   */
  async present(challenges: readonly Dns01Challenge[]): Promise<Dns01Presentation> {
    const planned: Array<{ entry: Dns01JournalEntry; provider: DnsProvider }> = [];
    for (const ch of challenges) {
      const name = challengeName(ch.identifier);
      const fqdn = this.opts.followCnames === false ? name : await this.lookup.followCnames(name);
      const provider = this.providerFor(ch, fqdn);
      const value = dns01Value(ch.keyAuthorization);
      const entry: Dns01JournalEntry = {
        id: crypto.createHash('sha256').update(`${provider.name}\n${fqdn}\n${value}`).digest('hex').slice(0, 32),
        provider: provider.name,
        fqdn,
        value,
        cert: ch.cert,
        identifier: ch.identifier,
        createdAt: isoAt(this.opts.clock.now()),
      };
      if (fqdn !== name) this.opts.log.info({ [LogKey.cert]: ch.cert, [LogKey.identifier]: ch.identifier, [LogKey.fqdn]: fqdn }, 'challenge delegated by CNAME');
      if (!planned.some((p) => p.entry.id === entry.id)) planned.push({ entry, provider });
    }
    const presentation: Dns01Presentation = { records: [] };
    try {
      for (const { entry, provider } of planned) {
        await this.opts.journal.add(entry);
        presentation.records.push(entry);
        await provider.present(entry.fqdn, entry.value);
      }
      const expected = new Map<string, string[]>();
      for (const r of presentation.records) expected.set(r.fqdn, [...(expected.get(r.fqdn) ?? []), r.value]);
      await waitForPropagation(this.lookup, expected, {
        ...(this.opts.nameservers ? { nameservers: this.opts.nameservers } : {}),
        timeoutMs: this.opts.propagationTimeoutMs ?? 120_000,
        intervalMs: this.opts.propagationIntervalMs ?? 2000,
        clock: this.opts.clock,
        log: this.opts.log,
      });
    } catch (err) {
      await this.cleanup(presentation);
      throw toCertfleetError(err);
    }
    return presentation;
  }

  /**
   * Removes the records of a presentation (after validation, whether it passed or not).
   * Never throws: a record that cannot be removed keeps its journal entry and is logged;
   * the janitor tries again later.
   */
  async cleanup(presentation: Dns01Presentation): Promise<void> {
    for (const entry of presentation.records) {
      await removeRecord(entry, this.opts.providers, this.opts.journal, this.opts.log);
    }
  }

  /** Which of these TXT values the journal still lists (records not removed yet): a dry run's cleanup check. */
  async leftovers(values: readonly string[]): Promise<Dns01JournalEntry[]> {
    const want = new Set(values);
    return (await this.opts.journal.list()).filter((e) => want.has(e.value));
  }

  /** The provider for a challenge whose record goes to `fqdn`. */
  private providerFor(ch: Dns01Challenge, fqdn: string): DnsProvider {
    let name = ch.provider;
    if (name === undefined) {
      // Route on where the record is written: with CNAME delegation that is the
      // validation zone, whose credentials are the ones configured.
      let best: Dns01ZoneRoute | undefined;
      for (const route of this.opts.zones ?? []) {
        if (isSubdomain(fqdn, route.zone) && (!best || canonicalName(route.zone).length > canonicalName(best.zone).length)) best = route;
      }
      name = best?.provider ?? (this.opts.providers.size === 1 ? [...this.opts.providers.keys()][0] : undefined);
    }
    const provider = name === undefined ? undefined : this.opts.providers.get(name);
    if (!provider) {
      throw new CertfleetError(
        ErrorCode.DnsProviderFailed,
        name === undefined ? `no DNS provider configured for ${fqdn} (certificate ${ch.cert}): add a dns01.zones entry or a provider on the certificate` : `DNS provider "${name}" is not configured (certificate ${ch.cert})`,
        { details: { cert: ch.cert, fqdn, provider: name } },
      );
    }
    return provider;
  }
}

async function removeRecord(entry: Dns01JournalEntry, providers: ReadonlyMap<string, DnsProvider>, journal: Dns01Journal, log: Logger): Promise<boolean> {
  const provider = providers.get(entry.provider);
  if (!provider) {
    log.warn({ [LogKey.provider]: entry.provider, [LogKey.fqdn]: entry.fqdn, [LogKey.cert]: entry.cert }, 'dns record left: its provider is no longer configured');
    return false;
  }
  try {
    await provider.cleanup(entry.fqdn, entry.value);
    await journal.remove(entry.id);
    return true;
  } catch (err) {
    log.warn({ [LogKey.err]: err, [LogKey.provider]: entry.provider, [LogKey.fqdn]: entry.fqdn, [LogKey.cert]: entry.cert }, 'dns record cleanup failed');
    return false;
  }
}

export interface JanitorOptions {
  log: Logger;
  clock: Clock;
  /**
   * Only entries at least this old, so records of a challenge in flight (another
   * controller, or this one) are left alone. Default 0: run it before the work loop starts.
   */
  minAgeMs?: number;
}

/** What a janitor run did. */
export interface JanitorReport {
  removed: Dns01JournalEntry[];
  /** Entries whose removal failed (kept for the next run). */
  failed: Dns01JournalEntry[];
}

/**
 * Removes every record the journal still lists (a crash between present and cleanup
 * leaves them) and drops their entries. Never throws for one record; an entry whose
 * removal fails stays for the next run. Rejects only when the journal cannot be read.
 */
export async function janitor(journal: Dns01Journal, providers: ReadonlyMap<string, DnsProvider>, opts: JanitorOptions): Promise<JanitorReport> {
  const report: JanitorReport = { removed: [], failed: [] };
  const cutoff = opts.clock.now() - (opts.minAgeMs ?? 0);
  for (const entry of await journal.list()) {
    if (Date.parse(entry.createdAt) > cutoff) continue;
    if (await removeRecord(entry, providers, journal, opts.log)) report.removed.push(entry);
    else report.failed.push(entry);
  }
  if (report.removed.length > 0 || report.failed.length > 0) {
    opts.log.info({ [LogKey.removed]: report.removed.length, [LogKey.failed]: report.failed.length }, 'dns janitor run');
  }
  return report;
}

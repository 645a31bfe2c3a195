/**
 * One issuance, start to finish: key, order, HTTP-01 through the agents, finalize,
 * download, check, store. The work loop (controller/reconcile) decides *when*; this
 * module only does it, and throws a CertfleetError when it cannot (it never retries:
 * the loop owns retries and backoff).
 *
 * Lifecycle of the pending-order record (`orders/<cert>` in the store, 0600 because it
 * holds the new private key):
 *
 *   (none) --place order--> pending{url,key} --valid+stored--> (none)
 *                              |  crash/restart: resumed, same order and key
 *                              +--order invalid/expired, or config changed--> (none), new order
 *
 * The record is written right after the order is placed and before any challenge is
 * answered, so a controller killed at any later point resumes the same order instead
 * of spending a new one against the CA's limits. It also keeps what the order was
 * charged to the rate-limit budgets (`spend`): a resumed order is not charged again,
 * and the charge is refunded (what the CA counts only at issuance) when the order is
 * dropped without a certificate (issue #8: two kills mid-order charged it three times).
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { CertfleetError, ErrorCode, isCertfleetError, toCertfleetError } from '../../shared/errors/index.js';
import type { Clock } from '../../shared/clock/index.js';
import { isoAt } from '../../shared/clock/index.js';
import type { ChallengeRecord, KeyType, VersionMeta } from '../../shared/model/index.js';
import { parseCertificate } from '../../shared/pki/index.js';
import { validateBundle } from '../../shared/bundle/index.js';
import { createCsr, generateKeyObject, PROBLEM_ALREADY_REPLACED, type AcmeClient, type AcmeOrder } from '../acme/index.js';
import { ObjectKey, ObjectPrefix, type CertStore } from '../store/index.js';
import { storeOrSpool, type Spool } from '../spool/index.js';
import type { Http01Solver } from '../solvers/index.js';
import { dns01Value, type Dns01Solver } from '../solvers/dns01/index.js';
import type { Spend } from '../budget/index.js';
import { LogKey } from '../../shared/log/index.js';
import { sameNameSet } from '../names/index.js';
import { DEFAULT_ISSUER, type CertificateConfig } from '../config/index.js';

/** What to issue. */
export interface IssueRequest {
  name: string;
  names: readonly string[];
  keyType: KeyType;
  selector: string;
  challenge: 'http-01' | 'dns-01';
  /** DNS-01: the provider; default chosen by zone. */
  dnsProvider?: string;
  /** ARI identifier of the certificate this order renews (RFC 9773 `replaces`). */
  replaces?: string;
  /** Why it is issued ("renewal due", ...), for the outcome's log line only. */
  reason?: string;
  /**
   * ACME certificate profile to order under (checked against the CA's directory at
   * start). A saved order placed under another profile is not resumed.
   */
  profile?: string;
  /** How a new order is paid for; absent: nothing is charged (tests, budgets off). */
  charge?: OrderCharge;
  /**
   * The issuer (controller config `issuers`) to order from, through
   * `IssuerOptions.accounts`; recorded in the version's meta. Absent: `IssuerOptions.acme`.
   */
  issuer?: string;
}

/**
 * The request to issue `cert` as configured: names, key type, challenge path (selector or
 * DNS provider) and profile. The work loop adds what a renewal carries (`replaces`,
 * `charge`, `issuer`); a dry run sends it as it is.
 */
export function requestFor(cert: CertificateConfig): IssueRequest {
  return {
    name: cert.name,
    names: cert.names,
    keyType: cert.keyType,
    selector: cert.agents,
    challenge: cert.challenge,
    ...(cert.dnsProvider === undefined ? {} : { dnsProvider: cert.dnsProvider }),
    ...(cert.profile === undefined ? {} : { profile: cert.profile }),
  };
}

/** The stored metadata of a certificate issued for `req` (all but the version number). */
function metaFor(req: IssueRequest, info: ReturnType<typeof parseCertificate>, issuedAt: number): Omit<VersionMeta, 'version'> {
  return {
    name: req.name,
    serial: info.serial,
    fingerprint: info.fingerprint,
    names: info.names,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    issuedAt: isoAt(issuedAt),
    keyType: req.keyType,
  };
}

/**
 * How a new order is paid for (the work loop over controller/budget). The issuer calls
 * `charge` at most once per `issue`, right before it sends a new order, and keeps the
 * result with the order; a saved order that is resumed is never charged again.
 */
export interface OrderCharge {
  /** Spends the budgets for one new order; rejects (e.g. BUDGET_DEFERRED) to send none. */
  charge(): Promise<Spend>;
  /**
   * The order ended without a certificate: give back what the CA counts only at
   * issuance. `issuer` names the issuer a saved order of another issuer was charged to
   * (absent: this order's).
   */
  refund(spend: Spend, issuer?: string): void;
}

/** A saved order, as the work loop sees it. */
export interface SavedOrder {
  url: string;
  names: string[];
  keyType: KeyType;
  /** When the order was placed (epoch ms; 0 when unknown). */
  createdAt: number;
  /** What it was charged; empty for records written before charges were kept. */
  spend: Spend;
}

/** Where issuance progress is announced (the events stream in production). */
export type IssuerEvent =
  | { type: 'ordered'; cert: string; order: string; resumed: boolean }
  | { type: 'issued'; cert: string; meta: VersionMeta }
  | { type: 'spooled'; cert: string; serial: string; reason: string };

/** One step of a rehearsal ({@link Issuer.rehearse}), as it ended. */
export interface RehearsalStep {
  /** `order`, `authorization`, `finalize`, `download` or `cleanup`. */
  step: string;
  /** The identifier an authorization step is for; '' for the others. */
  identifier: string;
  ok: boolean;
  /** Since the previous step ended (the first: since the rehearsal began), on the issuer's clock. */
  durationMs: number;
  detail: string;
}

/** What a rehearsal was issued; kept nowhere. */
export interface RehearsalResult {
  order: string;
  serial: string;
  fingerprint: string;
  notAfter: string;
  names: string[];
}

/** Told when an authorization starts being answered and when the CA found it valid. */
/** `reused`: the CA handed back an authorization that was already valid (no challenge needed). */
type AuthzProgress = (identifier: string, phase: 'start' | 'valid' | 'reused') => void;

export interface IssuerOptions {
  /** The account of requests that name no issuer. */
  acme: AcmeClient;
  /**
   * The account of a named issuer, opened on first use (a fallback CA that is down at
   * start must not stop the controller); rejects when it cannot be opened now, and is
   * asked again on the next issuance. Absent: every request uses `acme`.
   */
  accounts?: (issuer: string) => Promise<AcmeClient>;
  store: CertStore;
  http01: Http01Solver;
  /** DNS-01 solver; absent when no DNS provider is configured. */
  dns01?: Dns01Solver;
  /** Where issued versions wait when the store is down. */
  spool: Spool;
  clock: Clock;
  log: Logger;
  onEvent?: (event: IssuerEvent) => void;
}

interface PendingOrder {
  url: string;
  keyPem: string;
  names: string[];
  keyType: KeyType;
  createdAt: string;
  /** What placing it was charged (absent in records of older controllers). */
  spend?: Spend;
  /** The profile it was placed under (absent: none, or a record of an older controller). */
  profile?: string;
  /** The issuer it was placed with (absent in records of older controllers: `default`). */
  issuer?: string;
}

const ORDERS_PREFIX = ObjectPrefix.orders;
const NO_SPEND: Spend = Object.freeze({ items: [], exemptions: [] });

function pendingKey(name: string): string {
  return ObjectKey.order(name);
}

function isPendingOrder(v: unknown): v is PendingOrder {
  const o = v as Partial<PendingOrder> | null;
  return typeof o?.url === 'string' && typeof o.keyPem === 'string' && Array.isArray(o.names) && typeof o.keyType === 'string';
}

function isSpend(v: unknown): v is Spend {
  const o = v as Partial<Spend> | null;
  return (
    Array.isArray(o?.items) &&
    o.items.every((i: unknown) => {
      const it = i as { limit?: unknown; key?: unknown; cost?: unknown } | null;
      return typeof it?.limit === 'string' && typeof it.key === 'string' && typeof it.cost === 'number';
    })
  );
}

function spendOf(p: PendingOrder): Spend {
  return isSpend(p.spend) ? { items: p.spend.items, exemptions: Array.isArray(p.spend.exemptions) ? p.spend.exemptions : [] } : NO_SPEND;
}

/** An error after which the order can never complete: drop it rather than resume it. */
function orderIsDead(err: unknown): boolean {
  return isCertfleetError(err) && (err.code === ErrorCode.AcmeOrderInvalid || (err.code === ErrorCode.AcmeProblem && !err.retryable));
}

function toSavedOrder(p: PendingOrder): SavedOrder {
  const created = Date.parse(p.createdAt);
  return { url: p.url, names: [...p.names], keyType: p.keyType, createdAt: Number.isFinite(created) ? created : 0, spend: spendOf(p) };
}

/**
 * The profile to record with the version: what the CA says the order had, else the one
 * asked for. A CA that reports another than asked for is logged, and believed.
 */
function profileOf(req: IssueRequest, order: AcmeOrder, log: Logger): { profile?: string } {
  const reported = order.profile;
  if (reported !== undefined && req.profile !== undefined && reported !== req.profile) {
    log.warn({ [LogKey.profile]: req.profile, reported }, 'the CA issued under another profile than asked for');
  }
  const profile = reported ?? req.profile;
  return profile === undefined ? {} : { profile };
}

/**
 * Whether saved order `p` serves a request for `names`, `keyType` at `issuer` (undefined:
 * any issuer; a record without one was placed with `default`).
 */
function matches(p: PendingOrder, names: readonly string[], keyType: KeyType, issuer: string | undefined): boolean {
  return sameNameSet(p.names, names) && p.keyType === keyType && (issuer === undefined || (p.issuer ?? DEFAULT_ISSUER) === issuer);
}

function parsedKey(keyPem: string): KeyObject | undefined {
  try {
    return createPrivateKey(keyPem);
  } catch {
    return undefined;
  }
}

/**
 * The last authorization of `order` still to be validated: waited for through the order,
 * which turns `ready` once it (and every one before it, already valid) is valid.
 */
function lastPending(order: AcmeOrder): AcmeOrder['authorizations'][number] | undefined {
  return order.authorizations.filter((a) => a.status !== 'valid').at(-1);
}

/** Issues certificates for the controller. */
export class Issuer {
  /** Saved orders read so far (null: none), kept equal to the store by this class's writes. */
  private readonly saved = new Map<string, PendingOrder | null>();

  constructor(private readonly opts: IssuerOptions) {}

  /**
   * The saved order of `name` that an issuance for `names` and `keyType` would resume,
   * or null. Read from the store once, then from memory (this class writes the records).
   */
  async resumable(name: string, names: readonly string[], keyType: KeyType, issuer?: string): Promise<SavedOrder | null> {
    const p = await this.savedOrder(name);
    if (!p || !matches(p, names, keyType, issuer)) return null;
    return toSavedOrder(p);
  }

  /** The account `req` orders with. */
  private async acmeFor(req: IssueRequest): Promise<AcmeClient> {
    if (req.issuer === undefined || this.opts.accounts === undefined) return this.opts.acme;
    return this.opts.accounts(req.issuer);
  }

  /** Every saved order in the store (start-up: which challenge records still belong to one). */
  async savedOrders(): Promise<Map<string, SavedOrder>> {
    const out = new Map<string, SavedOrder>();
    for (const key of await this.opts.store.listObjects(ORDERS_PREFIX)) {
      const name = key.slice(ORDERS_PREFIX.length);
      const p = await this.savedOrder(name);
      if (p) out.set(name, toSavedOrder(p));
    }
    return out;
  }

  /**
   * Issues a new version of `req.name`, stored as version `expectedLatest + 1`.
   * Resumes a pending order left by a crash when it still matches the request.
   */
  async issue(req: IssueRequest, expectedLatest: number): Promise<VersionMeta> {
    const log = this.opts.log.child({ [LogKey.cert]: req.name, ...(req.issuer === undefined ? {} : { [LogKey.issuer]: req.issuer }) });
    const startedAt = this.opts.clock.now();
    const acme = await this.acmeFor(req);
    const { order, keyPem, key: newKey } = await this.openOrder(acme, req, expectedLatest, log);
    let issuedOrder = order;
    let certPem: string;
    let chainPem: string;
    // Parsed once for the CSR and the bundle check (an unreadable one: createCsr says so);
    // a new order's key comes parsed from its generation.
    const key = newKey ?? parsedKey(keyPem);
    try {
      const authorized = await this.authorize(acme, req, order, log);
      const finalized = await acme.finalize(authorized, await createCsr(key ?? keyPem, req.names));
      issuedOrder = finalized;
      ({ certPem, chainPem } = await acme.downloadCertificate(finalized));
    } catch (err) {
      // A dead order (validation failed, the CA invalidated it) is dropped now, and its
      // charge refunded; anything else keeps it for the next attempt or a restart.
      if (orderIsDead(err)) await this.dropOrder(req, log, 'order failed').catch((e: unknown) => log.warn({ [LogKey.err]: (e as Error).message }, 'dead order not dropped'));
      throw err;
    }

    const info = parseCertificate(certPem);
    // Idempotent by certificate: a resumed order whose certificate is already stored (the
    // spool delivered it while the store could not take the order record's deletion, or a
    // crash fell between storing and deleting) ends here instead of storing it again as
    // a new version.
    const stored = await this.opts.store.latest(req.name);
    if (stored !== null && stored.fingerprint === info.fingerprint) {
      log.info({ [LogKey.version]: stored.version, serial: stored.serial }, 'certificate of the resumed order already stored');
      await this.deleteRecord(req.name);
      return stored;
    }
    const meta: Omit<VersionMeta, 'version'> = {
      ...metaFor(req, info, this.opts.clock.now()),
      ...profileOf(req, issuedOrder, log),
      ...(req.issuer === undefined ? {} : { issuer: req.issuer }),
    };
    // The same check an agent makes before installing: a CA bug or a mix-up of keys
    // must stop here, not on every node.
    validateBundle(
      { meta: { ...meta, version: expectedLatest + 1 }, certPem, chainPem, keyPem },
      { now: this.opts.clock.now(), requiredNames: [...req.names], leaf: info, ...(key === undefined ? {} : { key }) },
    );
    // Nothing issued is lost: a store that is down now gets the version from the
    // durable spool later (controller/spool), also after a restart.
    const result = await storeOrSpool(this.opts.store, this.opts.spool, req.name, { certPem, chainPem, keyPem, meta }, expectedLatest);
    if (result.status === 'spooled') {
      log.warn({ serial: meta.serial, [LogKey.err]: result.cause.message }, 'store unavailable; issued certificate spooled');
      this.opts.onEvent?.({ type: 'spooled', cert: req.name, serial: meta.serial, reason: result.cause.message });
      // The order is done; the spool now holds its result. Best effort: the store is down.
      await this.deleteRecord(req.name).catch(() => false);
      throw new CertfleetError(ErrorCode.StoreUnavailable, `certificate issued but the store is unavailable; spooled for delivery: ${result.cause.message}`, {
        retryable: true,
        cause: result.cause,
        details: { spooled: true },
      });
    }
    const issued = result.meta;
    await this.deleteRecord(req.name);
    // The one info line of a successful issuance: the steps before it are debug lines.
    log.info(
      {
        [LogKey.version]: issued.version,
        serial: issued.serial,
        notAfter: issued.notAfter,
        [LogKey.order]: issuedOrder.url,
        ...(req.reason === undefined ? {} : { [LogKey.reason]: req.reason }),
        ...(req.replaces === undefined ? {} : { replaces: req.replaces }),
        durationMs: this.opts.clock.now() - startedAt,
      },
      'certificate issued',
    );
    this.opts.onEvent?.({ type: 'issued', cert: req.name, meta: issued });
    return issued;
  }

  /**
   * A dry run: the whole issuance of `req` (new key, order, every challenge through the
   * same solvers, finalize, download, the bundle check) with nothing kept — no pending
   * order record, no version, no charge, no `onEvent`. Used with a client of a staging
   * CA. Each step is told to `onStep` as it ends; a failed step is told with `ok: false`
   * and the error rethrown after the `cleanup` step, which checks that no challenge
   * record of the order is left on the board or in the DNS-01 journal.
   */
  async rehearse(req: IssueRequest, onStep: (step: RehearsalStep) => void): Promise<RehearsalResult> {
    const log = this.opts.log.child({ [LogKey.cert]: req.name });
    let t = this.opts.clock.now();
    const done = (step: string, identifier: string, ok: boolean, detail: string): void => {
      const at = this.opts.clock.now();
      onStep({ step, identifier, ok, durationMs: Math.max(0, at - t), detail });
      t = at;
    };
    let current = { step: 'order', identifier: '' };
    let order: AcmeOrder | undefined;
    try {
      const { keyPem, key } = await generateKeyObject(req.keyType);
      order = await this.opts.acme.placeOrder(req.names, req.profile === undefined ? {} : { profile: req.profile });
      log.info({ [LogKey.order]: order.url }, 'dry-run order placed');
      done('order', '', true, `${order.url} (${order.authorizations.length} authorization${order.authorizations.length === 1 ? '' : 's'})`);
      const authorized = await this.authorize(this.opts.acme, req, order, log, (identifier, phase) => {
        if (phase === 'start') current = { step: 'authorization', identifier };
        // A reused authorization still gets its row: every name of the order is accounted for.
        else if (phase === 'reused') done('authorization', identifier, true, 'already valid at the CA (no challenge needed)');
        else done('authorization', identifier, true, `${req.challenge} valid`);
      });
      current = { step: 'finalize', identifier: '' };
      const finalized = await this.opts.acme.finalize(authorized, await createCsr(key, req.names));
      done('finalize', '', true, `order ${finalized.status}`);
      current = { step: 'download', identifier: '' };
      const { certPem, chainPem } = await this.opts.acme.downloadCertificate(finalized);
      const info = parseCertificate(certPem);
      // Never stored; any valid version number will do for the agent's bundle check.
      const meta: VersionMeta = { ...metaFor(req, info, this.opts.clock.now()), version: 1, ...profileOf(req, finalized, log) };
      validateBundle({ meta, certPem, chainPem, keyPem }, { now: this.opts.clock.now(), requiredNames: [...req.names], leaf: info, key });
      done('download', '', true, `serial ${meta.serial}, notAfter ${meta.notAfter}, names ${meta.names.join(', ')}`);
      await this.rehearsalCleanup(req, order, done);
      return { order: order.url, serial: meta.serial, fingerprint: meta.fingerprint, notAfter: meta.notAfter, names: meta.names };
    } catch (err) {
      const cf = toCertfleetError(err);
      done(current.step, current.identifier, false, `${cf.code}: ${cf.message}`);
      if (order) await this.rehearsalCleanup(req, order, done);
      throw err;
    }
  }

  /** The `cleanup` step of a rehearsal: none of the order's challenge records is left. */
  private async rehearsalCleanup(req: IssueRequest, order: AcmeOrder, done: (step: string, identifier: string, ok: boolean, detail: string) => void): Promise<void> {
    try {
      const challenges = order.authorizations.flatMap((a) => a.challenges.filter((c) => c.type === req.challenge));
      let left: string[];
      if (req.challenge === 'dns-01') {
        const values = await Promise.all(challenges.map(async (c) => dns01Value(await this.opts.acme.keyAuthorization(c.token))));
        left = (await this.opts.dns01?.leftovers(values))?.map((e) => `${e.fqdn} TXT (${e.provider})`) ?? [];
      } else {
        left = (await this.opts.http01.stillPublished(challenges.map((c) => c.token))).map((token) => `challenge record ${token}`);
      }
      done('cleanup', '', left.length === 0, left.length === 0 ? `${challenges.length} ${req.challenge} record${challenges.length === 1 ? '' : 's'} withdrawn` : `left behind (the janitor removes them): ${left.join(', ')}`);
    } catch (err) {
      done('cleanup', '', false, `not checked: ${toCertfleetError(err).message}`);
    }
  }

  /**
   * The order to work on: the persisted one if still usable, else a new one. `key` is the
   * new order's key, parsed (absent for a resumed order: the caller parses its PEM).
   */
  private async openOrder(acme: AcmeClient, req: IssueRequest, expectedLatest: number, log: Logger): Promise<{ order: AcmeOrder; keyPem: string; key?: KeyObject }> {
    const saved = await this.savedOrder(req.name);
    if (saved) {
      // A saved order of another issuer is another CA's: dropped (its charge refunded to
      // that issuer), never sent to this one.
      if (matches(saved, req.names, req.keyType, req.issuer) && saved.profile === req.profile) {
        try {
          const order = await acme.getOrder(saved.url);
          if (order.status !== 'invalid') {
            log.info({ [LogKey.order]: saved.url, status: order.status }, 'order resumed');
            this.opts.onEvent?.({ type: 'ordered', cert: req.name, order: saved.url, resumed: true });
            return { order, keyPem: saved.keyPem };
          }
          log.info({ [LogKey.order]: saved.url }, 'saved order is invalid; placing a new one');
        } catch (err) {
          // A CA that no longer knows the order (404, expired) means start over; an
          // outage means try again later with the same order.
          if (isCertfleetError(err) && err.retryable) throw err;
          log.info({ [LogKey.order]: saved.url, [LogKey.err]: (err as Error).message }, 'saved order unusable; placing a new one');
        }
      }
      await this.dropOrder(req, log, 'saved order replaced');
    }
    // Re-check before spending an order (STYLE rule 7): another controller, or the spool,
    // may have stored a version since the caller looked.
    const current = (await this.opts.store.latest(req.name))?.version ?? 0;
    if (current !== expectedLatest) {
      throw new CertfleetError(ErrorCode.StoreConflict, `certificate ${req.name}: version ${current} appeared meanwhile; no order placed`, {
        retryable: true,
        details: { expectedLatest, current },
      });
    }
    const { keyPem, key } = await generateKeyObject(req.keyType);
    const spend = (await req.charge?.charge()) ?? NO_SPEND;
    const profileOption = req.profile === undefined ? {} : { profile: req.profile };
    let order: AcmeOrder;
    let pending: PendingOrder;
    try {
      try {
        order = await acme.placeOrder(req.names, { ...(req.replaces === undefined ? {} : { replaces: req.replaces }), ...profileOption });
      } catch (err) {
        // The CA says that certificate was already replaced (by an order it remembers, or
        // another controller): order again as a plain renewal.
        if (!(req.replaces !== undefined && isCertfleetError(err) && err.details['type'] === PROBLEM_ALREADY_REPLACED)) throw err;
        log.info({ replaces: req.replaces }, 'certificate already replaced; ordering without replaces');
        order = await acme.placeOrder(req.names, profileOption);
      }
      pending = { url: order.url, keyPem, names: [...req.names], keyType: req.keyType, createdAt: isoAt(this.opts.clock.now()), spend, ...profileOption, ...(req.issuer === undefined ? {} : { issuer: req.issuer }) };
      await this.opts.store.putObject(pendingKey(req.name), pending);
    } catch (err) {
      // No order to resume: what it was charged for will not be issued.
      req.charge?.refund(spend);
      throw err;
    }
    this.saved.set(req.name, pending);
    // Per-step lines are debug: the outcome line ('certificate issued') names the order.
    log.debug({ [LogKey.order]: order.url }, 'order placed');
    this.opts.onEvent?.({ type: 'ordered', cert: req.name, order: order.url, resumed: false });
    return { order, keyPem, key };
  }

  private async savedOrder(name: string): Promise<PendingOrder | null> {
    if (this.saved.has(name)) return this.saved.get(name) ?? null;
    const v = await this.opts.store.getObject<unknown>(pendingKey(name));
    const p = isPendingOrder(v) ? v : null;
    this.saved.set(name, p);
    return p;
  }

  private async deleteRecord(name: string): Promise<void> {
    await this.opts.store.deleteObject(pendingKey(name));
    this.saved.set(name, null);
  }

  /** Forgets the saved order of `req.name` without a certificate, refunding its charge. */
  private async dropOrder(req: IssueRequest, log: Logger, why: string): Promise<void> {
    const saved = await this.savedOrder(req.name);
    await this.deleteRecord(req.name);
    if (!saved) return;
    log.info({ [LogKey.order]: saved.url }, why);
    const other = req.issuer !== undefined && (saved.issuer ?? DEFAULT_ISSUER) !== req.issuer;
    if (other) req.charge?.refund(spendOf(saved), saved.issuer ?? DEFAULT_ISSUER);
    else req.charge?.refund(spendOf(saved));
  }

  /**
   * Answers every pending authorization of `order`, by the certificate's challenge type,
   * and returns the order as it stands after: the last authorization is waited for by
   * polling the order (waitForOrder), whose answer (`ready`) finalize then uses without
   * reading it again — one signed request fewer per authorization wait and one for
   * finalize (issue #13). Unchanged when nothing was pending.
   */
  private async authorize(acme: AcmeClient, req: IssueRequest, order: AcmeOrder, log: Logger, progress?: AuthzProgress): Promise<AcmeOrder> {
    if (order.status === 'invalid') {
      throw new CertfleetError(ErrorCode.AcmeOrderInvalid, `order for ${req.name} is invalid`, { details: { order: order.url, problem: order.error } });
    }
    if (req.challenge === 'dns-01') return this.authorizeDns01(acme, req, order, log, progress);
    const last = lastPending(order);
    let current = order;
    for (const authz of order.authorizations) {
      if (authz.status === 'valid') {
        // Valid already: a resumed order whose crashed run published the challenge and the
        // CA validated it before the crash. Its record would stay until the periodic sweep
        // (the start-up sweep keeps a saved order's records for it): withdrawn now.
        const published = authz.challenges.find((c) => c.type === 'http-01');
        if (published) await this.opts.http01.cleanup(published.token);
        progress?.(authz.identifier.value, 'reused');
        continue;
      }
      progress?.(authz.identifier.value, 'start');
      if (authz.status !== 'pending') {
        throw new CertfleetError(ErrorCode.AcmeOrderInvalid, `authorization for ${authz.identifier.value} is ${authz.status}`, {
          details: { authorization: authz.url },
        });
      }
      const challenge = authz.challenges.find((c) => c.type === 'http-01');
      if (!challenge) {
        throw new CertfleetError(ErrorCode.AcmeOrderInvalid, `the CA offers no http-01 challenge for ${authz.identifier.value}`, {
          details: { authorization: authz.url, offered: authz.challenges.map((c) => c.type) },
        });
      }
      const record: ChallengeRecord = {
        token: challenge.token,
        keyAuthorization: await acme.keyAuthorization(challenge.token),
        identifier: authz.identifier.value,
        cert: req.name,
        selector: req.selector,
        createdAt: isoAt(this.opts.clock.now()),
      };
      try {
        // A challenge already 'processing' (resumed after a crash) must still be served,
        // but is not accepted a second time.
        await this.opts.http01.present(record);
        if (challenge.status === 'pending') await acme.acceptChallenge(challenge.url);
        if (authz === last) current = await acme.waitForOrder(order);
        else await acme.waitForAuthorization(authz.url);
        log.debug({ [LogKey.identifier]: authz.identifier.value }, 'authorization valid');
        progress?.(authz.identifier.value, 'valid');
      } finally {
        await this.opts.http01.cleanup(challenge.token);
      }
    }
    return current;
  }

  /**
   * DNS-01: every pending authorization at once, because a wildcard and its bare name
   * share one TXT name and both values must be visible together. The records are
   * present and propagated to every authoritative server before the CA is asked.
   */
  private async authorizeDns01(acme: AcmeClient, req: IssueRequest, order: AcmeOrder, log: Logger, progress?: AuthzProgress): Promise<AcmeOrder> {
    const solver = this.opts.dns01;
    if (!solver) throw new CertfleetError(ErrorCode.ConfigInvalid, `certificate ${req.name} uses dns-01 but no DNS provider is configured`);
    const pending: Array<{ authzUrl: string; challengeUrl: string; status: string; identifier: string; token: string }> = [];
    for (const authz of order.authorizations) {
      if (authz.status === 'valid') {
        progress?.(authz.wildcard ? `*.${authz.identifier.value}` : authz.identifier.value, 'reused');
        continue;
      }
      if (authz.status !== 'pending') {
        throw new CertfleetError(ErrorCode.AcmeOrderInvalid, `authorization for ${authz.identifier.value} is ${authz.status}`, { details: { authorization: authz.url } });
      }
      const challenge = authz.challenges.find((c) => c.type === 'dns-01');
      if (!challenge) {
        throw new CertfleetError(ErrorCode.AcmeOrderInvalid, `the CA offers no dns-01 challenge for ${authz.identifier.value}`, {
          details: { authorization: authz.url, offered: authz.challenges.map((c) => c.type) },
        });
      }
      const identifier = authz.wildcard ? `*.${authz.identifier.value}` : authz.identifier.value;
      pending.push({ authzUrl: authz.url, challengeUrl: challenge.url, status: challenge.status, identifier, token: challenge.token });
    }
    if (pending.length === 0) return order;
    const challenges = [];
    for (const p of pending) {
      challenges.push({
        cert: req.name,
        identifier: p.identifier,
        keyAuthorization: await acme.keyAuthorization(p.token),
        ...(req.dnsProvider === undefined ? {} : { provider: req.dnsProvider }),
      });
    }
    progress?.(pending.map((p) => p.identifier).join(', '), 'start');
    const presentation = await solver.present(challenges);
    let current = order;
    try {
      for (const p of pending) if (p.status === 'pending') await acme.acceptChallenge(p.challengeUrl);
      for (const [i, p] of pending.entries()) {
        progress?.(p.identifier, 'start');
        // The last one through the order, as for HTTP-01 (authorize).
        if (i === pending.length - 1) current = await acme.waitForOrder(order);
        else await acme.waitForAuthorization(p.authzUrl);
        log.debug({ [LogKey.identifier]: p.identifier }, 'authorization valid');
        progress?.(p.identifier, 'valid');
      }
    } finally {
      await solver.cleanup(presentation);
    }
    return current;
  }
}

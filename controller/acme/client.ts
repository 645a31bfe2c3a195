/**
 * The ACME adapter: the `AcmeClient` interface the controller uses, and its
 * implementation over acme-client.
 *
 * The flow is step by step, never acme-client's `auto()`: the caller places an order,
 * gets its challenges served by the agents (the HTTP-01 answer is not served here),
 * accepts them, waits, finalizes with its own CSR and downloads. Each step is one call
 * the controller can persist around, so an order survives a crash (`getOrder`).
 *
 *   placeOrder ─► order: pending ─► (serve http-01, acceptChallenge, waitForAuthorization
 *   for each authz, or waitForOrder for the last) ─► ready ─► finalize ─► processing
 *   ─► valid ─► downloadCertificate
 *                         └──────────── any step ─► invalid (ACME_ORDER_INVALID / ACME_PROBLEM)
 *
 * Failures are CertfleetErrors: ACME_TRANSPORT (no answer; retryable), ACME_RATE_LIMITED
 * (retryable, retryAfterMs from Retry-After), ACME_PROBLEM (the CA's problem document in
 * `details`; retryable for 5xx), ACME_ORDER_INVALID (the order or an authorization is
 * dead; place a new order), ACME_TIMEOUT (still pending at the poll deadline or aborted;
 * retryable, resume with the same URLs). Nothing here retries a failed request: that is
 * the controller's work loop's job. Only badNonce is retried, inside acme-client.
 *
 * ARI (RFC 9773): `renewalInfoUrl` reads the directory's renewalInfo, `getRenewalInfo`
 * GETs a certificate's suggested window (pure parsing and timing in ari.ts), and
 * `placeOrder(names, { replaces })` sends the old certificate's identifier in newOrder.
 *
 * Profiles (draft-ietf-acme-profiles): `profiles()` reads the directory's `meta.profiles`
 * (name → description), `placeOrder(names, { profile })` asks for one in newOrder, and
 * the order's `profile` is what the CA says it issues under. A CA that refuses the
 * profile answers `invalidProfile` (ACME_PROBLEM, not retryable, a message naming it).
 */
import crypto from 'node:crypto';
import net from 'node:net';
import type https from 'node:https';
import * as acme from 'acme-client';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { systemClock, type Clock } from '../../shared/clock/index.js';
import { componentLogger, LogKey, type Logger } from '../../shared/log/index.js';
import { ACME_ERROR_PREFIX, PROBLEM_ACCOUNT_DOES_NOT_EXIST, PROBLEM_ALREADY_REVOKED, PROBLEM_INVALID_PROFILE, asProblem, parseRetryAfterMs, problemDetails, type AcmeProblemDocument, type HttpResponseLike } from './problem.js';
import { hookHttpClient, installTransport } from './transport.js';
import { ARI_ERROR_RETRY_MS, ariCertId, ariRetryAfterMs, isAriCertId, jitter, parseRenewalInfo, type RenewalInfo } from './ari.js';

export type AcmeOrderStatus = 'pending' | 'ready' | 'processing' | 'valid' | 'invalid';
export type AcmeAuthorizationStatus = 'pending' | 'valid' | 'invalid' | 'deactivated' | 'expired' | 'revoked';

/** An identifier as ACME writes it: `dns` names (wildcards included) or `ip` addresses. */
export interface AcmeIdentifier {
  type: string;
  value: string;
}

export interface AcmeChallenge {
  /** 'http-01', 'dns-01', 'tls-alpn-01', ... */
  type: string;
  url: string;
  token: string;
  status: string;
  /** Why validation failed, when it did. */
  error?: AcmeProblemDocument;
}

export interface AcmeAuthorization {
  url: string;
  /** For a wildcard order the CA gives the base name here and sets `wildcard`. */
  identifier: AcmeIdentifier;
  status: AcmeAuthorizationStatus;
  wildcard: boolean;
  expires?: string;
  challenges: AcmeChallenge[];
}

export interface AcmeOrder {
  /** The order URL: what to persist to resume after a crash. */
  url: string;
  status: AcmeOrderStatus;
  expires?: string;
  identifiers: AcmeIdentifier[];
  authorizations: AcmeAuthorization[];
  finalizeUrl: string;
  /** Set once the order is valid. */
  certificateUrl?: string;
  /** The CA's reason when the order is invalid. */
  error?: AcmeProblemDocument;
  /**
   * The RFC 9773 identifier of the certificate this order replaces, as the CA reflects
   * it (§5: a CA that accepted `replaces` MUST echo it). Absent when the CA ignores it
   * (Pebble 2.4 does).
   */
  replaces?: string;
  /**
   * The profile the CA issues this order under, as it reports it (draft-ietf-acme-profiles
   * §4: a CA that accepts a profile responds with it). Absent when the CA has no profiles.
   */
  profile?: string;
}

/** Options of {@link AcmeClient.placeOrder}. */
export interface PlaceOrderOptions {
  /**
   * RFC 9773 §5: the ARI identifier (`ariCertId`) of the certificate this order renews.
   * Send it only when the CA offers renewalInfo (the RFC says SHOULD NOT otherwise) and
   * from the account that ordered the old certificate; a CA may then exempt the order
   * from rate limits. A CA that has already seen a replacement answers 409
   * `alreadyReplaced` (ACME_PROBLEM; PROBLEM_ALREADY_REPLACED in details.type).
   */
  replaces?: string;
  /**
   * The certificate profile to ask for (draft-ietf-acme-profiles): one of the names
   * {@link AcmeClient.profiles} lists. The draft says a client SHOULD NOT ask for one the
   * directory does not advertise; the caller checks that (`profileProblems`). A CA that
   * does not offer it answers `invalidProfile`: ACME_PROBLEM, not retryable, whose
   * message names the profile.
   */
  profile?: string;
}

export interface AcmeCertificate {
  /** The leaf certificate, PEM. */
  certPem: string;
  /** The rest of the chain the CA sent (intermediates), PEM; may be empty. */
  chainPem: string;
}

/**
 * One ACME account at one CA. Safe for concurrent use: every signed request fetches its
 * own nonce. Methods reject only with CertfleetError (codes in the module comment).
 */
export interface AcmeClient {
  /** The directory URL this client talks to. */
  readonly directoryUrl: string;
  /**
   * Finds this key's account, or creates it, agreeing to the CA's terms of service.
   * With a known account URL it reads the account (POST-as-GET, RFC 8555 §7.3.3), never
   * an empty update (Pebble refuses one with 400 malformed); without one it registers
   * (RFC 8555 §7.3.1: the same key returns the same account). The contact is updated
   * only when an email is configured and the account lacks it. A CA that no longer knows
   * the URL (accountDoesNotExist) gets the same key registered again, and
   * `onAccountChanged` hears the new URL. Later calls use the URL as the JWS `kid`.
   */
  ensureAccount(): Promise<{ accountUrl: string }>;
  /**
   * Places a new order for `names` (dns, or ip for IP literals) and reads its
   * authorizations. With `replaces`, the newOrder payload carries it (RFC 9773 §5).
   */
  placeOrder(names: readonly string[], opts?: PlaceOrderOptions): Promise<AcmeOrder>;
  /**
   * The directory's `renewalInfo` URL (RFC 9773 §3), or undefined when the CA offers no
   * ARI (Debian's Pebble 2.4). Reads the directory (cached by acme-client for a day).
   * ACME_TRANSPORT / ACME_PROBLEM when the directory cannot be read.
   */
  renewalInfoUrl(): Promise<string | undefined>;
  /**
   * The certificate profiles the directory advertises (`meta.profiles`: name →
   * human-readable description), or undefined when it advertises none (Debian's Pebble
   * 2.4; an entry that is not a string is dropped). Reads the directory (cached by
   * acme-client for a day). ACME_TRANSPORT / ACME_PROBLEM when it cannot be read.
   */
  profiles(): Promise<Record<string, string> | undefined>;
  /**
   * GETs (unauthenticated, RFC 9773 §4.1) the CA's suggested renewal window for a
   * certificate, given as PEM or as its ARI identifier. `retryAfterMs` is the CA's
   * Retry-After clamped to [ARI_MIN_RETRY_MS, ARI_MAX_RETRY_MS] and jittered; absent or
   * unreadable → ARI_ERROR_RETRY_MS. Rejects with:
   * - ACME_PROBLEM, not retryable, `details.reason = 'renewalInfoUnsupported'` when the
   *   directory has no renewalInfo (check {@link renewalInfoUrl} first);
   * - BUNDLE_INVALID when the PEM has no AKI, USAGE_INVALID for a malformed identifier;
   * - ACME_PROBLEM, retryable, `details.reason = 'invalidRenewalInfo'` for a bad object;
   * - otherwise the adapter's usual errors. Long-term ones (RFC 9773 §4.3.3: non-5xx
   *   HTTP errors, refused connections, unknown hosts) are marked retryable with
   *   `retryAfterMs` ≈ six hours; temporary ones (5xx, timeouts) carry the CA's
   *   Retry-After if any and are left to the caller's backoff.
   */
  getRenewalInfo(certPemOrId: string): Promise<RenewalInfo>;
  /**
   * Reads an order and its authorizations again, e.g. one persisted before a crash. An
   * unknown or expired order URL rejects with ACME_PROBLEM (the CA's 404 problem).
   */
  getOrder(url: string): Promise<AcmeOrder>;
  /** The HTTP-01 key authorization (`token.thumbprint`) to serve for `token`. */
  keyAuthorization(token: string): Promise<string>;
  /** Tells the CA the challenge is ready to be validated (RFC 8555 §7.5.1). */
  acceptChallenge(challengeUrl: string): Promise<void>;
  /**
   * Polls the authorization until it is valid, the first time after the first poll delay
   * (it is called right after the challenge is accepted). Rejects with ACME_PROBLEM carrying the
   * failed challenge's problem when invalid, ACME_ORDER_INVALID when deactivated, expired
   * or revoked, ACME_TIMEOUT at the poll deadline or when `signal` aborts.
   */
  waitForAuthorization(authzUrl: string, signal?: AbortSignal): Promise<void>;
  /**
   * Polls the order (first after the first poll delay) until it leaves `pending`, i.e.
   * until every authorization is valid (RFC 8555 §7.1.6), and returns it with its fresh
   * status (`ready` as a rule). One request per look instead of one per authorization
   * and then one for the order (issue #13). When the order turns invalid, its
   * authorizations are read to find the failed one: the rejection is then the same
   * ACME_PROBLEM (the challenge's problem, identifier, challengeType) or
   * ACME_ORDER_INVALID that {@link waitForAuthorization} gives; ACME_TIMEOUT as there.
   */
  waitForOrder(order: AcmeOrder, signal?: AbortSignal): Promise<AcmeOrder>;
  /**
   * Finalizes the order with `csrPem` and polls until it is valid; returns the order with
   * `certificateUrl`. Resumable: an order already processing or valid is only polled (the
   * CSR is not sent again, so the caller must keep the key it made the CSR with). Waits
   * for a pending order to become ready first. ACME_ORDER_INVALID if the order is invalid.
   * An order passed with status `ready` (as {@link waitForOrder} returns it) is finalized
   * without reading it again; any other is read first.
   */
  finalize(order: AcmeOrder, csrPem: string, signal?: AbortSignal): Promise<AcmeOrder>;
  /** Downloads the certificate of a valid order; ACME_ORDER_INVALID if it has none. */
  downloadCertificate(order: AcmeOrder): Promise<AcmeCertificate>;
  /**
   * Revokes `certPem` (the leaf, PEM) at the CA, signed with this account's key (RFC 8555
   * §7.6: the account that ordered it may revoke it), with an RFC 5280 CRLReason `reason`
   * (shared/wire REVOCATION_REASONS). Resolves `{ alreadyRevoked: true }` when the CA
   * answers alreadyRevoked: the certificate is revoked either way, so a repeated call is
   * not a failure. Any other refusal rejects with ACME_PROBLEM carrying the CA's problem
   * type (badRevocationReason, unauthorized, ...); no retry here.
   */
  revokeCertificate(certPem: string, reason: number): Promise<{ alreadyRevoked: boolean }>;
  /** Releases pooled connections. The client must not be used afterwards. */
  close(): void;
}

export interface AcmeClientOptions {
  directoryUrl: string;
  /** PEM CA(s) to trust, only, for the directory's HTTPS (Pebble). Default: Node's trust store. */
  caPem?: string;
  /** The account key, PEM (PKCS#8 or SEC1/PKCS#1). Never logged. */
  accountKeyPem: string;
  /** The account URL when already known; saves one request and pins the account. */
  accountUrl?: string;
  /** Contact for the account (mailto:). */
  email?: string;
  /**
   * External account binding for CAs that require one (ZeroSSL, Google Trust Services):
   * the key id and the base64url HMAC key the CA gave out. Sent with newAccount only.
   * The HMAC key is a secret: never logged.
   */
  externalAccountBinding?: { kid: string; hmacKey: string };
  /**
   * Called with the new account URL whenever the account was registered again (the CA
   * forgot it: a test CA restarted, a staging reset), at start or while running, so the
   * caller can persist it. Awaited; a rejection fails the call that re-registered.
   */
  onAccountChanged?: (accountUrl: string) => Promise<void> | void;
  log: Logger;
  /** Reads HTTP-date Retry-After values and poll deadlines. Default: system clock. */
  clock?: Clock;
  /** Per HTTP request. Default 30 000 ms. */
  requestTimeoutMs?: number;
  /** Longest a wait for an authorization or an order may poll. Default 120 000 ms. */
  pollTimeoutMs?: number;
  /** First poll delay, doubled each round up to `pollMaxDelayMs`. Default 100 ms. */
  pollMinDelayMs?: number;
  /** Default 2 000 ms. A Retry-After from the CA takes precedence. */
  pollMaxDelayMs?: number;
  /** Uniform [0, 1) source for the ARI poll jitter. Default Math.random. */
  random?: () => number;
}

/**
 * Makes a client. No network traffic until the first call. Rejects (synchronously
 * throws) CONFIG_INVALID when the account key cannot be read as a private key.
 */
export function createAcmeClient(opts: AcmeClientOptions): AcmeClient {
  return new AcmeClientImpl(opts);
}

interface ApiInternals {
  apiRequest(url: string, payload: unknown, validStatusCodes: number[]): Promise<HttpResponseLike>;
  /** newAccount without kid; sets `accountUrl` from the Location header. */
  createAccount(data: Record<string, unknown>): Promise<HttpResponseLike>;
  accountUrl: string | null;
}

type RawObject = Record<string, unknown>;

/** The parts of acme-client's HttpClient ARI uses: its (hooked) request and cached directory. */
interface HttpInternals {
  request(url: string, method: string): Promise<HttpResponseLike>;
  getDirectory(): Promise<unknown>;
}

class AcmeClientImpl implements AcmeClient {
  readonly directoryUrl: string;
  private readonly client: acme.Client;
  private readonly api: ApiInternals;
  private readonly agent: https.Agent;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly email: string | undefined;
  private readonly pollTimeoutMs: number;
  private readonly pollMinDelayMs: number;
  private readonly pollMaxDelayMs: number;
  private readonly random: () => number;
  private readonly onAccountChanged: ((accountUrl: string) => Promise<void> | void) | undefined;
  /** The re-registration in progress, shared by every call that found the account gone. */
  private registering: Promise<void> | undefined;

  constructor(opts: AcmeClientOptions) {
    try {
      crypto.createPrivateKey(opts.accountKeyPem);
    } catch (err) {
      // The message of a key parse error does not contain the key; keep it as the cause.
      throw new CertfleetError(ErrorCode.ConfigInvalid, 'ACME account key is not a readable private key', { cause: err });
    }
    this.directoryUrl = opts.directoryUrl;
    this.clock = opts.clock ?? systemClock;
    this.log = componentLogger(opts.log, 'acme');
    this.email = opts.email;
    this.pollTimeoutMs = opts.pollTimeoutMs ?? 120_000;
    this.pollMinDelayMs = opts.pollMinDelayMs ?? 100;
    this.pollMaxDelayMs = opts.pollMaxDelayMs ?? 2_000;
    this.random = opts.random ?? Math.random;
    this.onAccountChanged = opts.onAccountChanged;
    installTransport(this.clock);
    this.client = new acme.Client({
      directoryUrl: opts.directoryUrl,
      accountKey: opts.accountKeyPem,
      ...(opts.accountUrl === undefined ? {} : { accountUrl: opts.accountUrl }),
      ...(opts.externalAccountBinding === undefined ? {} : { externalAccountBinding: opts.externalAccountBinding }),
      // Only used by acme-client's own waiting helpers, which we do not call on a hot path;
      // its defaults (5 s minimum) would make a Pebble issuance take tens of seconds.
      backoffAttempts: 30,
      backoffMin: this.pollMinDelayMs,
      backoffMax: this.pollMaxDelayMs,
    });
    this.agent = hookHttpClient(this.client, {
      timeoutMs: opts.requestTimeoutMs ?? 30_000,
      directoryUrl: opts.directoryUrl,
      clock: this.clock,
      ...(opts.caPem === undefined ? {} : { caPem: opts.caPem }),
    });
    const api = (this.client as unknown as { api?: Partial<ApiInternals> }).api;
    if (api === undefined || typeof api.apiRequest !== 'function' || typeof api.createAccount !== 'function') {
      throw new CertfleetError(ErrorCode.Internal, 'acme-client internals changed: no api.apiRequest/createAccount');
    }
    this.api = api as ApiInternals;
  }

  async ensureAccount(): Promise<{ accountUrl: string }> {
    const known = this.api.accountUrl;
    let account: RawObject;
    if (known) {
      try {
        account = await this.readAccount(known);
      } catch (err) {
        if (!isAccountGone(err)) throw err;
        this.log.warn({ accountUrl: known }, 'acme account unknown to the CA; registering again');
        account = await this.register();
      }
    } else {
      account = await this.register();
    }
    await this.updateContact(account);
    const accountUrl = this.api.accountUrl ?? '';
    if (known && accountUrl !== known) await this.onAccountChanged?.(accountUrl);
    this.log.info({ accountUrl }, 'account ready');
    return { accountUrl };
  }

  /** POST-as-GET of the account object (RFC 8555 §7.3.3 via §6.3). */
  private async readAccount(url: string): Promise<RawObject> {
    const resp = await this.call('account', () => this.api.apiRequest(url, null, [200]), false);
    return typeof resp.data === 'object' && resp.data !== null ? (resp.data as RawObject) : {};
  }

  /** newAccount for this key: 201 a new account, 200 the existing one. Sets the URL. */
  private async register(): Promise<RawObject> {
    this.api.accountUrl = null;
    const resp = await this.call(
      'account',
      () => this.api.createAccount({ termsOfServiceAgreed: true, ...(this.email === undefined ? {} : { contact: [`mailto:${this.email}`] }) }),
      false,
    ).catch((err: unknown) => {
      throw explainRegistration(err);
    });
    if (!this.api.accountUrl) throw new CertfleetError(ErrorCode.AcmeProblem, 'account: the CA answered newAccount without a Location header', { details: { op: 'account' } });
    return typeof resp.data === 'object' && resp.data !== null ? (resp.data as RawObject) : {};
  }

  /** Sets the configured email as the contact when the account lacks it; nothing else. */
  private async updateContact(account: RawObject): Promise<void> {
    if (this.email === undefined) return;
    const contact = `mailto:${this.email}`;
    const current = Array.isArray(account['contact']) ? account['contact'] : [];
    if (current.includes(contact)) return;
    const url = this.api.accountUrl ?? '';
    await this.call('account update', () => this.api.apiRequest(url, { contact: [contact] }, [200, 202]), false);
    this.log.info({ accountUrl: url }, 'account contact updated');
  }

  /**
   * Registers the key again after the CA said it does not know the account (while
   * running), once for every call that found it gone at the same time.
   */
  private async reRegister(): Promise<void> {
    this.registering ??= (async () => {
      const gone = this.api.accountUrl;
      this.log.warn({ accountUrl: gone }, 'acme account unknown to the CA; registering again');
      try {
        await this.register();
        await this.updateContact({});
        const accountUrl = this.api.accountUrl ?? '';
        this.log.info({ accountUrl }, 'acme account registered again');
        await this.onAccountChanged?.(accountUrl);
      } finally {
        this.registering = undefined;
      }
    })();
    return this.registering;
  }

  async placeOrder(names: readonly string[], opts: PlaceOrderOptions = {}): Promise<AcmeOrder> {
    if (names.length === 0) throw new CertfleetError(ErrorCode.Internal, 'placeOrder needs at least one name');
    const replaces = opts.replaces;
    if (replaces !== undefined && !isAriCertId(replaces)) {
      throw new CertfleetError(ErrorCode.UsageInvalid, `replaces is not an ARI certificate identifier: ${replaces}`);
    }
    const identifiers = names.map((value) => ({ type: net.isIP(value) === 0 ? 'dns' : 'ip', value }));
    // acme-client's createOrder signs `data` as the payload unchanged (api.createOrder →
    // signed newOrder POST), so `replaces` reaches the CA as RFC 9773 §5 writes it; only
    // its OrderCreateRequest type lacks the field (a non-literal object passes the check).
    // `profile` travels the same way (draft-ietf-acme-profiles §4).
    const profile = opts.profile;
    const payload = { identifiers, ...(replaces === undefined ? {} : { replaces }), ...(profile === undefined ? {} : { profile }) };
    const created = await this.call('new order', () => this.client.createOrder(payload)).catch((err: unknown) => {
      throw explainProfile(err, profile);
    });
    const order = await this.withAuthorizations(created as unknown as RawObject, created.url);
    // Debug, as every ACME step: the issuance's outcome line names the order (issue #13).
    this.log.debug(
      { [LogKey.order]: order.url, [LogKey.identifier]: names, ...(replaces === undefined ? {} : { replaces }), ...(profile === undefined ? {} : { [LogKey.profile]: profile }) },
      'order placed',
    );
    return order;
  }

  async renewalInfoUrl(): Promise<string | undefined> {
    const dir = await this.call('read directory', () => this.directory());
    const url = dir['renewalInfo'];
    return typeof url === 'string' && url !== '' ? url : undefined;
  }

  async profiles(): Promise<Record<string, string> | undefined> {
    const dir = await this.call('read directory', () => this.directory());
    const meta = dir['meta'];
    const raw = typeof meta === 'object' && meta !== null ? (meta as RawObject)['profiles'] : undefined;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
    const out: Record<string, string> = {};
    for (const [name, description] of Object.entries(raw as RawObject)) if (typeof description === 'string') out[name] = description;
    return Object.keys(out).length === 0 ? undefined : out;
  }

  async getRenewalInfo(certPemOrId: string): Promise<RenewalInfo> {
    const certId = certPemOrId.includes('-----BEGIN') ? ariCertId(certPemOrId) : certPemOrId.trim();
    if (!isAriCertId(certId)) throw new CertfleetError(ErrorCode.UsageInvalid, `not an ARI certificate identifier: ${certId}`);
    const base = await this.renewalInfoUrl();
    if (base === undefined) {
      throw new CertfleetError(ErrorCode.AcmeProblem, `the CA at ${this.directoryUrl} offers no renewalInfo (ARI)`, {
        details: { reason: 'renewalInfoUnsupported', url: this.directoryUrl },
      });
    }
    const url = `${base.replace(/\/+$/, '')}/${certId}`;
    const errorRetryMs = (): number => jitter(ARI_ERROR_RETRY_MS, this.random);
    let resp: HttpResponseLike;
    try {
      resp = await this.call('renewal info', () => this.http().request(url, 'get'));
    } catch (err) {
      throw ariFailure(err, errorRetryMs());
    }
    const retryAfterMs = ariRetryAfterMs(resp.headers['retry-after'], this.clock.now(), this.random);
    const info = parseRenewalInfo(resp.data, retryAfterMs, errorRetryMs(), url);
    this.log.debug({ url, start: info.window.start, end: info.window.end, retryAfterMs }, 'renewal info');
    return info;
  }

  async getOrder(url: string): Promise<AcmeOrder> {
    const raw = await this.fetch('get order', url);
    return this.withAuthorizations(raw.data, url);
  }

  async keyAuthorization(token: string): Promise<string> {
    return this.call('key authorization', () =>
      this.client.getChallengeKeyAuthorization({ type: 'http-01', token, url: '', status: 'pending' }),
    );
  }

  async acceptChallenge(challengeUrl: string): Promise<void> {
    await this.call('accept challenge', () =>
      this.client.completeChallenge({ type: 'http-01', url: challengeUrl, token: '', status: 'pending' }),
    );
    this.log.debug({ challengeUrl }, 'challenge accepted');
  }

  async waitForAuthorization(authzUrl: string, signal?: AbortSignal): Promise<void> {
    // First look after the first poll delay, not at once: right after the challenge is
    // accepted the CA has nearly always not validated yet, and that answer ('pending')
    // costs a signed request per authorization for nothing (issue #13).
    const data = await this.poll('authorization', authzUrl, (d) => d['status'] !== 'pending', signal, true);
    const authz = mapAuthorization(data, authzUrl);
    if (authz.status === 'valid') {
      this.log.debug({ authzUrl, [LogKey.identifier]: authz.identifier.value }, 'authorization valid');
      return;
    }
    throw authorizationFailure(authz);
  }

  async waitForOrder(order: AcmeOrder, signal?: AbortSignal): Promise<AcmeOrder> {
    // As for an authorization: the first look after the first poll delay.
    const data = await this.poll('order', order.url, (d) => d['status'] !== 'pending', signal, true);
    const fields = mapOrderFields(data, order.url);
    if (fields.status !== 'invalid') return { ...fields, authorizations: order.authorizations };
    // The order does not say why; the failed authorization does (read only now, on failure).
    const fresh = await this.withAuthorizations(data, order.url);
    const failed = fresh.authorizations.find((a) => a.status !== 'valid' && a.status !== 'pending');
    if (failed !== undefined) throw authorizationFailure(failed);
    throw orderInvalid(fields);
  }

  async finalize(order: AcmeOrder, csrPem: string, signal?: AbortSignal): Promise<AcmeOrder> {
    // A `ready` order comes straight from waitForOrder: reading it again would say the same.
    let data = order.status === 'ready' ? orderData(order) : (await this.fetch('get order', order.url)).data;
    if (data['status'] === 'pending') {
      // Authorizations just turned valid; the order follows on the CA's next look.
      data = await this.poll('order', order.url, (d) => d['status'] !== 'pending', signal);
    }
    if (data['status'] === 'ready') {
      const finalizeUrl = typeof data['finalize'] === 'string' ? data['finalize'] : order.finalizeUrl;
      data = (await this.call('finalize', () =>
        this.client.finalizeOrder({ ...(data as unknown as acme.Order), url: order.url, finalize: finalizeUrl }, csrPem),
      )) as unknown as RawObject;
      this.log.debug({ [LogKey.order]: order.url }, 'order finalized');
    }
    if (data['status'] === 'processing') {
      // The CA has just said processing: a look at once nearly always finds it still so
      // (a signed request for nothing), so the first look waits the first poll delay.
      data = await this.poll('order', order.url, (d) => d['status'] !== 'processing', signal, true);
    }
    const result: AcmeOrder = { ...mapOrderFields(data, order.url), authorizations: order.authorizations };
    if (result.status !== 'valid') {
      throw orderInvalid(result);
    }
    return result;
  }

  async downloadCertificate(order: AcmeOrder): Promise<AcmeCertificate> {
    let certificateUrl = order.certificateUrl;
    if (certificateUrl === undefined) {
      const fresh = mapOrderFields((await this.fetch('get order', order.url)).data, order.url);
      if (fresh.status !== 'valid' || fresh.certificateUrl === undefined) throw orderInvalid(fresh);
      certificateUrl = fresh.certificateUrl;
    }
    const url = certificateUrl;
    const pem = await this.call('download certificate', () =>
      this.client.getCertificate({ status: 'valid', certificate: url, url: order.url } as unknown as acme.Order),
    );
    const parts = acme.crypto.splitPemChain(pem).map((p) => `${p.trim()}\n`);
    const [leaf, ...rest] = parts;
    if (leaf === undefined) {
      throw new CertfleetError(ErrorCode.AcmeProblem, 'CA returned no certificate', { details: { url } });
    }
    this.log.debug({ [LogKey.order]: order.url }, 'certificate downloaded');
    return { certPem: leaf, chainPem: rest.join('') };
  }

  async revokeCertificate(certPem: string, reason: number): Promise<{ alreadyRevoked: boolean }> {
    try {
      await this.call('revoke certificate', () => this.client.revokeCertificate(certPem, { reason }));
    } catch (err) {
      if (err instanceof CertfleetError && err.details['type'] === PROBLEM_ALREADY_REVOKED) {
        this.log.info({ reason }, 'certificate already revoked');
        return { alreadyRevoked: true };
      }
      throw err;
    }
    this.log.info({ reason }, 'certificate revoked');
    return { alreadyRevoked: false };
  }

  close(): void {
    this.agent.destroy();
  }

  /** POST-as-GET on `url`, keeping headers (Retry-After) that acme-client's helpers drop. */
  private async fetch(what: string, url: string): Promise<{ data: RawObject; headers: Record<string, unknown> }> {
    const resp = await this.call(what, () => this.api.apiRequest(url, null, [200]));
    if (typeof resp.data !== 'object' || resp.data === null) {
      throw new CertfleetError(ErrorCode.AcmeProblem, `${what}: CA answered without a JSON object`, { details: { url } });
    }
    return { data: resp.data as RawObject, headers: resp.headers };
  }

  /** acme-client's directory (fetched once, cached for a day by acme-client). */
  private async directory(): Promise<RawObject> {
    const dir = await this.http().getDirectory();
    if (typeof dir !== 'object' || dir === null) throw new CertfleetError(ErrorCode.AcmeProblem, 'ACME directory is not a JSON object');
    return dir as RawObject;
  }

  private http(): HttpInternals {
    const http = (this.client as unknown as { http?: Partial<HttpInternals> }).http;
    if (http === undefined || typeof http.getDirectory !== 'function' || typeof http.request !== 'function') {
      throw new CertfleetError(ErrorCode.Internal, 'acme-client internals changed: no http.getDirectory/request');
    }
    return http as HttpInternals;
  }

  /**
   * Fetches `url` until `done(data)`; the delay starts at pollMinDelayMs and doubles to
   * pollMaxDelayMs, or is what the CA's Retry-After says. ACME_TIMEOUT at the deadline
   * or when `signal` aborts (an in-flight request finishes first, bounded by its timeout).
   */
  private async poll(what: string, url: string, done: (data: RawObject) => boolean, signal?: AbortSignal, waitFirst = false): Promise<RawObject> {
    const started = this.clock.now();
    let delay = this.pollMinDelayMs;
    if (waitFirst) {
      await this.pollSleep(what, url, Math.min(delay, this.pollTimeoutMs), signal);
      delay = Math.min(delay * 2, this.pollMaxDelayMs);
    }
    for (;;) {
      if (isAborted(signal)) throw aborted(what, url, signal);
      const { data, headers } = await this.fetch(`poll ${what}`, url);
      if (done(data)) return data;
      const elapsed = this.clock.now() - started;
      const remaining = this.pollTimeoutMs - elapsed;
      if (remaining <= 0) {
        throw new CertfleetError(ErrorCode.AcmeTimeout, `${what} still ${String(data['status'])} after ${elapsed} ms`, {
          retryable: true,
          details: { url, status: data['status'] },
        });
      }
      const hinted = parseRetryAfterMs(headers['retry-after'], this.clock.now());
      this.log.debug({ url, status: data['status'] }, `waiting for ${what}`);
      await this.pollSleep(what, url, Math.min(hinted ?? delay, remaining), signal);
      delay = Math.min(delay * 2, this.pollMaxDelayMs);
    }
  }

  private async pollSleep(what: string, url: string, ms: number, signal?: AbortSignal): Promise<void> {
    try {
      // The clock that measures the deadline also waits: under a ManualClock the poll
      // times out on clock time, not never.
      await this.clock.sleep(ms, signal);
    } catch (err) {
      if (isAborted(signal)) throw aborted(what, url, signal);
      throw err;
    }
  }

  private async withAuthorizations(data: RawObject, url: string): Promise<AcmeOrder> {
    const fields = mapOrderFields(data, url);
    const authzUrls = Array.isArray(data['authorizations']) ? data['authorizations'].filter((u): u is string => typeof u === 'string') : [];
    const authorizations = await Promise.all(
      authzUrls.map(async (authzUrl) => mapAuthorization((await this.fetch('get authorization', authzUrl)).data, authzUrl)),
    );
    return { ...fields, authorizations };
  }

  /**
   * Runs an acme-client call; anything it throws that is not ours becomes ACME_PROBLEM.
   * When the CA answers accountDoesNotExist for a request signed with our account URL
   * (it forgot the account while we ran), the key is registered again and the request
   * sent once more: re-authentication, like badNonce, not a retry of a failure — and
   * without it every renewal would fail until a restart (issue #8).
   */
  private async call<T>(what: string, fn: () => Promise<T>, reRegister = true): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (reRegister && isAccountGone(err) && this.api.accountUrl) {
        await this.reRegister();
        return this.call(what, fn, false);
      }
      if (err instanceof CertfleetError) throw err;
      // acme-client's own checks (missing Location, unexpected status) throw plain Errors.
      throw new CertfleetError(ErrorCode.AcmeProblem, `${what}: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
        details: { op: what },
      });
    }
  }
}

/**
 * An ARI fetch failure with RFC 9773 §4.3.3's timing: long-term errors (non-5xx HTTP,
 * refused connection, unknown host) become retryable with `retryAfterMs` = `longTermMs`
 * unless the CA said otherwise; temporary ones pass unchanged.
 */
function ariFailure(err: unknown, longTermMs: number): unknown {
  if (!(err instanceof CertfleetError) || err.retryAfterMs !== undefined) return err;
  const status = err.details['status'];
  const errno = err.details['errno'];
  const longTerm =
    (err.code === ErrorCode.AcmeProblem && typeof status === 'number' && status < 500) ||
    (err.code === ErrorCode.AcmeTransport && (errno === 'ECONNREFUSED' || errno === 'ENOTFOUND' || errno === 'EAI_AGAIN'));
  if (!longTerm) return err;
  return new CertfleetError(err.code, err.message, { retryable: true, retryAfterMs: longTermMs, cause: err, details: err.details });
}

function isAccountGone(err: unknown): boolean {
  return err instanceof CertfleetError && err.details['type'] === PROBLEM_ACCOUNT_DOES_NOT_EXIST;
}

function isAborted(signal: AbortSignal | undefined): signal is AbortSignal {
  return signal?.aborted === true;
}

function aborted(what: string, url: string, signal: AbortSignal): CertfleetError {
  return new CertfleetError(ErrorCode.AcmeTimeout, `waiting for ${what} aborted`, {
    retryable: true,
    cause: signal.reason,
    details: { url, reason: 'aborted' },
  });
}

/**
 * Why an authorization that is not valid (nor pending) fails the order: ACME_PROBLEM with
 * the failed challenge's problem when invalid, ACME_ORDER_INVALID when deactivated,
 * expired or revoked.
 */
function authorizationFailure(authz: AcmeAuthorization): CertfleetError {
  if (authz.status === 'invalid') {
    const failed = authz.challenges.find((c) => c.error !== undefined);
    const problem = failed?.error;
    return new CertfleetError(
      ErrorCode.AcmeProblem,
      `authorization for ${authz.identifier.value} failed: ${problem?.detail ?? problem?.type ?? 'no reason given'}`,
      {
        retryable: false,
        details: { ...problemDetails(problem, undefined, authz.url), identifier: authz.identifier.value, challengeType: failed?.type },
      },
    );
  }
  return new CertfleetError(ErrorCode.AcmeOrderInvalid, `authorization for ${authz.identifier.value} is ${authz.status}`, {
    details: { url: authz.url, status: authz.status },
  });
}

/** An order as the CA's JSON fields the finalize step reads (`status`, `finalize`). */
function orderData(order: AcmeOrder): RawObject {
  return {
    status: order.status,
    finalize: order.finalizeUrl,
    identifiers: order.identifiers,
    ...(order.expires === undefined ? {} : { expires: order.expires }),
    ...(order.replaces === undefined ? {} : { replaces: order.replaces }),
    ...(order.profile === undefined ? {} : { profile: order.profile }),
  };
}

function orderInvalid(order: Omit<AcmeOrder, 'authorizations'>): CertfleetError {
  const why = order.error?.detail ?? order.error?.type;
  return new CertfleetError(
    ErrorCode.AcmeOrderInvalid,
    order.status === 'invalid' ? `order is invalid${why === undefined ? '' : `: ${why}`}` : `order is ${order.status}, not valid`,
    { details: { ...problemDetails(order.error, undefined, order.url), orderStatus: order.status } },
  );
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function mapIdentifier(v: unknown): AcmeIdentifier {
  const o = (typeof v === 'object' && v !== null ? v : {}) as RawObject;
  return { type: str(o['type']) ?? 'dns', value: str(o['value']) ?? '' };
}

function mapOrderFields(data: RawObject, url: string): Omit<AcmeOrder, 'authorizations'> {
  const order: Omit<AcmeOrder, 'authorizations'> = {
    url,
    status: (str(data['status']) ?? 'invalid') as AcmeOrderStatus,
    identifiers: Array.isArray(data['identifiers']) ? data['identifiers'].map(mapIdentifier) : [],
    finalizeUrl: str(data['finalize']) ?? '',
  };
  const expires = str(data['expires']);
  if (expires !== undefined) order.expires = expires;
  const certificateUrl = str(data['certificate']);
  if (certificateUrl !== undefined) order.certificateUrl = certificateUrl;
  const error = asProblem(data['error']);
  if (error !== undefined) order.error = error;
  const replaces = str(data['replaces']);
  if (replaces !== undefined) order.replaces = replaces;
  const profile = str(data['profile']);
  if (profile !== undefined) order.profile = profile;
  return order;
}

function mapAuthorization(data: RawObject, url: string): AcmeAuthorization {
  const authz: AcmeAuthorization = {
    url,
    identifier: mapIdentifier(data['identifier']),
    status: (str(data['status']) ?? 'invalid') as AcmeAuthorizationStatus,
    wildcard: data['wildcard'] === true,
    challenges: Array.isArray(data['challenges'])
      ? data['challenges'].map((c: unknown) => {
          const o = (typeof c === 'object' && c !== null ? c : {}) as RawObject;
          const challenge: AcmeChallenge = {
            type: str(o['type']) ?? '',
            url: str(o['url']) ?? '',
            token: str(o['token']) ?? '',
            status: str(o['status']) ?? '',
          };
          const error = asProblem(o['error']);
          if (error !== undefined) challenge.error = error;
          return challenge;
        })
      : [],
  };
  const expires = str(data['expires']);
  if (expires !== undefined) authz.expires = expires;
  return authz;
}

/**
 * A newOrder the CA refused for its profile (`invalidProfile`: not offered, or not to this
 * account) gets a message that names the profile and the setting; code and details stay.
 */
function explainProfile(err: unknown, profile: string | undefined): unknown {
  if (profile === undefined || !(err instanceof CertfleetError) || err.details['type'] !== PROBLEM_INVALID_PROFILE) return err;
  return new CertfleetError(ErrorCode.AcmeProblem, `the CA refused certificate profile "${profile}": check the certificate's profile against the CA's directory (${err.message})`, {
    cause: err,
    retryable: false,
    details: { ...err.details, profile },
  });
}

/**
 * A registration refused for want of (or with a wrong) external account binding gets a
 * message that says what to configure; the code and details stay the CA's.
 */
function explainRegistration(err: unknown): unknown {
  if (!(err instanceof CertfleetError) || err.code !== ErrorCode.AcmeProblem) return err;
  const type = err.details['type'];
  if (type === `${ACME_ERROR_PREFIX}externalAccountRequired`) {
    return new CertfleetError(
      ErrorCode.AcmeProblem,
      `the CA requires external account binding: set acme.eab.keyId and acme.eab.hmacKeyFile (or hmacKeyEnv) to the credentials your CA gave you (${err.message})`,
      { cause: err, retryable: false, details: err.details },
    );
  }
  if (type === `${ACME_ERROR_PREFIX}unauthorized` || type === `${ACME_ERROR_PREFIX}malformed`) {
    if (/external account|eab|binding/i.test(err.message)) {
      return new CertfleetError(ErrorCode.AcmeProblem, `the CA refused the external account binding: check acme.eab.keyId and the HMAC key (${err.message})`, {
        cause: err,
        retryable: false,
        details: err.details,
      });
    }
  }
  return err;
}

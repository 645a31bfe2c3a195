/**
 * The controller's ACME account: one per CA directory, its key kept in the CertStore
 * and reused across restarts, so every controller sharing the store is the same account
 * (and spends the same rate-limit budgets).
 *
 * Stored under `acme/account/<id>` ({@link accountId}): `{ directoryUrl, keyPem,
 * accountUrl }`. A new key is written before the CA hears of it, so a crash between
 * registration and saving the URL registers the same key again, which RFC 8555 §7.3.1
 * answers with the same account. The protocol half lives in the client (client.ts
 * ensureAccount): look the account up by its URL (POST-as-GET), register when there is
 * none, and register the same key again when the CA answers accountDoesNotExist (a test
 * CA restarted, a staging reset), at start or while running; every new URL it reports is
 * written back here.
 */
import crypto from 'node:crypto';
import type { Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { componentLogger, type Logger } from '../../shared/log/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';
import { createAcmeClient, type AcmeClient, type AcmeClientOptions } from './client.js';
import { generateAccountKey } from './keys.js';

/** The account document in the store. */
export interface AccountDoc {
  directoryUrl: string;
  /** PKCS#8 PEM. Secret. */
  keyPem: string;
  /** Empty until the CA has registered the key. */
  accountUrl: string;
}

/**
 * The account's id for a CA: the first 16 hex digits of SHA-256 of the directory URL.
 * Names the stored account and the budget state (a key reused against another CA is
 * another account with its own limits). Part of the stored layout: never change it.
 */
export function accountId(directoryUrl: string): string {
  return crypto.createHash('sha256').update(directoryUrl).digest('hex').slice(0, 16);
}

export interface OpenAccountOptions {
  directoryUrl: string;
  /** PEM CA(s) trusted for the directory's HTTPS (Pebble); default Node's trust store. */
  caPem?: string | undefined;
  /** Contact (mailto:) for the account. */
  email?: string | undefined;
  /** External account binding (config acme.eab), for CAs that require it. Secret HMAC key. */
  externalAccountBinding?: { kid: string; hmacKey: string } | undefined;
  store: Pick<CertStore, 'getObject' | 'putObject'>;
  clock: Clock;
  /** The controller's logger; the client binds its own component. */
  log: Logger;
  /** Longest wait for an authorization or order (config http01.validationTimeout). */
  pollTimeoutMs?: number | undefined;
  /** Builds the client; default {@link createAcmeClient} (tests give their own). */
  createClient?: (opts: AcmeClientOptions) => AcmeClient;
}

/** Reads the stored account document; null when absent, STORE_CORRUPT when malformed. */
async function readAccount(store: OpenAccountOptions['store'], key: string): Promise<AccountDoc | null> {
  const raw = await store.getObject<unknown>(key);
  if (raw === null) return null;
  const doc = raw as Partial<AccountDoc>;
  if (typeof doc.keyPem !== 'string' || doc.keyPem === '' || (doc.accountUrl !== undefined && typeof doc.accountUrl !== 'string')) {
    throw new CertfleetError(ErrorCode.StoreCorrupt, `store object ${key} is not an ACME account document`, { details: { key } });
  }
  return { directoryUrl: typeof doc.directoryUrl === 'string' ? doc.directoryUrl : '', keyPem: doc.keyPem, accountUrl: doc.accountUrl ?? '' };
}

/**
 * Opens the account for `directoryUrl` (module comment): creates and stores a key the
 * first time, reuses the stored one after, and resolves once the CA has the account.
 * Rejects with what the client rejects with (ACME_TRANSPORT, ACME_PROBLEM, ...) or a
 * store error; the client is closed on failure.
 */
export async function openAcmeAccount(opts: OpenAccountOptions): Promise<AcmeClient> {
  const key = ObjectKey.acmeAccount(accountId(opts.directoryUrl));
  const saved = await readAccount(opts.store, key);
  const keyPem = saved?.keyPem ?? (await generateAccountKey());
  if (!saved) await opts.store.putObject(key, { directoryUrl: opts.directoryUrl, keyPem, accountUrl: '' } satisfies AccountDoc);
  const log = componentLogger(opts.log, 'acme');
  const remember = async (accountUrl: string): Promise<void> => {
    await opts.store.putObject(key, { directoryUrl: opts.directoryUrl, keyPem, accountUrl } satisfies AccountDoc);
    log.info({ accountUrl }, 'acme account registered');
  };
  const client = (opts.createClient ?? createAcmeClient)({
    directoryUrl: opts.directoryUrl,
    accountKeyPem: keyPem,
    ...(opts.caPem === undefined ? {} : { caPem: opts.caPem }),
    ...(saved?.accountUrl ? { accountUrl: saved.accountUrl } : {}),
    ...(opts.email === undefined ? {} : { email: opts.email }),
    ...(opts.externalAccountBinding === undefined ? {} : { externalAccountBinding: opts.externalAccountBinding }),
    clock: opts.clock,
    log: opts.log,
    ...(opts.pollTimeoutMs === undefined ? {} : { pollTimeoutMs: opts.pollTimeoutMs }),
    onAccountChanged: remember,
  });
  try {
    const { accountUrl } = await client.ensureAccount();
    // A first registration (no URL saved yet) is not a change the client reports.
    if (!saved?.accountUrl) await remember(accountUrl);
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

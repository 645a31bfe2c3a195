/**
 * The controller as NATS account authority: NATS's decentralised JWT/nkey model
 * ("operator mode"), with the controller holding every signing key. The only code that
 * imports @nats-io/jwt and @nats-io/nkeys.
 *
 * What it keeps, in the controller's store (object `nats/authority`, like the CA):
 *
 *   operator nkey ──signs──> operator JWT          (the server trusts it)
 *        └──────signs──> system account JWT        ($SYS: pushing account updates)
 *        └──────signs──> certfleet account JWT     (JetStream on, limits, revocations)
 *                               └─ account nkey ──signs──> user JWTs: the controller's own
 *                                                          (minted at each start, never
 *                                                          written anywhere) and one per agent
 *                                                          (minted at enrolment, handed over
 *                                                          the mutual-TLS gRPC channel)
 *
 * Seeds never leave the store; the server configuration written for nats-server holds
 * only JWTs and public keys ({@link NatsAuthority.serverConfig}). nats-server 2.9 has no
 * auth callout, so the server learns the account from that configuration
 * (`resolver: MEMORY` with `resolver_preload`) and later changes (revocations) from a
 * signed account JWT sent to `$SYS.REQ.ACCOUNT.<id>.CLAIMS.UPDATE` by a system-account
 * user: nats-server 2.9.10 applies it at once, closing the revoked user's connection and
 * refusing its reconnects (checked by test/integration/natsauth.test.ts). The file is
 * rewritten too, so a restarted server keeps the revocations.
 *
 * Agent rights ({@link agentPermissions}): read the desired and challenges buckets
 * (stream info, message get, an ordered push consumer per watch, flow-control replies),
 * subscribe only below its own inbox prefix; nothing else. Agents never write NATS:
 * their status goes to the controller over gRPC, which writes the agents bucket.
 *
 * Concurrency: one controller process. Revocations are read-modify-write on one store
 * object.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  createAccount,
  createOperator,
  createUser,
  decode,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
  fromSeed,
  type KeyPair,
  type OperatorLimits,
  type Permissions,
} from '@nats-io/jwt';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { writeFileAtomic } from '../../shared/files/index.js';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { componentLogger, LogKey, silentLogger, type Logger } from '../../shared/log/index.js';
import { agentInboxPrefix, AGENT_NAME_PATTERN, Bucket, kvStreamName } from '../../shared/wire/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';

/** The store abilities the authority needs (any CertStore has them). */
export type ObjectStore = Pick<CertStore, 'getObject' | 'putObject'>;

/** Names shown by nats-server and `nats` tooling. */
const OPERATOR_NAME = 'certfleet';
const ACCOUNT_NAME = 'certfleet';
const SYSTEM_ACCOUNT_NAME = 'SYS';
const SECOND = 1000;

/**
 * Limits of both accounts. Every field is spelled out: nats-server reads a missing limit
 * as 0 ("maximum account active connections exceeded"), not as unlimited.
 */
const NATS_LIMITS: OperatorLimits = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
/** JetStream on for the certfleet account; storage bounded by the server's own limits. */
const JETSTREAM_LIMITS: OperatorLimits = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

interface AuthorityDoc {
  operatorSeed: string;
  systemAccountSeed: string;
  accountSeed: string;
  operatorJwt: string;
  systemAccountJwt: string;
  /** The certfleet account JWT as last signed (with the revocations below). */
  accountJwt: string;
  /** User public key → revocation. */
  revocations: Record<string, Revocation>;
  createdAt: string;
}

interface Revocation {
  agent: string;
  /** Unix seconds: JWTs of this user issued at or before it are refused. */
  at: number;
  /** Unix seconds when the revoked JWT expires anyway (then the entry can go). */
  expiresAt?: number;
}

/** The NATS user an agent holds now, as stored under `nats/users/<agent>`. */
export interface AgentNatsUser {
  agent: string;
  publicKey: string;
  issuedAt: string;
  /** RFC 3339; the JWT's expiry (the agent certificate's notAfter). */
  expiresAt?: string;
  /** The JWT's `iat` (Unix seconds, the signing library's clock): a revocation must not be older. */
  jwtIssuedAt?: number;
}

/** A minted user: the `.creds` text (JWT + seed; secret), its public key and JWT `iat`. */
export interface MintedCredentials {
  creds: string;
  publicKey: string;
  issuedAtSec: number;
}

/**
 * What an agent's NATS user may do: read the desired and challenges buckets, nothing
 * else. Subjects as nats.js 3.x (with nats-server 2.9) uses them for a KV open, get and
 * watch: `$JS.API.INFO` (JetStream check at connect), stream info, message get (direct
 * and classic), consumer create (both the 2.9 named form `CREATE.<stream>.<name>.<filter>`
 * and the older bare form), consumer info and delete, and replies to flow-control
 * requests (`$JS.FC.<stream>.…`). Subscriptions only below the agent's inbox prefix.
 */
export function agentPermissions(agent: string): Permissions {
  checkAgent(agent);
  const readBucket = (bucket: string): string[] => {
    const s = kvStreamName(bucket);
    return [
      `$JS.API.STREAM.INFO.${s}`,
      `$JS.API.STREAM.MSG.GET.${s}`,
      `$JS.API.DIRECT.GET.${s}`,
      `$JS.API.DIRECT.GET.${s}.>`,
      `$JS.API.CONSUMER.CREATE.${s}`,
      `$JS.API.CONSUMER.CREATE.${s}.>`,
      `$JS.API.CONSUMER.INFO.${s}.*`,
      `$JS.API.CONSUMER.DELETE.${s}.*`,
      `$JS.FC.${s}.>`,
    ];
  };
  return {
    pub: { allow: ['$JS.API.INFO', ...readBucket(Bucket.desired), ...readBucket(Bucket.challenges)], deny: [] },
    sub: { allow: [`${agentInboxPrefix(agent)}.>`], deny: [] },
  };
}

function checkAgent(agent: string): void {
  if (!AGENT_NAME_PATTERN.test(agent)) {
    throw new CertfleetError(ErrorCode.UsageInvalid, `invalid agent name ${JSON.stringify(agent)}`, { details: { agent } });
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const seedOf = (kp: KeyPair): string => dec.decode(kp.getSeed());
const keyFrom = (seed: string): KeyPair => fromSeed(enc.encode(seed));

/** The controller's NATS operator, accounts and users. */
export class NatsAuthority {
  private readonly log: Logger;

  private constructor(
    private readonly store: ObjectStore,
    private readonly clock: Clock,
    private doc: AuthorityDoc,
    log: Logger,
  ) {
    this.log = componentLogger(log, 'natsauth');
  }

  /**
   * Loads the authority from the store, or creates it (new operator, system account and
   * certfleet account keys) on first use. STORE_CORRUPT when the stored object is not an
   * authority document; store errors propagate.
   */
  static async open(store: ObjectStore, clock: Clock, log: Logger = silentLogger()): Promise<NatsAuthority> {
    const raw = await store.getObject<unknown>(ObjectKey.natsAuthority);
    if (raw !== null) return new NatsAuthority(store, clock, parseAuthorityDoc(raw), log);
    const operator = createOperator();
    const system = createAccount();
    const account = createAccount();
    const doc: AuthorityDoc = {
      operatorSeed: seedOf(operator),
      systemAccountSeed: seedOf(system),
      accountSeed: seedOf(account),
      operatorJwt: await encodeOperator(OPERATOR_NAME, operator, { system_account: system.getPublicKey() }),
      systemAccountJwt: await encodeAccount(SYSTEM_ACCOUNT_NAME, system, { limits: NATS_LIMITS }, { signer: operator }),
      accountJwt: '',
      revocations: {},
      createdAt: isoAt(clock.now()),
    };
    doc.accountJwt = await signAccount(doc);
    await store.putObject(ObjectKey.natsAuthority, doc);
    componentLogger(log, 'natsauth').info({ account: account.getPublicKey() }, 'nats authority created');
    return new NatsAuthority(store, clock, doc, log);
  }

  /** Public key of the certfleet account (the `<id>` in `$SYS.REQ.ACCOUNT.<id>.…`). */
  get accountId(): string {
    return keyFrom(this.doc.accountSeed).getPublicKey();
  }

  /** The certfleet account JWT as last signed (with every revocation). */
  get accountJwt(): string {
    return this.doc.accountJwt;
  }

  /**
   * The nats-server configuration fragment (include it from nats-server.conf): operator,
   * system account and a memory resolver preloaded with both accounts. JWTs and public
   * keys only; nothing in it is secret. JetStream itself is enabled in the server's own
   * configuration (`jetstream { store_dir: … }` or `-js`).
   */
  serverConfig(): string {
    const system = keyFrom(this.doc.systemAccountSeed).getPublicKey();
    return [
      '# certfleet: NATS authorization in operator mode, written by the certfleet controller.',
      '# Include it from nats-server.conf (include /path/to/auth.conf). The controller rewrites',
      '# it when an agent is revoked; it holds JWTs and public keys only, no secret.',
      `operator: ${this.doc.operatorJwt}`,
      `system_account: ${system}`,
      'resolver: MEMORY',
      'resolver_preload: {',
      `  ${system}: ${this.doc.systemAccountJwt}`,
      `  ${this.accountId}: ${this.doc.accountJwt}`,
      '}',
      '',
    ].join('\n');
  }

  /**
   * A user with every right in the certfleet account, for the controller itself. The
   * account holds nothing but certfleet, so "every right" is exactly the certfleet
   * buckets, streams and the JetStream API. No expiry: it lives in the controller's
   * memory only and a new one is minted at each start.
   */
  async controllerCredentials(name = 'certfleet-controller'): Promise<MintedCredentials> {
    return mint(name, keyFrom(this.doc.accountSeed), {});
  }

  /**
   * A system-account user that may only send claim updates for the certfleet account
   * (and read its replies): how revocations reach running servers.
   */
  async systemCredentials(): Promise<MintedCredentials> {
    return mint('certfleet-controller-system', keyFrom(this.doc.systemAccountSeed), {
      pub: { allow: [`$SYS.REQ.ACCOUNT.${this.accountId}.CLAIMS.UPDATE`], deny: [] },
      sub: { allow: ['_INBOX.>'], deny: [] },
    });
  }

  /**
   * Mints agent `agent`'s NATS user ({@link agentPermissions}), expiring at `expiresAt`
   * (ms; the agent certificate's notAfter) when given. The previous user of that agent,
   * if any, is revoked: credentials rotate with the identity. Returns the creds and
   * whether the account JWT changed (then push it: {@link accountJwt}).
   */
  async mintAgentCredentials(agent: string, expiresAt?: number): Promise<MintedCredentials & { accountChanged: boolean }> {
    checkAgent(agent);
    const now = this.clock.now();
    const minted = await mint(
      `agent ${agent}`,
      keyFrom(this.doc.accountSeed),
      agentPermissions(agent),
      expiresAt === undefined ? undefined : Math.floor(expiresAt / SECOND),
      Math.floor(now / SECOND),
    );
    const previous = await this.agentUser(agent);
    const user: AgentNatsUser = {
      agent,
      publicKey: minted.publicKey,
      issuedAt: isoAt(now),
      ...(expiresAt === undefined ? {} : { expiresAt: isoAt(expiresAt) }),
      jwtIssuedAt: minted.issuedAtSec,
    };
    await this.store.putObject(ObjectKey.natsUser(agent), user);
    const accountChanged = previous !== null && (await this.addRevocation(previous));
    this.log.info({ [LogKey.agent]: agent, user: minted.publicKey, expiresAt: user.expiresAt, revoked: previous?.publicKey }, 'agent nats user minted');
    return { ...minted, accountChanged };
  }

  /** The NATS user agent `agent` holds now, or null. */
  async agentUser(agent: string): Promise<AgentNatsUser | null> {
    checkAgent(agent);
    const raw = await this.store.getObject<unknown>(ObjectKey.natsUser(agent));
    if (raw === null) return null;
    if (typeof raw !== 'object' || typeof (raw as Record<string, unknown>)['publicKey'] !== 'string') {
      throw new CertfleetError(ErrorCode.StoreCorrupt, `store object ${ObjectKey.natsUser(agent)} is malformed`, { details: { key: ObjectKey.natsUser(agent) } });
    }
    return raw as AgentNatsUser;
  }

  /**
   * Revokes agent `agent`'s current NATS user in the account JWT (stored at once).
   * Returns true when the account JWT changed and must be pushed to the servers; false
   * when the agent has no user or it was already revoked.
   */
  async revokeAgent(agent: string): Promise<boolean> {
    const user = await this.agentUser(agent);
    return user === null ? false : this.addRevocation(user);
  }

  private async addRevocation(user: AgentNatsUser): Promise<boolean> {
    if (this.doc.revocations[user.publicKey] !== undefined) return false;
    // Revokes JWTs issued at or before `at`: never earlier than this user's own JWT, even
    // with an injected clock behind the signing library's.
    const nowSec = Math.max(Math.floor(this.clock.now() / SECOND), user.jwtIssuedAt ?? 0);
    const revocations: Record<string, Revocation> = {};
    // Entries whose JWT has expired are dropped: the server refuses those anyway.
    for (const [key, r] of Object.entries(this.doc.revocations)) {
      if (r.expiresAt === undefined || r.expiresAt > nowSec) revocations[key] = r;
    }
    const expiresAt = user.expiresAt === undefined ? undefined : Math.floor(Date.parse(user.expiresAt) / SECOND);
    revocations[user.publicKey] = { agent: user.agent, at: nowSec, ...(expiresAt === undefined ? {} : { expiresAt }) };
    const next: AuthorityDoc = { ...this.doc, revocations };
    next.accountJwt = await signAccount(next);
    await this.store.putObject(ObjectKey.natsAuthority, next);
    this.doc = next;
    this.log.info({ [LogKey.agent]: user.agent, user: user.publicKey }, 'agent nats user revoked');
    return true;
  }
}

async function signAccount(doc: AuthorityDoc): Promise<string> {
  const revocations: Record<string, number> = {};
  for (const [key, r] of Object.entries(doc.revocations)) revocations[key] = r.at;
  return encodeAccount(
    ACCOUNT_NAME,
    keyFrom(doc.accountSeed),
    { limits: { ...NATS_LIMITS, ...JETSTREAM_LIMITS }, ...(Object.keys(revocations).length > 0 ? { revocations } : {}) },
    { signer: keyFrom(doc.operatorSeed) },
  );
}

async function mint(name: string, issuer: KeyPair, permissions: Permissions, expSec?: number, nowSec?: number): Promise<MintedCredentials> {
  const user = createUser();
  // A revocation refuses JWTs issued at or before its time; a fresh key per user makes
  // "issued in the same second as a revocation" harmless.
  const jwt = await encodeUser(name, user, issuer, { ...permissions }, expSec === undefined ? {} : { exp: expSec, ...(nowSec === undefined ? {} : { nbf: nowSec - 60 }) });
  return { creds: dec.decode(fmtCreds(jwt, user)), publicKey: user.getPublicKey(), issuedAtSec: decode(jwt).iat };
}

function parseAuthorityDoc(raw: unknown): AuthorityDoc {
  const corrupt = (): CertfleetError =>
    new CertfleetError(ErrorCode.StoreCorrupt, `store object ${ObjectKey.natsAuthority} is not a NATS authority document`, { details: { key: ObjectKey.natsAuthority } });
  if (typeof raw !== 'object' || raw === null) throw corrupt();
  const o = raw as Record<string, unknown>;
  for (const k of ['operatorSeed', 'systemAccountSeed', 'accountSeed', 'operatorJwt', 'systemAccountJwt', 'accountJwt']) {
    if (typeof o[k] !== 'string' || o[k] === '') throw corrupt();
  }
  const revocations = o['revocations'] ?? {};
  if (typeof revocations !== 'object' || revocations === null) throw corrupt();
  return { ...(o as unknown as AuthorityDoc), revocations: { ...(revocations as Record<string, Revocation>) } };
}

export interface NatsAccessOptions {
  authority: NatsAuthority;
  /** Where the nats-server include is kept up to date (0644: JWTs and public keys only). */
  serverConfigFile: string;
  /**
   * Sends a new account JWT to the running servers (shared/nats pushAccountClaims over
   * a system-account connection). Rejects when no server took it.
   */
  push: (accountId: string, accountJwt: string) => Promise<unknown>;
  log?: Logger;
}

/**
 * The authority wired to the world: the server configuration file and the running
 * servers. What enrolment and agent removal call.
 */
export class NatsAccess {
  private readonly log: Logger;

  constructor(private readonly opts: NatsAccessOptions) {
    this.log = (opts.log ?? silentLogger()).child({ component: 'natsauth' });
  }

  /** Writes the server configuration file (atomically); a restarted server reads it. */
  async writeServerConfig(): Promise<void> {
    await writeServerConfigFile(this.opts.authority, this.opts.serverConfigFile);
  }

  /**
   * Sends the current account JWT to the running servers, so a server started from an
   * older configuration file learns every revocation. Rejects like `push`.
   */
  async pushAccount(): Promise<void> {
    await this.opts.push(this.opts.authority.accountId, this.opts.authority.accountJwt);
  }

  /**
   * Mints agent `agent`'s NATS credentials (the .creds text; secret) expiring at
   * `expiresAt` (ms), revoking the user it held before. A failure to push that
   * revocation is logged, not thrown: the new agent must not be refused for it, and the
   * next controller start pushes it again.
   */
  async credentialsForAgent(agent: string, expiresAt?: number): Promise<string> {
    const minted = await this.opts.authority.mintAgentCredentials(agent, expiresAt);
    if (minted.accountChanged) {
      await this.writeServerConfig();
      await this.pushAccount().catch((err: unknown) => {
        this.log.warn({ [LogKey.err]: err, [LogKey.agent]: agent }, 'revocation of the previous nats user not pushed; pushed again at next start');
      });
    }
    return minted.creds;
  }

  /**
   * Revokes agent `agent`'s NATS user: stored in the account JWT, written to the server
   * configuration file, and pushed to the running servers, which close the agent's
   * connection and refuse it from then on (at once, on nats-server 2.9 with the memory
   * resolver). Idempotent: a repeated call pushes again. Resolves false when the agent
   * never had a NATS user. Rejects (NATS_UNAVAILABLE, retryable) when no server took the
   * update: the revocation is stored and the file written, so a server restarted from it
   * refuses the user too, and the next controller start pushes it again.
   */
  async revokeAgentNatsUser(agent: string): Promise<boolean> {
    const user = await this.opts.authority.agentUser(agent);
    if (user === null) return false;
    await this.opts.authority.revokeAgent(agent);
    await this.writeServerConfig();
    await this.pushAccount();
    return true;
  }
}

/** Writes `authority`'s server configuration to `file` (0644, atomically, directory made). */
export async function writeServerConfigFile(authority: NatsAuthority, file: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  await writeFileAtomic(file, authority.serverConfig(), 0o644);
}

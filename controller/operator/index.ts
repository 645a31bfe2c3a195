/**
 * What operators can ask and do (the OperatorService behind `certfleet status | certs |
 * agents | show | history | renew | rollback | release | revoke | budgets | events | token |
 * operators`), over the controller's modules. Whoever calls has already been allowed
 * (controller/api with controller/access); mutations take the operator's name and record
 * it as the event's `actor`. controller/api authenticates and translates; this module
 * answers. Also the one place a certificate's summary is computed (the CLI and the
 * metrics both use it).
 */
import { deadline, isoAt, type Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode, toCertfleetError } from '../../shared/errors/index.js';
import type { pb } from '../../shared/grpc/index.js';
import { followEvents, readEvents, type NatsHandle } from '../../shared/nats/index.js';
import { desiredFor } from '../../shared/rollout/index.js';
import { EventType, REVOCATION_REASONS, isRevocationReason } from '../../shared/wire/index.js';
import type { AcmeClient } from '../acme/index.js';
import { versionToPb, type OperatorBackend } from '../api/index.js';
import type { BudgetKeeper } from '../budget/index.js';
import { issuerChain, issuersOf, type CertificateConfig, type ControllerConfig } from '../config/index.js';
import type { Enrollment } from '../enroll/index.js';
import type { AgentView, Fleet } from '../fleet/index.js';
import type { DesiredState, EventPublisher } from '../publish/index.js';
import type { DesiredRecord, FleetEvent } from '../../shared/model/index.js';
import type { CertRuntime, Reconciler } from '../reconcile/index.js';
import { Revocations, checkRollbackBundle, revokedRefusal, rollbackTarget, type Pins, type Revocation } from '../rollback/index.js';
import type { CertStore } from '../store/index.js';
import type { OperatorRecord, OperatorRegistry } from '../access/index.js';
import { signOperatorCsr, type CaMaterial } from '../pki/index.js';
import { renewOutcome, watchOf, type RenewVerdict } from './renew.js';
import { revocationPlan } from './revoke.js';
import { dryRun, type StagingCa } from './dryrun.js';
import { checkCertificate, type ChallengePaths } from './check.js';
import type { ControllerHealth, ControllerRecord, LeaseView } from '../lease/index.js';

export { budgetsIn, renewOutcome, watchOf, type RenewVerdict, type RenewWatch } from './renew.js';
export { revocationPlan, type RevocationInput, type RevocationPlan } from './revoke.js';
export { dryRun, lazyStaging, type Rehearser, type StagingCa } from './dryrun.js';
export { checkCertificate, type ChallengePaths } from './check.js';

export interface OperationsDeps {
  cfg: ControllerConfig;
  controllerVersion: string;
  store: CertStore;
  nats: NatsHandle;
  fleet: Fleet;
  desired: DesiredState;
  loop: Reconciler;
  pins: Pins;
  /** The CA account, for `revoke` (the account that ordered a certificate may revoke it). */
  acme: Pick<AcmeClient, 'revokeCertificate'>;
  /**
   * The account of a named issuer (config `issuers`), for revoking a version at the CA that
   * issued it; absent (one issuer): `acme`. A version without a recorded issuer is revoked
   * through `acme`.
   */
  accountOf?: (issuer: string) => Promise<Pick<AcmeClient, 'revokeCertificate'>>;
  enrollment: Enrollment;
  events: EventPublisher;
  budget: BudgetKeeper;
  /** With several issuers: each issuer's budgets, in declared order (`budgets` lists them all). */
  issuerBudgets?: ReadonlyArray<{ issuer: string; keeper: BudgetKeeper }>;
  clock: Clock;
  /** The controller CA, which signs new operators' certificates. */
  ca: CaMaterial;
  operators: OperatorRegistry;
  /**
   * Called by `removeAgent` after the registry refuses the agent and the fleet dropped it,
   * to withdraw whatever else the agent was given (its NATS user, once agents get their
   * own NATS credentials). Rejecting makes the removal report a failure the operator
   * retries; removal is idempotent and calls this again.
   */
  onAgentRemoved?: (agent: string) => Promise<void>;
  /** The staging CA `renew --dry-run` rehearses against (config `acme.staging`); absent: refused. */
  staging?: StagingCa | undefined;
  /** The controller's solvers, which `check` goes through; absent: every check fails saying so. */
  challenges?: ChallengePaths | undefined;
  /** How long `renew` waits for the work loop's answer; default {@link RENEW_ANSWER_MS}. */
  renewAnswerMs?: number;
  /**
   * Several controllers (issue #12): this controller's name, its view of the lease and the
   * controller registry, for `status`. Absent: status names no leader.
   */
  ha?: {
    self: string;
    lease: () => LeaseView;
    controllers: () => Promise<Array<ControllerRecord & { health: ControllerHealth }>>;
  };
}

/** How long `renew` watches the work loop for its answer before saying "queued". */
export const RENEW_ANSWER_MS = 4000;
/** How often it looks meanwhile. */
const RENEW_POLL_MS = 100;

export interface Operations {
  backend: OperatorBackend;
  /** One certificate as `certfleet certs` shows it; shared until what it shows changes (do not modify it). */
  certificateSummary(name: string): pb.CertificateSummary;
}

/** What {@link summarizeCertificate} looks at: everything the controller knows of one certificate. */
export interface SummaryInput {
  name: string;
  config: CertificateConfig | undefined;
  runtime: CertRuntime | undefined;
  desired: DesiredRecord | undefined;
  /** The agents the certificate's selector selects, with their latest reports. */
  selected: readonly AgentView[];
  /** Epoch ms: a budget deferral or a backoff shows only while it lies ahead. */
  now: number;
  nowIso(ms: number): string;
}

/**
 * One page of `items` (in their order): at most `size` of them (0: all) after the item
 * whose key is `token` ('' for the first page), and the token of the next page ('' when
 * this is the last). Pure. The token is the last key of the page, so a page never
 * repeats or skips an item of an unchanged list; USAGE_INVALID for a token that is no
 * item's key (the list changed, or a made-up token).
 */
export function pageOf<T>(
  items: readonly T[],
  size: number,
  token: string,
  key: (item: T) => string,
  /** Where the item of a key is (-1: none); default a scan. */
  indexOf: (key: string) => number = (k) => items.findIndex((i) => key(i) === k),
): { items: T[]; nextPageToken: string } {
  let start = 0;
  if (token !== '') {
    const at = indexOf(token);
    if (at < 0) throw new CertfleetError(ErrorCode.UsageInvalid, `page token ${JSON.stringify(token)} names no configured certificate (the configuration changed?): list again from the start`);
    start = at + 1;
  }
  const end = size <= 0 ? items.length : Math.min(items.length, start + size);
  const page = items.slice(start, end);
  const last = page[page.length - 1];
  return { items: page, nextPageToken: end < items.length && last !== undefined ? key(last) : '' };
}

/** One certificate an agent is out of step with (`certfleet agents`), as the API sends it. */
export type AgentDrift = NonNullable<pb.AgentSummary['drift']>[number];

/** An agent that reported a failure for the version it should serve. */
export interface AgentFailure {
  agent: string;
  version: number;
  code: string;
  error: string;
}

/**
 * The selected agents whose latest report says the version they should serve failed
 * (a refused bundle, a failed hook or serve check, even when the previous version was
 * restored). Pure; sorted by agent name.
 */
export function agentFailures(name: string, desired: DesiredRecord | undefined, selected: readonly AgentView[]): AgentFailure[] {
  if (desired === undefined) return [];
  const out: AgentFailure[] = [];
  for (const a of selected) {
    const want = desiredFor(desired, a.registration.labels).version;
    const s = a.report?.certificates.find((x) => x.name === name);
    if (s?.state === 'failed' && (s.desiredVersion === want || s.failedVersion === want)) {
      out.push({ agent: a.registration.name, version: want, code: s.errorCode || 'UNKNOWN', error: s.error });
    }
  }
  return out.sort((x, y) => x.agent.localeCompare(y.agent));
}

/**
 * One certificate as `certfleet certs` shows it. Pure. Besides the state it carries the
 * newest, desired and pinned versions, how many selected agents serve the desired one,
 * and a budget deferral or failure
 * backoff still ahead: after a rollback the summary used to show the newest version as
 * if it were served (issue #14). The state is the loop's, except:
 * `ready` becomes `pending` until every selected agent serves the desired version; a
 * rollout shows `rolling-out` or `halted`; and any selected agent that reports the
 * desired version failed makes it `failed`, with the agents and codes in `lastError`
 * (an agent's refusal used to hide behind `pending`, naming nobody).
 */
export function summarizeCertificate(input: SummaryInput): pb.CertificateSummary {
  const { name, config: c, runtime: rt, desired: d, selected } = input;
  const current = selected.filter((a) => {
    const want = d === undefined ? undefined : desiredFor(d, a.registration.labels).version;
    return a.report?.certificates.some((s) => s.name === name && s.state === 'installed' && s.version === want);
  }).length;
  let state: string = rt?.state ?? 'pending';
  let lastError = rt?.lastError ? `${rt.lastErrorCode}: ${rt.lastError}` : '';
  if (state === 'ready' && (d === undefined || current < selected.length)) state = 'pending';
  if (d?.rollout && state !== 'issuing') {
    state = d.rollout.halted ? 'halted' : 'rolling-out';
    if (d.rollout.halted) lastError = `rollout of version ${d.version} halted: ${d.rollout.haltReason}`;
  }
  const failures = agentFailures(name, d, selected);
  if (failures.length > 0 && state !== 'issuing' && state !== 'halted') {
    state = 'failed';
    const agents = failures.map((f) => `${f.agent} (v${f.version} ${f.code}: ${oneLine(f.error)})`).join('; ');
    const onAgents = `failed on ${failures.length} of ${selected.length} agent${selected.length === 1 ? '' : 's'}: ${agents}`;
    lastError = lastError === '' ? onAgents : `${onAgents}; controller: ${lastError}`;
  }
  return {
    name,
    names: c ? [...c.names] : [],
    selector: c?.agents ?? '',
    ...(rt?.latest ? { current: versionToPb(rt.latest) } : {}),
    state,
    lastError,
    agentsAssigned: selected.length,
    agentsCurrent: current,
    nextRenewal: rt && rt.nextCheck > 0 ? input.nowIso(rt.nextCheck) : '',
    newestVersion: rt?.latest?.version ?? 0,
    desiredVersion: d?.version ?? 0,
    pinnedVersion: rt?.pinned ?? 0,
    deferredUntil: rt && rt.deferredUntil > input.now ? input.nowIso(rt.deferredUntil) : '',
    deferredReason: rt && rt.deferredUntil > input.now ? rt.deferredReason : '',
    backoffUntil: rt && rt.backoffUntil > input.now ? input.nowIso(rt.backoffUntil) : '',
    renewalRequested: rt?.force ?? false,
  };
}

/**
 * What a summary is computed from, as a list compared item by item (`===`): the
 * configuration and desired record (replaced, never modified, when they change), the
 * runtime's fields as they read now (the newest version by number and fingerprint:
 * versions are immutable, and the loop reads a fresh copy of the same one every pass), a
 * deferral or backoff only while it lies ahead of `now`, and each selected agent's
 * registration and last report (both replaced, never modified: controller/fleet).
 */
function summaryKey(input: SummaryInput, key: unknown[]): void {
  const { config, runtime: rt, desired, selected, now } = input;
  key.length = 0;
  key.push(config, desired, selected.length);
  if (rt === undefined) key.push(undefined);
  else {
    const deferred = rt.deferredUntil > now;
    key.push(rt.state, rt.lastError, rt.lastErrorCode, rt.latest?.version, rt.latest?.fingerprint, rt.nextCheck, rt.pinned, rt.force, deferred ? rt.deferredUntil : 0, deferred ? rt.deferredReason : '', rt.backoffUntil > now ? rt.backoffUntil : 0);
  }
  for (const a of selected) key.push(a.registration, a.report);
}

/**
 * {@link summarizeCertificate}, remembered per certificate: while nothing it is computed
 * from changed (see summaryKey) the same summary object is answered again, so
 * `certfleet certs` over 10,000 certificates rebuilds only what moved, and the API can
 * keep each summary's protobuf encoding with it (controller/api). Callers must not
 * modify the summaries it returns. One entry per certificate name.
 */
export class SummaryMemo {
  private readonly last = new Map<string, { key: unknown[]; summary: pb.CertificateSummary }>();
  /** The key of the call at hand (reused: 10,000 calls per listing allocate no key). */
  private readonly scratch: unknown[] = [];

  summary(input: SummaryInput): pb.CertificateSummary {
    const key = this.scratch;
    summaryKey(input, key);
    const known = this.last.get(input.name);
    if (known !== undefined && sameKey(known.key, key)) return known.summary;
    const summary = summarizeCertificate(input);
    this.last.set(input.name, { key: key.slice(), summary });
    return summary;
  }
}

function sameKey(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * How `agent` differs from the version `want` of certificate `name` it should serve, or
 * null when it reports `want` installed. Pure. An agent that never reported the
 * certificate is drift too ("unreported"): it serves nothing the controller knows of.
 */
export function agentDrift(name: string, want: number, agent: AgentView): AgentDrift | null {
  const s = agent.report?.certificates.find((x) => x.name === name);
  if (s?.state === 'installed' && s.version === want) return null;
  return { certificate: name, desiredVersion: want, version: s?.version ?? 0, state: s?.state ?? 'unreported' };
}

/** An agent's error on one line, cut to a readable length (the whole text is in `certfleet agents --json`). */
function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 200 ? `${flat.slice(0, 197)}...` : flat;
}

export function createOperations(deps: OperationsDeps): Operations {
  const { cfg, store, nats, fleet, desired, loop, pins, acme, enrollment, events, budget, clock, ca, operators } = deps;
  const revocations = new Revocations(store);
  const CONTROLLER_VERSION = deps.controllerVersion;
  const certByName = new Map(cfg.certificates.map((c) => [c.name, c]));
  // A page token is the name a page ended on: found in one look, not a scan per page.
  const certIndex = new Map(cfg.certificates.map((c, i) => [c.name, i]));
  const configured = (name: string): CertificateConfig => {
    const c = certByName.get(name);
    if (!c) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} is not in the controller's configuration`);
    return c;
  };

  const summaries = new SummaryMemo();
  /** One certificate as `certfleet certs` shows it (shared: do not modify). */
  function certificateSummary(name: string): pb.CertificateSummary {
    const c = certByName.get(name);
    return summaries.summary({
      name,
      config: c,
      runtime: loop.status(name),
      desired: desired.get(name),
      selected: c ? fleet.selected(c.agents) : [],
      now: clock.now(),
      nowIso: isoAt,
    });
  }

  /**
   * Per agent name, the certificates it is assigned (selected, not removed) and does not
   * serve at the desired version the controller asks of it (its rollout wave's).
   * Certificates not published yet are left out: nothing is desired of anyone.
   */
  function fleetDrift(): Map<string, AgentDrift[]> {
    const out = new Map<string, AgentDrift[]>();
    for (const c of cfg.certificates) {
      const d = desired.get(c.name);
      if (d === undefined) continue;
      for (const a of fleet.selected(c.agents)) {
        const drift = agentDrift(c.name, desiredFor(d, a.registration.labels).version, a);
        if (drift !== null) out.set(a.registration.name, [...(out.get(a.registration.name) ?? []), drift]);
      }
    }
    return out;
  }

  /** `renew NAME --dry-run`: the rehearsal against the staging CA, and one `dry-run` event. */
  async function dryRunOf(c: CertificateConfig, actor: string): Promise<pb.DryRunResponse> {
    const staging = deps.staging;
    if (staging === undefined) {
      throw new CertfleetError(ErrorCode.ConfigInvalid, 'no staging CA is configured: set acme.staging.directoryUrl in the controller configuration (docs/configuration.md)');
    }
    const res = await dryRun(c, staging, clock);
    const failed = (res.steps ?? []).find((s) => !s.ok);
    await events.emit(EventType.dryRun, {
      cert: c.name,
      actor,
      message: res.ok
        ? `dry run by ${actor} against ${staging.directoryUrl} succeeded (nothing stored or published)`
        : `dry run by ${actor} against ${staging.directoryUrl} failed at ${failed?.step ?? 'a step'}: ${res.error}`,
      details: { directoryUrl: staging.directoryUrl, ok: res.ok, durationMs: res.durationMs, ...(res.ok ? { serial: res.serial, notAfter: res.notAfter } : { failedStep: failed?.step ?? '', errorCode: res.errorCode }) },
    });
    return res;
  }

  /** `check [NAME]`: every certificate's challenge path (or NAME's), one after the other. */
  async function checkChallenges(name: string): Promise<pb.CheckChallengesResponse> {
    const certs = name === '' ? cfg.certificates : [configured(name)];
    const paths = deps.challenges;
    const checks: pb.ChallengeCheck[] = [];
    for (const c of certs) {
      if (paths === undefined) {
        checks.push({ certificate: c.name, check: c.challenge, identifier: '', agent: '', ok: false, detail: 'the controller has no solvers to check with', durationMs: 0 });
        continue;
      }
      checks.push(...(await checkCertificate(c, paths, clock)));
    }
    return { ok: checks.every((x) => x.ok), checks };
  }

  const backend: OperatorBackend = {
    async status(): Promise<pb.GetStatusResponse> {
      const agents = fleet.agents();
      // Only a certificate the loop has ready can show ready (summarizeCertificate only
      // ever lowers it): the others need no summary (10,000 due at once: the loop's
      // runtime changes every pass, so none would be remembered).
      const ready = cfg.certificates.filter((c) => loop.status(c.name)?.state === 'ready' && certificateSummary(c.name).state === 'ready').length;
      const ha = deps.ha;
      const view = ha?.lease();
      // The registry is display only: NATS away must not fail `status` (it says so itself).
      const controllers = ha === undefined ? [] : await ha.controllers().catch(() => []);
      return {
        controllerVersion: CONTROLLER_VERSION,
        store: store.kind,
        acmeDirectory: issuersOf(cfg)[0]?.directoryUrl ?? '',
        certificates: cfg.certificates.length,
        certificatesReady: ready,
        // Removed agents are history, not fleet.
        agents: agents.filter((a) => !a.removed).length,
        agentsOnline: agents.filter((a) => a.online && !a.removed).length,
        nats: nats.isConnected() ? 'connected' : 'disconnected',
        ...(view?.leader === undefined
          ? {}
          : { leader: { holder: view.leader.holder, address: view.leader.address, epoch: view.leader.epoch, renewedAt: view.leader.renewedAt } }),
        self: ha?.self ?? '',
        role: view?.role ?? '',
        controllers: controllers.map((c) => ({ name: c.name, address: c.address, role: c.role, epoch: c.epoch, seenAt: c.seenAt, health: c.health, version: c.version })),
      };
    },
    certificates: (page) => {
      const { items, nextPageToken } = pageOf(cfg.certificates, page.size, page.token, (c) => c.name, (name) => certIndex.get(name) ?? -1);
      return Promise.resolve({ certificates: items.map((c) => certificateSummary(c.name)), nextPageToken });
    },
    agents: () => {
      const drift = fleetDrift();
      return Promise.resolve(
        fleet.agents().map(
          (a): pb.AgentSummary => ({
            name: a.registration.name,
            labels: a.registration.labels,
            lastSeen: a.report?.lastSeen ?? '',
            online: a.online,
            http01Address: a.report?.http01Address ?? '',
            certificates: a.report?.certificates ?? [],
            enrolledAt: a.registration.enrolledAt,
            removedAt: a.registration.removedAt ?? '',
            removedBy: a.registration.removedBy ?? '',
            identityNotAfter: a.registration.certNotAfter ?? '',
            ...(a.report?.refusals ? { refusals: a.report.refusals } : {}),
            drift: drift.get(a.registration.name) ?? [],
          }),
        ),
      );
    },
    async createEnrollmentToken(agent, labels, ttlMs, actor) {
      const res = await enrollment.createToken({ agent, labels, ttlMs });
      await events.emit(EventType.tokenCreated, {
        agent,
        actor,
        message: `enrolment token for agent ${agent} created by ${actor}`,
        details: { labels, expiresAt: res.expiresAt },
      });
      return res;
    },
    async show(name) {
      const c = configured(name);
      const rt = loop.status(c.name);
      return {
        summary: certificateSummary(c.name),
        reason: rt?.reason ?? '',
        deferredUntil: rt && rt.deferredUntil > clock.now() ? isoAt(rt.deferredUntil) : '',
        deferredReason: rt && rt.deferredUntil > clock.now() ? rt.deferredReason : '',
        backoffUntil: rt && rt.backoffUntil > clock.now() ? isoAt(rt.backoffUntil) : '',
        failures: rt?.failures ?? 0,
        pinnedVersion: rt?.pinned ?? 0,
        ariWindowStart: rt?.ariWindow ? isoAt(rt.ariWindow.start) : '',
        ariWindowEnd: rt?.ariWindow ? isoAt(rt.ariWindow.end) : '',
        desiredVersion: desired.get(c.name)?.version ?? 0,
        revokedVersions: [...(await revocations.all(c.name)).keys()].sort((a, b) => a - b),
        issuers: issuerChain(cfg, c),
        nextIssuer: rt?.issuer ?? '',
      };
    },
    async renew(name, { cancel, operator }) {
      const c = configured(name);
      const empty = { version: 0, previousVersion: loop.status(c.name)?.latest?.version ?? 0, deferredUntil: '', budget: '', budgetPreset: budget.preset, reason: '', errorCode: '', backoffUntil: '', requestedAt: '' };
      if (cancel) {
        const had = await loop.cancelRenewal(c.name);
        if (had) await events.emit(EventType.renewCancelled, { cert: c.name, actor: operator, message: `renewal request cancelled by ${operator}` });
        return {
          ...empty,
          outcome: had ? 'cancelled' : 'not-requested',
          message: had ? `${c.name}: renewal request cancelled` : `${c.name}: no renewal request outstanding`,
        };
      }
      const before = watchOf(loop.status(c.name));
      // Durable: recorded in the store before the operator hears anything.
      await loop.renewNow(c.name, operator);
      const requestedAt = loop.status(c.name)?.requestedAt ?? clock.now();
      await events.emit(EventType.renewRequested, { cert: c.name, actor: operator, message: `renewal requested by ${operator}` });
      // The loop was kicked: watch it act on the request for a moment, so the answer says
      // what happened instead of "requested" while a budget holds the order for a day.
      const wait = deadline(clock, deps.renewAnswerMs ?? RENEW_ANSWER_MS);
      let verdict: RenewVerdict | null = null;
      for (;;) {
        const final = wait.expired();
        verdict = renewOutcome(before, watchOf(loop.status(c.name)), requestedAt, clock.now(), final);
        if (verdict !== null || final) break;
        await wait.sleep(RENEW_POLL_MS);
      }
      const v = verdict ?? { outcome: 'queued', version: before.latestVersion + 1, detail: 'recorded' };
      const next =
        v.outcome === 'issued'
          ? `; "certfleet renew ${c.name} --wait" or "certfleet certs" shows when the agents serve it`
          : v.outcome === 'deferred'
            ? `; budgets preset ${budget.preset} ("certfleet budgets"); the request stays and orders then`
            : v.outcome === 'failed'
              ? `; the request stays and is retried${v.backoffUntil ? ` at ${isoAt(v.backoffUntil)}` : ''}; "certfleet show ${c.name}"`
              : `; follow it with "certfleet renew ${c.name} --wait", "certfleet show ${c.name}" or "certfleet events --cert ${c.name}"`;
      return {
        ...empty,
        outcome: v.outcome,
        message: `${c.name}: renewal ${v.detail}${next}`,
        version: v.version,
        previousVersion: before.latestVersion,
        deferredUntil: v.deferredUntil ? isoAt(v.deferredUntil) : '',
        budget: (v.budgets ?? []).join(', '),
        reason: v.reason ?? '',
        errorCode: v.errorCode ?? '',
        backoffUntil: v.backoffUntil ? isoAt(v.backoffUntil) : '',
        requestedAt: isoAt(requestedAt),
      };
    },
    async history(name) {
      const c = configured(name);
      const versions = await store.listVersions(c.name);
      const d = desired.get(c.name);
      const pin = await pins.get(c.name);
      const revoked = await revocations.all(c.name);
      const serving = new Map<number, string[]>();
      for (const a of fleet.agents()) {
        const s = a.report?.certificates.find((x) => x.name === c.name && x.state !== 'pending');
        if (s && s.version > 0) serving.set(s.version, [...(serving.get(s.version) ?? []), a.registration.name]);
      }
      return {
        name: c.name,
        pinnedVersion: pin?.version ?? 0,
        versions: versions.map((v) => ({
          version: versionToPb(v),
          agents: serving.get(v.version) ?? [],
          desired: d?.version === v.version,
          expired: Date.parse(v.notAfter) <= clock.now(),
          revoked: revoked.has(v.version),
          revocationReason: revoked.get(v.version)?.reason ?? '',
          revokedAt: revoked.get(v.version)?.at ?? '',
          revokedBy: revoked.get(v.version)?.by ?? '',
        })),
      };
    },
    async rollback(name, to, operator) {
      const c = configured(name);
      const d = desired.get(c.name);
      if (!d) throw new CertfleetError(ErrorCode.NotFound, `certificate ${c.name} has not been issued yet`);
      const revoked = new Set((await revocations.all(c.name)).keys());
      const target = rollbackTarget(c.name, await store.listVersions(c.name), d.version, to, clock.now(), revoked);
      // Validate what agents would receive before pinning anything (issue: a tampered
      // stored version used to be pinned and pushed, then refused by every agent).
      checkRollbackBundle(target, await store.getVersion(c.name, target.version), c.names, clock.now());
      await pins.set(c.name, { version: target.version, from: d.version, at: isoAt(clock.now()), by: operator });
      await desired.publish(target, c.agents, { pinned: true });
      await events.emit(EventType.rolledBack, {
        cert: c.name,
        version: target.version,
        actor: operator,
        message: `rolled back from version ${d.version} to ${target.version} by ${operator} (pinned)`,
        details: { from: d.version, to: target.version, operator },
      });
      loop.kick();
      return { fromVersion: d.version, toVersion: target.version };
    },
    async release(name, operator) {
      const c = configured(name);
      const newest = await store.latest(c.name);
      // Releasing would publish the newest version: never a revoked one (a revocation's
      // interim pin holds the fleet until the renewal it requested is issued).
      if (newest && (await revocations.get(c.name, newest.version))) {
        const e = revokedRefusal(c.name, newest.version);
        throw new CertfleetError(e.code, `${e.message}; the pin stays until a new version is issued ("certfleet renew ${c.name}")`, { details: e.details });
      }
      if (!(await pins.release(c.name))) throw new CertfleetError(ErrorCode.NotFound, `certificate ${c.name} is not pinned`);
      const latest = await store.latest(c.name);
      if (latest) await desired.publish(latest, c.agents);
      await events.emit(EventType.released, { cert: c.name, version: latest?.version ?? 0, actor: operator, message: `pin released by ${operator}`, details: { operator } });
      loop.kick();
      return latest?.version ?? 0;
    },
    async revoke(name, version, reasonText, operator) {
      const c = configured(name);
      const reason = reasonText === '' ? 'unspecified' : reasonText;
      if (!isRevocationReason(reason)) {
        throw new CertfleetError(ErrorCode.UsageInvalid, `'${reason}' is not a revocation reason: one of ${Object.keys(REVOCATION_REASONS).join(', ')}`);
      }
      if (version <= 0) throw new CertfleetError(ErrorCode.UsageInvalid, `revoking ${c.name} needs a version (--version N)`);
      const bundle = await store.getVersion(c.name, version);
      if (!bundle) throw new CertfleetError(ErrorCode.NotFound, `certificate ${c.name} has no version ${version}`);
      const reasonCode = REVOCATION_REASONS[reason];
      const earlier = await revocations.get(c.name, version);
      // The plan is decided before anything changes, so the event can say what follows.
      const d = desired.get(c.name);
      const versions = await store.listVersions(c.name);
      const plan = revocationPlan({
        version,
        versions,
        revoked: new Set([...(await revocations.all(c.name)).keys(), version]),
        desired: d === undefined ? undefined : { version: d.version, rolloutFrom: d.rollout?.from.version },
        pinned: (await pins.stored(c.name))?.version ?? 0,
        now: clock.now(),
      });
      let mark: Revocation;
      if (earlier) {
        mark = earlier;
      } else {
        // At the CA first: a mark is written only for a certificate the CA revoked (an
        // error here changes nothing, and asking again is safe).
        // The CA that issued it: the version records its issuer when there are several.
        const issuedBy = bundle.meta.issuer;
        const account = issuedBy !== undefined && deps.accountOf !== undefined ? await deps.accountOf(issuedBy) : acme;
        const atCa = await account.revokeCertificate(bundle.certPem, reasonCode);
        mark = { version, serial: bundle.meta.serial, reason, reasonCode, at: isoAt(clock.now()), by: operator, alreadyRevokedAtCa: atCa.alreadyRevoked };
        await revocations.set(c.name, mark);
        await events.emit(EventType.revoked, {
          cert: c.name,
          version,
          actor: operator,
          message: `version ${version} revoked (${reason}) by ${operator}; ${plan.summary}`,
          details: { reason, reasonCode, serial: mark.serial, alreadyRevokedAtCa: mark.alreadyRevokedAtCa, served: plan.served, servingVersion: plan.serve, pinned: plan.pinServe, renewalRequested: plan.renew },
        });
      }
      const alreadyRevoked = earlier !== null || mark.alreadyRevokedAtCa;

      // Move the fleet off it. This runs again on a repeated revoke, so a move a failure
      // interrupted is finished by asking again.
      if (plan.releasePin && (await pins.release(c.name))) {
        await events.emit(EventType.released, { cert: c.name, version, actor: operator, message: `pin on revoked version ${version} released`, details: { operator } });
      }
      const serve = plan.serve === 0 ? undefined : versions.find((v) => v.version === plan.serve);
      if (serve) {
        if (plan.pinServe) await pins.set(c.name, { version: serve.version, from: d?.version ?? version, at: isoAt(clock.now()), by: operator });
        // Without waves: a rollout would leave its later waves on the revoked version.
        if (d === undefined || d.version !== serve.version || d.rollout !== undefined || (d.pinned ?? false) !== plan.pinServe) {
          await desired.publish(serve, c.agents, { pinned: plan.pinServe });
          await events.emit(EventType.published, { cert: c.name, version: serve.version, actor: operator, message: `desired version ${serve.version} (moved off revoked version ${version})` });
        }
      }
      if (plan.renew) await loop.renewNow(c.name, operator);
      loop.kick();
      const head = alreadyRevoked
        ? `${c.name}: version ${version} was already revoked${earlier ? ` (${earlier.reason}, by ${earlier.by || 'unknown'} at ${earlier.at || 'unknown'})` : ' at the CA; recorded now'}`
        : `${c.name}: version ${version} revoked at the CA (${reason})`;
      return {
        name: c.name,
        version,
        serial: mark.serial,
        reason: mark.reason,
        reasonCode: mark.reasonCode,
        alreadyRevoked,
        revokedAt: mark.at,
        revokedBy: mark.by,
        served: plan.served,
        servingVersion: serve?.version ?? 0,
        servingPinned: serve !== undefined && plan.pinServe,
        pinReleased: plan.releasePin,
        renewalRequested: plan.renew,
        message: `${head}; ${plan.summary}`,
      };
    },
    budgets: () => {
      // Budgets are per issuer (one account each): with several, every row names its issuer.
      const keepers = deps.issuerBudgets && deps.issuerBudgets.length > 1 ? deps.issuerBudgets : [{ issuer: '', keeper: budget }];
      return Promise.resolve({
        preset: keepers.map((k) => (k.issuer === '' ? k.keeper.preset : `${k.issuer}: ${k.keeper.preset}`)).join(', '),
        budgets: keepers.flatMap((k) =>
          k.keeper.levels().map((l) => ({
            name: `${l.title} (${l.key})`,
            limit: l.human,
            available: l.available,
            capacity: l.capacity,
            reserved: l.reserved,
            nextTokenAt: l.nextTokenAt === null ? '' : isoAt(l.nextTokenAt),
            issuer: k.issuer,
          })),
        ),
      });
    },
    async events(limit, cert) {
      const list = await readEvents(nats, { limit, ...(cert === '' ? {} : { cert }) });
      return list.map(eventToPb);
    },
    // --- FollowEvents (issue #14) ---
    async followEvents(limit, cert, onEvent) {
      const filter = cert === '' ? {} : { cert };
      // The consumer starts first and buffers, then the backlog is read: an event
      // published in between is in one of the two (or both: sent once), never in neither.
      const buffered: FleetEvent[] = [];
      let live = false;
      const follower = await followEvents(nats, (e) => (live ? onEvent(eventToPb(e)) : buffered.push(e)), filter);
      try {
        const backlog = limit === 0 ? [] : await readEvents(nats, { limit, ...filter });
        const sent = new Set(backlog.map((e) => JSON.stringify(e)));
        for (const e of backlog) onEvent(eventToPb(e));
        for (const e of buffered) if (!sent.has(JSON.stringify(e))) onEvent(eventToPb(e));
        // Synchronous since the drain: no event can slip between it and this line.
        live = true;
      } catch (err) {
        await follower.stop();
        throw err;
      }
      return follower;
    },
    async createOperator(name, role, csrPem, actor) {
      // Every refusal before the CA signs anything: a refused create issues no certificate.
      await operators.checkCreate(name, role);
      const signed = await signOperatorCsr(ca, csrPem, { operator: name, role, now: clock.now() });
      const rec = await operators.create({ name, role, serial: signed.serial, notAfter: signed.notAfter, by: actor });
      await events.emit(EventType.operatorCreated, {
        actor,
        message: `operator ${name} created with role ${rec.role} by ${actor}`,
        details: { operator: name, role: rec.role, serial: rec.serial, notAfter: rec.notAfter },
      });
      return { operator: operatorToPb(rec), certificatePem: signed.certPem, caPem: ca.certPem };
    },
    async listOperators() {
      return (await operators.list()).map(operatorToPb);
    },
    async revokeOperator(name, actor) {
      const before = await operators.get(name);
      const rec = await operators.revoke(name, actor);
      if (before !== null && !before.revoked) {
        await events.emit(EventType.operatorRevoked, {
          actor,
          message: `operator ${name} revoked by ${actor}`,
          details: { operator: name, role: rec.role, serial: rec.serial },
        });
      }
      return operatorToPb(rec);
    },
    async setOperatorRole(name, role, actor) {
      const { previous, record } = await operators.setRole(name, role, actor);
      if (previous !== record.role) {
        await events.emit(EventType.operatorRoleChanged, {
          actor,
          message: `operator ${name} changed from role ${previous} to ${record.role} by ${actor}`,
          details: { operator: name, from: previous, to: record.role },
        });
      }
      return { operator: operatorToPb(record), previousRole: previous };
    },
    dryRun: (name, actor) => dryRunOf(configured(name), actor),
    checkChallenges: (name) => checkChallenges(name),
    async removeAgent(name, actor) {
      // 1. The registry: every controller sharing the store refuses the agent's next call.
      const removal = await enrollment.removeAgent(name, actor);
      const reg = removal.registration;
      // 2. Out of HTTP-01 duty and the views, status record deleted; 3. what else it held.
      // Each step runs again on a repeated removal, so a failure here is retried by asking again.
      const steps: Array<[string, () => Promise<void>]> = [
        ['deleting its status record on NATS', () => fleet.removed(reg)],
        ['withdrawing its other credentials', () => deps.onAgentRemoved?.(name) ?? Promise.resolve()],
      ];
      const failures: string[] = [];
      let firstFailure: CertfleetError | undefined;
      for (const [what, step] of steps) {
        try {
          await step();
        } catch (err) {
          const cf = toCertfleetError(err);
          firstFailure ??= cf;
          failures.push(`${what}: ${cf.message}`);
        }
      }
      if (!removal.alreadyRemoved) {
        await events.emit(EventType.agentRemoved, {
          agent: name,
          actor,
          message: `agent ${name} removed by ${actor}`,
          details: { serial: reg.certSerial, tokensWithdrawn: removal.tokensWithdrawn, labels: reg.labels },
        });
      }
      if (firstFailure !== undefined) {
        throw new CertfleetError(
          firstFailure.code,
          `agent ${name} is removed (its certificate is refused from its next call), but ${failures.join('; ')}; run "certfleet agents remove ${name}" again`,
          { retryable: true, cause: firstFailure, details: { agent: name } },
        );
      }
      return {
        name,
        removedBy: reg.removedBy ?? actor,
        removedAt: reg.removedAt ?? '',
        alreadyRemoved: removal.alreadyRemoved,
        tokensWithdrawn: removal.tokensWithdrawn,
      };
    },
  };
  return { backend, certificateSummary };
}

/** An operator record as the API sends it (no key material: the record holds none). */
export function operatorToPb(r: OperatorRecord): pb.Operator {
  return {
    name: r.name,
    role: r.role,
    serial: r.serial,
    notAfter: r.notAfter,
    createdBy: r.createdBy,
    createdAt: r.createdAt,
    revoked: r.revoked,
    revokedBy: r.revokedBy ?? '',
    revokedAt: r.revokedAt ?? '',
  };
}

/** An event as the OperatorService sends it (ListEvents, FollowEvents). */
function eventToPb(e: FleetEvent): pb.FleetEvent {
  return {
    type: e.type,
    at: e.at,
    cert: e.cert ?? '',
    agent: e.agent ?? '',
    version: e.version ?? 0,
    message: e.message,
    detailsJson: e.details === undefined ? '' : JSON.stringify(e.details),
    actor: e.actor ?? '',
  };
}

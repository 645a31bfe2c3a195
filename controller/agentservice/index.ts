/**
 * What agents can ask and do (the AgentService behind enrolment, `GetAssignments`,
 * `FetchBundle`, `ReportStatus` and identity renewal), over the controller's modules:
 * the agent-side counterpart of controller/operator. controller/api has already
 * verified the caller's client certificate against the controller CA; this module
 * decides what that agent may have.
 *
 * Authorisation, every call:
 *  - the caller must be a registered, not removed agent whose certificate serial is the
 *    current (or the pending renewed) one (controller/enroll authenticateAgent, checked on
 *    every call so a removal or re-enrolment on this controller holds from the agent's
 *    next call, one on another controller sharing the store within a second):
 *    UNAUTHENTICATED otherwise;
 *  - a certificate is the agent's when the configuration's selector for it matches the
 *    agent's registered labels (never labels the agent claims): FetchBundle of any
 *    other is PERMISSION_DENIED, so a private key leaves only towards agents that serve
 *    the certificate;
 *  - FetchBundle version 0 means "the version I should serve now": the desired one, or
 *    the previous one while a staged rollout has not reached the agent's wave.
 *
 * Bundles: versions are immutable, and a new version is fetched by every agent it is
 * assigned to at once, so the last {@link BUNDLE_CACHE_SIZE} bundles read are kept in
 * memory (concurrent fetches of one version share one store read; a failed or empty
 * read is not kept). Authorisation still runs on every call.
 *
 * Enrolment: the CSR is checked before the one-time token is redeemed (a malformed CSR
 * must not use it up); the NATS user rotates with the identity, on enrolment and on
 * renewal (controller/natsauth, when the controller is the NATS authority).
 */
import crypto from 'node:crypto';
import { isoAt, type Clock } from '../../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { Bundle, DesiredRecord, FleetEvent, SigningPublicKey } from '../../shared/model/index.js';
import { desiredFor } from '../../shared/rollout/index.js';
import { matches, parseSelector, type Selector } from '../../shared/selector/index.js';
import { EventType } from '../../shared/wire/index.js';
import type { AgentBackend, AgentReport, CallerIdentity } from '../api/index.js';
import type { CertificateConfig } from '../config/index.js';
import type { AgentRegistration, Enrollment } from '../enroll/index.js';
import { checkAgentCsr, signAgentCsr, type CaMaterial } from '../pki/index.js';
import type { CertStore } from '../store/index.js';

/** What the agent backend reads and writes; each a narrow slice of a controller module. */
export interface AgentServiceDeps {
  /** The declared certificates; their `agents` selectors decide who gets what. */
  certificates: readonly CertificateConfig[];
  /** Lifetime of agent client certificates (config `api.agentIdentityValidity`). */
  identityValidityMs: number;
  /** The controller CA: signs agent certificates, and is handed to agents to trust. */
  ca: CaMaterial;
  enrollment: Pick<Enrollment, 'authenticateAgent' | 'redeem' | 'recordAgent' | 'recordRenewal'>;
  /** The fleet view (controller/fleet): told of registrations and reports. */
  fleet: { registered(reg: AgentRegistration): void; report(agent: string, report: AgentReport): Promise<void> };
  /** Desired pointers as the controller holds them (controller/publish DesiredState). */
  desired: { all(): DesiredRecord[]; get(name: string): DesiredRecord | undefined };
  store: Pick<CertStore, 'getVersion'>;
  /** The record-signing public keys agents must trust (controller/signing RecordSigner). */
  signer: { publicKeys(): SigningPublicKey[] };
  /** Mints the agent's NATS user, expiring with its certificate; absent when NATS is not ours to manage. */
  nats?: { credentialsForAgent(agent: string, expiresAt?: number): Promise<string> } | undefined;
  events: { emit(type: EventType, fields: Omit<FleetEvent, 'type' | 'at'>): Promise<void> };
  clock: Clock;
}

/** Bundles the AgentService keeps in memory (see the module comment). */
export const BUNDLE_CACHE_SIZE = 32;

/** The AgentService backend (rules in the module comment). */
export function createAgentService(deps: AgentServiceDeps): AgentBackend {
  const { ca, clock, enrollment, fleet, desired, signer, events } = deps;
  // Parsed once: the configuration is frozen for the life of the process.
  const selectors = new Map<string, Selector>(deps.certificates.map((c) => [c.name, parseSelector(c.agents)]));
  const assignedTo = (labels: Record<string, string>, certName: string): boolean => {
    const sel = selectors.get(certName);
    return sel !== undefined && matches(sel, labels);
  };
  /** The caller's registered labels; UNAUTHENTICATED for a removed or replaced identity. */
  const authenticate = async (id: CallerIdentity): Promise<Record<string, string>> => {
    const reg = await enrollment.authenticateAgent(id.name, id.serial);
    fleet.registered(reg); // a renewed identity in use shows in the views
    return reg.labels;
  };
  // name@version → the store read; newest last (Map order), oldest dropped beyond the size.
  const bundles = new Map<string, Promise<Bundle | null>>();
  const readBundle = (name: string, version: number): Promise<Bundle | null> => {
    const key = `${name}@${version}`;
    const cached = bundles.get(key);
    if (cached) return cached;
    const read = deps.store.getVersion(name, version);
    bundles.set(key, read);
    const forget = (): void => {
      if (bundles.get(key) === read) bundles.delete(key);
    };
    read.then((b) => b === null && forget(), forget);
    if (bundles.size > BUNDLE_CACHE_SIZE) {
      const oldest = bundles.keys().next();
      if (oldest.done !== true) bundles.delete(oldest.value);
    }
    return read;
  };
  const natsCredentialsUntil = async (agent: string, certPem: string): Promise<string> =>
    deps.nats ? deps.nats.credentialsForAgent(agent, Date.parse(new crypto.X509Certificate(certPem).validTo)) : '';

  return {
    async enroll(token, csrPem) {
      await checkAgentCsr(csrPem);
      const grant = await enrollment.redeem(token);
      const signed = await signAgentCsr(ca, csrPem, { agent: grant.agent, now: clock.now(), validityMs: deps.identityValidityMs });
      const reg = await enrollment.recordAgent({
        name: grant.agent,
        labels: grant.labels,
        certSerial: signed.serial,
        enrolledAt: isoAt(clock.now()),
        certNotAfter: signed.notAfter,
      });
      fleet.registered(reg);
      // The user of a previous enrolment is revoked as this one is minted.
      const natsCredentials = await natsCredentialsUntil(grant.agent, signed.certPem);
      await events.emit(EventType.enrolled, { agent: grant.agent, message: `agent ${grant.agent} enrolled`, details: { labels: grant.labels } });
      return { agent: grant.agent, labels: grant.labels, certificatePem: signed.certPem, caPem: ca.certPem, natsCredentials, signingKeys: signer.publicKeys() };
    },

    async assignments(id) {
      const labels = await authenticate(id);
      const mine = desired.all().filter((d) => assignedTo(labels, d.name));
      return {
        desired: mine,
        // During a staged rollout each agent gets the version of its own wave.
        effective: mine.map((d) => desiredFor(d, labels)),
        signingKeys: signer.publicKeys(),
        assigned: deps.certificates.filter((c) => assignedTo(labels, c.name)).map((c) => ({ name: c.name, names: [...c.names] })),
      };
    },

    async fetchBundle(id, name, version): Promise<Bundle> {
      const labels = await authenticate(id);
      if (!assignedTo(labels, name)) {
        throw new CertfleetError(ErrorCode.PermissionDenied, `certificate ${name} is not assigned to agent ${id.name}`);
      }
      const d = desired.get(name);
      const wanted = version === 0 ? (d ? desiredFor(d, labels).version : undefined) : version;
      const bundle = wanted === undefined ? null : await readBundle(name, wanted);
      if (!bundle) throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} version ${wanted ?? 'desired'} does not exist`);
      return bundle;
    },

    async reportStatus(id, report) {
      await authenticate(id);
      await fleet.report(id.name, report);
    },

    async renewIdentity(id, csrPem) {
      const reg = await enrollment.authenticateAgent(id.name, id.serial);
      const signed = await signAgentCsr(ca, csrPem, { agent: id.name, now: clock.now(), validityMs: deps.identityValidityMs });
      fleet.registered(await enrollment.recordRenewal(id.name, reg.certSerial, signed.serial, signed.notAfter));
      await events.emit(EventType.identityRenewed, {
        agent: id.name,
        message: `agent ${id.name} renewed its identity (valid until ${signed.notAfter})`,
        details: { serial: signed.serial, notAfter: signed.notAfter },
      });
      // A user tied to the old certificate would cut the agent off NATS, and so off
      // HTTP-01 duty, when that certificate expires: the new one expires with the new.
      const natsCredentials = await natsCredentialsUntil(id.name, signed.certPem);
      return { certificatePem: signed.certPem, caPem: ca.certPem, notAfter: signed.notAfter, natsCredentials };
    },
  };
}

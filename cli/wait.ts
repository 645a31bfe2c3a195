/**
 * `--wait` of `renew`, `rollback` and `release`: follow the certificate (ShowCertificate)
 * until every selected agent serves the version the command asked for, or a step fails.
 *
 * The decision per look is pure ({@link waitStep}); the loop around it asks the
 * controller every `intervalMs` on an injected clock and reports progress on stderr.
 */
import { deadline, systemClock, type Clock } from '../shared/clock/index.js';
import { CertfleetError, ErrorCode } from '../shared/errors/index.js';
import type { pb } from '../shared/grpc/index.js';

/** What the command waits for. */
export interface WaitTarget {
  name: string;
  /** renew: the version the order makes (at least); rollback/release: exactly this version. */
  version: number;
  /** renew: a newer version may arrive (another request); rollback/release: exactly. */
  atLeast: boolean;
  /** Consecutive issuance failures when the wait began (a higher count is a failed issuance). */
  failures: number;
}

/** One look: done, failed (which step, with the code), or still going (a progress line). */
export type WaitStep =
  | { kind: 'done'; version: number; agents: string }
  | { kind: 'failed'; step: 'issue' | 'budget' | 'install' | 'rollout'; code: ErrorCode; message: string }
  | { kind: 'waiting'; progress: string };

const CODE_PREFIX = /^([A-Z][A-Z0-9_]+): /;
const AGENT_CODE = /\(v\d+ ([A-Z][A-Z0-9_]+):/;

function knownCode(text: string | undefined, fallback: ErrorCode): ErrorCode {
  const codes = Object.values(ErrorCode) as string[];
  return text !== undefined && codes.includes(text) ? (text as ErrorCode) : fallback;
}

/**
 * Where the fleet stands for `target`, from one ShowCertificate answer. Pure.
 *
 * Done: the desired version is the target (or newer for renew), the loop says `ready`
 * (no rollout wave left, no failure) and every selected agent reports it installed.
 * Failed: an issuance failed after the wait began (step "issue"; with several issuers it
 * is progress instead: the loop falls back to the next CA), a budget defers the
 * order (step "budget": waiting a day is not what --wait is for), an agent reports the
 * desired version failed ("install"), or a staged rollout halted ("rollout").
 */
export function waitStep(show: pb.ShowCertificateResponse__Output, target: WaitTarget): WaitStep {
  const s = show.summary;
  const desired = show.desiredVersion;
  const reached = target.atLeast ? desired >= target.version : desired === target.version;
  const current = s?.agentsCurrent ?? 0;
  const assigned = s?.agentsAssigned ?? 0;
  const state = s?.state ?? '';
  const lastError = s?.lastError ?? '';
  if (!reached) {
    // With several issuers a failure is not the end: the loop falls back to the next CA
    // when the first will not heal in time (docs/renewal.md#issuers-and-fallback); the
    // wait timeout bounds it.
    if (show.failures > target.failures && show.issuers.length > 1) {
      return {
        kind: 'waiting',
        progress: `issuing version ${target.version} failed ${show.failures - target.failures} time(s) (${CODE_PREFIX.exec(lastError)?.[1] ?? 'error'}); the controller tries again${show.nextIssuer === '' ? '' : ` with issuer ${show.nextIssuer}`}${show.backoffUntil === '' ? '' : ` at ${show.backoffUntil}`}`,
      };
    }
    if (show.failures > target.failures) {
      return {
        kind: 'failed',
        step: 'issue',
        code: knownCode(CODE_PREFIX.exec(lastError)?.[1], ErrorCode.Internal),
        message: `${target.name}: issuing version ${target.version} failed: ${lastError || 'no reason given'}${show.backoffUntil === '' ? '' : `; the controller retries at ${show.backoffUntil}`}`,
      };
    }
    if (show.deferredUntil !== '') {
      return {
        kind: 'failed',
        step: 'budget',
        code: ErrorCode.BudgetDeferred,
        message: `${target.name}: the order is deferred until ${show.deferredUntil}: ${show.deferredReason}; the request stays (cancel it with "certfleet renew ${target.name} --cancel")`,
      };
    }
    const newest = s?.newestVersion ?? 0;
    return { kind: 'waiting', progress: newest >= target.version ? `version ${newest} issued, not published yet` : state === 'issuing' ? `issuing version ${target.version}` : `waiting for version ${target.version} (state ${state || 'unknown'})` };
  }
  if (state === 'failed') {
    return { kind: 'failed', step: 'install', code: knownCode(AGENT_CODE.exec(lastError)?.[1] ?? CODE_PREFIX.exec(lastError)?.[1], ErrorCode.InstallFailed), message: `${target.name}: installing version ${desired} failed: ${lastError}` };
  }
  if (state === 'halted') return { kind: 'failed', step: 'rollout', code: ErrorCode.InstallFailed, message: `${target.name}: ${lastError || `rollout of version ${desired} halted`}` };
  if (state === 'ready' && current === assigned) return { kind: 'done', version: desired, agents: `${current}/${assigned}` };
  return { kind: 'waiting', progress: `version ${desired}: ${current}/${assigned} agents serve it${state === 'rolling-out' ? ' (rolling out in waves)' : ''}` };
}

/** What {@link waitServed} needs. */
export interface WaitDeps {
  show(): Promise<pb.ShowCertificateResponse__Output>;
  /** Progress lines (stderr), printed when they change. */
  progress(line: string): void;
  timeoutMs: number;
  intervalMs?: number;
  clock?: Clock;
}

/** How often --wait asks the controller. */
export const WAIT_INTERVAL_MS = 1000;

/**
 * Asks until {@link waitStep} says done (resolves with the last answer) or failed
 * (throws a CertfleetError with the step's code); WAIT_TIMEOUT after `timeoutMs`.
 */
export async function waitServed(target: WaitTarget, deps: WaitDeps): Promise<{ show: pb.ShowCertificateResponse__Output; version: number }> {
  const clock = deps.clock ?? systemClock;
  const until = deadline(clock, deps.timeoutMs);
  let last = '';
  for (;;) {
    const show = await deps.show();
    const step = waitStep(show, target);
    if (step.kind === 'done') return { show, version: step.version };
    if (step.kind === 'failed') throw new CertfleetError(step.code, step.message, { details: { step: step.step } });
    if (step.progress !== last) deps.progress(`${target.name}: ${step.progress}`);
    last = step.progress;
    if (until.expired()) {
      throw new CertfleetError(ErrorCode.WaitTimeout, `${target.name}: gave up waiting after ${Math.round(deps.timeoutMs / 1000)}s: ${step.progress}; the controller goes on (follow it with "certfleet show ${target.name}")`, { retryable: true });
    }
    await until.sleep(deps.intervalMs ?? WAIT_INTERVAL_MS);
  }
}

/**
 * `certfleet renew NAME --dry-run`: the whole issuance rehearsed against the staging CA
 * (`acme.staging`), through the same solvers as a real one (HTTP-01 by the agents, DNS-01
 * by the providers), with nothing kept: no version, no desired pointer, no budget spent,
 * no `ordered`/`issued` event (one `dry-run` event instead). The staging account is
 * another ACME account, opened on the first dry run and kept for the next ones.
 *
 * The rehearsal itself is the issuer's (controller/issuer `Issuer.rehearse`) over a client
 * of the staging CA; this module opens it once, times the account step, and turns the
 * steps into the API's answer.
 */
import { toCertfleetError } from '../../shared/errors/index.js';
import type { Clock } from '../../shared/clock/index.js';
import type { pb } from '../../shared/grpc/index.js';
import type { CertificateConfig } from '../config/index.js';
import { requestFor, type IssueRequest, type RehearsalResult, type RehearsalStep } from '../issuer/index.js';

/** What rehearses an issuance (an Issuer over the staging CA's client). */
export interface Rehearser {
  rehearse(req: IssueRequest, onStep: (step: RehearsalStep) => void): Promise<RehearsalResult>;
}

/** The staging CA as the operator module sees it. */
export interface StagingCa {
  directoryUrl: string;
  /**
   * The rehearser over the staging account, opened on the first call and kept; `opened`
   * says whether this call opened it. A failed opening is tried again by the next call.
   */
  open(): Promise<{ rehearser: Rehearser; opened: boolean }>;
}

/** A {@link StagingCa} that opens its account with `open` once (again after a failure). */
export function lazyStaging(directoryUrl: string, open: () => Promise<Rehearser>): StagingCa {
  let opening: Promise<Rehearser> | undefined;
  return {
    directoryUrl,
    async open() {
      const opened = opening === undefined;
      opening ??= open();
      try {
        return { rehearser: await opening, opened };
      } catch (err) {
        opening = undefined;
        throw err;
      }
    },
  };
}

/**
 * Rehearses `cert` against `staging`: the account step, then the issuer's steps. Never
 * rejects: a failure is the answer's `ok: false` with the failed step, its code and message.
 */
export async function dryRun(cert: CertificateConfig, staging: StagingCa, clock: Clock): Promise<pb.DryRunResponse> {
  const started = clock.now();
  const steps: pb.DryRunStep[] = [];
  const answer = (extra: Partial<pb.DryRunResponse>): pb.DryRunResponse => ({
    name: cert.name,
    directoryUrl: staging.directoryUrl,
    ok: false,
    steps,
    errorCode: '',
    error: '',
    serial: '',
    notAfter: '',
    durationMs: Math.max(0, clock.now() - started),
    ...extra,
  });
  let rehearser: Rehearser;
  try {
    const acct = await staging.open();
    rehearser = acct.rehearser;
    steps.push({ step: 'account', identifier: '', ok: true, durationMs: Math.max(0, clock.now() - started), detail: `${acct.opened ? 'opened' : 'reused'} at ${staging.directoryUrl}` });
  } catch (err) {
    const cf = toCertfleetError(err);
    steps.push({ step: 'account', identifier: '', ok: false, durationMs: Math.max(0, clock.now() - started), detail: `${cf.code}: ${cf.message}` });
    return answer({ errorCode: cf.code, error: cf.message });
  }
  try {
    const res = await rehearser.rehearse(
      requestFor(cert),
      (s) => steps.push({ step: s.step, identifier: s.identifier, ok: s.ok, durationMs: s.durationMs, detail: s.detail }),
    );
    // A cleanup that left records behind is reported by its step; the issuance itself worked.
    return answer({ ok: true, serial: res.serial, notAfter: res.notAfter });
  } catch (err) {
    const cf = toCertfleetError(err);
    return answer({ errorCode: cf.code, error: cf.message });
  }
}

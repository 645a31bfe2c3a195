/**
 * A small OperatorBackend that records every call and answers from a script: what the
 * intents tests run on the leader (the real backend is tested on its own elsewhere; here
 * the board, signing, lease and NATS are what is under test). Methods a test does not
 * script answer with a plain value; reads answer empty.
 */
import type { OperatorBackend } from '../../controller/api/index.js';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';

export interface RecordedCall {
  method: string;
  args: unknown[];
}

export interface RecordingBackend extends OperatorBackend {
  calls: RecordedCall[];
  /** Replaces a method's behaviour. */
  script(method: keyof OperatorBackend, fn: (...args: unknown[]) => Promise<unknown>): void;
}

export function recordingBackend(label: string): RecordingBackend {
  const calls: RecordedCall[] = [];
  const scripts = new Map<string, (...args: unknown[]) => Promise<unknown>>();
  const call =
    <R>(method: keyof OperatorBackend, dflt: (...args: unknown[]) => R) =>
    (...args: unknown[]): Promise<R> => {
      calls.push({ method, args });
      const s = scripts.get(method);
      return s ? (s(...args) as Promise<R>) : Promise.resolve(dflt(...args));
    };
  const backend: OperatorBackend = {
    status: call('status', () => ({}) as never),
    certificates: call('certificates', () => ({ certificates: [], nextPageToken: '' })),
    agents: call('agents', () => []),
    show: call('show', () => ({}) as never),
    history: call('history', () => ({}) as never),
    budgets: call('budgets', () => ({}) as never),
    events: call('events', () => []),
    followEvents: call('followEvents', () => ({ stop: () => Promise.resolve() })),
    listOperators: call('listOperators', () => []),
    createEnrollmentToken: call('createEnrollmentToken', (agent) => ({ token: `tok-${String(agent)}-${label}`, expiresAt: '2026-01-01T01:00:00.000Z' })),
    renew: call('renew', (name) => ({ message: `renewal of ${String(name)} requested`, outcome: 'queued' }) as never),
    rollback: call('rollback', (_name, to) => ({ fromVersion: 3, toVersion: to as number })),
    release: call('release', () => 3),
    revoke: call('revoke', () => ({}) as never),
    createOperator: call('createOperator', () => ({}) as never),
    revokeOperator: call('revokeOperator', () => ({}) as never),
    setOperatorRole: call('setOperatorRole', () => ({}) as never),
    removeAgent: call('removeAgent', () => ({}) as never),
    dryRun: call('dryRun', () => ({}) as never),
    checkChallenges: call('checkChallenges', () => ({ ok: true, checks: [] })),
  };
  return {
    ...backend,
    calls,
    script: (method, fn) => void scripts.set(method, fn),
  };
}

/** The error a scripted backend throws in the error-path tests. */
export function notFound(name: string): CertfleetError {
  return new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no version 9`, { details: { cert: name, version: 9 } });
}

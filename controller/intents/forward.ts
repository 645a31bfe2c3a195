/**
 * An OperatorBackend for every controller: reads are answered here, mutating calls (the
 * methods of ./methods.ts FORWARDED) go straight to the backend on the leader and through
 * the intent board on a follower, which answers only when the leader has carried them out.
 */
import type { OperatorBackend } from '../api/index.js';
import type { IntentMethod } from './methods.js';

export interface ForwardingDeps {
  leader: { isLeader(): boolean };
  board: { submit(method: IntentMethod, args: unknown[], operator: string): Promise<unknown> };
}

/** `backend` with its mutating methods handed to the leader when this controller does not lead. */
export function forwardingBackend(backend: OperatorBackend, deps: ForwardingDeps): OperatorBackend {
  // The result crossed the bus as JSON of exactly what the leader's backend returned.
  const via = <R>(method: IntentMethod, args: unknown[], operator: string, here: () => Promise<R>): Promise<R> =>
    deps.leader.isLeader() ? here() : (deps.board.submit(method, args, operator) as Promise<R>);
  return {
    // Reads: the shared NATS buckets and store answer them on any controller.
    status: () => backend.status(),
    certificates: (page) => backend.certificates(page),
    agents: () => backend.agents(),
    show: (name) => backend.show(name),
    history: (name) => backend.history(name),
    budgets: () => backend.budgets(),
    events: (limit, cert) => backend.events(limit, cert),
    followEvents: (limit, cert, onEvent) => backend.followEvents(limit, cert, onEvent),
    listOperators: () => backend.listOperators(),
    // Mutations: the leader carries them out.
    createEnrollmentToken: (agent, labels, ttlMs, actor) => via('createEnrollmentToken', [agent, labels, ttlMs, actor], actor, () => backend.createEnrollmentToken(agent, labels, ttlMs, actor)),
    renew: (name, opts) => via('renew', [name, { cancel: opts.cancel, operator: opts.operator }], opts.operator, () => backend.renew(name, opts)),
    rollback: (name, to, operator) => via('rollback', [name, to, operator], operator, () => backend.rollback(name, to, operator)),
    release: (name, operator) => via('release', [name, operator], operator, () => backend.release(name, operator)),
    revoke: (name, version, reason, operator) => via('revoke', [name, version, reason, operator], operator, () => backend.revoke(name, version, reason, operator)),
    createOperator: (name, role, csrPem, actor) => via('createOperator', [name, role, csrPem, actor], actor, () => backend.createOperator(name, role, csrPem, actor)),
    revokeOperator: (name, actor) => via('revokeOperator', [name, actor], actor, () => backend.revokeOperator(name, actor)),
    setOperatorRole: (name, role, actor) => via('setOperatorRole', [name, role, actor], actor, () => backend.setOperatorRole(name, role, actor)),
    removeAgent: (name, actor) => via('removeAgent', [name, actor], actor, () => backend.removeAgent(name, actor)),
    dryRun: (name, actor) => via('dryRun', [name, actor], actor, () => backend.dryRun(name, actor)),
    checkChallenges: (name) => via('checkChallenges', [name], '', () => backend.checkChallenges(name)),
  };
}

/**
 * Which OperatorBackend methods a follower hands to the leader, and what their arguments
 * look like on the wire.
 *
 * The rule (docs/architecture.md, "Several controllers: intents"): every method behind an
 * OperatorService call a `viewer` may not make (controller/access REQUIRED_ROLE) changes
 * the fleet, the store or the CA, so the leader carries it out. One exception: `ListOperators`
 * is admin-only but only reads the operator registry, which lives in the shared store, so
 * it stays local like every other read (status, certs, agents, show, history, budgets,
 * events, FollowEvents). test/unit/intents.test.ts checks this table against the role table.
 *
 * Every argument is plain JSON (strings, integers, booleans, string maps): nothing here
 * takes a function, so an intent carries exactly what the API handed the backend.
 */
import { z } from 'zod';
import { REQUIRED_ROLE, type OperatorMethod } from '../access/index.js';
import { AGENT_NAME_PATTERN } from '../../shared/wire/index.js';

const text = (max: number): z.ZodString => z.string().max(max);
const int = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
/** Operator names follow the agent naming rule (controller/access checks them the same way). */
export const operatorName = z.string().regex(AGENT_NAME_PATTERN, 'not a valid operator name');
const name = text(253);

/**
 * Each forwarded backend method: the OperatorService call it serves, its arguments, and
 * which argument names the operator (recorded as the event's actor). `checkChallenges`
 * takes no actor (the API does not pass one): its intents record the operator as ''.
 */
export const FORWARDED = {
  createEnrollmentToken: { rpc: 'CreateEnrollmentToken', args: z.tuple([name, z.record(text(253), text(253)), int, operatorName]), operator: (a: readonly unknown[]) => a[3] },
  renew: { rpc: 'RenewCertificate', args: z.tuple([name, z.strictObject({ cancel: z.boolean(), operator: operatorName })]), operator: (a: readonly unknown[]) => (a[1] as { operator?: unknown } | undefined)?.operator },
  rollback: { rpc: 'Rollback', args: z.tuple([name, int, operatorName]), operator: (a: readonly unknown[]) => a[2] },
  release: { rpc: 'Release', args: z.tuple([name, operatorName]), operator: (a: readonly unknown[]) => a[1] },
  revoke: { rpc: 'RevokeCertificate', args: z.tuple([name, int, text(64), operatorName]), operator: (a: readonly unknown[]) => a[3] },
  createOperator: { rpc: 'CreateOperator', args: z.tuple([name, text(32), text(16_384), operatorName]), operator: (a: readonly unknown[]) => a[3] },
  revokeOperator: { rpc: 'RevokeOperator', args: z.tuple([name, operatorName]), operator: (a: readonly unknown[]) => a[1] },
  setOperatorRole: { rpc: 'SetOperatorRole', args: z.tuple([name, text(32), operatorName]), operator: (a: readonly unknown[]) => a[2] },
  removeAgent: { rpc: 'RemoveAgent', args: z.tuple([name, operatorName]), operator: (a: readonly unknown[]) => a[1] },
  dryRun: { rpc: 'DryRun', args: z.tuple([name, operatorName]), operator: (a: readonly unknown[]) => a[1] },
  checkChallenges: { rpc: 'CheckChallenges', args: z.tuple([text(253)]), operator: () => '' },
} as const satisfies Record<string, { rpc: OperatorMethod; args: z.ZodType<unknown[]>; operator: (a: readonly unknown[]) => unknown }>;

/** A backend method the leader carries out for a follower. */
export type IntentMethod = keyof typeof FORWARDED;
export const INTENT_METHODS = Object.keys(FORWARDED) as IntentMethod[];

/** OperatorService calls that are admin-only yet only read: answered locally. */
export const LOCAL_NON_VIEWER_CALLS: readonly OperatorMethod[] = ['ListOperators'];

/** The weakest role `method` needs: the follower's API checked the caller has it before forwarding. */
export function roleFor(method: IntentMethod): (typeof REQUIRED_ROLE)[OperatorMethod] {
  return REQUIRED_ROLE[FORWARDED[method].rpc];
}

/** Why `args` are not valid for `method` (no values), or undefined when they are. */
export function argsProblem(method: IntentMethod, args: readonly unknown[], operator: string): string | undefined {
  if (!Object.hasOwn(FORWARDED, method)) return 'method: not one a follower forwards';
  const checked = FORWARDED[method].args.safeParse(args);
  if (!checked.success) return checked.error.issues.map((i) => `args[${i.path.join('.')}]: ${i.message}`).slice(0, 3).join('; ');
  if (FORWARDED[method].operator(args) !== operator) return 'operator: does not match the actor argument';
  return undefined;
}

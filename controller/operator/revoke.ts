/**
 * What the fleet does after a version is revoked at the CA (`certfleet revoke`): the
 * policy, as one pure decision. The operator module revokes, records the mark, then
 * carries the plan out (pins, desired pointer, the durable renewal request).
 *
 * A version is *usable* when it is neither revoked nor expired. The policy, for every
 * reason alike (a revoked certificate is refused by clients that check revocation,
 * whatever the reason; keyCompromise only makes it urgent):
 *
 *  1. Renew at once when the newest version is not usable: the work loop serves the
 *     newest version whenever nothing is pinned, so a revoked newest needs a successor.
 *     The request is the durable one of `certfleet renew` (renewals/<name>).
 *  2. When the fleet is asked to serve the revoked version (desired, the starting version
 *     of an unfinished rollout, or pinned), move it off now:
 *       a. to a usable version the operator pinned (another one), keeping that pin;
 *       b. else to the newest version if usable (a revoked pin is released; every agent
 *          at once, no waves: a rollout would leave later waves on the revoked version);
 *       c. else to the newest usable older version, pinned until the renewal of (1)
 *          lands (an issuance releases any pin);
 *       d. else nowhere: it was the only usable version, and the fleet keeps it until the
 *          renewal of (1) is issued (serving nothing would be an outage).
 *  3. A pin on the revoked version is released in every case.
 */
import type { VersionMeta } from '../../shared/model/index.js';

/** What {@link revocationPlan} looks at. */
export interface RevocationInput {
  /** The version being revoked. */
  version: number;
  /** Every stored version of the certificate. */
  versions: readonly VersionMeta[];
  /** Versions revoked at the CA, this one included. */
  revoked: ReadonlySet<number>;
  /** The desired pointer now (undefined: never published). */
  desired: { version: number; rolloutFrom?: number | undefined } | undefined;
  /** The version a rollback pin holds (0: none), whether or not it is revoked. */
  pinned: number;
  /** Epoch ms. */
  now: number;
}

/** What to do; `serve` 0 leaves the desired pointer as it is. */
export interface RevocationPlan {
  /** The fleet was asked to serve the revoked version. */
  served: boolean;
  /** Delete the pin: it holds the revoked version. */
  releasePin: boolean;
  /** The version to publish as desired now; 0: none. */
  serve: number;
  /** Publish `serve` pinned (until the renewal lands or an operator releases it). */
  pinServe: boolean;
  /** Record a durable renewal request now. */
  renew: boolean;
  /** One sentence for the operator and the event. */
  summary: string;
}

/** The decision (see the module comment). Pure. */
export function revocationPlan(input: RevocationInput): RevocationPlan {
  const { version, versions, revoked, desired, pinned, now } = input;
  // A plain boolean, not a type guard: a guard's false branch would narrow `newest` away.
  const usable = (v: VersionMeta | undefined): boolean => v !== undefined && !revoked.has(v.version) && Date.parse(v.notAfter) > now;
  const byVersion = [...versions].sort((a, b) => b.version - a.version);
  const newest = byVersion[0];
  const renew = !usable(newest);
  const served =
    desired !== undefined && (desired.version === version || desired.rolloutFrom === version) ? true : pinned === version;
  const releasePin = pinned === version;
  const renewNote = renew ? `; a renewal is requested now (v${newest?.version ?? 0} is not usable)` : '';

  if (!served) {
    return { served, releasePin, serve: 0, pinServe: false, renew, summary: `v${version} was not being served; nothing moved${renewNote}` };
  }
  const pinnedMeta = pinned !== 0 && pinned !== version ? versions.find((v) => v.version === pinned) : undefined;
  if (pinnedMeta !== undefined && usable(pinnedMeta)) {
    return { served, releasePin, serve: pinnedMeta.version, pinServe: true, renew, summary: `the fleet moves to v${pinnedMeta.version} (pinned by a rollback)${renewNote}` };
  }
  if (newest !== undefined && usable(newest)) {
    return { served, releasePin, serve: newest.version, pinServe: false, renew, summary: `the fleet moves to v${newest.version}, the newest version${renewNote}` };
  }
  const interim = byVersion.find((v) => v.version !== version && usable(v));
  if (interim) {
    return {
      served,
      releasePin,
      serve: interim.version,
      pinServe: true,
      renew,
      summary: `the fleet moves to v${interim.version}, pinned until the renewal is issued${renewNote}`,
    };
  }
  return {
    served,
    releasePin,
    serve: 0,
    pinServe: false,
    renew,
    summary: `v${version} was the only usable version: the fleet keeps it until the renewal is issued${renewNote}`,
  };
}

/**
 * The rule for "the same certificate names", used wherever the controller asks whether
 * two lists of DNS names describe the same certificate: the scheduler (configuration
 * changed?), the issuer (may a saved order be resumed?), the work loop (is this a renewal
 * that may carry ARI `replaces`?) and the certbot import (did a declaration change?).
 *
 * Before this module each kept its own helper and they disagreed: some compared case
 * sensitively, one compared sorted lists (so a duplicate counted). A certificate covers
 * a set of DNS names, and DNS names compare case-insensitively (RFC 4343) with the root's
 * trailing dot meaning nothing; CAs write SANs in lower case while configurations and
 * certbot files are typed by hand. So two lists are the same when, normalised by
 * shared/pki normalizeName (lower case, no trailing dot), they hold the same set: order
 * and repetition do not matter.
 */
import { normalizeName } from '../../shared/pki/index.js';

/** True when `a` and `b` name the same set of DNS names (rule in the module comment). */
export function sameNameSet(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a.map(normalizeName));
  const right = new Set(b.map(normalizeName));
  if (left.size !== right.size) return false;
  for (const n of right) if (!left.has(n)) return false;
  return true;
}

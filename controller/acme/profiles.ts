/**
 * Certificate profiles (draft-ietf-acme-profiles): whether the certificates' configured
 * profiles are ones the CA advertises. Pure: the caller reads the directory
 * (`AcmeClient.profiles()`) and decides what to do with the problems (the controller
 * refuses to start).
 *
 * A CA that advertises no profiles gets none asked of it: the draft says a client SHOULD
 * NOT request a profile the directory does not list, and a CA without the extension
 * ignores the field (RFC 8555 servers ignore unknown fields), so the certificate would
 * silently come out under the CA's default profile, not the one configured.
 */

/** One certificate's wish, as configured. */
export interface ProfileWish {
  /** The certificate's name (for the message). */
  name: string;
  /** The configured profile; undefined: none asked for (the CA's default). */
  profile?: string | undefined;
}

/**
 * One message per certificate whose profile `offered` (the directory's `meta.profiles`,
 * undefined when it has none) does not list, naming the certificate and what the CA
 * offers; empty when every wish can be met.
 */
export function profileProblems(offered: Readonly<Record<string, string>> | undefined, wishes: readonly ProfileWish[]): string[] {
  const names = offered === undefined ? [] : Object.keys(offered);
  const problems: string[] = [];
  for (const w of wishes) {
    if (w.profile === undefined || names.includes(w.profile)) continue;
    problems.push(
      names.length === 0
        ? `certificate ${w.name}: profile "${w.profile}" is set, but the CA advertises no profiles (its directory has no meta.profiles); remove the profile`
        : `certificate ${w.name}: profile "${w.profile}" is not offered by the CA (it offers: ${names.join(', ')})`,
    );
  }
  return problems;
}

/**
 * certbot's own file formats, parsed. Pure: text in, records out; nothing here reads a
 * file.
 *
 * A renewal configuration (`renewal/<lineage>.conf`) is written by certbot with
 * configobj: `key = value` lines at the top (the lineage's file paths), a
 * `[renewalparams]` section (how certbot renews: authenticator, server, key type, ...)
 * and, for webroot, a nested `[[webroot_map]]` (domain = directory). Lists are written
 * as `a, b,`; `#` starts a comment line. A DNS plugin's credentials file is a flat INI
 * without sections (`dns_rfc2136_server = 192.0.2.1`).
 */

/** One parsed renewal configuration. */
export interface RenewalConf {
  /** Top-level keys: `cert`, `privkey`, `chain`, `fullchain`, `archive_dir`, `version`. */
  top: Record<string, string>;
  /** `[renewalparams]`: `authenticator`, `server`, `key_type`, `rsa_key_size`, ... */
  params: Record<string, string>;
  /** `[[webroot_map]]` inside `[renewalparams]`: domain -> webroot directory. */
  webrootMap: Record<string, string>;
}

/**
 * Parses a renewal configuration. Unknown sections are ignored (certbot versions add
 * some); a line that is neither a comment, a section header nor `key = value` is
 * reported in the thrown Error's message with its line number.
 */
export function parseRenewalConf(text: string): RenewalConf {
  const conf: RenewalConf = { top: {}, params: {}, webrootMap: {} };
  let target: Record<string, string> | undefined = conf.top;
  let section = '';
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const sub = /^\[\[\s*([^\]]+?)\s*\]\]$/.exec(line);
    if (sub) {
      target = section === 'renewalparams' && sub[1] === 'webroot_map' ? conf.webrootMap : undefined;
      return;
    }
    const head = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (head) {
      section = head[1] ?? '';
      target = section === 'renewalparams' ? conf.params : undefined;
      return;
    }
    const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(line);
    if (!kv) throw new Error(`line ${i + 1}: not "key = value"`);
    if (target !== undefined) target[(kv[1] ?? '').trim()] = unquote((kv[2] ?? '').trim());
  });
  return conf;
}

/**
 * Parses a credentials INI file (`key = value` lines, `#` and `;` comments, optional
 * quotes). Later keys win, as in certbot.
 */
export function parseCredentialsIni(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';') || line.startsWith('[')) continue;
    const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(line);
    if (kv) out[(kv[1] ?? '').trim()] = unquote((kv[2] ?? '').trim());
  }
  return out;
}

/** configobj writes a one-element list as `value,`; quotes are optional. */
function unquote(value: string): string {
  const v = value.endsWith(',') ? value.slice(0, -1).trim() : value;
  if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))) return v.slice(1, -1);
  return v;
}

/**
 * The certfleet key type certbot would use at its next renewal, from `key_type`
 * (default `rsa` before certbot 2.0, `ecdsa` since; older files have no key_type and
 * were RSA), `rsa_key_size` (default 2048) and `elliptic_curve` (default secp256r1).
 * Returns the certbot spelling when certfleet has no such key type.
 */
export function renewalKeyType(params: Record<string, string>): { keyType: string; supported: boolean } {
  const kind = (params['key_type'] ?? 'rsa').toLowerCase();
  if (kind === 'ecdsa') {
    const curve = (params['elliptic_curve'] ?? 'secp256r1').toLowerCase();
    if (curve === 'secp256r1' || curve === 'prime256v1') return { keyType: 'ecdsa-p256', supported: true };
    if (curve === 'secp384r1') return { keyType: 'ecdsa-p384', supported: true };
    return { keyType: `ecdsa ${curve}`, supported: false };
  }
  const size = params['rsa_key_size'] ?? '2048';
  if (['2048', '3072', '4096'].includes(size)) return { keyType: `rsa-${size}`, supported: true };
  return { keyType: `rsa ${size}`, supported: false };
}

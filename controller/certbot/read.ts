/**
 * Reads a certbot configuration directory (`/etc/letsencrypt`): every renewal
 * configuration, the current certificate, chain and private key of its lineage, and
 * the credentials file of a `dns-rfc2136` lineage. Only reads; key material stays in
 * memory and is never logged.
 */
import { createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { parseCredentialsIni, parseRenewalConf, type RenewalConf } from './renewal.js';

/** One certbot lineage as found on disk. `problem` is set when it could not be read. */
export interface CertbotLineage {
  /** certbot's name for it: `renewal/<lineage>.conf`, `live/<lineage>/`. */
  lineage: string;
  renewalFile: string;
  conf: RenewalConf;
  /** The files read (the renewal configuration's paths, or `live/<lineage>/` when those are gone). */
  files: { cert: string; chain: string; privkey: string };
  certPem: string;
  /** Intermediates, leaf excluded. */
  chainPem: string;
  /** The private key as PKCS#8 PEM (certbot may have written PKCS#1 or SEC1). Secret. */
  keyPem: string;
  /** The `dns_rfc2136_credentials` file and its values, for `dns-rfc2136` lineages. Secret. */
  credentials?: { file: string; values: Record<string, string> } | undefined;
  /** Why this lineage cannot be used, when it cannot. */
  problem?: string;
}

/**
 * Reads every `renewal/*.conf` under `dir`, in name order. Throws CONFIG_UNREADABLE when
 * `dir` has no `renewal/` directory; a lineage whose files cannot be read is returned
 * with `problem` set, so that one broken lineage is reported with the others.
 */
export function readCertbotDir(dir: string): CertbotLineage[] {
  const renewalDir = path.join(dir, 'renewal');
  let entries: string[];
  try {
    entries = fs.readdirSync(renewalDir);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new CertfleetError(ErrorCode.ConfigUnreadable, `cannot read ${renewalDir} (${reason}): not a certbot configuration directory (certbot's --config-dir, usually /etc/letsencrypt)`, {
      cause: err,
      details: { file: renewalDir },
    });
  }
  return entries
    .filter((f) => f.endsWith('.conf'))
    .sort()
    .map((f) => readLineage(dir, f.slice(0, -'.conf'.length), path.join(renewalDir, f)));
}

function readLineage(dir: string, lineage: string, renewalFile: string): CertbotLineage {
  const empty: CertbotLineage = {
    lineage,
    renewalFile,
    conf: { top: {}, params: {}, webrootMap: {} },
    files: { cert: '', chain: '', privkey: '' },
    certPem: '',
    chainPem: '',
    keyPem: '',
  };
  let conf: RenewalConf;
  try {
    conf = parseRenewalConf(fs.readFileSync(renewalFile, 'utf8'));
  } catch (err) {
    return { ...empty, problem: `cannot read ${renewalFile}: ${(err as Error).message}` };
  }
  // The renewal configuration's paths first (they are what certbot serves from); the
  // lineage's place in `dir` when they are gone (a copy of /etc/letsencrypt elsewhere).
  const pick = (key: string, file: string): string => {
    const configured = conf.top[key];
    if (configured !== undefined && configured !== '' && fs.existsSync(configured)) return configured;
    return path.join(dir, 'live', lineage, file);
  };
  const files = { cert: pick('cert', 'cert.pem'), chain: pick('chain', 'chain.pem'), privkey: pick('privkey', 'privkey.pem') };
  const base = { ...empty, conf, files };
  let certPem: string;
  let chainPem: string;
  let keyText: string;
  try {
    certPem = fs.readFileSync(files.cert, 'utf8');
    keyText = fs.readFileSync(files.privkey, 'utf8');
    chainPem = fs.existsSync(files.chain) ? fs.readFileSync(files.chain, 'utf8') : chainFromFullchain(pick('fullchain', 'fullchain.pem'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { ...base, problem: `cannot read ${e.path ?? 'a file'} (${e.code ?? e.message})` };
  }
  let keyPem: string;
  try {
    keyPem = createPrivateKey(keyText).export({ type: 'pkcs8', format: 'pem' }).toString();
  } catch {
    // The error text of a key parse can quote parts of the key: say only which file.
    return { ...base, certPem, chainPem, problem: `${files.privkey} is not a private key certfleet can read` };
  }
  const result: CertbotLineage = { ...base, certPem, chainPem, keyPem };
  if (conf.params['authenticator'] === 'dns-rfc2136') {
    const configured = conf.params['dns_rfc2136_credentials'];
    if (configured === undefined || configured === '') return { ...result, problem: 'dns-rfc2136 without dns_rfc2136_credentials in its renewal configuration' };
    const file = moved(configured, conf.params['config_dir'], dir);
    try {
      result.credentials = { file, values: parseCredentialsIni(fs.readFileSync(file, 'utf8')) };
    } catch (err) {
      return { ...result, problem: `cannot read the dns-rfc2136 credentials ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})` };
    }
  }
  return result;
}

/**
 * `file` as it is found in a copy of certbot's directory: a path under certbot's own
 * `config_dir` that does not exist here is looked up at the same place under `dir`.
 */
function moved(file: string, configDir: string | undefined, dir: string): string {
  if (fs.existsSync(file) || configDir === undefined || configDir === '') return file;
  const rel = path.relative(configDir, file);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return file;
  const there = path.join(dir, rel);
  return fs.existsSync(there) ? there : file;
}

/** The intermediates of a fullchain file: everything after its first certificate. */
function chainFromFullchain(file: string): string {
  const blocks = fs.readFileSync(file, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  return blocks
    .slice(1)
    .map((b) => `${b}\n`)
    .join('');
}

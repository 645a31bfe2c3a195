/**
 * The part of the AWS standard credential chain that can work on a controller host,
 * in the order AWS documents it:
 *
 * 1. a `profile` named in certfleet's configuration skips the environment (as `--profile`
 *    does for the AWS CLI);
 * 2. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN;
 * 3. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials),
 *    section `[<profile>]`, profile from AWS_PROFILE or `default`;
 * 4. the shared config file (AWS_CONFIG_FILE, default ~/.aws/config), section
 *    `[profile <profile>]` (or `[default]`), keys aws_access_key_id ... there.
 *
 * Not supported (say so in docs/dns01.md): SSO, assume-role and credential_process
 * profiles, the ECS container endpoint and EC2 instance metadata (IMDS), none of which can
 * be reached or tested from here. The files are read again for every request, so a
 * rotated credentials file is picked up without a restart.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { AwsCredentials } from './sigv4.js';

export interface AwsCredentialSource {
  /** Named profile; when set, the environment's keys are not used. */
  profile?: string;
  /** Overrides AWS_SHARED_CREDENTIALS_FILE / ~/.aws/credentials. */
  credentialsFile?: string;
}

export type AwsCredentialResult = { credentials: AwsCredentials; source: string } | { problem: string };

/** Parses an INI file into sections of lower-cased keys. */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (head) {
      current = new Map();
      sections.set(head[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current && eq > 0) current.set(line.slice(0, eq).trim().toLowerCase(), line.slice(eq + 1).trim());
  }
  return sections;
}

function fromSection(s: Map<string, string> | undefined): AwsCredentials | undefined {
  const id = s?.get('aws_access_key_id');
  const secret = s?.get('aws_secret_access_key');
  if (!id || !secret) return undefined;
  const token = s?.get('aws_session_token');
  return { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) };
}

function readIfThere(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Walks the chain; `problem` says what was looked at when nothing was found (never a secret). */
export function resolveAwsCredentials(env: NodeJS.ProcessEnv, src: AwsCredentialSource = {}): AwsCredentialResult {
  if (src.profile === undefined) {
    const id = env['AWS_ACCESS_KEY_ID'];
    const secret = env['AWS_SECRET_ACCESS_KEY'];
    if (id && secret) {
      const token = env['AWS_SESSION_TOKEN'];
      return { credentials: { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) }, source: 'environment' };
    }
  }
  const profile = src.profile ?? (env['AWS_PROFILE'] || 'default');
  const home = env['HOME'] ?? '';
  const credFile = src.credentialsFile ?? (env['AWS_SHARED_CREDENTIALS_FILE'] || path.join(home, '.aws', 'credentials'));
  const configFile = env['AWS_CONFIG_FILE'] || path.join(home, '.aws', 'config');
  try {
    const creds = readIfThere(credFile);
    const fromCreds = creds === undefined ? undefined : fromSection(parseIni(creds).get(profile));
    if (fromCreds) return { credentials: fromCreds, source: `${credFile} [${profile}]` };
    const config = readIfThere(configFile);
    if (config !== undefined) {
      const sections = parseIni(config);
      const fromConfig = fromSection(sections.get(profile === 'default' ? 'default' : `profile ${profile}`));
      if (fromConfig) return { credentials: fromConfig, source: `${configFile} [profile ${profile}]` };
    }
  } catch (err) {
    return { problem: `cannot read AWS credentials: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  return {
    problem: `no AWS credentials: ${src.profile === undefined ? 'AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set, ' : ''}no keys for profile "${profile}" in ${credFile} or ${configFile} (instance metadata, SSO and assume-role are not supported)`,
  };
}

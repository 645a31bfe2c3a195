/**
 * `certfleet import-certbot`: an offline migration run against the controller's own
 * configuration and store. It reads certbot's lineages, decides (plan.ts), checks the
 * merged configuration with the controller's schema and the store for versions already
 * there, and only when every selected lineage can be taken writes: the rfc2136 secrets
 * (0600), each certificate as a new version (normally version 1) with an `imports/<name>`
 * record, and the merged configuration. Nothing is written when anything is refused,
 * and nothing at all with `dryRun`.
 *
 * Offline rather than an RPC: a migration runs once, on the controller's machine, and
 * the private keys then never cross the network. The store's compare-and-set makes a
 * controller running at the same time harmless (a version it stored first makes the
 * import of that name refuse), but the controller only picks up the new declarations
 * when it is (re)started with the merged configuration.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import { writeFileAtomic } from '../../shared/files/index.js';
import type { Logger } from '../../shared/log/index.js';
import { issuersOf, parseControllerConfig, storeConfigOf, type ControllerConfig } from '../config/index.js';
import { plannedRenewal } from '../scheduler/index.js';
import { ObjectKey, openStore, type CertStore } from '../store/index.js';
import { parseTsigSecret } from '../solvers/dns01/index.js';
import { planImport, type PlannedImport, type PlannedProvider } from './plan.js';
import { readCertbotDir } from './read.js';
import { mergeDeclarations, readConfigDocument } from './yaml.js';

/**
 * The store object recording that a version came from certbot. The ARI tracker reads
 * it: an imported certificate was ordered by certbot's ACME account, and a CA may refuse
 * a `replaces` naming another account's certificate (Let's Encrypt does), so imported
 * versions renew by the lifetime rule, not by ARI.
 */
export interface ImportRecord {
  version: number;
  fingerprint: string;
  source: 'certbot';
  lineage: string;
  /** The ACME directory certbot used. */
  server: string;
  authenticator: string;
  importedAt: string;
}

/** Store key of a certificate's {@link ImportRecord}. */
export function importRecordKey(name: string): string {
  return ObjectKey.importRecord(name);
}

export interface ImportOptions {
  /** certbot's --config-dir, e.g. /etc/letsencrypt. */
  certbotDir: string;
  /** The controller's configuration file (its store and the declarations to merge into). */
  configFile: string;
  /** Label selector for every imported certificate's `agents`. */
  agents: string;
  /** Lineages to import (default all). */
  only: readonly string[];
  /** lineage -> certificate name. */
  renames: Readonly<Record<string, string>>;
  /** Where to write the merged configuration; undefined: only returned (the CLI prints it). */
  out: string | undefined;
  dryRun: boolean;
  force: boolean;
  now: number;
  /** For `${VAR}` in the configuration (the controller's config module hands it out). */
  env: NodeJS.ProcessEnv;
  log: Logger;
}

export interface ImportOutcome {
  /** The merged controller configuration. */
  yaml: string;
  /** What was done (or, with dryRun, would be done), one line each, for people. */
  lines: string[];
  imported: Array<{ name: string; lineage: string; version: number; fingerprint: string }>;
}

interface Step {
  imp: PlannedImport;
  /** The version to write is expectedLatest + 1; undefined: already in the store. */
  expectedLatest: number | undefined;
  existing?: number;
}

/** Runs the import (module comment). Throws IMPORT_REFUSED listing every refused lineage. */
export async function importCertbot(opts: ImportOptions): Promise<ImportOutcome> {
  const lineages = readCertbotDir(opts.certbotDir);
  if (lineages.length === 0) {
    throw new CertfleetError(ErrorCode.ImportRefused, `no renewal configurations in ${path.join(opts.certbotDir, 'renewal')}: nothing to import`);
  }
  let text: string;
  try {
    text = fs.readFileSync(opts.configFile, 'utf8');
  } catch (err) {
    throw new CertfleetError(ErrorCode.ConfigUnreadable, `cannot read ${opts.configFile} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  const existing = readConfigDocument(text, opts.configFile);
  const plan = planImport(lineages, {
    only: opts.only,
    renames: opts.renames,
    agents: opts.agents,
    existingCertificates: existing.certificates,
    existingProviders: existing.providers,
    force: opts.force,
    now: opts.now,
  });
  const refusals = plan.refusals.map((r) => `${r.lineage}: ${r.reason}`);

  // The controller's own schema decides: once with a stand-in secret path to learn the
  // state directory, then with the real paths.
  let probe: Readonly<ControllerConfig>;
  try {
    probe = parseControllerConfig(mergeDeclarations(text, opts.configFile, plan, () => '/nonexistent'), opts.configFile, opts.env);
  } catch (err) {
    // With every lineage refused, a configuration without certificates is invalid too:
    // the refusals are the news.
    if (refusals.length === 0) throw err;
    throw refused([...refusals, `the merged configuration: ${(err as Error).message}`]);
  }
  const secretFile = (provider: string): string => path.join(probe.stateDir, 'dns01', `${provider}.tsig`);
  const yaml = mergeDeclarations(text, opts.configFile, plan, secretFile);
  const cfg = parseControllerConfig(yaml, opts.configFile, opts.env);

  for (const p of plan.providers) {
    const problem = secretClash(secretFile(p.name), p);
    if (problem !== undefined) refusals.push(`${p.source}: ${problem}`);
  }

  // Read-only until every check passed: a file store that does not exist yet is empty
  // (opening it would create its directory) and is created only to write.
  let store = await existingStore(cfg, opts.log);
  const steps: Step[] = [];
  try {
    for (const imp of plan.imports) {
      const name = imp.declaration.name;
      const latest = store ? await store.latest(name) : null;
      if (latest === null) {
        steps.push({ imp, expectedLatest: 0 });
      } else if (latest.fingerprint === imp.input.meta.fingerprint) {
        steps.push({ imp, expectedLatest: undefined, existing: latest.version });
      } else if (opts.force) {
        steps.push({ imp, expectedLatest: latest.version });
      } else {
        refusals.push(`${imp.lineage}: the store already has versions of "${name}" (latest v${latest.version}, not this certificate); --force stores the certbot certificate as v${latest.version + 1}, which agents then serve`);
      }
    }
    if (refusals.length > 0) throw refused(refusals);

    const lines: string[] = [];
    // Past tense for what was done, "would" for a dry run.
    const verb = (done: string, planned: string): string => (opts.dryRun ? `would ${planned}` : done);
    const imported: ImportOutcome['imported'] = [];
    if (!opts.dryRun) {
      for (const p of plan.providers) await writeSecret(secretFile(p.name), p);
      if (steps.some((st) => st.expectedLatest !== undefined)) store ??= await openStore(storeConfigOf(cfg), opts.log);
    }
    for (const p of plan.providers) lines.push(`dns01 provider ${p.name}: ${verb('added', 'add')} rfc2136 ${p.server} key ${p.keyName}, secret ${opts.dryRun ? 'to' : 'in'} ${secretFile(p.name)} (0600)`);
    for (const step of steps) {
      const { imp } = step;
      const name = imp.declaration.name;
      const meta = imp.input.meta;
      const renew = new Date(plannedRenewal({ name, serial: meta.serial, notBefore: Date.parse(meta.notBefore), notAfter: Date.parse(meta.notAfter) }, undefined, cfg.renewal.spread).at).toISOString();
      const how = `${imp.authenticator} -> ${imp.declaration.challenge}${imp.declaration.dnsProvider ? ` via ${imp.declaration.dnsProvider}` : ''}`;
      if (step.expectedLatest === undefined) {
        lines.push(`${name}: already in the store as v${step.existing ?? 0} (lineage ${imp.lineage}, ${how}); declaration kept`);
        continue;
      }
      const version = step.expectedLatest + 1;
      if (store !== undefined && !opts.dryRun) {
        // The record first: it names the fingerprint, so a crash before the version is
        // stored leaves a record that matches nothing.
        const record: ImportRecord = {
          version,
          fingerprint: meta.fingerprint,
          source: 'certbot',
          lineage: imp.lineage,
          server: imp.server,
          authenticator: imp.authenticator,
          importedAt: new Date(opts.now).toISOString(),
        };
        await store.putObject(importRecordKey(name), record);
        await store.putVersion(name, imp.input, step.expectedLatest);
      }
      imported.push({ name, lineage: imp.lineage, version, fingerprint: meta.fingerprint });
      lines.push(`${name}: ${verb('imported', 'import')} as v${version} from lineage ${imp.lineage} (${how}; fingerprint ${meta.fingerprint.slice(0, 12)}, expires ${meta.notAfter}, renewal from ${renew})`);
      if (name !== imp.lineage) {
        lines.push(`  note: the agent's live tree names it live/${name}; keep paths written for live/${imp.lineage} with: ln -s ${name} <live dir>/${imp.lineage}`);
      }
      const directoryUrl = issuersOf(cfg)[0]?.directoryUrl ?? '';
      if (imp.server !== '' && imp.server !== directoryUrl) {
        lines.push(`  note: certbot renewed it from ${imp.server}; certfleet renews from ${directoryUrl}`);
      }
      for (const n of imp.notes) lines.push(`  note: ${n}`);
    }
    if (opts.out !== undefined) {
      if (!opts.dryRun) await writeConfig(opts.out, yaml);
      lines.push(`${verb('wrote', 'write')} the controller configuration to ${opts.out}`);
    }
    return { yaml, lines, imported };
  } finally {
    await store?.close();
  }
}


/** The store opened as the controller would, or undefined for a file store whose directory does not exist yet. */
async function existingStore(cfg: Readonly<ControllerConfig>, log: Logger): Promise<CertStore | undefined> {
  const config = storeConfigOf(cfg);
  if (config.type === 'file' && !fs.existsSync(config.path)) return undefined;
  return openStore(config, log);
}

function refused(reasons: string[]): CertfleetError {
  return new CertfleetError(ErrorCode.ImportRefused, `nothing imported; refused:\n${reasons.map((r) => `  ${r}`).join('\n')}`, {
    details: { refused: reasons.length },
  });
}

/** Why an existing secret file must not be overwritten, if it must not. */
function secretClash(file: string, p: PlannedProvider): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const have = parseTsigSecret(text);
  const want = Buffer.from(p.secret, 'base64');
  return have !== null && have.equals(want) ? undefined : `${file} exists with another secret; move it away or name the provider in the configuration yourself`;
}

async function writeSecret(file: string, p: PlannedProvider): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, `${p.secret}\n`, 0o600);
}

/** A new file is 0644 (no secrets in it); an existing one keeps its mode (often 0640). */
async function writeConfig(file: string, text: string): Promise<void> {
  let mode = 0o644;
  try {
    mode = fs.statSync(file).mode & 0o777;
  } catch {
    // new file
  }
  await writeFileAtomic(file, text, mode);
}

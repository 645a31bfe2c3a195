/**
 * The controller configuration file as the importer edits it: the operator's YAML with
 * its comments and layout kept, the imported certificate declarations appended to
 * `certificates` and the rfc2136 providers added under `dns01.providers`. Pure text in,
 * text out; the result is validated by the controller's own schema before anything
 * is written (import.ts).
 */
import { isMap, isSeq, parseDocument, type Document, YAMLMap, YAMLSeq } from 'yaml';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { ExistingDeclaration, ExistingProvider, Plan } from './plan.js';
import { sameNameSet } from '../names/index.js';

/** The parsed file and what it already declares. */
export interface ConfigDocument {
  doc: Document;
  certificates: ExistingDeclaration[];
  providers: Record<string, ExistingProvider>;
}

/** Parses the controller configuration text; CONFIG_INVALID when it is not YAML. */
export function readConfigDocument(text: string, file: string): ConfigDocument {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    throw new CertfleetError(ErrorCode.ConfigInvalid, `invalid configuration ${file}: ${doc.errors.map((e) => e.message).join('; ')}`, { details: { file } });
  }
  const raw = (doc.toJS() ?? {}) as Record<string, unknown>;
  const certificates: ExistingDeclaration[] = [];
  if (Array.isArray(raw['certificates'])) {
    for (const c of raw['certificates'] as unknown[]) {
      const o = (c ?? {}) as Record<string, unknown>;
      if (typeof o['name'] === 'string') certificates.push({ name: o['name'], names: Array.isArray(o['names']) ? o['names'].map(String) : [] });
    }
  }
  const providers: Record<string, ExistingProvider> = {};
  const p = ((raw['dns01'] ?? {}) as Record<string, unknown>)['providers'];
  if (p !== null && typeof p === 'object') {
    for (const [name, v] of Object.entries(p as Record<string, Record<string, unknown>>)) {
      const str = (k: string): string | undefined => (typeof v[k] === 'string' ? v[k] : undefined);
      providers[name] = { type: str('type') ?? '', ...(str('server') ? { server: str('server') } : {}), ...(str('keyName') ? { keyName: str('keyName') } : {}), ...(str('algorithm') ? { algorithm: str('algorithm') } : {}) };
    }
  }
  return { doc, certificates, providers };
}

/**
 * The configuration text with the plan's declarations and providers added.
 * A certificate already declared with the same name is left as it is when its names
 * are the same, and replaced otherwise (the plan refused that unless --force).
 * `secretFile(provider)` is where that provider's TSIG secret is (or will be) written.
 */
export function mergeDeclarations(text: string, file: string, plan: Plan, secretFile: (provider: string) => string): string {
  const { doc } = readConfigDocument(text, file);
  let seq = doc.get('certificates', true);
  if (!isSeq(seq)) {
    seq = new YAMLSeq();
    doc.set('certificates', seq);
  }
  const certs = seq as YAMLSeq;
  // A flow sequence (`certificates: []`) cannot carry the comments added below.
  certs.flow = false;
  for (const imp of plan.imports) {
    const d = imp.declaration;
    const index = certs.items.findIndex((item) => isMap(item) && item.get('name') === d.name);
    const node = doc.createNode({
      name: d.name,
      names: d.names,
      keyType: d.keyType,
      agents: d.agents,
      challenge: d.challenge,
      ...(d.dnsProvider === undefined ? {} : { dnsProvider: d.dnsProvider }),
    }) as YAMLMap;
    node.commentBefore = ` imported from certbot lineage ${imp.lineage} (${imp.renewalFile}, authenticator ${imp.authenticator})`;
    const names = node.get('names', true);
    if (isSeq(names)) names.flow = true;
    if (index < 0) {
      certs.items.push(node);
    } else {
      const old = certs.items[index];
      const oldNames = isMap(old) ? (old.toJSON() as { names?: unknown }).names : undefined;
      if (!(Array.isArray(oldNames) && sameNameSet(oldNames.map(String), d.names))) certs.items[index] = node;
    }
  }
  for (const p of plan.providers) {
    const got: unknown = doc.get('dns01', true);
    let section: YAMLMap;
    if (isMap(got)) {
      section = got;
    } else {
      section = new YAMLMap();
      doc.set('dns01', section);
    }
    section.flow = false;
    const found: unknown = section.get('providers', true);
    let map: YAMLMap;
    if (isMap(found)) {
      map = found;
    } else {
      map = new YAMLMap();
      section.set('providers', map);
    }
    map.flow = false;
    const node = doc.createNode({ type: 'rfc2136', server: p.server, keyName: p.keyName, algorithm: p.algorithm, secretFile: secretFile(p.name) }) as YAMLMap;
    node.commentBefore = ` from certbot's ${p.source}; the secret was copied to secretFile (0600)`;
    map.set(p.name, node);
  }
  return doc.toString({ lineWidth: 0 });
}


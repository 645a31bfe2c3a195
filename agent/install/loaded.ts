/**
 * The "loaded" marker: `<stateDir>/certs/<name>/loaded.json` records the last version of
 * a certificate whose install completed — `current` named it, its reload hook succeeded
 * and its endpoints (if any) served it. It is what lets a restarted agent tell "installed
 * and loaded" from "written but never loaded" (issue #8: an agent killed between the
 * `current` swap and its hook came back reporting a version nginx did not serve).
 *
 * Written atomically (shared/files) after the fact; removed before `current` is switched
 * to the version it names (a rollback to it), because from then on that switch is again
 * not known to be loaded. A missing or unreadable marker means "not known": the agent
 * then reruns the hook, which is always safe.
 */
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir, writeFileReplace } from '../../shared/files/index.js';
import type { VersionMeta } from '../../shared/model/index.js';

const FILE = 'loaded.json';

/** The content of the marker. */
export interface LoadedMarker {
  version: number;
  fingerprint: string;
  /** When the install completed (RFC 3339), for people reading the file. */
  at: string;
}

/** The marker under `certDir` (`<stateDir>/certs/<name>`), or null when absent or unreadable. */
export function readLoaded(certDir: string): LoadedMarker | null {
  let text: string;
  try {
    text = fsSync.readFileSync(path.join(certDir, FILE), 'utf8');
  } catch {
    return null;
  }
  try {
    const v = JSON.parse(text) as Partial<LoadedMarker> | null;
    if (v && Number.isSafeInteger(v.version) && typeof v.fingerprint === 'string' && typeof v.at === 'string') {
      return { version: v.version as number, fingerprint: v.fingerprint, at: v.at };
    }
  } catch {
    // A torn or edited file: treated as absent (the hook runs again).
  }
  return null;
}

/**
 * Records `meta` as loaded (0644: public facts). Atomic (renamed into place) but not
 * fsynced: a marker lost or emptied by a crash reads as absent, and the agent then runs
 * the hook once more, which is always safe; the marker can never wrongly claim a load,
 * because it is written only after the load and removed durably ({@link clearLoaded})
 * before `current` is switched to the version it names. Two fsyncs per installed
 * version saved (issue #13). A later fsync of the same directory (the next install's
 * `current` swap) makes it durable anyway.
 */
export function writeLoaded(certDir: string, meta: VersionMeta, at: string): void {
  const marker: LoadedMarker = { version: meta.version, fingerprint: meta.fingerprint, at };
  writeFileReplace(path.join(certDir, FILE), JSON.stringify(marker) + '\n', 0o644);
}

/** Removes the marker durably (absent is fine): done before the switch it would misdescribe. */
export async function clearLoaded(certDir: string): Promise<void> {
  const file = path.join(certDir, FILE);
  try {
    await fs.access(file);
  } catch {
    return;
  }
  await fs.rm(file, { force: true });
  await fsyncDir(certDir);
}

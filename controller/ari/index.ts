/**
 * ACME Renewal Information (RFC 9773) as the work loop sees it: for the version agents
 * serve, the CA's suggested renewal window, polled at the CA's Retry-After (clamped to
 * 1 h – 7 d by controller/acme) and remembered in the store (`ari/<name>`) together with
 * the seed that picks one instant inside the window, so a restart neither polls again
 * early nor reshuffles the instant.
 *
 * Without a `renewalInfo` URL in the CA's directory (Debian's Pebble has none) this
 * returns nothing and the scheduler falls back to the lifetime rule. So it does for a
 * version imported from certbot (`certfleet import-certbot`): certbot's ACME account
 * ordered it, and a CA may refuse a `replaces` naming another account's certificate
 * (Let's Encrypt does), which would fail every renewal of it. The next version, issued
 * by this controller, uses ARI again.
 */
import crypto from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../../shared/clock/index.js';
import { isCertfleetError } from '../../shared/errors/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { ariCertId, type AcmeClient } from '../acme/index.js';
import type { AriWindow } from '../scheduler/index.js';
import { ObjectKey, type CertStore } from '../store/index.js';
import { importRecordKey, type ImportRecord } from '../certbot/index.js';

/** What the scheduler needs, plus the identifier a renewal order `replaces`. */
export interface AriInput {
  window: AriWindow;
  seed: number;
  certId: string;
}

interface AriRecord {
  version: number;
  /** The version was imported (not ordered by this controller's account): no ARI for it. */
  imported?: boolean;
  certId: string;
  seed: number;
  window: AriWindow | null;
  nextPollAt: number;
}

const FALLBACK_RETRY_MS = 3_600_000;

export class AriTracker {
  private offered: boolean | undefined;

  constructor(
    private readonly store: CertStore,
    private readonly acme: AcmeClient,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** The ARI window for `meta`, polling the CA when due; undefined without ARI. Never throws. */
  async forVersion(meta: VersionMeta): Promise<AriInput | undefined> {
    try {
      if (this.offered === undefined) this.offered = (await this.acme.renewalInfoUrl()) !== undefined;
      if (!this.offered) return undefined;
      const key = ObjectKey.ari(meta.name);
      let rec = await this.store.getObject<AriRecord>(key);
      if (!rec || rec.version !== meta.version) {
        const bundle = await this.store.getVersion(meta.name, meta.version);
        if (!bundle) return undefined;
        rec = { version: meta.version, certId: ariCertId(bundle.certPem), seed: crypto.randomInt(0, 2 ** 31) / 2 ** 31, window: null, nextPollAt: 0 };
        // Read once per version, then remembered in the ARI record.
        const imported = await this.store.getObject<ImportRecord>(importRecordKey(meta.name));
        if (imported?.version === meta.version && imported.fingerprint === meta.fingerprint) {
          rec = { ...rec, imported: true };
          await this.store.putObject(key, rec);
          this.log.info({ cert: meta.name, version: meta.version }, 'renewal info skipped for an imported version');
        }
      }
      if (rec.imported === true) return undefined;
      const now = this.clock.now();
      // RFC 9773: no polling for a certificate that has expired.
      if (now >= rec.nextPollAt && now < Date.parse(meta.notAfter)) {
        try {
          const info = await this.acme.getRenewalInfo(rec.certId);
          rec = { ...rec, window: info.window, nextPollAt: now + info.retryAfterMs };
          this.log.info({ cert: meta.name, version: meta.version, start: new Date(info.window.start).toISOString(), end: new Date(info.window.end).toISOString() }, 'renewal window');
        } catch (err) {
          const retry = isCertfleetError(err) && err.retryAfterMs !== undefined ? err.retryAfterMs : FALLBACK_RETRY_MS;
          rec = { ...rec, nextPollAt: now + retry };
          this.log.warn({ cert: meta.name, err: (err as Error).message }, 'renewal info unavailable');
        }
        await this.store.putObject(key, rec);
      }
      return rec.window ? { window: rec.window, seed: rec.seed, certId: rec.certId } : undefined;
    } catch (err) {
      this.log.warn({ cert: meta.name, err: (err as Error).message }, 'renewal info skipped');
      return undefined;
    }
  }
}

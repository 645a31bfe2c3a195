/**
 * What deserves a notification: pure rules over fleet events, agent reports and
 * certificate summaries. An operator is told when something will not heal by itself
 * soon, not about every retry:
 *
 * | kind               | when                                                                  |
 * |--------------------|-----------------------------------------------------------------------|
 * | renewal-failed     | an issuance failed `afterFailures` times in a row, or cannot be retried |
 * | install-failed     | an agent reports a version failed (hook, install, verification), rolled back or not |
 * | last-third         | a certificate's newest version entered the last third of its life      |
 * | budget-exhausted   | an order was deferred because a rate-limit budget is empty              |
 *
 * Each notification has a `dedupKey`: the same key is sent once per de-duplication window,
 * so a certificate failing every ten minutes does not page every ten minutes.
 */
import type { FleetEvent } from '../../shared/model/index.js';
import { EventType } from '../../shared/wire/index.js';

export const NOTIFICATION_KINDS = ['renewal-failed', 'install-failed', 'last-third', 'budget-exhausted'] as const;
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];

export interface Notification {
  kind: NotificationKind;
  severity: 'warning' | 'critical';
  /** One line for people. Never holds key material or credentials. */
  summary: string;
  cert?: string;
  agent?: string;
  version?: number;
  /** RFC 3339: when it happened. */
  at: string;
  details: Record<string, unknown>;
  /** Same key, same alert: sent once per de-duplication window. */
  dedupKey: string;
}

export interface ClassifyOptions {
  /** Consecutive failures before renewal-failed is sent; default 3. */
  afterFailures: number;
}

export const DEFAULT_AFTER_FAILURES = 3;

/** The notification a fleet event calls for, if any. */
export function fromEvent(event: FleetEvent, opts: ClassifyOptions): Notification | undefined {
  const details = event.details ?? {};
  if (event.type === EventType.failed) {
    const failures = typeof details['failures'] === 'number' ? details['failures'] : 1;
    const retryable = details['retryable'] !== false;
    if (retryable && failures < opts.afterFailures) return undefined;
    return {
      kind: 'renewal-failed',
      severity: 'critical',
      summary: `renewal of ${event.cert ?? '?'} failed ${failures} time${failures === 1 ? '' : 's'}${retryable ? '' : ' and will not be retried'}: ${event.message}`,
      ...(event.cert === undefined ? {} : { cert: event.cert }),
      at: event.at,
      details: pick(details, ['code', 'retryable', 'failures', 'retryAt']),
      // One alert per certificate and error code: a new kind of failure is news.
      dedupKey: `renewal-failed/${event.cert ?? '-'}/${typeof details['code'] === 'string' ? details['code'] : ''}`,
    };
  }
  if (event.type === EventType.deferred) {
    // `limits`: the budgets that said no (controller/budget), e.g. ["newOrders"].
    const limits = Array.isArray(details['limits']) ? (details['limits'] as unknown[]).map(String).sort().join('+') : 'budget';
    return {
      kind: 'budget-exhausted',
      severity: 'warning',
      summary: `order for ${event.cert ?? '?'} deferred: ${event.message}`,
      ...(event.cert === undefined ? {} : { cert: event.cert }),
      at: event.at,
      details: pick(details, ['limits', 'until']),
      // Per exhausted budget, not per certificate: a storm deferred by one empty bucket is one alert.
      dedupKey: `budget-exhausted/${limits}`,
    };
  }
  return undefined;
}

/** What the notifier needs of one certificate as an agent reported it. */
export interface ReportedCertificate {
  name: string;
  state: string;
  version: number;
  desiredVersion: number;
  failedVersion: number;
  error: string;
  errorCode: string;
  rollback: string;
}

/**
 * The notification an agent report calls for: a certificate the agent reports `failed`
 * that it did not report failed (for that version) last time.
 */
export function fromReport(agent: string, before: ReportedCertificate | undefined, now: ReportedCertificate, at: string): Notification | undefined {
  if (now.state !== 'failed') return undefined;
  const failedVersion = now.failedVersion || now.desiredVersion;
  if (before?.state === 'failed' && (before.failedVersion || before.desiredVersion) === failedVersion) return undefined;
  const rolledBack = now.rollback === 'restored' ? `; version ${now.version} serves again` : now.rollback === 'restore-failed' ? '; restoring the previous version failed too' : '';
  return {
    kind: 'install-failed',
    severity: now.rollback === 'restore-failed' ? 'critical' : 'warning',
    summary: `${agent} could not install ${now.name} v${failedVersion}: ${now.error || now.errorCode}${rolledBack}`,
    cert: now.name,
    agent,
    version: failedVersion,
    at,
    details: { code: now.errorCode, rollback: now.rollback || 'none', servedVersion: now.version },
    dedupKey: `install-failed/${agent}/${now.name}/${failedVersion}`,
  };
}

/** What the notifier needs of a certificate's newest version. */
export interface CertificateLife {
  name: string;
  version: number;
  notBefore: number;
  notAfter: number;
}

/**
 * last-third when the newest version has less than a third of its life left at `now`:
 * the scheduler renews at two thirds, so reaching this point means renewal has not
 * succeeded. Once per version.
 */
export function fromLife(cert: CertificateLife, now: number): Notification | undefined {
  const lifetime = cert.notAfter - cert.notBefore;
  if (lifetime <= 0) return undefined;
  const left = cert.notAfter - now;
  if (left > lifetime / 3) return undefined;
  const expired = left <= 0;
  return {
    kind: 'last-third',
    severity: expired || left < lifetime / 10 ? 'critical' : 'warning',
    summary: expired
      ? `${cert.name} v${cert.version} has expired and no renewal succeeded`
      : `${cert.name} v${cert.version} expires ${new Date(cert.notAfter).toISOString()} and has not been renewed (${Math.round((100 * left) / lifetime)}% of its life left)`,
    cert: cert.name,
    version: cert.version,
    at: new Date(now).toISOString(),
    details: { notAfter: new Date(cert.notAfter).toISOString(), leftMs: Math.max(0, left) },
    dedupKey: `last-third/${cert.name}/${cert.version}`,
  };
}

function pick(from: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (from[k] !== undefined) out[k] = from[k];
  return out;
}

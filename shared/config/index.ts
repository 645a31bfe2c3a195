/**
 * Configuration loading for the controller (and the CLI's files): the mechanics of
 * shared/configfile (YAML with positions, `${ENV}`, one error listing every problem,
 * freezing) with zod, and the zod versions of the field types both binaries share.
 *
 * The agent uses shared/configfile and shared/check directly: it must not load zod
 * (issue #13, agent memory). The field types here and there accept the same texts and
 * say the same things; they share their patterns, messages and duration reading.
 */
import { z } from 'zod';
import { DEFAULT_NATS_SERVERS, durationReader, HOST_PORT, HOST_PORT_MESSAGE, LOG_LEVELS, NATS_SERVER, NATS_SERVER_MESSAGE } from '../configfile/index.js';

export { z };
export {
  CERT_NAME_RULE,
  configError,
  deepFreeze,
  formatDurationText,
  formatPath,
  loadConfigFile,
  parseConfig,
  parseDuration,
  resolveNatsPaths,
  splitHostPort,
  type ConfigProblem,
} from '../configfile/index.js';

/**
 * A duration field bounded to [`min`, `max`] (texts such as "1s", "1d"): a string in
 * YAML, milliseconds after parsing (shared/configfile boundedDuration says why bounds).
 */
export function boundedDuration(min: string, max: string, why?: string): z.ZodPipe<z.ZodString, z.ZodTransform<number, string>> {
  const read = durationReader(min, max, why);
  return z.string().transform((text, ctx) => {
    const ms = read(text);
    if (typeof ms === 'number') return ms;
    ctx.addIssue({ code: 'custom', message: ms.problem });
    return z.NEVER;
  });
}

/**
 * A duration field without a more specific bound: more than zero and at most 366 days
 * (nothing in certfleet waits longer; `99999999999d` is a typo, not a setting).
 */
export const duration = boundedDuration('1ms', '366d');

/** "host:port" with a numeric port; IPv6 hosts in brackets. */
export const hostPort = z.string().regex(HOST_PORT, HOST_PORT_MESSAGE);

export const logLevel = z.enum(LOG_LEVELS);

/** NATS connection fields, the same for both binaries (the controller adds its own). */
export const natsFields = {
  servers: z.array(z.string().regex(NATS_SERVER, NATS_SERVER_MESSAGE)).min(1).default([...DEFAULT_NATS_SERVERS]),
  credentialsFile: z.string().min(1).optional(),
  tokenFile: z.string().min(1).optional(),
  tlsCaFile: z.string().min(1).optional(),
};

/** NATS connection settings, the same for both binaries. */
export const natsSection = z.strictObject(natsFields).prefault({});

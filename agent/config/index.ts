/**
 * The agent's configuration: one strict schema, every problem reported at once with file,
 * line and field path (see shared/config). Documented field by field in
 * docs/configuration.md; keep the two in step.
 */
import path from 'node:path';
// shared/check and shared/configfile, not zod: the agent must stay small (issue #13).
import { c, type Infer } from '../../shared/check/index.js';
import { boundedDuration, CERT_NAME_RULE, hostPort, loadConfigFile, logLevel, natsSection, parseConfig, resolveNatsPaths } from '../../shared/configfile/index.js';
import { CERT_NAME_PATTERN } from '../../shared/wire/index.js';
import { takeNotifySettings, type NotifySettings } from '../../shared/notify/index.js';
import { CLI_UNSAFE, type ReloadHookSpec } from '../hooks/index.js';

/** A path the HAProxy runtime API can take as an argument (no blank, `;` or a backslash). */
const cliPath = c
  .string()
  .min(1)
  .refine((p) => !CLI_UNSAFE.test(p), { error: "HAProxy's runtime API cannot take a path with a blank, ';' or '\\'" });

const haproxyHook = c.strictObject({
  /** HAProxy's `stats socket` (level admin), or its master CLI socket when `master` is true. */
  socket: c.string().min(1),
  /** The socket is the master CLI (`haproxy -W -S <socket>`); commands go to the current worker. */
  master: c.boolean().default(false),
  /** The file HAProxy loaded this certificate from; default `<haproxy.crtDir>/<name>.pem`. Per-certificate hooks only. */
  crtFile: cliPath.optional(),
});

const hook = c.strictObject({
  /**
   * A shell command line (run by /bin/sh -c) or an argv array (run directly). With
   * `haproxy`, the fallback when the runtime API refuses.
   */
  command: c.union([c.string().min(1), c.array(c.string().min(1)).min(1)]).optional(),
  /** Update HAProxy through its runtime API instead of reloading it (hitless). */
  haproxy: haproxyHook.optional(),
  /** The hook is killed (with its whole process group) after this long; a timeout fails the install. */
  timeout: boundedDuration('1s', '1h').prefault('60s'),
  /**
   * `once` (default): certificates installed in the same pass that share this command run
   * it once (CERTFLEET_CERTS names them all). `per-certificate`: once for each of them
   * with its own RENEWED_LINEAGE, as certbot runs deploy hooks.
   */
  mode: c.enum(['once', 'per-certificate']).default('once'),
});

const endpoint = c.strictObject({
  /** host:port of a local TLS listener that serves this certificate. */
  address: hostPort,
  /** SNI sent in the handshake; default: the certificate's first name. */
  serverName: c.string().min(1).optional(),
});

const perCertificate = c.strictObject({
  /** Reload hook for this certificate; overrides hooks.reload. */
  reload: hook.optional(),
  /** Listeners checked after the hook: each must serve the installed certificate. */
  verify: c.array(endpoint).default([]),
});

export const agentConfigSchema = c
  .strictObject({
    /** Where certificates, the agent's identity and its state live. */
    stateDir: c.string().min(1),
    log: c.strictObject({ level: logLevel.default('info') }).prefault({}),
    controller: c
      .strictObject({
        /** host:port of the controller's gRPC API (one controller); or give `addresses`. */
        address: hostPort.optional(),
        /**
         * host:port of each controller's gRPC API (several controllers, HA): tried in this
         * order, the agent fails over between them by itself. Exactly one of `address`
         * and `addresses`.
         */
        addresses: c.array(hostPort).min(1, 'give at least one host:port').optional(),
        /** The controller's CA certificate (PEM): the only trust anchor for the API. */
        caFile: c.string().min(1),
        /** TLS name to expect when it differs from the host in `address`. */
        serverName: c.string().min(1).optional(),
      })
      .superRefine((ctl, ctx) => {
        if (ctl.address !== undefined && ctl.addresses !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['addresses'], message: 'give either address (one controller) or addresses (several), not both' });
        } else if (ctl.address === undefined && ctl.addresses === undefined) {
          ctx.addIssue({ code: 'custom', path: ['address'], message: 'required: the controller\'s host:port (or addresses: a list, for several controllers)' });
        } else if (ctl.addresses !== undefined && new Set(ctl.addresses).size !== ctl.addresses.length) {
          ctx.addIssue({ code: 'custom', path: ['addresses'], message: 'lists an address twice' });
        }
      }),
    nats: natsSection,
    http01: c
      .strictObject({
        /** Where this agent answers HTTP-01 challenges (the CA connects to port 80 of the names). */
        listen: hostPort,
        /** Address the controller uses to check the challenge is served; default: `listen`. */
        advertise: hostPort.optional(),
      })
      .optional(),
    /** Full resynchronisation over gRPC at this interval (and whenever NATS is unreachable). */
    resyncInterval: boundedDuration('1s', '1d', 'a shorter interval floods the controller').prefault('5m'),
    /** Status report (heartbeat) interval. */
    reportInterval: boundedDuration('1s', '1h', 'a shorter interval floods the controller').prefault('30s'),
    /**
     * certbot-compatible `live/<name>/{cert,chain,fullchain,privkey}.pem` links into the
     * versioned store, so configurations and hooks written for certbot move unchanged.
     * Off unless present; `dir` defaults to <stateDir>/live.
     */
    live: c.strictObject({ dir: c.string().min(1).optional() }).optional(),
    /**
     * A directory of one combined PEM per certificate (`<crtDir>/<name>.pem`, links through
     * `current`) for HAProxy's `bind ... ssl crt <crtDir>`. Off unless present.
     */
    haproxy: c.strictObject({ crtDir: cliPath }).optional(),
    /** Installed versions kept per certificate (current and previous are always kept). */
    keepVersions: c.int().min(2).max(100).default(5),
    /**
     * The agent's Prometheus endpoint (docs/metrics.md): plain HTTP `GET /metrics` on this
     * address. Off unless present.
     */
    metrics: c
      .strictObject({
        /** Where `/metrics` is served; keep it on a private or loopback interface. */
        listen: hostPort,
      })
      .optional(),
    hooks: c
      .strictObject({
        /** Reload hook for every certificate without its own. */
        reload: hook.optional(),
      })
      .prefault({}),
    /** Per-certificate settings, keyed by certificate name. */
    certificates: c
      .record(c.string(), perCertificate)
      .default({})
      .superRefine((certs, ctx) => {
        // Checked here rather than as the record's key schema: zod reports a bad key as
        // "Invalid key in record", which names neither the key nor the rule.
        for (const name of Object.keys(certs)) {
          if (!CERT_NAME_PATTERN.test(name)) {
            ctx.addIssue({ code: 'custom', path: [name], message: `"${name}" is not a certificate name: ${CERT_NAME_RULE}, as in the controller's configuration` });
          }
        }
      }),
  })
  .superRefine((cfg, ctx) => {
    const check = (h: Infer<typeof hook> | undefined, at: PropertyKey[], shared: boolean): void => {
      if (h === undefined) return;
      if (h.command === undefined && h.haproxy === undefined) ctx.addIssue({ code: 'custom', path: at, message: 'a hook needs command, haproxy, or both' });
      if (h.haproxy === undefined) return;
      if (shared && h.haproxy.crtFile !== undefined) {
        ctx.addIssue({ code: 'custom', path: [...at, 'haproxy', 'crtFile'], message: 'crtFile names one certificate: set it in certificates.<name>.reload' });
      }
      if (h.haproxy.crtFile === undefined && cfg.haproxy === undefined) {
        ctx.addIssue({ code: 'custom', path: [...at, 'haproxy'], message: 'set haproxy.crtDir (the directory HAProxy loads) or crtFile' });
      }
    };
    check(cfg.hooks.reload, ['hooks', 'reload'], true);
    for (const [name, cert] of Object.entries(cfg.certificates)) check(cert.reload, ['certificates', name, 'reload'], false);
  });

/** The agent's configuration as validated; `controllerAddresses()` gives the list to dial. */
export type AgentConfig = Infer<typeof agentConfigSchema>;

/** The controllers to dial, in order: `controller.addresses`, or `[controller.address]`. */
export function controllerAddresses(cfg: Pick<AgentConfig, 'controller'>): string[] {
  return [...(cfg.controller.addresses ?? (cfg.controller.address === undefined ? [] : [cfg.controller.address]))];
}
/** A reload hook as the agent runs it: as configured, plus the agent's haproxy.crtDir for a HAProxy hook. */
export type HookConfig = Infer<typeof hook> & ReloadHookSpec;

function resolvePaths(cfg: AgentConfig, file: string): AgentConfig {
  const base = path.dirname(path.resolve(file));
  const abs = (p: string): string => path.resolve(base, p);
  return {
    ...cfg,
    stateDir: abs(cfg.stateDir),
    ...(cfg.live ? { live: { dir: cfg.live.dir === undefined ? path.join(abs(cfg.stateDir), 'live') : abs(cfg.live.dir) } } : {}),
    ...(cfg.haproxy ? { haproxy: { crtDir: abs(cfg.haproxy.crtDir) } } : {}),
    hooks: { ...cfg.hooks, ...(cfg.hooks.reload ? { reload: resolveHook(cfg.hooks.reload, abs) } : {}) },
    certificates: Object.fromEntries(Object.entries(cfg.certificates).map(([name, cert]) => [name, cert.reload ? { ...cert, reload: resolveHook(cert.reload, abs) } : cert])),
    controller: { ...cfg.controller, caFile: abs(cfg.controller.caFile) },
    nats: resolveNatsPaths(cfg.nats, abs),
  };
}

function resolveHook(h: Infer<typeof hook>, abs: (p: string) => string): Infer<typeof hook> {
  if (h.haproxy === undefined) return h;
  return { ...h, haproxy: { ...h.haproxy, socket: abs(h.haproxy.socket), ...(h.haproxy.crtFile === undefined ? {} : { crtFile: abs(h.haproxy.crtFile) }) } };
}

/** Loads and validates an agent config file. Throws CONFIG_INVALID / CONFIG_UNREADABLE. */
export function loadAgentConfig(file: string, env: NodeJS.ProcessEnv = process.env): Readonly<AgentConfig> {
  return Object.freeze(resolvePaths(loadConfigFile(file, agentConfigSchema, env), file));
}

/** Validates config text (for tests). */
export function parseAgentConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}): Readonly<AgentConfig> {
  return Object.freeze(resolvePaths(parseConfig(text, file, agentConfigSchema, env), file));
}

/**
 * The reload hook that applies to `cert`, if any; a HAProxy hook carries the agent's
 * haproxy.crtDir (where HAProxy finds `<name>.pem`).
 */
export function reloadHookFor(cfg: AgentConfig, cert: string): HookConfig | undefined {
  const h = cfg.certificates[cert]?.reload ?? cfg.hooks.reload;
  if (h?.haproxy === undefined || cfg.haproxy === undefined) return h;
  return { ...h, haproxy: { ...h.haproxy, crtDir: cfg.haproxy.crtDir } };
}

let notifySettings: NotifySettings | undefined;

/**
 * systemd's notification settings (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), read
 * once and then removed from process.env so child processes do not inherit them.
 * Repeated calls return the first reading.
 */
export function notifyEnvironment(): NotifySettings {
  notifySettings ??= takeNotifySettings(process.env);
  return notifySettings;
}


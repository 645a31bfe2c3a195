/**
 * The controller binary's entry: `certfleet controller --config FILE`.
 * Loads the configuration, starts every module (controller/runtime.ts), and stops them
 * on SIGTERM or SIGINT. Resolves when stopped; rejects with a CertfleetError when it
 * cannot start (bad config, store, NATS or CA unreachable).
 */
import { createRootLogger } from '../shared/log/index.js';
import { createNotifier } from '../shared/notify/index.js';
import { runUntilSignal } from '../shared/runtime/index.js';
import { loadControllerConfig, notifyEnvironment } from './config/index.js';
import { startController } from './runtime.js';

export { loadControllerConfig } from './config/index.js';
export { startController, STATE_FILES, writeNatsServerConfig, type Controller } from './runtime.js';

/**
 * Under systemd (Type=notify) it also sends READY=1 once the API accepts calls,
 * STOPPING=1 on a signal, and WATCHDOG=1 pings from the event loop: a loop that
 * stops turning stops the pings, and systemd restarts the controller.
 */
export async function runController(opts: { configFile: string }): Promise<void> {
  const cfg = loadControllerConfig(opts.configFile);
  const log = createRootLogger({ name: 'controller', level: cfg.log.level });
  const notifier = createNotifier({ settings: notifyEnvironment(), log: log.child({ component: 'notify' }) });
  try {
    let controller;
    try {
      notifier.status('starting: store, NATS, ACME account');
      controller = await startController(cfg, log);
    } catch (err) {
      notifier.status(`start failed: ${(err as Error).message}`);
      throw err;
    }
    notifier.ready(`ready: API on port ${controller.apiPort}, ${cfg.certificates.length} certificates configured`);
    await runUntilSignal(() => {
      notifier.stopping('stopping: finishing in-flight work');
      return controller.stop();
    }, log);
  } finally {
    notifier.close();
  }
}

/**
 * The controller binary's entry: `certfleet controller --config FILE`.
 * Loads the configuration, starts every module (controller/runtime.ts), and stops them
 * on SIGTERM or SIGINT. Resolves when stopped; rejects with a CertfleetError when it
 * cannot start (bad config, store, NATS or CA unreachable).
 */
import { createRootLogger } from '../shared/log/index.js';
import { runUntilSignal } from '../shared/runtime/index.js';
import { loadControllerConfig } from './config/index.js';
import { startController } from './runtime.js';

export { loadControllerConfig } from './config/index.js';
export { startController, STATE_FILES, type Controller } from './runtime.js';

export async function runController(opts: { configFile: string }): Promise<void> {
  const cfg = loadControllerConfig(opts.configFile);
  const log = createRootLogger({ name: 'controller', level: cfg.log.level });
  const controller = await startController(cfg, log);
  await runUntilSignal(() => controller.stop(), log);
}

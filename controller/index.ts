/**
 * The controller binary's entry: `certfleet controller --config FILE`.
 * Loads the configuration, starts every module (controller/runtime.ts), and stops them
 * on SIGTERM or SIGINT. Resolves when stopped; rejects with a CertfleetError when it
 * cannot start (bad config, store, NATS or CA unreachable).
 */
import { createRootLogger } from '../shared/log/index.js';
import { createNotifier } from '../shared/notify/index.js';
import { runUntilSignal } from '../shared/runtime/index.js';
import { loadControllerConfig, notifyEnvironment, storeConfigOf } from './config/index.js';
import { systemClock } from '../shared/clock/index.js';
import { startController } from './runtime.js';
import { listSigningKeys, rotateSigningKeys, type RotationPhase, type SigningKeyInfo } from './signing/index.js';
import { openStore } from './store/index.js';

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

/**
 * `certfleet controller signing-key [STEP] --config FILE`: lists the record-signing key
 * ring in the controller's store, or applies one rotation step (controller/signing) and
 * returns the ring after it. Works beside a running controller (it reads the ring at
 * start: restart it after a step). Never returns private keys.
 */
export async function signingKeyCommand(opts: { configFile: string; step: 'list' | RotationPhase }): Promise<SigningKeyInfo[]> {
  const cfg = loadControllerConfig(opts.configFile);
  const log = createRootLogger({ name: 'controller', level: 'warn' });
  const store = await openStore(storeConfigOf(cfg), log); // the store binds its own component
  try {
    return opts.step === 'list' ? await listSigningKeys(store, systemClock.now()) : await rotateSigningKeys(store, opts.step, systemClock.now());
  } finally {
    await store.close();
  }
}

/**
 * Small process-level helpers both daemons use: a coalescing single-flight runner for
 * work loops, and running until SIGTERM/SIGINT.
 */
import { LogKey, type Logger } from '../log/index.js';

/**
 * Runs `pass` one at a time. A `kick()` while a pass runs schedules exactly one more
 * pass after it (however many kicks came), so a burst of triggers costs at most two
 * passes and none is lost. Errors of a pass are logged, never thrown.
 */
export class CoalescingRunner {
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(
    private readonly pass: () => Promise<void>,
    private readonly log: Logger,
    private readonly what: string,
  ) {}

  /** Runs a pass now, or once more after the current one. No-op after stop(). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((err: unknown) => this.log.error({ [LogKey.err]: err }, `${this.what} failed`))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Stops scheduling passes; resolves when the current one (if any) ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /** The pass in progress, if any. */
  current(): Promise<void> | undefined {
    return this.running;
  }
}

/** Resolves after SIGTERM or SIGINT, once `stop()` has finished (or failed). */
export async function runUntilSignal(stop: () => Promise<void>, log: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      log.info({ [LogKey.signal]: signal }, 'stopping');
      stop().then(resolve, (err: unknown) => {
        log.error({ [LogKey.err]: err }, 'stop failed');
        resolve();
      });
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
  log.info('stopped');
}

#!/usr/bin/env node
/**
 * The `certfleet` executable (package.json `bin`): runs the command line and exits with
 * its code. Everything testable lives in run.ts; this file only binds the process.
 */
import { limitOptimizingCompiler, limitYoungGeneration } from './heap.js';

// The agent daemon keeps V8's young generation small and runs without TurboFan (heap.ts
// says why). Set before anything else loads: loading the CLI's own modules already grows
// the heap and gets functions optimised.
if (process.argv[2] === 'agent') {
  limitYoungGeneration(process.execArgv, process.env['NODE_OPTIONS']);
  limitOptimizingCompiler(process.execArgv, process.env['NODE_OPTIONS']);
}

const { systemClock } = await import('../shared/clock/index.js');
const { runCli } = await import('./run.js');

// `certfleet agents | head` closes the pipe early: that is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: () => process.stdin,
  env: process.env,
  now: () => new Date(systemClock.now()),
  clock: systemClock,
  interrupt: () => {
    const stop = new AbortController();
    const abort = (): void => stop.abort();
    process.once('SIGINT', abort);
    process.once('SIGTERM', abort);
    return stop.signal;
  },
});

// Exit explicitly once the output is flushed: a daemon that stopped may leave a stray
// handle behind, and a second SIGTERM would find its signal handler already spent.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));

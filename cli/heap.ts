/**
 * The agent daemon's V8 settings (heap, compiler tiers), applied by the executable (cli/main.ts) before it
 * loads anything else. Here rather than in agent/: main.ts imports it for every command,
 * and operator and controller commands must not load agent code. Imports nothing of
 * ours: whatever loads before the setting can already grow the heap it keeps small.
 */
import v8 from 'node:v8';

/** Whether `flag` is among node's own options: its command line or NODE_OPTIONS. */
function nodeOption(flag: string, execArgv: readonly string[], nodeOptions: string): boolean {
  const given = (arg: string): boolean => {
    const a = arg.replaceAll('_', '-');
    return a === flag || a.startsWith(`${flag}=`);
  };
  return execArgv.some(given) || nodeOptions.split(/\s+/).some(given);
}

/**
 * Keeps V8's young generation at its initial size (1 MiB semi-spaces) for the agent
 * daemon, however it is started. V8 doubles the semi-spaces up to 16 MiB each whenever
 * many young objects survive, which an agent's start (loading its modules, installing
 * its certificates) does once: that left ~17 MiB of RSS an idle agent never used again
 * (docs/performance.md, Footprint). `--max-semi-space-size` can only be given on node's
 * command line, which `certfleet agent` started plainly (a shell, the quick start) does
 * not have; the growth factor can be set at run time, before the start allocates.
 * A semi-space setting given to node (`execArgv`, `nodeOptions` = NODE_OPTIONS) is left
 * alone: whoever set it chose the size. Returns whether the limit was set.
 */
export function limitYoungGeneration(execArgv: readonly string[], nodeOptions = ''): boolean {
  if (nodeOption('--max-semi-space-size', execArgv, nodeOptions) || nodeOption('--semi-space-growth-factor', execArgv, nodeOptions)) return false;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  return true;
}

/**
 * Turns V8's optimising compiler (TurboFan) off for the agent daemon, however it is
 * started; the interpreter and the baseline compiler (Sparkplug) still run everything.
 * An agent's start alone makes TurboFan compile dozens of hot functions (module loading,
 * the .proto parsing of its gRPC definitions): that maps ~4 MiB of the compiler's own
 * code from the node binary and leaves ~2 MiB of its freed work memory in malloc's
 * arenas, ~5 MiB of an idle agent's ~68 MiB RSS for code an agent does not need to be
 * fast (docs/performance.md, Footprint: its CPU per installed version stayed level).
 * Set at run time (like the young generation above), so no node option or re-exec is
 * needed. A tier flag given to node (`--opt`, `--turbofan`, `--max-opt`, or their
 * `--no-` forms) is left alone. Returns whether TurboFan was turned off.
 */
export function limitOptimizingCompiler(execArgv: readonly string[], nodeOptions = ''): boolean {
  const chosen = ['--opt', '--no-opt', '--turbofan', '--no-turbofan', '--max-opt'].some((f) => nodeOption(f, execArgv, nodeOptions));
  if (chosen) return false;
  v8.setFlagsFromString('--no-opt');
  return true;
}

/**
 * The agent daemon's V8 heap settings, applied by the executable (cli/main.ts) before it
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

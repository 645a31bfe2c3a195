/**
 * Sums a .cpuprofile (from `--cpu-prof` or bench/cpuprof.ts) by function and by file:
 *
 *   node dist/bench/cpuprof-top.js FILE.cpuprofile [--top 40] [--match REGEX] [--after MS]
 *
 * --after skips the first MS milliseconds of the profile (a process's start-up, when the
 * question is what it spends on each unit of work afterwards).
 * Prints self time per function (name, file:line), self time per file (node_modules
 * packages folded into one line each), and total (inclusive) time of the functions whose
 * name or file matches --match. Times from the samples' time deltas, in ms.
 */
import fs from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const file = args[0];
if (file === undefined) throw new Error('usage: cpuprof-top FILE [--top N] [--match REGEX]');
const top = Number(args[args.indexOf('--top') + 1] ?? 40) || 40;
const matchArg = args.includes('--match') ? args[args.indexOf('--match') + 1] : undefined;
const match = matchArg === undefined ? undefined : new RegExp(matchArg);
const afterMs = args.includes('--after') ? Number(args[args.indexOf('--after') + 1]) : 0;
if (!Number.isFinite(afterMs) || afterMs < 0) throw new Error('--after takes a number of milliseconds');

const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const short = (url: string): string => {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return `npm:${rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  return url.replace(/^file:\/\/.*?\/dist\//, '').replace(/^node:/, 'node:') || '(native)';
};
const fnKey = (n: Node): string => `${n.callFrame.functionName || '(anonymous)'}  ${short(n.callFrame.url)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''}`;

const self = new Map<string, number>();
const perFile = new Map<string, number>();
const total = new Map<string, number>();
let all = 0;
let idle = 0;
let elapsed = 0;
for (let i = 0; i < prof.samples.length; i++) {
  const dt = (prof.timeDeltas[i + 1] ?? prof.timeDeltas[i] ?? 0) / 1000;
  elapsed += (prof.timeDeltas[i] ?? 0) / 1000;
  if (elapsed < afterMs) continue;
  const node = byId.get(prof.samples[i] ?? -1);
  if (node === undefined) continue;
  all += dt;
  if (node.callFrame.functionName === '(idle)') {
    idle += dt;
    continue;
  }
  const k = fnKey(node);
  self.set(k, (self.get(k) ?? 0) + dt);
  const f = short(node.callFrame.url) || node.callFrame.functionName;
  perFile.set(f, (perFile.get(f) ?? 0) + dt);
  if (match !== undefined) {
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id);
      if (n === undefined) break;
      const key = fnKey(n);
      if (!seen.has(key) && (match.test(n.callFrame.functionName) || match.test(n.callFrame.url))) {
        seen.add(key);
        total.set(key, (total.get(key) ?? 0) + dt);
      }
    }
  }
}
const busy = all - idle;
const print = (title: string, m: Map<string, number>): void => {
  console.log(`\n${title}`);
  for (const [k, v] of [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${v.toFixed(0).padStart(8)} ms ${((100 * v) / busy).toFixed(1).padStart(5)} %  ${k}`);
  }
};
console.log(`profile ${all.toFixed(0)} ms, busy ${busy.toFixed(0)} ms, idle ${idle.toFixed(0)} ms`);
print('self time by function', self);
print('self time by file / package', perFile);
if (match !== undefined) print(`total time of functions matching ${String(match)}`, total);

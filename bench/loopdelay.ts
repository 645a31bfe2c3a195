/**
 * `node --import dist/bench/loopdelay.js`: the process's event-loop delay
 * (perf_hooks.monitorEventLoopDelay, 10 ms resolution), appended once a second to
 * `CERTFLEET_LOOP_DELAY_FILE` as one JSON line per second: `{ t, max, p99, p50, mean }`
 * in ms, the histogram then reset, with the process's memory then in MiB (`rss`, `heap`
 * used, `external`, `buffers`: where a growth is). A long synchronous stretch on the thread (a pass that
 * never yields) shows as a large `max`. Bench only; never loaded by the product.
 */
import fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const file = process.env['CERTFLEET_LOOP_DELAY_FILE'];
if (file !== undefined && file !== '') {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const ms = (ns: number): number => Math.round(ns / 1e5) / 10;
  setInterval(() => {
    const m = process.memoryUsage();
    const mib = (b: number): number => Math.round(b / 1048576);
    const line = { t: Date.now(), max: ms(h.max), p99: ms(h.percentile(99)), p50: ms(h.percentile(50)), mean: ms(h.mean), rss: mib(m.rss), heap: mib(m.heapUsed), external: mib(m.external), buffers: mib(m.arrayBuffers) };
    h.reset();
    fs.appendFileSync(file, `${JSON.stringify(line)}\n`);
  }, 1000).unref();
}

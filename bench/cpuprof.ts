/**
 * `node --import dist/bench/cpuprof.js`: a CPU profile of the whole process, written as
 * `<CERTFLEET_CPU_PROF_DIR>/<pid>.cpuprofile` when it exits (the same format as
 * `node --cpu-prof`, which NODE_OPTIONS may not carry; the bench starts the controller
 * through a harness that takes no node flags, only the environment).
 *
 * An inspector session on the process's own thread answers synchronously, so the
 * profile can be taken in the 'exit' handler. Bench only; never loaded by the product.
 */
import fs from 'node:fs';
import inspector from 'node:inspector';
import path from 'node:path';

const dir = process.env['CERTFLEET_CPU_PROF_DIR'];
if (dir !== undefined && dir !== '') {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  // 1 ms sampling like --cpu-prof's default interval.
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  process.on('exit', () => {
    session.post('Profiler.stop', (err, res) => {
      if (err !== null) return;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}

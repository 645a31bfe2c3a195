/**
 * componentLogger never writes the "component" key twice: pino appends a child's bindings
 * to its parent's, so `log.child({ component })` on a logger that already has one puts
 * the key in every line twice (JSON parsers then keep one of them silently).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { componentLogger, createRootLogger, LogKey, type Logger } from '../../shared/log/index.js';

function rawLogger(): { root: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  return { root: createRootLogger({ name: 'log-test', destination: sink }), lines };
}

const count = (line: string, key: string): number => line.split(`"${key}":`).length - 1;

const CASES: Array<[string, (root: Logger) => Logger, Record<string, unknown>]> = [
  ['a logger without a component gets one', (root) => componentLogger(root, 'nats'), { component: 'nats' }],
  ['a logger already bound to the same component is used as it is', (root) => componentLogger(root.child({ component: 'nats' }), 'nats'), { component: 'nats' }],
  [
    'a logger of another component keeps it and names the part as subsystem',
    (root) => componentLogger(root.child({ component: 'api' }), 'nats'),
    { component: 'api', subsystem: 'nats' },
  ],
  ['twice in a row still binds once', (root) => componentLogger(componentLogger(root, 'dns01'), 'dns01'), { component: 'dns01' }],
];

for (const [name, make, want] of CASES) {
  void test(`componentLogger: ${name}`, () => {
    const { root, lines } = rawLogger();
    make(root).info('hello');
    const line = lines[0] ?? '';
    assert.equal(count(line, LogKey.component), 1, line);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    for (const [k, v] of Object.entries(want)) assert.equal(parsed[k], v, line);
    if (!('subsystem' in want)) assert.equal(count(line, LogKey.subsystem), 0, line);
  });
}

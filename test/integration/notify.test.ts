/**
 * shared/notify against a fake systemd: a real AF_UNIX datagram socket bound by the test
 * (with the same addon), receiving what the notifier sends, with the sender's PID as the
 * kernel reports it (what systemd checks under NotifyAccess=main). Ends with the real
 * agent binary started under NOTIFY_SOCKET next to a real controller, Pebble and NATS.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { isCertfleetError } from '../../shared/errors/index.js';
import { createNotifier, DatagramReceiver, notifySettingsFrom, SYSTEMD_NOTIFY, takeNotifySettings, type NotifySettings } from '../../shared/notify/index.js';
import { CLI, startFleet } from '../harness/fleet.js';
import { eventually, startProcess } from '../harness/process.js';
import { tempDir } from '../harness/tmp.js';

interface Datagram {
  text: string;
  pid: number;
}

/** A fake systemd: binds `address` and collects every datagram, polling the non-blocking socket. */
function fakeSystemd(address: string): { messages: Datagram[]; close(): void } {
  const rx = DatagramReceiver.bind(address);
  const messages: Datagram[] = [];
  const timer = setInterval(() => {
    for (let m = rx.receive(); m !== null; m = rx.receive()) messages.push({ text: m.data.toString('utf8'), pid: m.pid });
  }, 5);
  return {
    messages,
    close() {
      clearInterval(timer);
      rx.close();
    },
  };
}

function capturingLogger(): { log: pino.Logger; lines: () => string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines: () => lines };
}

const settings = (socket: string | undefined, watchdogUsec?: number, watchdogPid?: number): NotifySettings => ({ socket, watchdogUsec, watchdogPid });

const pings = (msgs: Datagram[]): number => msgs.filter((m) => m.text === 'WATCHDOG=1').length;

test('READY, STATUS and STOPPING arrive as the exact sd_notify datagrams, sent by this process', async () => {
  const socket = path.join(tempDir(), 'notify.sock');
  const systemd = fakeSystemd(socket);
  const { log } = capturingLogger();
  const n = createNotifier({ settings: settings(socket), log });
  try {
    assert.equal(n.enabled, true);
    n.status('starting');
    n.ready('ready: 3 certificates');
    // A newline would smuggle a second assignment (MAINPID=...) into the datagram.
    n.status('line one\nMAINPID=1');
    n.status('line one\nMAINPID=1'); // unchanged: not sent again
    n.stopping('stopping now');
    const expected = ['STATUS=starting', 'READY=1\nSTATUS=ready: 3 certificates', 'STATUS=line one MAINPID=1', 'STOPPING=1\nSTATUS=stopping now'];
    await eventually('four datagrams', () => systemd.messages.length >= 4, 5_000, 10);
    await sleep(50);
    assert.deepEqual(
      systemd.messages.map((m) => m.text),
      expected,
    );
    for (const m of systemd.messages) assert.equal(m.pid, process.pid);
  } finally {
    n.close();
    systemd.close();
  }
});

test('an abstract NOTIFY_SOCKET (@name) reaches the abstract socket of that exact name', async () => {
  const name = `@certfleet-test-${crypto.randomBytes(6).toString('hex')}`;
  const systemd = fakeSystemd(name);
  const other = fakeSystemd(`${name}-other`); // a longer name is another socket
  const { log } = capturingLogger();
  const n = createNotifier({ settings: settings(name), log });
  try {
    // The kernel's own view: an abstract socket of exactly this name (padding it to
    // sizeof(sockaddr_un), as unix-dgram does, names another socket than systemd's).
    const bound = fs.readFileSync('/proc/net/unix', 'utf8').split('\n').map((l) => l.trim().split(/\s+/).at(7));
    assert.ok(bound.includes(name), `${name} is not among the bound unix sockets`);
    n.ready('ready');
    await eventually('READY on the abstract socket', () => systemd.messages.some((m) => m.text === 'READY=1\nSTATUS=ready'), 5_000, 10);
    assert.equal(other.messages.length, 0);
  } finally {
    n.close();
    systemd.close();
    other.close();
  }
});

test('watchdog pings start with READY and come every WATCHDOG_USEC/2', async () => {
  const socket = path.join(tempDir(), 'notify.sock');
  const systemd = fakeSystemd(socket);
  const { log } = capturingLogger();
  const n = createNotifier({ settings: settings(socket, 400_000), log });
  try {
    assert.equal(n.watchdogIntervalMs, 200);
    await sleep(1_000);
    assert.equal(pings(systemd.messages), 0, 'no ping before READY');
    n.ready();
    // Five intervals: at least two pings (timers may fire late, never early, so at most six).
    await sleep(1_000);
    const count = pings(systemd.messages);
    assert.ok(count >= 2 && count <= 6, `expected 2..6 pings in 5 intervals, got ${count}`);
    n.stopping();
    await sleep(100);
    const afterStop = pings(systemd.messages);
    await sleep(1_000);
    assert.equal(pings(systemd.messages), afterStop, 'no ping after STOPPING');
  } finally {
    n.close();
    systemd.close();
  }
});

test('pings stop while the health check fails, STATUS says why, and resume when it passes', async () => {
  const socket = path.join(tempDir(), 'notify.sock');
  const systemd = fakeSystemd(socket);
  const { log, lines } = capturingLogger();
  let problem: string | null = null;
  const n = createNotifier({ settings: settings(socket, 200_000), log, health: () => problem });
  try {
    n.ready();
    await eventually('a first ping', () => pings(systemd.messages) >= 1, 5_000, 10);
    problem = 'NATS disconnected for 95 s';
    await eventually('the unhealthy STATUS', () => systemd.messages.some((m) => m.text === 'STATUS=unhealthy: NATS disconnected for 95 s'), 5_000, 10);
    const at = systemd.messages.findIndex((m) => m.text.startsWith('STATUS=unhealthy'));
    await sleep(1_000); // ten intervals
    assert.equal(pings(systemd.messages.slice(at)), 0, 'no ping after the health check failed');
    assert.equal(systemd.messages.filter((m) => m.text.startsWith('STATUS=unhealthy')).length, 1, 'the reason is sent once, not every interval');
    assert.ok(lines().some((l) => l.includes('watchdog pings withheld') && l.includes('NATS disconnected')));
    problem = null;
    await eventually('pings again', () => pings(systemd.messages.slice(at)) >= 2, 5_000, 10);
  } finally {
    n.close();
    systemd.close();
  }
});

test('a WATCHDOG_PID naming another process leaves the watchdog to that process', async () => {
  const socket = path.join(tempDir(), 'notify.sock');
  const systemd = fakeSystemd(socket);
  const { log } = capturingLogger();
  const n = createNotifier({ settings: settings(socket, 100_000, process.pid + 1), log });
  try {
    assert.equal(n.watchdogIntervalMs, null);
    n.ready();
    await eventually('READY', () => systemd.messages.some((m) => m.text === 'READY=1'), 5_000, 10);
    await sleep(500);
    assert.equal(pings(systemd.messages), 0);
  } finally {
    n.close();
    systemd.close();
  }
  const own = createNotifier({ settings: settings(socket, 100_000, process.pid), log });
  assert.equal(own.watchdogIntervalMs, 50, 'WATCHDOG_PID equal to ours enables it');
  own.close();
});

test('without NOTIFY_SOCKET every call is a no-op that logs once at debug level', () => {
  const { log, lines } = capturingLogger();
  const n = createNotifier({ settings: notifySettingsFrom({ WATCHDOG_USEC: '1000000' }), log, health: () => 'never asked' });
  assert.equal(n.enabled, false);
  assert.equal(n.watchdogIntervalMs, null);
  n.ready('ready');
  n.status('x');
  n.stopping('bye');
  n.close();
  const logged = lines().map((l) => JSON.parse(l) as { level: number; msg: string });
  assert.deepEqual(
    logged.map((l) => [l.level, l.msg]),
    [[20, 'NOTIFY_SOCKET unset: not running as a systemd Type=notify service']],
  );
});

test('the settings are read from the environment given, malformed numbers read as unset, and taking them unsets them', () => {
  assert.deepEqual(notifySettingsFrom({ NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }), {
    socket: '/run/systemd/notify',
    watchdogUsec: 30_000_000,
    watchdogPid: 42,
  });
  assert.deepEqual(notifySettingsFrom({ NOTIFY_SOCKET: '', WATCHDOG_USEC: '30s', WATCHDOG_PID: '-1' }), { socket: undefined, watchdogUsec: undefined, watchdogPid: undefined });
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '@x', WATCHDOG_USEC: '1000', WATCHDOG_PID: '7', PATH: '/bin' };
  assert.equal(takeNotifySettings(env).socket, '@x');
  assert.deepEqual(env, { PATH: '/bin' }, 'children (reload hooks) must not inherit them');
});

test('a NOTIFY_SOCKET we cannot speak fails at creation with CONFIG_INVALID', () => {
  const { log } = capturingLogger();
  for (const bad of ['relative/notify.sock', 'vsock:2:1234', '@', `/${'x'.repeat(120)}`]) {
    assert.throws(
      () => createNotifier({ settings: settings(bad), log }),
      (err: unknown) => isCertfleetError(err) && err.code === 'CONFIG_INVALID',
      bad,
    );
  }
});

test('a send that fails (systemd gone) is logged once per failure streak and never thrown', async () => {
  const socket = path.join(tempDir(), 'notify.sock');
  const { log, lines } = capturingLogger();
  const n = createNotifier({ settings: settings(socket), log });
  try {
    n.status('nobody listens');
    n.ready('still nobody');
    assert.equal(lines().filter((l) => l.includes('sd_notify send failed')).length, 1);
    const systemd = fakeSystemd(socket);
    try {
      n.status('back');
      await eventually('the STATUS', () => systemd.messages.some((m) => m.text === 'STATUS=back'), 5_000, 10);
      assert.ok(lines().some((l) => l.includes('sd_notify send works again')));
    } finally {
      systemd.close();
    }
  } finally {
    n.close();
  }
});

test('the addon npm installs is the prebuilt one for this CPU: nothing was compiled', () => {
  const addon = createRequire(import.meta.url)('certfleet-sd-notify') as { loadedFrom: string };
  assert.ok(['x64', 'arm64'].includes(process.arch), `no prebuild is shipped for ${process.arch}`);
  assert.match(addon.loadedFrom, new RegExp(`/shared/notify/native/prebuilds/linux-${process.arch}/certfleet_sd_notify\\.node$`));
  const n = createNotifier({ settings: settings(path.join(tempDir(), 'notify.sock')), log: capturingLogger().log });
  assert.equal(n.transport, 'addon');
  n.close();
});

const noAddon = (): never => {
  throw new Error('simulated: no addon for this CPU');
};

test('without the addon, messages go through systemd-notify --pid, in order, and a warning says so', async () => {
  const name = `@certfleet-fallback-${crypto.randomBytes(6).toString('hex')}`;
  const systemd = fakeSystemd(name);
  const { log, lines } = capturingLogger();
  const n = createNotifier({ settings: settings(name), log, loadBinding: noAddon });
  try {
    assert.equal(n.transport, 'systemd-notify');
    assert.ok(lines().some((l) => l.includes('using systemd-notify') && l.includes('simulated: no addon')));
    n.status('starting');
    n.ready('ready: 3 certificates');
    n.stopping('stopping now');
    // systemd-notify adds MAINPID (ours) and ends each message with a BARRIER=1 it waits on.
    const received = (): string[] => systemd.messages.map((m) => m.text).filter((t) => t !== 'BARRIER=1');
    await eventually('three messages', () => received().length >= 3, 15_000, 10);
    assert.deepEqual(received(), [
      `MAINPID=${process.pid}\nSTATUS=starting`,
      `MAINPID=${process.pid}\nREADY=1\nSTATUS=ready: 3 certificates`,
      `MAINPID=${process.pid}\nSTOPPING=1\nSTATUS=stopping now`,
    ]);
    assert.ok(!lines().some((l) => l.includes('sd_notify send failed')), lines().join('\n'));
  } finally {
    n.close();
    systemd.close();
  }
});

test('without the addon, a systemd-notify that fails is logged once per streak, never thrown', async () => {
  const { log, lines } = capturingLogger();
  const n = createNotifier({ settings: settings(path.join(tempDir(), 'nobody.sock')), log, loadBinding: noAddon });
  try {
    n.status('nobody listens');
    n.ready('still nobody');
    await eventually('the failure logged', () => lines().some((l) => l.includes('sd_notify send failed')), 15_000, 10);
    await sleep(500);
    assert.equal(lines().filter((l) => l.includes('sd_notify send failed')).length, 1);
  } finally {
    n.close();
  }
});

test('with neither the addon nor systemd-notify, creating the notifier fails with INTERNAL naming both', () => {
  const { log } = capturingLogger();
  assert.ok(fs.existsSync(SYSTEMD_NOTIFY), `${SYSTEMD_NOTIFY} (Debian package systemd) is needed by the test above`);
  assert.throws(
    () => createNotifier({ settings: settings('/run/x.sock'), log, loadBinding: noAddon, systemdNotify: '/nonexistent/systemd-notify' }),
    (err: unknown) => isCertfleetError(err) && err.code === 'INTERNAL' && err.message.includes('/nonexistent/systemd-notify') && err.message.includes('simulated'),
  );
});

test('the agent binary sends READY=1 from its main process under NOTIFY_SOCKET, pings the watchdog and sends STOPPING=1 on SIGTERM', async () => {
  const fleet = await startFleet({
    // One certificate no agent is assigned: the controller needs a configuration, the
    // agent needs nothing to install to become ready.
    certificates: [{ name: 'idle', names: ['idle.example.test'], agents: 'role=nobody' }],
    agents: [],
    dns: {},
  });
  const socket = `@certfleet-agent-test-${crypto.randomBytes(6).toString('hex')}`;
  const systemd = fakeSystemd(socket);
  try {
    const dir = path.join(fleet.root, 'agent-notify');
    fs.mkdirSync(dir, { recursive: true });
    const configFile = path.join(dir, 'agent.yaml');
    fs.writeFileSync(
      configFile,
      [
        `stateDir: ${path.join(dir, 'state')}`,
        'log: { level: debug }',
        `controller: { address: "127.0.0.1:${fleet.apiPort}", caFile: ${path.join(fleet.controllerState, 'ca.pem')}, serverName: localhost }`,
        `nats: { servers: ["${fleet.nats.url}"] }`,
        '',
      ].join('\n'),
    );
    const created = await fleet.cliJson<{ token: string }>(['token', 'create', 'notify-agent', '--label', 'role=edge']);
    const enrolled = await fleet.cli(['agent', 'enroll', '--config', configFile, '--token', created.token]);
    assert.equal(enrolled.code, 0, enrolled.stderr);

    const agent = startProcess('agent', process.execPath, [CLI, 'agent', '--config', configFile], {
      env: { ...process.env, NOTIFY_SOCKET: socket, WATCHDOG_USEC: '1000000' },
    });
    try {
      const ready = await eventually('READY=1 from the agent', () => systemd.messages.find((m) => m.text.startsWith('READY=1\n')), 60_000, 20).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\n${agent.output()}\n${fleet.logs()}`);
      });
      assert.equal(ready.text, 'READY=1\nSTATUS=ready: agent notify-agent, 0 certificates: 0 installed, 0 failed, 0 pending');
      assert.equal(ready.pid, agent.child.pid, 'sent by the main process itself (NotifyAccess=main)');
      await eventually('two watchdog pings', () => pings(systemd.messages) >= 2, 30_000, 20);
      for (const m of systemd.messages) assert.equal(m.pid, agent.child.pid);
      await agent.stop(30_000);
      assert.ok(
        systemd.messages.some((m) => m.text.startsWith('STOPPING=1')),
        `no STOPPING=1 in ${JSON.stringify(systemd.messages.map((m) => m.text))}`,
      );
    } finally {
      await agent.stop();
    }
  } finally {
    systemd.close();
    await fleet.stop();
  }
});

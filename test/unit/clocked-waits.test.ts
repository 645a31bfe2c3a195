/**
 * Waits in shared/ and the DNS-01 solver run on the injected clock (issue #10): under a
 * ManualClock they fire when the clock advances, and never on their own in real time.
 * Each case fails when the code falls back to a raw timer (the manual clock then has no
 * timer to fire, and nothing happens).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { createNotifier, type DatagramBinding } from '../../shared/notify/index.js';
import { DnsLookup, waitForPropagation, type DnsServer } from '../../controller/solvers/dns01/index.js';

/** The sd_notify addon's surface, recording what is sent (the real one is tested in test/integration/notify.test.ts). */
function recordingBinding(): { binding: DatagramBinding; sent: string[] } {
  const sent: string[] = [];
  return {
    sent,
    binding: {
      socket: () => 3,
      sendto: (_fd, _addr, data) => {
        sent.push(data.toString('utf8'));
        return data.length;
      },
      bind: () => 0,
      recv: () => -11,
      close: () => 0,
    },
  };
}

void test('notify: watchdog pings and status summaries come from the injected clock', () => {
  const clock = new ManualClock();
  const { binding, sent } = recordingBinding();
  let summary = 'idle';
  const n = createNotifier({
    settings: { socket: '@certfleet-test', watchdogUsec: 2_000_000, watchdogPid: undefined },
    log: silentLogger(),
    loadBinding: () => binding,
    summary: () => summary,
    statusIntervalMs: 30_000,
    clock,
  });
  assert.equal(n.watchdogIntervalMs, 1000);
  n.ready('up');
  assert.deepEqual(sent, ['READY=1\nSTATUS=up']);
  clock.advance(3000);
  assert.equal(sent.filter((m) => m === 'WATCHDOG=1').length, 3);
  summary = 'busy';
  clock.advance(27_000);
  assert.ok(sent.includes('STATUS=busy'), sent.join(' | '));
  n.stopping('bye');
  const before = sent.length;
  clock.advance(60_000);
  assert.equal(sent.length, before, 'no ping after STOPPING');
  n.close();
});

/** Answers TXT questions from a script instead of a DNS server (the real path: test/integration/dns01.test.ts). */
class ScriptedLookup extends DnsLookup {
  asked = 0;
  constructor(private readonly visibleFromRound: number) {
    super({ resolvers: [{ host: '192.0.2.1', port: 53 }] });
  }
  override txtAt(_server: DnsServer, _fqdn: string): Promise<{ values: string[] } | { problem: string }> {
    this.asked++;
    return Promise.resolve({ values: this.asked >= this.visibleFromRound ? ['v1'] : [] });
  }
}

const NS = [{ host: '192.0.2.53', port: 53 }];
const EXPECTED = new Map([['_acme-challenge.www.example.test.', ['v1']]]);

void test('dns01 propagation: the pause between rounds is a sleep on the injected clock', async () => {
  const clock = new ManualClock();
  const lookup = new ScriptedLookup(3);
  let done = false;
  const wait = waitForPropagation(lookup, EXPECTED, { nameservers: NS, timeoutMs: 600_000, intervalMs: 10_000, clock, log: silentLogger() }).then(() => {
    done = true;
  });
  assert.equal(await clock.runUntil(() => done, 60_000), true, `still waiting after ${lookup.asked} rounds`);
  await wait;
  assert.equal(lookup.asked, 3);
  assert.equal(clock.now() - new ManualClock().now(), 20_000, 'two pauses of 10 s');
});

void test('dns01 propagation: the timeout is reached on the injected clock and names the lagging server', async () => {
  const clock = new ManualClock();
  const lookup = new ScriptedLookup(Number.POSITIVE_INFINITY);
  let failure: unknown;
  const wait = waitForPropagation(lookup, EXPECTED, { nameservers: NS, timeoutMs: 60_000, intervalMs: 10_000, clock, log: silentLogger() }).catch((err: unknown) => {
    failure = err;
  });
  assert.equal(await clock.runUntil(() => failure !== undefined, 120_000), true, `no timeout after ${lookup.asked} rounds`);
  await wait;
  assert.ok(isCertfleetError(failure, ErrorCode.DnsPropagationTimeout), String(failure));
  assert.match(failure.message, /192\.0\.2\.53:53 for _acme-challenge\.www\.example\.test\./);
  assert.equal(lookup.asked, 7, 'rounds at 0, 10, ..., 60 s');
});

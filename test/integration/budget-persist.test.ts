/**
 * Budgets survive a restart: what one controller spent is stored in the NATS `budgets`
 * bucket and a new controller (a new keeper on the same NATS) starts from it. Changes made
 * while a write is waiting share one write (a burst of orders wrote the whole state once
 * per change), and nothing of them is lost.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetKeeper, BudgetConfigSchema } from '../../controller/budget/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, ensureFleetNats, openKv } from '../../shared/nats/index.js';
import { Bucket } from '../../shared/wire/index.js';
import { startNats } from '../harness/nats.js';

test('a restarted controller remembers the budget spent before, and a deferral follows from it', async () => {
  const server = await startNats();
  const clock = new ManualClock(Date.UTC(2026, 5, 1));
  const cfg = BudgetConfigSchema.parse({ preset: 'custom', emergencyReserve: 0, limits: { newOrdersPerAccount: { count: 3, period: '3h' } } });
  const nats = await connectNats({ servers: [server.url], name: 'test', credentials: server.creds, log: silentLogger() });
  try {
    await ensureFleetNats(nats);
    const first = await BudgetKeeper.open(nats, cfg, 'acct', clock, silentLogger());
    for (const name of ['a.example.com', 'b.example.com', 'c.example.com']) {
      const verdict = first.check({ names: [name] });
      assert.ok(verdict.ok, `order for ${name} allowed`);
      first.commit(verdict.spend);
    }
    await first.flushed();

    const second = await BudgetKeeper.open(nats, cfg, 'acct', clock, silentLogger());
    const level = second.levels().find((l) => l.limit === 'newOrdersPerAccount');
    assert.equal(level?.available, 0, 'the spent tokens are remembered');
    const denied = second.check({ names: ['d.example.com'] });
    assert.equal(denied.ok, false);
    if (!denied.ok) {
      assert.ok(denied.until > clock.now(), 'deferred to a later time');
      assert.match(denied.reason, /order/i);
    }
    // A fresh account starts full: the state is per account.
    const other = await BudgetKeeper.open(nats, cfg, 'other-acct', clock, silentLogger());
    assert.equal(other.check({ names: ['d.example.com'] }).ok, true);
  } finally {
    await nats.close();
    await server.stop();
  }
});

test('changes made while a write waits share one write, and every one of them is stored', async () => {
  const server = await startNats();
  const clock = new ManualClock(Date.UTC(2026, 5, 1));
  const cfg = BudgetConfigSchema.parse({ preset: 'custom', emergencyReserve: 0, limits: { newOrdersPerAccount: { count: 100, period: '3h' }, authzFailuresPerIdentifier: { count: 5, period: '1h' } } });
  const nats = await connectNats({ servers: [server.url], name: 'test', credentials: server.creds, log: silentLogger() });
  try {
    await ensureFleetNats(nats);
    const keeper = await BudgetKeeper.open(nats, cfg, 'acct', clock, silentLogger());
    const kv = await openKv<unknown>(nats, Bucket.budgets, { create: false, parse: (v) => v });
    const revisionBefore = (await kv.get('acct'))?.revision ?? 0;
    for (let i = 0; i < 40; i++) {
      const verdict = keeper.check({ names: [`n${i}.example.com`] });
      assert.ok(verdict.ok);
      keeper.commit(verdict.spend);
      keeper.recordAuthorizationFailure(`n${i}.example.com`);
    }
    await keeper.flushed();
    const after = await kv.get('acct');
    assert.ok(after !== null);
    // 80 changes: the first write starts at once, the other 79 share the one queued behind it.
    assert.ok(after.revision - revisionBefore <= 2, `${after.revision - revisionBefore} writes`);
    const second = await BudgetKeeper.open(nats, cfg, 'acct', clock, silentLogger());
    assert.equal(second.levels().find((l) => l.limit === 'newOrdersPerAccount')?.available, 60);
    assert.equal(second.levels().filter((l) => l.limit === 'authzFailuresPerIdentifier').length, 40);
  } finally {
    await nats.close();
    await server.stop();
  }
});

/**
 * The controller's fleet view (controller/fleet) over a real nats-server: the agents and
 * selections `certfleet certs` asks for once per certificate are built once per change of
 * a registration (issue #13: 10,000 certificates sorted and filtered 1,000 agents each
 * time; a report does not rebuild them), and never go stale: a report shows at once in
 * the views already handed out, a registration or a removal at the next read, and
 * `online` follows the clock without any change.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentRegistration } from '../../controller/enroll/index.js';
import { Fleet } from '../../controller/fleet/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { connectNats, ensureFleetNats, type NatsHandle } from '../../shared/nats/index.js';
import { startNats, type NatsServer } from '../harness/nats.js';

const START = Date.UTC(2026, 5, 1);

const reg = (name: string, labels: Record<string, string>, extra: Partial<AgentRegistration> = {}): AgentRegistration => ({
  name,
  labels,
  certSerial: `serial-${name}`,
  enrolledAt: new Date(START).toISOString(),
  ...extra,
});

void describe('fleet view', () => {
  let server: NatsServer;
  let nc: NatsHandle;
  before(async () => {
    server = await startNats();
    nc = await connectNats({ servers: [server.url], name: 'fleet-view-test', credentials: server.creds, log: silentLogger() });
    await ensureFleetNats(nc);
  });
  after(async () => {
    await nc.close();
    await server.stop();
  });

  void it('is built once per change, and every change shows at the next read', async () => {
    const clock = new ManualClock(START);
    const fleet = await Fleet.open({
      nats: nc,
      enrollment: { listAgents: () => Promise.resolve([reg('web-1', { role: 'web' }), reg('db-1', { role: 'db' })]) } as never,
      clock,
      log: silentLogger(),
      offlineAfterMs: 60_000,
    });
    try {
      const web = fleet.selected('role=web');
      assert.deepEqual(web.map((a) => a.registration.name), ['web-1']);
      // Unchanged fleet: the same view, not rebuilt per certificate.
      assert.equal(fleet.selected('role=web'), web);
      assert.equal(fleet.agents(), fleet.agents());
      assert.throws(() => (web as unknown[]).push(1), 'shared views are frozen');

      // A report: online from now on, and its certificates visible, in the same view (a
      // report does not rebuild the views: 1,000 agents report every 30 s), also on a
      // view taken before it.
      assert.equal(web[0]?.online, false);
      await fleet.report('web-1', { http01Address: '', agentVersion: 't', certificates: [] });
      const after1 = fleet.selected('role=web');
      assert.equal(after1, web);
      assert.equal(web[0]?.online, true);
      assert.ok(web[0]?.report);
      const first = web[0]?.report;
      await fleet.report('web-1', { http01Address: '10.0.0.1:80', agentVersion: 't', certificates: [] });
      assert.notEqual(web[0]?.report, first, 'each report is a new object');
      assert.equal(web[0]?.report?.http01Address, '10.0.0.1:80');
      assert.equal(fleet.selected('role=web'), web);
      // Time alone turns it offline: `online` is read against the clock, also on a view
      // taken before (the bucket's echo of the report may arrive meanwhile).
      await clock.tick(60_001);
      assert.equal(after1[0]?.online, false);
      assert.equal(fleet.selected('role=web')[0]?.online, false);

      // Every agent call hands in its registration as just read from the store: an equal
      // one (a new object) keeps the views; a changed one (a renewed identity) shows.
      fleet.registered(reg('web-1', { role: 'web' }));
      assert.equal(fleet.selected('role=web'), web);
      assert.equal(fleet.agents(), fleet.agents());
      fleet.registered(reg('web-1', { role: 'web' }, { pendingSerial: 'renewed' }));
      assert.notEqual(fleet.selected('role=web'), web);
      assert.equal(fleet.selected('role=web')[0]?.registration.pendingSerial, 'renewed');
      fleet.registered(reg('web-1', { role: 'web', zone: 'a' }));
      assert.deepEqual(fleet.selected('role=web')[0]?.registration.labels, { role: 'web', zone: 'a' });

      // A new registration, then a removal.
      fleet.registered(reg('web-2', { role: 'web' }));
      assert.deepEqual(fleet.selected('role=web').map((a) => a.registration.name), ['web-1', 'web-2']);
      await fleet.removed(reg('web-1', { role: 'web' }, { removedAt: new Date(START).toISOString(), removedBy: 'admin' }));
      assert.deepEqual(fleet.selected('role=web').map((a) => a.registration.name), ['web-2']);
      // A removed agent has no report, also in a view taken before its removal.
      assert.equal(fleet.agents().find((a) => a.registration.name === 'web-1')?.report, undefined);
      assert.deepEqual(fleet.agents().map((a) => [a.registration.name, a.removed]), [['db-1', false], ['web-1', true], ['web-2', false]]);

      // Every agent call reads its registration afresh: an equal copy changes nothing,
      // a renewed identity shows.
      const view = fleet.agents();
      fleet.registered(reg('web-2', { role: 'web' }));
      assert.equal(fleet.agents(), view, 'an unchanged registration keeps the view');
      fleet.registered(reg('web-2', { role: 'web' }, { certSerial: 'renewed' }));
      assert.equal(fleet.selected('role=web')[0]?.registration.certSerial, 'renewed');
    } finally {
      await fleet.close();
    }
  });
});

/**
 * Registrations kept in memory by controller/enroll (issue #13): authenticateAgent stops
 * reading `agents/<name>` on every call, yet a removal on this controller is refused on the
 * very next call (also when a read was in flight during the removal), an enrolment or
 * renewal made elsewhere is accepted at once, and on a shared store a removal made by
 * another controller holds once `registrationTtlMs` has passed. Real FileStore, manual clock.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Enrollment, type ObjectStore } from '../../controller/enroll/index.js';
import { FileStore } from '../../controller/store/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import { silentLogger } from '../../shared/log/index.js';
import { tempDir } from '../harness/tmp.js';

const START = Date.UTC(2026, 0, 10, 8, 0, 0);
const enrolled = (name: string, serial: string) => ({ name, labels: { role: 'web' }, certSerial: serial, enrolledAt: new Date(START).toISOString() });

/** The FileStore, counting reads of agent registrations; `hold` parks the next such read until released. */
async function countingStore(kind?: 'file' | 'vault') {
  const store = await FileStore.open({ dir: path.join(tempDir('certfleet-regcache-'), 'store'), log: silentLogger() });
  const state = { agentReads: 0, hold: undefined as undefined | { started: () => void; release: Promise<void> } };
  const wrapped: ObjectStore = {
    ...(kind === undefined ? {} : { kind }),
    async getObject<T>(key: string): Promise<T | null> {
      if (!key.startsWith('agents/')) return store.getObject<T>(key);
      state.agentReads++;
      const hold = state.hold;
      state.hold = undefined;
      const value = await store.getObject<T>(key);
      if (hold) {
        hold.started();
        await hold.release;
      }
      return value;
    },
    putObject: (k, v) => store.putObject(k, v),
    deleteObject: (k) => store.deleteObject(k),
    listObjects: (p) => store.listObjects(p),
  };
  return { store, wrapped, state };
}

const refusedAsRemoved = (err: unknown): boolean => isCertfleetError(err, ErrorCode.Unauthenticated) && err.details['reason'] === 'removed';

describe('registrations in memory', () => {
  it('on the file store, authenticates repeated calls with one store read', async () => {
    const { wrapped, state } = await countingStore('file');
    const clock = new ManualClock(START);
    const enrollment = new Enrollment(wrapped, clock, silentLogger());
    await enrollment.recordAgent(enrolled('edge-a', 'aa01'));
    const readsAfterEnrol = state.agentReads;
    for (let i = 0; i < 5; i++) {
      clock.advance(3600_000);
      assert.equal((await enrollment.authenticateAgent('edge-a', 'aa01')).name, 'edge-a');
    }
    assert.equal(state.agentReads, readsAfterEnrol, 'the registration written by this controller is answered from memory');
  });

  it('a returned registration changed by the caller does not change what is remembered', async () => {
    const { wrapped } = await countingStore('file');
    const enrollment = new Enrollment(wrapped, new ManualClock(START), silentLogger());
    await enrollment.recordAgent(enrolled('edge-a', 'aa01'));
    const reg = await enrollment.authenticateAgent('edge-a', 'aa01');
    reg.labels['role'] = 'db';
    reg.certSerial = 'ff';
    const again = await enrollment.authenticateAgent('edge-a', 'aa01');
    assert.deepEqual(again.labels, { role: 'web' });
  });

  it('refuses a removed agent on its next call, also when a read was in flight during the removal', async () => {
    const { wrapped, state } = await countingStore('file');
    const clock = new ManualClock(START);
    const writer = new Enrollment(wrapped, clock, silentLogger());
    await writer.recordAgent(enrolled('edge-a', 'aa01'));
    const enrollment = new Enrollment(wrapped, clock, silentLogger()); // nothing in memory yet
    let started!: () => void;
    const readStarted = new Promise<void>((r) => (started = r));
    let release!: () => void;
    state.hold = { started, release: new Promise<void>((r) => (release = r)) };
    const inFlight = enrollment.authenticateAgent('edge-a', 'aa01'); // reads the pre-removal record
    await readStarted;
    await enrollment.removeAgent('edge-a', 'alice');
    release();
    assert.equal((await inFlight).name, 'edge-a', 'the call that began before the removal may pass');
    await assert.rejects(enrollment.authenticateAgent('edge-a', 'aa01'), refusedAsRemoved);
    clock.advance(24 * 3600_000);
    await assert.rejects(enrollment.authenticateAgent('edge-a', 'aa01'), refusedAsRemoved);
  });

  it('accepts at once an enrolment or renewal made by another controller on a shared store', async () => {
    const { wrapped } = await countingStore('vault');
    const clock = new ManualClock(START);
    const a = new Enrollment(wrapped, clock, silentLogger());
    const b = new Enrollment(wrapped, clock, silentLogger());
    await a.recordAgent(enrolled('edge-a', 'aa01'));
    await b.authenticateAgent('edge-a', 'aa01'); // b remembers serial aa01
    await a.recordRenewal('edge-a', 'aa01', 'bb02', new Date(START + 86400_000).toISOString());
    assert.equal((await b.authenticateAgent('edge-a', 'bb02')).certSerial, 'bb02');
    await a.recordAgent(enrolled('edge-a', 'cc03')); // re-enrolled on a
    assert.equal((await b.authenticateAgent('edge-a', 'cc03')).certSerial, 'cc03');
    await assert.rejects(b.authenticateAgent('edge-a', 'ee05'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated));
    await b.authenticateAgent('edge-a', 'cc03');
    await assert.rejects(a.authenticateAgent('nobody', 'aa01'), (err: unknown) => isCertfleetError(err, ErrorCode.Unauthenticated) && err.details['reason'] === 'not enrolled');
  });

  it('on a shared store, honours another controller\'s removal once the registration TTL has passed', async () => {
    const { wrapped } = await countingStore('vault');
    const clock = new ManualClock(START);
    const a = new Enrollment(wrapped, clock, silentLogger());
    const b = new Enrollment(wrapped, clock, silentLogger(), { registrationTtlMs: 1000 });
    await a.recordAgent(enrolled('edge-a', 'aa01'));
    await b.authenticateAgent('edge-a', 'aa01');
    await a.removeAgent('edge-a', 'alice');
    await assert.rejects(a.authenticateAgent('edge-a', 'aa01'), refusedAsRemoved);
    clock.advance(1000);
    await assert.rejects(b.authenticateAgent('edge-a', 'aa01'), refusedAsRemoved);
  });

  it('registrationTtlMs 0 reads the store on every call', async () => {
    const { wrapped, state } = await countingStore('file');
    const enrollment = new Enrollment(wrapped, new ManualClock(START), silentLogger(), { registrationTtlMs: 0 });
    await enrollment.recordAgent(enrolled('edge-a', 'aa01'));
    const before = state.agentReads;
    await enrollment.authenticateAgent('edge-a', 'aa01');
    await enrollment.authenticateAgent('edge-a', 'aa01');
    assert.equal(state.agentReads, before + 2);
  });
});

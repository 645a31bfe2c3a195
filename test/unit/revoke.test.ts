/**
 * Revocation (issue #15, part 3), without a CA: the policy that moves the fleet off a
 * revoked version (controller/operator revocationPlan), rollback and pins refusing revoked
 * versions (controller/rollback), and the CLI's `revoke` parsing and output. The CA side
 * and the whole fleet are proven in test/e2e/revoke.test.ts against Pebble.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { revocationPlan, type RevocationInput } from '../../controller/operator/index.js';
import { Pins, Revocations, rollbackTarget } from '../../controller/rollback/index.js';
import { FileStore, ObjectKey } from '../../controller/store/index.js';
import { helpText, parseCommandLine, renderCertificate, renderHistory, renderRevoke } from '../../cli/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import type { pb } from '../../shared/grpc/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { VersionMeta } from '../../shared/model/index.js';
import { REVOCATION_REASONS } from '../../shared/wire/index.js';
import { tempDir } from '../harness/tmp.js';

const NOW = Date.UTC(2026, 5, 1);
const DAY = 86_400_000;
function v(version: number, expiresInDays = 60): VersionMeta {
  return {
    name: 'web',
    version,
    serial: `0${version}`,
    fingerprint: `f${version}`,
    names: ['a.test'],
    notBefore: new Date(NOW - 30 * DAY).toISOString(),
    notAfter: new Date(NOW + expiresInDays * DAY).toISOString(),
    issuedAt: new Date(NOW - 30 * DAY).toISOString(),
    keyType: 'ecdsa-p256',
  };
}

function plan(over: Partial<RevocationInput>): ReturnType<typeof revocationPlan> {
  return revocationPlan({ version: 2, versions: [v(1), v(2)], revoked: new Set([2]), desired: { version: 2 }, pinned: 0, now: NOW, ...over });
}
const moves = (p: ReturnType<typeof revocationPlan>): [boolean, number, boolean, boolean, boolean] => [p.served, p.serve, p.pinServe, p.renew, p.releasePin];

// [what, input, [served, serve, pinServe, renew, releasePin]]
const POLICY: Array<[string, Partial<RevocationInput>, [boolean, number, boolean, boolean, boolean]]> = [
  ['the served newest version, an older usable one exists: move to the older one pinned, and renew at once', {}, [true, 1, true, true, false]],
  [
    'the served newest version and the only usable one: the fleet stays on it until the renewal lands',
    { versions: [v(1, -1), v(2)] },
    [true, 0, false, true, false],
  ],
  ['the only version there is: renew, nothing else to serve', { version: 1, versions: [v(1)], revoked: new Set([1]), desired: { version: 1 } }, [true, 0, false, true, false]],
  [
    'an older version pinned by a rollback: release the pin, the newest (usable) version is served, no renewal',
    { version: 1, versions: [v(1), v(2)], revoked: new Set([1]), desired: { version: 1 }, pinned: 1 },
    [true, 2, false, false, true],
  ],
  [
    'an older version that is not served: nothing moves, nothing is renewed',
    { version: 1, versions: [v(1), v(2), v(3)], revoked: new Set([1]), desired: { version: 3 } },
    [false, 0, false, false, false],
  ],
  [
    'the newest version while a rollback pins an older one: the pin stays, and a renewal replaces the dead newest',
    { version: 3, versions: [v(1), v(2), v(3)], revoked: new Set([3]), desired: { version: 2 }, pinned: 2 },
    [false, 0, false, true, false],
  ],
  [
    'the served newest while the operator pinned another usable version: that pin is kept',
    { version: 3, versions: [v(1), v(2), v(3)], revoked: new Set([3]), desired: { version: 3 }, pinned: 1 },
    [true, 1, true, true, false],
  ],
  [
    'the starting version of an unfinished rollout: every agent goes to the newest at once',
    { version: 1, versions: [v(1), v(2)], revoked: new Set([1]), desired: { version: 2, rolloutFrom: 1 } },
    [true, 2, false, false, false],
  ],
  [
    'an older interim version is chosen newest first, skipping revoked and expired ones',
    { version: 4, versions: [v(1), v(2, -1), v(3), v(4)], revoked: new Set([3, 4]), desired: { version: 4 } },
    [true, 1, true, true, false],
  ],
];

for (const [what, input, expected] of POLICY) {
  test(`policy: ${what}`, () => {
    assert.deepEqual(moves(plan(input)), expected);
  });
}

test('policy: the summary says where the fleet goes and that a renewal is requested', () => {
  assert.equal(plan({}).summary, 'the fleet moves to v1, pinned until the renewal is issued; a renewal is requested now (v2 is not usable)');
  assert.equal(plan({ versions: [v(2)] }).summary, 'v2 was the only usable version: the fleet keeps it until the renewal is issued; a renewal is requested now (v2 is not usable)');
});

test('rollback refuses a revoked version with VERSION_REVOKED, and without --to skips revoked ones', () => {
  const versions = [v(1), v(2), v(3)];
  assert.throws(
    () => rollbackTarget('web', versions, 3, 2, NOW, new Set([2])),
    (err: unknown) => isCertfleetError(err, ErrorCode.VersionRevoked) && /version 2 of web was revoked at the CA/.test(err.message),
  );
  assert.equal(rollbackTarget('web', versions, 3, 0, NOW, new Set([2])).version, 1);
  assert.throws(
    () => rollbackTarget('web', versions, 3, 0, NOW, new Set([1, 2])),
    (err: unknown) => isCertfleetError(err, ErrorCode.VersionRevoked) && /no version before v3 that is not revoked/.test(err.message),
  );
});

test('pins refuse a revoked version and ignore a pin written before its version was revoked; marks are listed per certificate', async () => {
  const store = await FileStore.open({ dir: tempDir('certfleet-revoke-'), log: silentLogger() });
  try {
    const pins = new Pins(store);
    const revocations = new Revocations(store);
    await pins.set('web', { version: 1, from: 2, at: 'x', by: 'alice' });
    assert.equal((await pins.get('web'))?.version, 1);
    await revocations.set('web', { version: 1, serial: '01', reason: 'keyCompromise', reasonCode: 1, at: 't', by: 'alice', alreadyRevokedAtCa: false });
    assert.equal(await pins.get('web'), null, 'a pin on a revoked version is not acted on');
    assert.equal((await pins.stored('web'))?.version, 1, 'but it is still there to be released');
    await assert.rejects(pins.set('web', { version: 1, from: 2, at: 'x', by: 'bob' }), (err: unknown) => isCertfleetError(err, ErrorCode.VersionRevoked));
    // A damaged mark still counts as revoked; another certificate's marks are not listed.
    await store.putObject(ObjectKey.revocation('web', 3), { garbage: true });
    await revocations.set('api', { version: 2, serial: '02', reason: 'superseded', reasonCode: 4, at: 't', by: 'bob', alreadyRevokedAtCa: true });
    assert.deepEqual([...(await revocations.all('web')).keys()].sort(), [1, 3]);
    assert.equal((await revocations.get('web', 1))?.reason, 'keyCompromise');
    assert.equal(await revocations.get('web', 2), null);
  } finally {
    await store.close();
  }
});

test('cli: revoke needs --version, takes one of the RFC 5280 reasons (unspecified by default), and --json', () => {
  const operator = { credentialsFile: undefined, timeoutMs: 10_000 };
  assert.deepEqual(parseCommandLine(['revoke', 'web', '--version', '2']), { command: 'revoke', name: 'web', version: 2, reason: 'unspecified', json: false, operator });
  assert.deepEqual(parseCommandLine(['revoke', '--version=3', 'web', '--reason', 'keyCompromise', '--json']), {
    command: 'revoke',
    name: 'web',
    version: 3,
    reason: 'keyCompromise',
    json: true,
    operator,
  });
  for (const reason of Object.keys(REVOCATION_REASONS)) {
    assert.equal((parseCommandLine(['revoke', 'web', '--version', '1', '--reason', reason]) as { reason: string }).reason, reason);
  }
  const refused: Array<[string[], RegExp]> = [
    [['revoke', 'web'], /missing --version N/],
    [['revoke', '--version', '2'], /missing NAME/],
    [['revoke', 'web', '--version', '0'], /--version '0' is not a positive integer/],
    [['revoke', 'web', '--version', 'v2'], /--version 'v2' is not a positive integer/],
    [['revoke', 'web', '--version', '2', '--reason', 'privilegeWithdrawn'], /not a revocation reason: one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation/],
    [['revoke', 'web', '--version', '2', '--to', '1'], /unknown option '--to'/],
  ];
  for (const [argv, message] of refused) {
    assert.throws(() => parseCommandLine(argv), (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid) && message.test(err.message), argv.join(' '));
  }
  // The global --version still prints the program's version, alone or before a command word.
  assert.deepEqual(parseCommandLine(['--version']), { command: 'version' });
  assert.deepEqual(parseCommandLine(['revoke', '--help']), { command: 'help', topic: 'revoke' });
  assert.match(helpText('revoke'), /--reason REASON/);
  assert.match(helpText(), /revoke NAME --version N/);
});

test('cli: revoke prints the controller line and what to follow; history and show mark revoked versions', () => {
  const resp: pb.RevokeCertificateResponse__Output = {
    name: 'web',
    version: 2,
    serial: '02',
    reason: 'keyCompromise',
    reasonCode: 1,
    alreadyRevoked: true,
    revokedAt: '2026-06-01T00:00:00.000Z',
    revokedBy: 'alice',
    served: false,
    servingVersion: 0,
    servingPinned: false,
    pinReleased: false,
    renewalRequested: false,
    message: 'web: version 2 was already revoked (keyCompromise, by alice at 2026-06-01T00:00:00.000Z); v2 was not being served; nothing moved',
  };
  assert.equal(renderRevoke(resp), `${resp.message}\n`);
  assert.equal(renderRevoke({ ...resp, renewalRequested: true }), `${resp.message}\nweb: "certfleet renew web --wait" follows the renewal until the fleet serves it\n`);

  const entry = (version: number, over: Partial<pb.VersionHistory__Output> = {}): pb.VersionHistory__Output => ({
    version: { ...v(version), issuedAt: v(version).issuedAt, profile: '', issuer: '' },
    agents: [],
    desired: false,
    expired: false,
    revoked: false,
    revocationReason: '',
    revokedAt: '',
    revokedBy: '',
    ...over,
  });
  const history = renderHistory({ name: 'web', pinnedVersion: 1, versions: [entry(1, { desired: true }), entry(2, { revoked: true, revocationReason: 'keyCompromise' })] }, new Date(NOW));
  assert.match(history, /^2 .* revoked\(keyCompromise\) /m);
  assert.match(history, /^1 .* desired,pinned /m);

  const show = renderCertificate(
    {
      summary: null,
      reason: '',
      deferredUntil: '',
      deferredReason: '',
      backoffUntil: '',
      failures: 0,
      pinnedVersion: 0,
      ariWindowStart: '',
      ariWindowEnd: '',
      desiredVersion: 3,
      revokedVersions: [1, 2],
      issuers: [],
      nextIssuer: '',
    },
    new Date(NOW),
  );
  assert.match(show, /^revoked: +v1, v2$/m);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentPermissions, NatsAuthority } from '../../controller/natsauth/index.js';
import { ManualClock } from '../../shared/clock/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';

function memoryStore(): { objects: Map<string, string>; getObject<T>(key: string): Promise<T | null>; putObject(key: string, value: unknown): Promise<void> } {
  const objects = new Map<string, string>();
  return {
    objects,
    getObject: <T>(key: string) => Promise.resolve(objects.has(key) ? (JSON.parse(objects.get(key) ?? 'null') as T) : null),
    putObject: (key: string, value: unknown) => {
      objects.set(key, JSON.stringify(value));
      return Promise.resolve();
    },
  };
}

/** The claims of a JWT, without checking it (the integration test has the server check it). */
function claims(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

function jwtOf(creds: string): string {
  const m = /-----BEGIN NATS USER JWT-----\n(.+)\n/.exec(creds);
  assert.ok(m?.[1], 'creds hold a user JWT');
  return m[1];
}

test("an agent's NATS rights read two buckets and write nothing but JetStream API reads and flow-control replies", () => {
  const p = agentPermissions('edge-1');
  const pub = p.pub?.allow ?? [];
  assert.ok(pub.length > 0);
  for (const subject of pub) {
    assert.ok(subject === '$JS.API.INFO' || /^\$JS\.(API\.(STREAM|DIRECT|CONSUMER)\.[A-Z.]*\.?KV_certfleet_(desired|challenges)|FC\.KV_certfleet_(desired|challenges))/.test(subject), `unexpected right ${subject}`);
  }
  assert.ok(!pub.some((s) => s.startsWith('$KV.') || s.startsWith('certfleet.') || s.includes('>') && !s.includes('KV_certfleet_')));
  assert.deepEqual(p.sub?.allow, ['_INBOX.agent.edge-1.>']);
  assert.throws(() => agentPermissions('Edge 1'), (err) => isCertfleetError(err, ErrorCode.UsageInvalid));
});

test('the authority is created once and reloaded from the store; its server include holds no seed', async () => {
  const store = memoryStore();
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  const first = await NatsAuthority.open(store, clock);
  const again = await NatsAuthority.open(store, clock);
  assert.equal(again.accountId, first.accountId);
  const conf = first.serverConfig();
  assert.match(conf, /^operator: ey/m);
  assert.match(conf, /^resolver: MEMORY$/m);
  assert.ok(conf.includes(`${first.accountId}: ey`));
  assert.doesNotMatch(conf, /\bS[OAU][A-Z2-7]{50,}/, 'no nkey seed in the include');
  const account = claims(first.accountJwt);
  const limits = (account['nats'] as { limits: Record<string, unknown> }).limits;
  assert.equal(limits['conn'], -1, 'connections unlimited (a missing limit means 0)');
  assert.equal(limits['disk_storage'], -1, 'JetStream enabled');
});

test("an agent's user expires with its certificate, and minting again revokes the previous user", async () => {
  const store = memoryStore();
  const clock = new ManualClock(Date.now());
  const authority = await NatsAuthority.open(store, clock);
  const notAfter = Date.now() + 90 * 86400_000;
  const first = await authority.mintAgentCredentials('edge-1', notAfter);
  assert.equal(first.accountChanged, false);
  const user = claims(jwtOf(first.creds));
  assert.equal(user['exp'], Math.floor(notAfter / 1000));
  assert.equal(user['iss'], authority.accountId);
  const second = await authority.mintAgentCredentials('edge-1', notAfter);
  assert.equal(second.accountChanged, true);
  const revocations = (claims(authority.accountJwt)['nats'] as { revocations?: Record<string, number> }).revocations ?? {};
  assert.ok(revocations[first.publicKey] !== undefined, 'the first user is revoked');
  assert.equal(revocations[second.publicKey], undefined, 'the new one is not');
  assert.ok((revocations[first.publicKey] ?? 0) >= (user['iat'] as number), 'the revocation covers the JWT it revokes');
  // Reloaded from the store: the revocation stays, and revoking again changes nothing.
  const reloaded = await NatsAuthority.open(store, clock);
  assert.equal(reloaded.accountJwt, authority.accountJwt);
  assert.equal(await reloaded.revokeAgent('edge-1'), true);
  assert.equal(await reloaded.revokeAgent('edge-1'), false);
  assert.equal(await reloaded.revokeAgent('edge-2'), false);
});

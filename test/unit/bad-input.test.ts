/**
 * The bad-input corpus: one table of things an operator, a script or a broken peer can
 * hand certfleet, each refused with a clear error that names what is wrong, the documented
 * exit code (docs/cli.md, docs/errors.md), no crash or stack trace, and nothing changed
 * on disk (the state directories are snapshotted before and after every case).
 *
 * Kinds of input, each run the way it arrives in production:
 *   controller / agent configuration  `certfleet controller|agent --check --config FILE` (runCli)
 *   command line                      runCli(argv)
 *   gRPC requests                     a real grpc-js client against controller/api's server,
 *                                     with the controller's real PKI, a real Enrollment on a file
 *                                     store, and a small operator backend
 *   bundles                           agent/install's Installer (refuses before disk)
 *   enrolment tokens                  AgentService.Enroll over gRPC
 * NATS records are not here: validating them is another change (issue 8, item 2); the lead
 * adds those rows when it lands.
 *
 * Also here, because they need the same server: the retry facts (`retryable`,
 * `retryAfterMs`) survive the trip through gRPC, and a self-signed client certificate is
 * told it is not signed by the controller's CA.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { runCli, operatorClient, type CliIo, type OperatorCredentials } from '../../cli/index.js';
import { startApiServer, type ApiServer, type OperatorBackend } from '../../controller/api/index.js';
import { Enrollment } from '../../controller/enroll/index.js';
import { ManualClock, systemClock } from '../../shared/clock/index.js';
import { checkAgentCsr, createControllerCa, issueOperatorCertificate, issueServerCertificate, signAgentCsr, verifyClientCertificate, type CaMaterial } from '../../controller/pki/index.js';
import { FileStore } from '../../controller/store/file.js';
import { Installer } from '../../agent/install/index.js';
import { CertfleetError, ErrorCode, ExitCode, exitCodeFor, isCertfleetError } from '../../shared/errors/index.js';
import { clientCredentials, deadline, fromServiceError, loadProtos, type grpc } from '../../shared/grpc/index.js';
import { silentLogger } from '../../shared/log/index.js';
import type { Bundle } from '../../shared/model/index.js';
import { createAgentKeyAndCsr } from '../../shared/pki-csr/index.js';
import { parseAgentRecord, parseChallengeRecord, parseDesiredRecord, RecordError } from '../../shared/records/index.js';
import { makeBundle, makeLeaf, makeTestCa, metaFor } from '../harness/certs.js';
import { tempDir } from '../harness/tmp.js';

// ---- fixtures -----------------------------------------------------------------------------

const GOOD_CONTROLLER = `stateDir: ./state
acme:
  directoryUrl: https://127.0.0.1:14000/dir
  termsOfServiceAgreed: true
certificates:
  - name: web
    names: [www.example.test]
    agents: role=web
`;

const GOOD_AGENT = `stateDir: ./state
controller:
  address: 127.0.0.1:7443
  caFile: ca.pem
`;

/** Replaces the first occurrence of `from` in `text` (which must contain it). */
function edit(text: string, from: string, to: string): string {
  assert.ok(text.includes(from), `fixture contains ${from}`);
  return text.replace(from, to);
}

/** Every file and directory under `root` with its content and mode: "nothing changed" is equality. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!fs.existsSync(root)) return out;
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      const rel = path.relative(root, p);
      const st = fs.lstatSync(p);
      if (e.isDirectory()) {
        out[`${rel}/`] = st.mode.toString(8);
        walk(p);
      } else if (e.isSymbolicLink()) {
        out[rel] = `-> ${fs.readlinkSync(p)}`;
      } else {
        out[rel] = `${st.mode.toString(8)} ${fs.readFileSync(p, 'base64')}`;
      }
    }
  };
  walk(root);
  return out;
}

interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(argv: string[]): Promise<Captured> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: (t: string) => (stdout += t), isTTY: false },
    stderr: { write: (t: string) => (stderr += t) },
    stdin: () => Readable.from([]),
    env: {},
    now: () => new Date(),
  };
  const code = await runCli(argv, io);
  return { code, stdout, stderr };
}

// ---- the world the cases run against ----------------------------------------------------------

interface World {
  root: string;
  /** Directories whose content must not change in any case. */
  watched: string[];
  ca: CaMaterial;
  api: ApiServer;
  operatorCreds: OperatorCredentials;
  agentCreds: { certPem: string; keyPem: string };
  enrollment: Enrollment;
  installer: Installer;
  agentState: string;
  /** A token redeemed once already. */
  usedToken: string;
  /** A token whose ttl has passed. */
  expiredToken: string;
  /** A valid token, offered with a broken CSR. */
  csrToken: string;
  goodBundle: Bundle;
  otherBundle: Bundle;
  expiredBundle: Bundle;
}

let world: World;

/** What each case may look at: the world, plus a directory of its own for files it writes. */
interface Ctx {
  w: World;
  dir: string;
}

/** The outcome every case is judged on, however the input arrived. */
interface Outcome {
  exit: number | null;
  /** Everything the user (or the calling program) is told. */
  text: string;
  code?: string;
}

function outcomeOf(err: unknown): Outcome {
  assert.ok(err instanceof CertfleetError, `a CertfleetError, not ${String(err)}`);
  return { exit: exitCodeFor(err), text: err.message, code: err.code };
}

async function refusal(fn: () => Promise<unknown>): Promise<Outcome> {
  try {
    await fn();
  } catch (err) {
    return outcomeOf(err);
  }
  assert.fail('expected the input to be refused');
}

function operatorCall<T>(w: World, fn: (c: ReturnType<typeof operatorClient>) => Promise<T>, creds: Partial<OperatorCredentials> = {}): Promise<Outcome> {
  const client = operatorClient({ ...w.operatorCreds, ...creds }, 5000);
  return refusal(() => fn(client)).finally(() => client.close());
}

type AgentClient = InstanceType<ReturnType<typeof loadProtos>['agent']['certfleet']['v1']['AgentService']>;

function agentCall(w: World, start: (c: AgentClient, cb: (err: grpc.ServiceError | null) => void) => void, identity?: { certPem: string; keyPem: string }): Promise<Outcome> {
  const { agent } = loadProtos();
  const client = new agent.certfleet.v1.AgentService(
    `127.0.0.1:${w.api.port}`,
    clientCredentials({ caPem: w.ca.certPem, ...(identity ?? {}) }),
    { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' },
  );
  return refusal(
    () =>
      new Promise<void>((resolve, reject) => {
        start(client, (err) => (err ? reject(fromServiceError(err, 'controller')) : resolve()));
      }),
  ).finally(() => client.close());
}

function enroll(w: World, token: string, csrPem: string): Promise<Outcome> {
  return agentCall(w, (c, cb) => c.enroll({ token, csrPem }, { deadline: deadline(5000) }, cb));
}

// ---- the corpus ---------------------------------------------------------------------------------

interface Case {
  /** What is wrong, as a sentence. */
  what: string;
  kind: 'controller config' | 'agent config' | 'command line' | 'gRPC' | 'bundle' | 'token' | 'NATS record';
  run(ctx: Ctx): Promise<Outcome>;
  /** Exit code of the process that was given the input; null where no process exits (a NATS record is skipped and reported, the reader goes on). */
  exit: number | null;
  /** Stable error code, when one is printed (usage errors print a hint instead). */
  code?: string;
  /** Stable parts of the message: the field or path, and what is wrong. */
  says: RegExp[];
  /** Files (relative to a watched directory) the refusal may delete as housekeeping. */
  mayRemove?: RegExp;
}

function controllerConfig(what: string, yaml: string, field: string, says: RegExp): Case {
  return {
    what,
    kind: 'controller config',
    async run({ dir }) {
      const file = path.join(dir, 'controller.yaml');
      fs.writeFileSync(file, yaml);
      const r = await cli(['controller', '--check', '--config', file]);
      return { exit: r.code, text: r.stderr + r.stdout };
    },
    exit: ExitCode.Config,
    code: ErrorCode.ConfigInvalid,
    // The documented shape: file:line: field.path: message
    says: [new RegExp(`controller\\.yaml:\\d+: ${field.replace(/[.[\]]/g, (c) => `\\${c}`)}: `), says],
  };
}

function agentConfig(what: string, yaml: string, field: string, says: RegExp): Case {
  return {
    what,
    kind: 'agent config',
    async run({ dir }) {
      const file = path.join(dir, 'agent.yaml');
      fs.writeFileSync(file, yaml);
      const r = await cli(['agent', '--check', '--config', file]);
      return { exit: r.code, text: r.stderr + r.stdout };
    },
    exit: ExitCode.Config,
    code: ErrorCode.ConfigInvalid,
    says: [new RegExp(`agent\\.yaml:\\d+: ${field.replace(/[.[\]<>]/g, (c) => `\\${c}`)}: `), says],
  };
}

function commandLine(what: string, argv: string[], says: RegExp): Case {
  return {
    what,
    kind: 'command line',
    async run() {
      const r = await cli(argv);
      return { exit: r.code, text: r.stderr + r.stdout };
    },
    exit: ExitCode.Usage,
    says: [says, /\nTry 'certfleet/],
  };
}

/**
 * A record read from a NATS bucket: the reader (agent or controller) skips it with a
 * RecordError naming the field and never its value (shared/records; issue #8: one
 * `{"selector":"*"}` took every agent offline). No process exits.
 */
function natsRecord(what: string, parse: (value: unknown, key: string) => unknown, key: string, value: unknown, says: RegExp): Case {
  return {
    what,
    kind: 'NATS record',
    run() {
      try {
        parse(value, key);
      } catch (err) {
        assert.ok(err instanceof RecordError, `a RecordError, not ${String(err)}`);
        return Promise.resolve({ exit: null, text: err.message });
      }
      return Promise.reject(new Error('expected the record to be refused'));
    },
    exit: null,
    says: [says],
  };
}

const GOOD_DESIRED = {
  name: 'web',
  version: 2,
  fingerprint: 'a'.repeat(64),
  names: ['www.example.test'],
  notAfter: '2030-01-01T00:00:00.000Z',
  selector: 'role=edge',
  updatedAt: '2026-01-01T00:00:00.000Z',
};

const C = GOOD_CONTROLLER;
const A = GOOD_AGENT;

const CASES: Case[] = [
  // --- controller configuration: durations (item 9: loops and overloads) ---
  controllerConfig('a zero renewal.checkInterval (busy loop)', `${C}renewal: { checkInterval: 0s }\n`, 'renewal.checkInterval', /"0s" is too short: at least 1s \(a shorter interval busy-loops the controller\)/),
  controllerConfig('an absurd renewal.checkInterval', `${C}renewal: { checkInterval: 99999999999d }\n`, 'renewal.checkInterval', /"99999999999d" is too long: at most 1d/),
  controllerConfig('a checkInterval beyond the timer limit', `${C}renewal: { checkInterval: 30d }\n`, 'renewal.checkInterval', /too long: at most 1d/),
  controllerConfig('a checkInterval without a unit', `${C}renewal: { checkInterval: "60" }\n`, 'renewal.checkInterval', /"60" is not a duration/),
  controllerConfig('a negative checkInterval', `${C}renewal: { checkInterval: -1s }\n`, 'renewal.checkInterval', /"-1s" is not a duration/),
  controllerConfig('a zero api.agentOfflineAfter', `${C}api: { agentOfflineAfter: 0s }\n`, 'api.agentOfflineAfter', /too short: at least 5s/),
  controllerConfig('an absurd api.agentOfflineAfter', `${C}api: { agentOfflineAfter: 1000d }\n`, 'api.agentOfflineAfter', /too long: at most 7d/),
  controllerConfig('a zero http01.selfCheckTimeout', `${C}http01: { selfCheckTimeout: 0ms }\n`, 'http01.selfCheckTimeout', /too short: at least 1s/),
  controllerConfig('an absurd http01.validationTimeout', `${C}http01: { validationTimeout: 400d }\n`, 'http01.validationTimeout', /too long: at most 1h/),
  controllerConfig('a zero budget period', `${C}budgets: { limits: { newOrdersPerAccount: { count: 10, period: 0s } } }\n`, 'budgets.limits.newOrdersPerAccount.period', /too short: at least 1ms/),
  // --- controller configuration: certificates ---
  controllerConfig('an empty certificates list', edit(C, `certificates:\n  - name: web\n    names: [www.example.test]\n    agents: role=web\n`, 'certificates: []\n'), 'certificates', /at least one certificate is required/),
  controllerConfig('no certificates at all', edit(C, `certificates:\n  - name: web\n    names: [www.example.test]\n    agents: role=web\n`, ''), 'certificates', /required: the certificates to issue/),
  controllerConfig('an upper-case certificate name', edit(C, 'name: web', 'name: Web'), 'certificates[0].name', /lower-case letters, digits and "-"/),
  controllerConfig('a certificate name with an underscore', edit(C, 'name: web', 'name: web_1'), 'certificates[0].name', /lower-case letters, digits and "-"/),
  controllerConfig('an upper-case DNS name', edit(C, 'www.example.test', 'WWW.Example.test'), 'certificates[0].names[0]', /has upper-case letters: write DNS names in lower case \("www\.example\.test"\)/),
  controllerConfig('an IPv4 address as a DNS name', edit(C, 'www.example.test', '192.0.2.10'), 'certificates[0].names[0]', /"192\.0\.2\.10" is an IP address: IP identifiers are not supported/),
  controllerConfig('an IPv6 address as a DNS name', edit(C, '[www.example.test]', '["2001:db8::1"]'), 'certificates[0].names[0]', /is an IP address: IP identifiers are not supported/),
  controllerConfig('a single-label name', edit(C, 'www.example.test', 'localhost'), 'certificates[0].names[0]', /is not a valid DNS name/),
  controllerConfig('a name with a space', edit(C, '[www.example.test]', '["www example.test"]'), 'certificates[0].names[0]', /is not a valid DNS name/),
  controllerConfig('no DNS names', edit(C, '[www.example.test]', '[]'), 'certificates[0].names', /expected array to have >=1 items|too small/i),
  controllerConfig('a duplicate DNS name', edit(C, '[www.example.test]', '[www.example.test, www.example.test]'), 'certificates[0].names[1]', /duplicate name www\.example\.test/),
  controllerConfig('a wildcard over HTTP-01', edit(C, 'www.example.test', '"*.example.test"'), 'certificates[0].names[0]', /wildcard names need challenge dns-01/),
  controllerConfig('an unterminated selector set', edit(C, 'agents: role=web', 'agents: "role in (a,"'), 'certificates[0].agents', /bad selector: unterminated set in "role in \(a,": expected "\)"/),
  controllerConfig('an empty selector', edit(C, 'agents: role=web', 'agents: ""'), 'certificates[0].agents', /empty selector \(use "\*" for every agent\)/),
  controllerConfig('a selector with a bad label key', edit(C, 'agents: role=web', 'agents: "-role=web"'), 'certificates[0].agents', /bad label key "-role"/),
  controllerConfig('a duplicate certificate name', `${C}  - { name: web, names: [b.example.test], agents: "*" }\n`, 'certificates[1].name', /duplicate certificate name "web"/),
  controllerConfig('an unknown field in a certificate', edit(C, 'agents: role=web', 'agents: role=web\n    colour: blue'), 'certificates[0].colour', /unknown field \(allowed: /),
  controllerConfig('a bad renewBefore', `${C.trimEnd()}\n    renewBefore: 150%\n`, 'certificates[0].renewBefore', /neither a duration before expiry/),
  // --- controller configuration: other fields ---
  controllerConfig('an http ACME directory', edit(C, 'https://127.0.0.1', 'http://127.0.0.1'), 'acme.directoryUrl', /expected an https:\/\/ ACME directory URL/),
  controllerConfig('terms of service not agreed', edit(C, 'termsOfServiceAgreed: true', 'termsOfServiceAgreed: false'), 'acme.termsOfServiceAgreed', /must be true/),
  controllerConfig('a malformed acme.email', edit(C, 'termsOfServiceAgreed: true', 'termsOfServiceAgreed: true\n  email: not-an-address'), 'acme.email', /email/i),
  controllerConfig('an api.listen without a port', `${C}api: { listen: "127.0.0.1" }\n`, 'api.listen', /expected host:port/),
  controllerConfig('a zero renewal.concurrency', `${C}renewal: { concurrency: 0 }\n`, 'renewal.concurrency', />=1|too small/i),
  controllerConfig('an unknown log level', `${C}log: { level: loud }\n`, 'log.level', /fatal|invalid option/i),
  controllerConfig('a NATS URL with the wrong scheme', `${C}nats: { servers: ["http://127.0.0.1:4222"] }\n`, 'nats.servers[0]', /expected nats:\/\/host:port/),
  controllerConfig('an unknown top-level field', `${C}colour: blue\n`, 'colour', /unknown field \(allowed: stateDir, /),
  controllerConfig('an unset environment variable', edit(C, 'stateDir: ./state', 'stateDir: ${CERTFLEET_CORPUS_UNSET}'), 'stateDir', /environment variable CERTFLEET_CORPUS_UNSET is not set/),
  // --- agent configuration ---
  agentConfig('a zero reportInterval (floods the controller)', `${A}reportInterval: 0s\n`, 'reportInterval', /"0s" is too short: at least 1s \(a shorter interval floods the controller\)/),
  agentConfig('an absurd reportInterval', `${A}reportInterval: 99999999999d\n`, 'reportInterval', /too long: at most 1h/),
  agentConfig('a zero resyncInterval', `${A}resyncInterval: 0s\n`, 'resyncInterval', /too short: at least 1s/),
  agentConfig('an absurd resyncInterval', `${A}resyncInterval: 9999d\n`, 'resyncInterval', /too long: at most 1d/),
  agentConfig('a zero hook timeout', `${A}hooks: { reload: { command: "true", timeout: 0s } }\n`, 'hooks.reload.timeout', /too short: at least 1s/),
  agentConfig('an absurd hook timeout', `${A}hooks: { reload: { command: "true", timeout: 30d } }\n`, 'hooks.reload.timeout', /too long: at most 1h/),
  agentConfig('an empty hook command', `${A}hooks: { reload: { command: "" } }\n`, 'hooks.reload.command', /.+/),
  agentConfig('an upper-case certificate name as a key', `${A}certificates:\n  Web: { verify: [] }\n`, 'certificates.Web', /"Web" is not a certificate name: lower-case letters, digits and "-"/),
  agentConfig('a certificate key with a dot', `${A}certificates:\n  web.example: {}\n`, 'certificates.web.example', /is not a certificate name/),
  agentConfig('a verify address without a port', `${A}certificates:\n  web: { verify: [{ address: "127.0.0.1" }] }\n`, 'certificates.web.verify[0].address', /expected host:port/),
  agentConfig('keepVersions below two', `${A}keepVersions: 1\n`, 'keepVersions', />=2|too small/i),
  agentConfig('a missing controller section', 'stateDir: ./state\n', 'controller', /expected object|required/i),
  agentConfig('an unknown field', `${A}colour: blue\n`, 'colour', /unknown field \(allowed: /),
  // --- command line ---
  commandLine('a negative --to', ['rollback', 'web', '--to', '-1'], /^certfleet: --to '-1' is not a positive integer: negative numbers are not allowed/),
  commandLine('a negative --timeout', ['status', '--timeout', '-5s'], /^certfleet: --timeout '-5s' is not a positive duration/),
  commandLine('a negative events --limit', ['events', '--limit', '-3'], /^certfleet: --limit '-3' is not a positive integer: negative numbers are not allowed/),
  commandLine('a --timeout too short to answer', ['status', '--timeout', '1ms'], /^certfleet: --timeout '1ms' is too short: at least 500ms/),
  commandLine('an absurd --timeout', ['status', '--timeout', '99999999999d'], /^certfleet: --timeout '99999999999d' is too long: at most 1h/),
  commandLine('an option where a value belongs', ['events', '--cert', '--json'], /^certfleet: --cert needs a value/),
  commandLine('an upper-case certificate name argument', ['show', 'Web'], /'Web' is not a valid certificate name/),
  commandLine('an unknown command', ['frobnicate'], /^certfleet: unknown command 'frobnicate'/),
  commandLine('an unknown option', ['certs', '--bogus'], /^certfleet: unknown option '--bogus'/),
  commandLine('a fractional --to', ['rollback', 'web', '--to', '2.5'], /--to '2\.5' is not a positive integer/),
  commandLine('a bad --label', ['token', 'create', 'edge-1', '--label', 'role'], /--label 'role' is not key=value/),
  commandLine('a --ttl under a second', ['token', 'create', 'edge-1', '--ttl', '10ms'], /--ttl '10ms' is shorter than one second/),
  // --- gRPC requests ---
  {
    what: 'a rollback with an empty certificate name',
    kind: 'gRPC',
    run: ({ w }) => operatorCall(w, (c) => c.rollback({ name: '', toVersion: 1 })),
    exit: ExitCode.Usage,
    code: ErrorCode.UsageInvalid,
    says: [/a certificate name is required/],
  },
  {
    what: 'a show with an empty certificate name',
    kind: 'gRPC',
    run: ({ w }) => operatorCall(w, (c) => c.showCertificate({ name: '' })),
    exit: ExitCode.Usage,
    code: ErrorCode.UsageInvalid,
    says: [/a certificate name is required/],
  },
  {
    what: 'a history of a certificate the controller does not know',
    kind: 'gRPC',
    run: ({ w }) => operatorCall(w, (c) => c.getHistory({ name: 'Nope_1' })),
    exit: ExitCode.NotFound,
    code: ErrorCode.NotFound,
    says: [/certificate Nope_1 is not in the controller's configuration/],
  },
  {
    what: 'a rollback to a version that does not exist',
    kind: 'gRPC',
    run: ({ w }) => operatorCall(w, (c) => c.rollback({ name: 'web', toVersion: 99 })),
    exit: ExitCode.NotFound,
    code: ErrorCode.NotFound,
    says: [/certificate web has no version 99/],
  },
  {
    what: 'a token for an invalid agent name',
    kind: 'gRPC',
    run: ({ w }) => operatorCall(w, (c) => c.createEnrollmentToken({ agent: 'Edge_1', labels: {}, ttlSeconds: 0 })),
    exit: ExitCode.Usage,
    code: ErrorCode.UsageInvalid,
    says: [/Edge_1/],
  },
  {
    what: 'an operator call with a self-signed client certificate',
    kind: 'gRPC',
    run: async ({ w }) => {
      const stranger = await makeTestCa({ commonName: 'admin' });
      return operatorCall(w, (c) => c.getStatus(), { certPem: stranger.certPem, keyPem: stranger.keyPem });
    },
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.Unauthenticated,
    says: [/client certificate rejected: it is not signed by the controller's CA \(DEPTH_ZERO_SELF_SIGNED_CERT\)/],
  },
  {
    what: 'an operator call with a certificate from another CA',
    kind: 'gRPC',
    run: async ({ w }) => {
      const other = await makeTestCa({ commonName: 'someone else' });
      const leaf = await makeLeaf(other, { names: ['admin'] });
      return operatorCall(w, (c) => c.getStatus(), { certPem: leaf.certPem, keyPem: leaf.keyPem });
    },
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.Unauthenticated,
    says: [/client certificate rejected: it is not signed by the controller's CA/],
  },
  {
    what: 'an agent certificate calling the operator API',
    kind: 'gRPC',
    run: ({ w }) => operatorCall(w, (c) => c.getStatus(), w.agentCreds),
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.PermissionDenied,
    says: [/an agent certificate cannot call the operator API/],
  },
  {
    what: 'an agent call without any client certificate',
    kind: 'gRPC',
    run: ({ w }) => agentCall(w, (c, cb) => c.getAssignments({}, { deadline: deadline(5000) }, cb)),
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.Unauthenticated,
    says: [/a client certificate is required/],
  },
  {
    what: 'an operator certificate calling the agent API',
    kind: 'gRPC',
    run: ({ w }) => agentCall(w, (c, cb) => c.getAssignments({}, { deadline: deadline(5000) }, cb), { certPem: w.operatorCreds.certPem, keyPem: w.operatorCreds.keyPem }),
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.PermissionDenied,
    says: [/an operator certificate cannot call the agent API/],
  },
  // --- enrolment tokens ---
  {
    what: 'an enrolment without a token',
    kind: 'token',
    run: async ({ w }) => enroll(w, '', (await createAgentKeyAndCsr('edge-9')).csrPem),
    exit: ExitCode.Usage,
    code: ErrorCode.UsageInvalid,
    says: [/token and csr_pem are required/],
  },
  {
    what: 'a garbage enrolment token',
    kind: 'token',
    run: async ({ w }) => enroll(w, 'not-a-token', (await createAgentKeyAndCsr('edge-9')).csrPem),
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.EnrollTokenInvalid,
    says: [/enrolment token is invalid, expired or already used/],
  },
  {
    what: 'a well-formed token nobody issued',
    kind: 'token',
    run: async ({ w }) => enroll(w, `cft_${'A'.repeat(43)}`, (await createAgentKeyAndCsr('edge-9')).csrPem),
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.EnrollTokenInvalid,
    says: [/enrolment token is invalid, expired or already used/],
  },
  {
    what: 'a token used twice',
    kind: 'token',
    run: async ({ w }) => enroll(w, w.usedToken, (await createAgentKeyAndCsr('edge-1')).csrPem),
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.EnrollTokenInvalid,
    says: [/enrolment token is invalid, expired or already used/],
  },
  {
    what: 'an expired token',
    kind: 'token',
    run: async ({ w }) => enroll(w, w.expiredToken, (await createAgentKeyAndCsr('edge-2')).csrPem),
    // Housekeeping: redeeming an expired token deletes its record (controller/enroll); nothing else.
    mayRemove: /^objects\/enroll\/[0-9a-f]{64}\.json$/,
    exit: ExitCode.PermissionDenied,
    code: ErrorCode.EnrollTokenInvalid,
    says: [/enrolment token is invalid, expired or already used/],
  },
  {
    what: 'a garbage CSR (the token is not spent)',
    kind: 'token',
    // "Nothing changed on disk" is the proof that the token was not used up.
    run: async ({ w }) => enroll(w, w.csrToken, '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'),
    exit: ExitCode.Failure,
    code: ErrorCode.CsrInvalid,
    says: [/^CSR /],
  },
  // --- bundles (agent/install refuses before disk) ---
  {
    what: 'a bundle whose key belongs to another certificate',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install({ ...w.goodBundle, keyPem: w.otherBundle.keyPem })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleKeyMismatch,
    says: [/web v1: private key does not match the certificate/],
  },
  {
    what: 'an expired bundle',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install(w.expiredBundle)),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleExpired,
    says: [/web v1: expired at /],
  },
  {
    what: 'a bundle that does not cover the assigned names',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install(w.goodBundle, { requiredNames: ['www.example.test', 'api.example.test'] })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleNamesMissing,
    says: [/certificate does not cover api\.example\.test/],
  },
  {
    what: 'a bundle with garbage PEM as its certificate',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install({ ...w.goodBundle, certPem: '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n' })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleInvalid,
    says: [/web v1: /],
  },
  {
    what: 'a bundle whose certificate is not the one its meta names',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install({ ...w.goodBundle, certPem: w.otherBundle.certPem, keyPem: w.otherBundle.keyPem })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleInvalid,
    says: [/web v1: leaf fingerprint differs from meta\.fingerprint/],
  },
  {
    what: 'a bundle with an unsafe certificate name',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install({ ...w.goodBundle, meta: { ...w.goodBundle.meta, name: '../etc' } })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleInvalid,
    says: [/certificate name is not a safe identifier/],
  },
  {
    what: 'a bundle with version 0',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install({ ...w.goodBundle, meta: { ...w.goodBundle.meta, version: 0 } })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleInvalid,
    says: [/version must be a positive integer/],
  },
  {
    what: 'a bundle with an empty private key',
    kind: 'bundle',
    run: ({ w }) => refusal(() => w.installer.install({ ...w.goodBundle, keyPem: '' })),
    exit: ExitCode.Failure,
    code: ErrorCode.BundleInvalid,
    says: [/private key cannot be parsed/],
  },
  // --- NATS records (skipped and reported by every reader, never acted on) ---
  natsRecord('a desired record without a name', parseDesiredRecord, 'web', { selector: '*' }, /^name: /),
  natsRecord('a desired record stored under another key', parseDesiredRecord, 'api', GOOD_DESIRED, /name: does not match the key/),
  natsRecord('a desired record with version 0', parseDesiredRecord, 'web', { ...GOOD_DESIRED, version: 0 }, /^version: /),
  natsRecord('a desired record with a fingerprint that is not SHA-256 hex', parseDesiredRecord, 'web', { ...GOOD_DESIRED, fingerprint: 'ZZ' }, /fingerprint: not a lower-case hex SHA-256 fingerprint/),
  natsRecord('a desired record with a bad selector', parseDesiredRecord, 'web', { ...GOOD_DESIRED, selector: 'role in (a,' }, /selector: not a valid label selector/),
  natsRecord('a desired record with an unknown field', parseDesiredRecord, 'web', { ...GOOD_DESIRED, keyPem: 'x' }, /unknown field\(s\) keyPem/),
  natsRecord('a desired record that is not an object', parseDesiredRecord, 'web', 'web@2', /expected object/),
  natsRecord('a desired record with a name that is not a DNS name', parseDesiredRecord, 'web', { ...GOOD_DESIRED, names: ['exa mple.test'] }, /names\[0\]: not a DNS name/),
  natsRecord('a challenge record with a token that is not base64url', parseChallengeRecord, 'a/b', { token: 'a/b' }, /token: not base64url/),
  natsRecord('an agent record without certificates', parseAgentRecord, 'edge-1', { name: 'edge-1', http01Address: '', agentVersion: '0.1.0', lastSeen: '2026-01-01T00:00:00Z' }, /certificates: /),
];

/** A small operator backend over fixed data: the refusals under test are the API's and the CLI's. */
function operatorBackend(): OperatorBackend {
  const known = (name: string): void => {
    if (name !== 'web') throw new CertfleetError(ErrorCode.NotFound, `certificate ${name} is not in the controller's configuration`);
  };
  const nothing = (): never => {
    throw new CertfleetError(ErrorCode.Internal, 'not used by this test');
  };
  return {
    status: () => Promise.resolve({ controllerVersion: 'test', store: 'file', acmeDirectory: '', certificates: 1, certificatesReady: 0, agents: 0, agentsOnline: 0, nats: 'connected' }),
    certificates: () => Promise.resolve({ certificates: [], nextPageToken: '' }),
    agents: () => Promise.resolve([]),
    createEnrollmentToken: (agent, labels, ttlMs) => world.enrollment.createToken({ agent, labels, ttlMs }),
    show: (name) => Promise.resolve(known(name)).then(nothing),
    revoke: nothing,
    renew: (name) => {
      if (name === 'busy') {
        // The retry facts must reach the caller (they used to be dropped at the gRPC boundary).
        return Promise.reject(new CertfleetError(ErrorCode.StoreUnavailable, 'store busy', { retryable: true, retryAfterMs: 1500 }));
      }
      if (name === 'final') return Promise.reject(new CertfleetError(ErrorCode.AcmeRateLimited, 'rate limited', { retryable: false, retryAfterMs: 3_600_000 }));
      return Promise.resolve(known(name)).then(() => ({ message: 'queued', outcome: 'queued' }));
    },
    history: (name) => Promise.resolve(known(name)).then(nothing),
    rollback: (name, to) => {
      known(name);
      return Promise.reject(new CertfleetError(ErrorCode.NotFound, `certificate ${name} has no version ${to} (versions: 1, 2)`));
    },
    release: (name) => Promise.resolve(known(name)).then(nothing),
    budgets: () => Promise.resolve({ preset: 'letsencrypt', budgets: [] }),
    events: () => Promise.resolve([]),
    createOperator: nothing,
    listOperators: nothing,
    revokeOperator: nothing,
    setOperatorRole: nothing,
    removeAgent: nothing,
    dryRun: nothing,
    checkChallenges: nothing,
    followEvents: nothing,
  };
}

describe('the bad-input corpus', () => {
  before(async () => {
    const root = tempDir('certfleet-corpus-');
    const now = Date.now();
    const ca = await createControllerCa({ now });
    const server = await issueServerCertificate(ca, { hosts: ['localhost'], now });
    const op = await issueOperatorCertificate(ca, { operator: 'admin', now });
    const storeDir = path.join(root, 'controller-store');
    const store = new FileStore({ dir: storeDir, log: silentLogger() });
    const enrollment = new Enrollment(store, systemClock);
    const expiring = new Enrollment(store, new ManualClock(Date.now() - 2 * 3600_000));
    const agentKey = await createAgentKeyAndCsr('edge-1');
    const agentCert = await signAgentCsr(ca, agentKey.csrPem, { agent: 'edge-1', now });
    const api = await startApiServer({
      listen: { host: '127.0.0.1', port: 0 },
      caPem: ca.certPem,
      certPem: server.certPem,
      keyPem: server.keyPem,
      log: silentLogger(),
      // Every operator is an admin here: the role table has its own tests (access.test.ts).
      auth: { identify: (der) => verifyClientCertificate(ca, der, Date.now()), authorizeOperator: (id) => Promise.resolve({ name: id.name, role: 'admin' }) },
      agents: {
        async enroll(token, csrPem) {
          await checkAgentCsr(csrPem);
          const grant = await enrollment.redeem(token);
          const signed = await signAgentCsr(ca, csrPem, { agent: grant.agent, now: Date.now() });
          return { agent: grant.agent, labels: grant.labels, certificatePem: signed.certPem, caPem: ca.certPem, signingKeys: [] };
        },
        assignments: () => Promise.resolve({ desired: [], effective: [], signingKeys: [], assigned: [] }),
        fetchBundle: () => Promise.reject(new CertfleetError(ErrorCode.NotFound, 'no bundles here')),
        renewIdentity: () => Promise.reject(new CertfleetError(ErrorCode.Internal, 'not used by this test')),
        reportStatus: () => Promise.resolve(),
      },
      operators: operatorBackend(),
    });
    const usedToken = (await enrollment.createToken({ agent: 'edge-1' })).token;
    await enrollment.redeem(usedToken);
    const expiredToken = (await expiring.createToken({ agent: 'edge-2', ttlMs: 60_000 })).token;
    const agentState = path.join(root, 'agent-state');
    fs.mkdirSync(agentState, { mode: 0o700 });
    const goodBundle = await makeBundle({ name: 'web', version: 1, names: ['www.example.test'] });
    const otherBundle = await makeBundle({ name: 'web', version: 1, names: ['www.example.test'] });
    const expiredLeaf = await makeLeaf(await makeTestCa(), { names: ['www.example.test'], notBefore: new Date(now - 10 * 86_400_000), notAfter: new Date(now - 86_400_000) });
    world = {
      root,
      watched: [storeDir, agentState],
      ca,
      api,
      operatorCreds: { server: `127.0.0.1:${api.port}`, serverName: 'localhost', caPem: ca.certPem, certPem: op.certPem, keyPem: op.keyPem },
      agentCreds: { certPem: agentCert.certPem, keyPem: agentKey.keyPem },
      enrollment,
      installer: new Installer({ stateDir: agentState, clock: systemClock, log: silentLogger() }),
      agentState,
      usedToken,
      expiredToken,
      csrToken: (await enrollment.createToken({ agent: 'edge-3' })).token,
      goodBundle,
      otherBundle,
      expiredBundle: { meta: metaFor('web', 1, expiredLeaf), certPem: expiredLeaf.certPem, chainPem: expiredLeaf.chainPem, keyPem: expiredLeaf.keyPem },
    };
  });

  after(async () => {
    await world?.api.stop(100);
  });

  test('holds at least 60 cases, each with a distinct description', () => {
    assert.ok(CASES.length >= 60, `${CASES.length} cases`);
    assert.equal(new Set(CASES.map((c) => c.what)).size, CASES.length);
  });

  for (const c of CASES) {
    test(`${c.kind}: ${c.what} is refused clearly, exits ${c.exit}, changes nothing`, async () => {
      const dir = fs.mkdtempSync(path.join(world.root, 'case-'));
      const watched = [dir, ...world.watched];
      const before = watched.map((d) => snapshot(d));
      const outcome = await c.run({ w: world, dir });
      const after = watched.map((d, i) => {
        const snap = snapshot(d);
        // The input file the case itself wrote is not a change made by certfleet.
        if (i === 0) for (const input of ['controller.yaml', 'agent.yaml']) delete snap[input];
        if (c.mayRemove) for (const key of Object.keys(before[i] ?? {})) if (c.mayRemove.test(key) && !(key in snap)) delete before[i]?.[key];
        return snap;
      });
      assert.deepEqual(after, before, 'nothing changed on disk');
      assert.equal(outcome.exit, c.exit, `exit code (message: ${outcome.text})`);
      if (c.exit === null) assert.doesNotMatch(outcome.text, /"?aaaaaaaaaaaaaaaa|role=edge|www\.example\.test/, 'no value of the record in the message');
      if (outcome.code !== undefined && c.code !== undefined) assert.equal(outcome.code, c.code, outcome.text);
      if (c.code !== undefined && outcome.code === undefined) assert.match(outcome.text, new RegExp(`\\ncode: ${c.code}\\n`));
      for (const re of c.says) assert.match(outcome.text, re);
      assert.doesNotMatch(outcome.text, /\n\s+at .+:\d+:\d+/, 'no stack trace');
      assert.doesNotMatch(outcome.text, /TypeError|ReferenceError|Cannot read properties/, 'no crash');
      assert.equal(fs.existsSync(path.join(dir, 'state')), false, 'no state directory created');
    });
  }

  test('retryable and retryAfterMs survive the trip through gRPC', async () => {
    const client = operatorClient(world.operatorCreds, 5000);
    try {
      const busy = await client.renewCertificate({ name: 'busy' }).then(
        () => assert.fail('refused'),
        (err: unknown) => err,
      );
      assert.ok(isCertfleetError(busy, ErrorCode.StoreUnavailable), String(busy));
      assert.equal(busy.retryable, true);
      assert.equal(busy.retryAfterMs, 1500);
      assert.equal(busy.message, 'store busy');
      const final = await client.renewCertificate({ name: 'final' }).then(
        () => assert.fail('refused'),
        (err: unknown) => err,
      );
      assert.ok(isCertfleetError(final, ErrorCode.AcmeRateLimited), String(final));
      assert.equal(final.retryable, false);
      assert.equal(final.retryAfterMs, 3_600_000);
    } finally {
      client.close();
    }
  });
});

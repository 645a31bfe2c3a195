/**
 * The help texts of the `certfleet` command, one per command. docs/cli.md says the same
 * at more length; keep the two in step when a flag changes.
 */

/** Every command the CLI knows, as typed (`agent enroll` and `token create` are two words). */
export type CommandName =
  | 'controller'
  | 'agent'
  | 'agent enroll'
  | 'controller signing-key'
  | 'status'
  | 'certs'
  | 'agents'
  | 'show'
  | 'history'
  | 'renew'
  | 'rollback'
  | 'release'
  | 'events'
  | 'budgets'
  | 'token create';

const GLOBAL_OPTIONS = `Global options:
  --credentials FILE   operator credentials (default: $CERTFLEET_CREDENTIALS,
                       else /var/lib/certfleet/admin-credentials.json)
  --timeout DURATION   deadline of each controller request (default 10s)
  -h, --help           show help (also after a command)
  --version            print the version`;

const TOP = `certfleet: fleet-wide TLS certificate renewal

Usage: certfleet COMMAND [options]

Daemons:
  controller --config FILE [--check]    run the controller (--check: validate the config only)
  agent --config FILE [--check]         run an agent (--check: validate the config only)
  agent enroll --config FILE --token-file FILE
                                        enrol this node's agent with a one-time token
  controller signing-key [STEP] --config FILE [--json]
                                        list or rotate the keys that sign NATS records

Operator commands (talk to the controller over mutual TLS):
  status [--json]                       controller summary
  certs [--json]                        certificates, versions and rollout
  agents [--json]                       agents, labels and what they serve
  show NAME [--json]                    one certificate: versions, schedule, deferral, backoff, pin
  history NAME [--json]                 every stored version and the agents serving it
  renew NAME [--json]                   renew now (clears the backoff; budgets still apply)
  rollback NAME [--to N] [--json]       serve an older version again and pin it there
  release NAME [--json]                 remove a rollback pin: the newest version is served again
  events [--cert NAME] [--limit N] [--follow] [--json]
                                        recent fleet events (--follow: poll for new ones)
  budgets [--json]                      rate-limit budget levels
  token create AGENT [--label k=v]... [--ttl DURATION] [--json]
                                        one-time enrolment token for an agent

${GLOBAL_OPTIONS}

Run 'certfleet COMMAND --help' for a command's options. Exit codes: see docs/cli.md.
`;

const PER_COMMAND: Record<CommandName, string> = {
  controller: `Usage: certfleet controller --config FILE [--check]

Runs the controller until SIGTERM or SIGINT, then stops cleanly.

Options:
  --config FILE   controller configuration (YAML)
  --check         validate the configuration, print "ok" and exit
`,
  agent: `Usage: certfleet agent --config FILE [--check]

Runs the agent until SIGTERM or SIGINT. The agent must have been enrolled first
(certfleet agent enroll).

Options:
  --config FILE   agent configuration (YAML)
  --check         validate the configuration, print "ok" and exit
`,
  'controller signing-key': `Usage: certfleet controller signing-key [list|prepare|activate|retire] --config FILE [--json]

Lists (default) or rotates the controller's record-signing keys, in its store, on this
machine (no controller API call). Rotation is three steps, each followed by a controller
restart: prepare (a next key agents learn at their next resync), activate (the next key
signs, the old one is still trusted), retire (the old key is dropped). See
docs/security.md. Private keys are never printed.

Options:
  --config FILE   controller configuration (YAML): where its store is
  --json          print the key ring as JSON
`,
  'agent enroll': `Usage: certfleet agent enroll --config FILE (--token-file FILE | --token TOKEN)

Enrols this agent with the controller once, using a one-time token from
'certfleet token create', and stores its identity under the agent's stateDir.
Prints the name and labels the controller gave it.

Options:
  --config FILE       agent configuration (YAML)
  --token-file FILE   file holding the token ('-' reads standard input); preferred,
                      as a --token on the command line shows in the process list
  --token TOKEN       the token itself
`,
  status: `Usage: certfleet status [--json]

Shows the controller's version, store, ACME directory, NATS connection, and how many
certificates are ready and agents online.

Options:
  --json   print the response as JSON
`,
  certs: `Usage: certfleet certs [--json]

Lists certificates: NAME, VERSION, STATE, AGENTS (current/assigned), EXPIRES,
NEXT RENEWAL, NAMES. Dates are UTC.

Options:
  --json   print the response as JSON
`,
  agents: `Usage: certfleet agents [--json]

Lists agents: NAME, ONLINE, LAST SEEN, LABELS, CERTIFICATES (name@version state;
failed ones with their error code).

Options:
  --json   print the response as JSON
`,
  show: `Usage: certfleet show NAME [--json]

Shows one certificate: names, selector, state, the current version (serial,
fingerprint, validity), the desired and pinned versions, the next renewal and why,
a budget deferral or failure backoff in force, the ARI window, the last error and
how many assigned agents serve the desired version.

Options:
  --json   print the response as JSON
`,
  history: `Usage: certfleet history NAME [--json]

Lists every stored version of a certificate, newest first: VERSION, SERIAL,
FINGERPRINT (first 12 hex digits), NOT AFTER, ISSUED, STATE (desired, pinned,
expired), AGENTS (the agents that report it installed now).

Options:
  --json   print the response as JSON
`,
  renew: `Usage: certfleet renew NAME [--json]

Asks the controller to renew the certificate at its next pass, even if it is not
due: clears a failure backoff. Rate-limit budgets still apply, so the renewal may
be deferred (see 'certfleet show NAME'). Prints the controller's answer.

Options:
  --json   print the response as JSON
`,
  rollback: `Usage: certfleet rollback NAME [--to N] [--json]

Points the certificate back at an older, still valid version and pins it there:
agents install that version, and renewals do not move the pointer until
'certfleet release NAME'. Stored versions are never changed.

Options:
  --to N   the version to serve (default: the one before the desired version)
  --json   print the response as JSON
`,
  release: `Usage: certfleet release NAME [--json]

Removes a rollback pin: the newest version becomes the desired one again. Prints
the version now desired.

Options:
  --json   print the response as JSON
`,
  events: `Usage: certfleet events [--cert NAME] [--limit N] [--follow] [--json]

Prints recent fleet events, oldest first, one per line:
  TIME TYPE CERT AGENT VERSION MESSAGE   ('-' for a field that does not apply)

Options:
  --cert NAME   only events of this certificate
  --limit N     at most N events (default: the controller's, 50)
  --follow      keep going: ask the controller every 2 seconds and print the events
                not printed yet, until Ctrl-C (it polls; it does not stream)
  --json        print the response as JSON; with --follow, one JSON object per
                event per line
`,
  budgets: `Usage: certfleet budgets [--json]

Lists the rate-limit budgets the controller keeps for the CA: BUDGET, LIMIT,
AVAILABLE (tokens now/capacity), RESERVED (kept for emergency renewals),
NEXT TOKEN (when the next one is added; '-' when full).

Options:
  --json   print the response as JSON
`,
  'token create': `Usage: certfleet token create AGENT [--label key=value]... [--ttl DURATION] [--json]

Creates a one-time token that enrols one agent named AGENT with the given labels.
Prints only the token on standard output (its expiry goes to standard error), so
  certfleet token create web-1 --label role=lb > web-1.token
works; --json prints {"token", "expiresAt"}.

Options:
  --label key=value   an agent label (repeatable); labels choose which certificates
                      the agent serves
  --ttl DURATION      how long the token is valid, e.g. 15m, 1h, 2d (default 1h)
  --json              print the response as JSON
`,
};

/** The help text for `command`, or the overview when undefined. */
export function helpText(command?: CommandName): string {
  if (command === undefined) return TOP;
  return `${PER_COMMAND[command]}\n${GLOBAL_OPTIONS}\n`;
}

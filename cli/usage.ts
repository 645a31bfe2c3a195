/**
 * The help texts of the `certfleet` command, one per command. docs/cli.md says the same
 * at more length; keep the two in step when a flag changes.
 */

/** Every command the CLI knows, as typed (`agent enroll` and `token create` are two words). */
export type CommandName = 'controller' | 'agent' | 'agent enroll' | 'status' | 'certs' | 'agents' | 'token create';

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

Operator commands (talk to the controller over mutual TLS):
  status [--json]                       controller summary
  certs [--json]                        certificates, versions and rollout
  agents [--json]                       agents, labels and what they serve
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

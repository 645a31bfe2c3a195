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
  | 'check'
  | 'rollback'
  | 'release'
  | 'revoke'
  | 'events'
  | 'budgets'
  | 'token create'
  | 'whoami'
  | 'operators create'
  | 'operators list'
  | 'operators revoke'
  | 'operators set-role'
  | 'agents remove'
  | 'import-certbot'
  | 'console';

const GLOBAL_OPTIONS = `Global options:
  --credentials FILE   operator credentials (default: $CERTFLEET_CREDENTIALS,
                       else /var/lib/certfleet/admin-credentials.json)
  --timeout DURATION   deadline of each controller request (default 10s)
  -h, --help           show help (also after a command)
  --version            print the version`;

const TOP = `certfleet: fleet-wide TLS certificate renewal

Usage: certfleet COMMAND [options]

Daemons:
  controller --config FILE [--check] [--json]
                                        run the controller (--check: validate the config only)
  controller --config FILE --write-nats-config
                                        write the nats-server authorization include and exit
  agent --config FILE [--check] [--json]
                                        run an agent (--check: validate the config only)
  agent enroll --config FILE --token-file FILE [--json]
                                        enrol this node's agent with a one-time token
  controller signing-key [STEP] --config FILE [--json]
                                        list or rotate the keys that sign NATS records

Operator commands (talk to the controller over mutual TLS):
  status [--json]                       controller summary
  certs [--json]                        certificates: newest, desired, pinned, serving
  agents [--json]                       agents, labels and what they serve
  show NAME [--json]                    one certificate: versions, schedule, deferral, backoff, pin
  history NAME [--json]                 every stored version and the agents serving it
  renew NAME [--cancel | --wait] [--json]
                                        renew now, durably (clears the backoff; budgets apply)
  renew NAME --dry-run [--json]         rehearse the whole issuance against the staging CA; keep nothing
  check [NAME] [--json]                 prove each challenge path works now, without ordering
  rollback NAME [--to N] [--wait] [--json]
                                        serve an older version again and pin it there
  release NAME [--wait] [--json]        remove a rollback pin: the newest version is served again
  revoke NAME --version N [--reason REASON] [--json]
                                        revoke a version at the CA and move the fleet off it
  events [--cert NAME] [--limit N] [--follow] [--json]
                                        recent fleet events (--follow: poll for new ones)
  budgets [--json]                      rate-limit budget levels
  token create AGENT [--label k=v]... [--ttl DURATION] [--json]
                                        one-time enrolment token for an agent
  agents remove NAME [--json]           remove an agent: its certificate is refused from now on
  whoami [--json]                       the operator and role of these credentials
  console [--listen 127.0.0.1:8765]     a web console on loopback, with these credentials

Operator credentials (role admin):
  operators create NAME --role ROLE --out FILE [--json]
                                        new credentials: viewer, operator or admin
  operators list [--json]               every operator, its role, and whether revoked
  operators revoke NAME [--json]        refuse an operator's credentials from now on
  operators set-role NAME --role ROLE [--json]
                                        change an operator's role from the next call on

Migration (offline, on the controller's machine):
  import-certbot DIR --config FILE --agents SELECTOR [--out FILE] [--dry-run] [--force]
                                        take over certbot's certificates without re-issuing

Roles: viewer reads; operator also renews, dry-runs, checks, rolls back, releases and
revokes; admin also creates tokens, removes agents and manages operators (docs/security.md).

${GLOBAL_OPTIONS}

Run 'certfleet COMMAND --help' for a command's options. Exit codes: see docs/cli.md.
`;

const PER_COMMAND: Record<CommandName, string> = {
  'import-certbot': `Usage: certfleet import-certbot DIR --config FILE --agents SELECTOR [options]

Takes over the certificates certbot manages in DIR (its --config-dir, usually
/etc/letsencrypt) without re-issuing them. For each renewal/<lineage>.conf it
  - adds a certificate declaration to the controller configuration FILE: names
    from the certificate, its current key type, SELECTOR as agents; webroot,
    standalone, nginx and apache become challenge http-01 (answered by the agents),
    dns-rfc2136 becomes dns-01 with an rfc2136 provider (the TSIG secret is copied
    to <stateDir>/dns01/<provider>.tsig, 0600); other DNS plugins and manual are
    refused with the reason;
  - stores the current certificate, chain and key in the controller's store as the
    next version (version 1 for a new name), after the checks an agent makes.
The controller then renews each one when it is due, not before.

Runs offline against the controller's store: run it where the controller runs,
as its user, best with the controller stopped; start the controller with the
merged configuration afterwards. Nothing is written when any selected lineage is
refused. The merged configuration goes to standard output (or --out FILE, 0644;
an existing file keeps its mode); what was done goes to standard error.

Options:
  --config FILE         the controller configuration (read; its store is written)
  --agents SELECTOR     label selector of the agents that serve the certificates
  --out FILE            write the merged configuration to FILE (may be --config's)
  --lineage NAME        import only this lineage (repeatable; default: all)
  --rename LINEAGE=NAME certificate name for a lineage (default: the lineage with
                        dots and other characters turned into '-')
  --dry-run             print what would be done and the merged configuration;
                        write nothing
  --force               also import a lineage whose name has other versions in
                        the store (stored as the next version), and replace a
                        declaration of the same name with other names
`,
  controller: `Usage: certfleet controller --config FILE [--check | --write-nats-config] [--json]

Runs the controller until SIGTERM or SIGINT, then stops cleanly.

Options:
  --config FILE          controller configuration (YAML)
  --check                validate the configuration, print "ok" and exit
  --write-nats-config    create the NATS operator and account keys in the store if
                         missing, write the nats-server authorization include
                         (nats.serverConfigFile, default <stateDir>/nats/auth.conf),
                         print its path and exit; include it from nats-server.conf
                         before the first controller start
  --json                 with --check or --write-nats-config: answer (and errors) as JSON
`,
  agent: `Usage: certfleet agent --config FILE [--check] [--json]

Runs the agent until SIGTERM or SIGINT. The agent must have been enrolled first
(certfleet agent enroll).

Options:
  --config FILE   agent configuration (YAML)
  --check         validate the configuration, print "ok" and exit
  --json          with --check: answer (and errors) as JSON
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
  'agent enroll': `Usage: certfleet agent enroll --config FILE (--token-file FILE | --token TOKEN) [--json]

Enrols this agent with the controller once, using a one-time token from
'certfleet token create', and stores its identity under the agent's stateDir.
Prints the name and labels the controller gave it.

Options:
  --config FILE       agent configuration (YAML)
  --token-file FILE   file holding the token ('-' reads standard input); preferred,
                      as a --token on the command line shows in the process list
  --token TOKEN       the token itself
  --json              print name, labels and what it will serve as JSON
`,
  status: `Usage: certfleet status [--json]

Shows the controller's version, store, ACME directory, NATS connection, and how many
certificates are ready and agents online.

Options:
  --json   print the response as JSON
`,
  certs: `Usage: certfleet certs [--json]

Lists certificates: NAME, NEWEST (newest stored version), DESIRED (what agents
are asked to serve), PINNED (by a rollback), SERVING (agents on the desired
version/assigned), STATE, NEXT (renewal time, or a budget deferral, a backoff, a
pending request), EXPIRES, NAMES; then failures, deferrals and pins. Dates are UTC.

Options:
  --json   print the response as JSON
`,
  agents: `Usage: certfleet agents [--json]

Lists agents: NAME, ONLINE, LAST SEEN, LABELS, CERTIFICATES (name@version state;
failed ones with their error code; "(want N)" where the controller asks for another
version). Agents not serving the desired version come first. A removed agent shows
"removed by X <time>".

Options:
  --json   print the response as JSON
`,
  'agents remove': `Usage: certfleet agents remove NAME [--json]

Removes agent NAME from the fleet: the controller refuses its client certificate
from its next call (it still holds what it installed), it answers no more HTTP-01
challenges (renewals go ahead without it), it leaves the fleet views (listed as
removed), its status record on NATS is deleted, and unused enrolment tokens for the
name are withdrawn. Removing a removed agent changes nothing. To bring the node
back, create a new token for the name and enrol it again. Needs role admin.

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
  renew: `Usage: certfleet renew NAME [--cancel | --wait [--wait-timeout DURATION]] [--json]
       certfleet renew NAME --dry-run [--json]

Asks the controller to renew the certificate at its next pass, even if it is not
due: clears a failure backoff. The request is kept by the controller until a
renewal started after it succeeds: failures are retried at their backoff time,
also after a restart. Rate-limit budgets still apply. Prints what came of it:
ordered (and the version it will make), issued, deferred until when by which
budget, failed and why, or queued (the controller has not acted on it yet).

Needs role operator or admin.

Options:
  --cancel                  withdraw an outstanding renew request (a running renewal goes on)
  --wait                    follow it until every selected agent serves the new version;
                            exit 1 with the failed step's code (issue, budget, install)
  --wait-timeout DURATION   give up waiting after this long (default 10m; WAIT_TIMEOUT)
  --dry-run                 instead: rehearse the whole issuance (account, order, each
                            challenge through the agents or DNS, finalize, download,
                            cleanup) against the staging CA (acme.staging) and print each
                            step and its time; nothing is stored, published or charged to
                            the budgets. Exit 1 with the failed step's code. Default
                            --timeout 15m.
  --json                    print the response as JSON
`,
  check: `Usage: certfleet check [NAME] [--json]

Checks, for every certificate (or NAME), that its challenge path works right now,
without ordering anything. HTTP-01: a synthetic challenge is published and every
agent the certificate selects must serve it (an offline agent fails the check);
then it is withdrawn. DNS-01: a TXT record with a random value is written at
_acme-challenge.<name> through the provider a real challenge would use, must show
on every authoritative server, and is removed. One row per check; exit 1 when any
fails, naming it. Default --timeout 15m.

Needs role operator or admin.

Options:
  --json   print the response as JSON
`,
  rollback: `Usage: certfleet rollback NAME [--to N] [--wait [--wait-timeout DURATION]] [--json]

Points the certificate back at an older, still valid version and pins it there:
agents install that version, and renewals do not move the pointer until
'certfleet release NAME'. Stored versions are never changed.

Needs role operator or admin.

Options:
  --to N                    the version to serve (default: the one before the desired version)
  --wait                    follow it until every selected agent serves that version
  --wait-timeout DURATION   give up waiting after this long (default 10m; WAIT_TIMEOUT)
  --json                    print the response as JSON
`,
  release: `Usage: certfleet release NAME [--wait [--wait-timeout DURATION]] [--json]

Removes a rollback pin: the newest version becomes the desired one again. Prints
the version now desired.

Needs role operator or admin.

Options:
  --wait                    follow it until every selected agent serves that version
  --wait-timeout DURATION   give up waiting after this long (default 10m; WAIT_TIMEOUT)
  --json                    print the response as JSON
`,
  revoke: `Usage: certfleet revoke NAME --version N [--reason REASON] [--json]

Revokes version N of the certificate at the CA that issued it (signed with the
controller's ACME account key), records who revoked it, when and why, and moves
the fleet off it when it is served: to the newest version if that one is usable,
else to an older usable version pinned until a new one is issued; a renewal is
requested at once whenever the newest version is revoked. A revoked version is
never served again: rollback and release refuse it (VERSION_REVOKED). Revoking
a version revoked before answers so and changes nothing at the CA. The policy:
docs/operations.md, "Revoking a version".

Needs role operator or admin. Revocation cannot be undone.

Options:
  --version N       the version to revoke (certfleet history NAME lists them)
  --reason REASON   unspecified (default), keyCompromise, superseded,
                    cessationOfOperation or affiliationChanged (RFC 5280; the
                    only reasons Let's Encrypt accepts from a subscriber)
  --json            print the response as JSON
`,
  events: `Usage: certfleet events [--cert NAME] [--limit N] [--follow] [--json]

Prints recent fleet events, oldest first, one per line:
  TIME TYPE CERT AGENT VERSION ACTOR MESSAGE   ('-' for a field that does not apply;
  ACTOR is the operator whose command caused the event)

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

Needs role admin.

Options:
  --label key=value   an agent label (repeatable); labels choose which certificates
                      the agent serves
  --ttl DURATION      how long the token is valid, e.g. 15m, 1h, 2d (default 1h)
  --json              print the response as JSON
`,
  whoami: `Usage: certfleet whoami [--json]

Prints the operator these credentials belong to and its current role, as the
controller sees it (any role may ask).

Options:
  --json   print the response as JSON
`,
  'operators create': `Usage: certfleet operators create NAME --role ROLE --out FILE [--json]
       certfleet operators list | revoke NAME | set-role NAME --role ROLE

Creates credentials for a new operator NAME with role ROLE and writes them to FILE
(mode 0600; FILE must not exist). The key is made here and never sent: the
controller signs a request for it. Hand FILE over privately. Needs role admin.

Roles:
  viewer     status, certs, agents, show, history, events, budgets, whoami
  operator   also renew (and renew --dry-run), check, rollback, release, revoke
  admin      also token create, agent removal, operators

Options:
  --role ROLE   viewer, operator or admin
  --out FILE    where to write the credentials file
  --json        print the new operator's record (not the key) as JSON
`,
  'operators list': `Usage: certfleet operators list [--json]

Lists operators: NAME, ROLE, STATE (active or revoked), CREATED (when, by whom),
EXPIRES (the certificate). Needs role admin.

Options:
  --json   print the response as JSON
`,
  'operators revoke': `Usage: certfleet operators revoke NAME [--json]

Revokes operator NAME: the controller refuses its credentials from the next call
on. The last active admin cannot be revoked. To rotate credentials, create new ones
(another name, or the same name after revoking) and then revoke the old ones.
Needs role admin.

Options:
  --json   print the operator's record as JSON
`,
  console: `Usage: certfleet console [--listen HOST:PORT]

Serves a web console on this machine that talks to the controller with these
operator credentials, as the other commands do: fleet overview (certificates by
state, agents online, budget levels), each certificate's expiry timeline, versions
and which agent serves which version, renew / rollback / release (with a
confirmation; the controller decides by the operator's role), and a live event feed.

Prints the console's address with a one-time secret on standard output, e.g.
  http://127.0.0.1:8765/?token=...
Open it in a browser on this machine; the page keeps the secret in a cookie. Every
request without the secret is refused, as is a change whose Origin is not the
console. Runs until Ctrl-C. See docs/console.md.

Options:
  --listen HOST:PORT   where to listen (default 127.0.0.1:8765; loopback only;
                       port 0: any free port)
`,
  'operators set-role': `Usage: certfleet operators set-role NAME --role ROLE [--json]

Gives operator NAME another role from its next call on; its credentials stay the
same. The last active admin cannot lose the admin role. Needs role admin.

Options:
  --role ROLE   viewer, operator or admin
  --json        print the response as JSON
`,
};

/** The help text for `command`, or the overview when undefined. */
export function helpText(command?: CommandName): string {
  if (command === undefined) return TOP;
  return `${PER_COMMAND[command]}\n${GLOBAL_OPTIONS}\n`;
}

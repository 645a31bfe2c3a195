#!/usr/bin/env bash
# Installs (or removes) a certfleet agent on a node, from the package made by `npm pack`
# (dependencies bundled, the sd_notify addon prebuilt: nothing is downloaded or compiled).
#
#   install-agent.sh --package certfleet-X.tgz --controller HOST:PORT --ca-file CA.pem \
#                    --token-file FILE [--server-name NAME] [--labels k=v,...] [--root DIR] [--no-start]
#   install-agent.sh --uninstall [--purge] [--root DIR] [--no-start]
#
# What it does, each step skipped when already done (running it again is safe):
#   1. unpacks the package into /opt/certfleet (replacing the code, nothing else);
#   2. writes /etc/certfleet/agent.yaml (only when absent: an edited file is kept) and
#      copies the controller's CA to /etc/certfleet/controller-ca.pem;
#   3. creates the state directory /var/lib/certfleet-agent (0700);
#   4. installs the hardened unit deploy/systemd/certfleet-agent.service;
#   5. enrols with the one-time token (`certfleet agent enroll`) unless an identity is
#      there, and prints the agent's name, its labels and what it will serve;
#   6. starts the agent (systemctl enable --now) and waits until systemd reports it active.
# --labels: the labels you expect. The token carries the labels (the operator chose them
#   with `certfleet token create --label`); when they differ, the script stops before
#   starting the agent.
# --root DIR: install into DIR as the root of the target system (an image, a test);
#   implies nothing about starting: add --no-start unless DIR is /.
# --no-start: leave systemctl alone (steps 6 and, for --uninstall, the stop).
# --uninstall: stop and disable the agent, remove the unit and /opt/certfleet; the
#   configuration and the state (identity, certificates) stay unless --purge.
# No system user is created: the unit runs the agent as root, confined, because reload
# hooks need root (its header explains, and how to run it unprivileged instead).
set -euo pipefail

die() {
  echo "install-agent.sh: $*" >&2
  exit 1
}
say() { echo "install-agent.sh: $*"; }

package='' controller='' ca_file='' token_file='' server_name='' labels='' root='' start=yes uninstall=no purge=no
while [ "$#" -gt 0 ]; do
  case "$1" in
    --package) package=${2:?--package needs a file}; shift 2 ;;
    --controller) controller=${2:?--controller needs HOST:PORT}; shift 2 ;;
    --ca-file) ca_file=${2:?--ca-file needs a file}; shift 2 ;;
    --token-file) token_file=${2:?--token-file needs a file}; shift 2 ;;
    --server-name) server_name=${2:?--server-name needs a name}; shift 2 ;;
    --labels) labels=${2?--labels needs k=v,...}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --no-start) start=no; shift ;;
    --uninstall) uninstall=yes; shift ;;
    --purge) purge=yes; shift ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root is not a directory"
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || root=''
fi

code=$root/opt/certfleet
etc=$root/etc/certfleet
state=$root/var/lib/certfleet-agent
unit=$root/etc/systemd/system/certfleet-agent.service
config=$etc/agent.yaml
node=$(command -v node) || die "node (Node.js 20 or later) is not on PATH"

if [ "$start" = yes ]; then
  [ "$(id -u)" = 0 ] || die "run as root (or use --root DIR --no-start)"
  command -v systemctl >/dev/null || die "systemctl not found: use --no-start"
fi

if [ "$uninstall" = yes ]; then
  if [ "$start" = yes ] && [ -e "$unit" ]; then
    systemctl disable --now certfleet-agent || true
  fi
  rm -f "$unit"
  [ "$start" = no ] || systemctl daemon-reload
  rm -rf "$code"
  if [ "$purge" = yes ]; then
    rm -rf "$etc" "$state"
    say "removed the agent, its configuration and its state"
  else
    say "removed the agent; kept $etc and $state (--purge removes them)"
  fi
  exit 0
fi

[ -n "$package" ] || die "missing --package FILE (made by npm pack)"
[ -f "$package" ] || die "no such package: $package"
[ -n "$controller" ] || die "missing --controller HOST:PORT"
[[ "$controller" =~ ^[^[:space:]/]+:[0-9]+$ ]] || die "--controller: expected HOST:PORT, got '$controller'"
[ -n "$ca_file" ] || die "missing --ca-file FILE (a copy of the controller's ca.pem)"
[ -f "$ca_file" ] || die "no such file: $ca_file"
if [ -n "$server_name" ]; then
  [[ "$server_name" =~ ^[A-Za-z0-9.-]+$ ]] || die "--server-name: not a host name: '$server_name'"
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)' ||
  die "Node.js 20.11 or later is required, found $(node --version)"

# 1. The code: unpacked beside, then swapped in.
umask 022
mkdir -p "$(dirname "$code")"
next=$code.new.$$
rm -rf "$next" && mkdir "$next"
tar -xzf "$package" -C "$next" --strip-components=1 --no-same-owner
[ -f "$next/dist/cli/main.js" ] && [ -d "$next/node_modules" ] || { rm -rf "$next"; die "$package is not a certfleet package with bundled dependencies (npm ci && npm run build && npm pack)"; }
version=$("$node" "$next/dist/cli/main.js" --version) || { rm -rf "$next"; die "the unpacked package does not run"; }
if [ -d "$code" ]; then
  rm -rf "$code.old" && mv "$code" "$code.old"
fi
mv "$next" "$code"
rm -rf "$code.old"
say "code: $version in $code"

# 2. Configuration.
umask 077
mkdir -p "$etc"
chmod 0755 "$etc"
install -m 0644 "$ca_file" "$etc/controller-ca.pem"
if [ -e "$config" ]; then
  say "configuration: $config kept as it is"
else
  {
    echo "# Written by install-agent.sh; every field: docs/configuration.md and deploy/examples/agent.yaml."
    echo "stateDir: /var/lib/certfleet-agent"
    echo "controller:"
    echo "  address: \"$controller\""
    echo "  caFile: /etc/certfleet/controller-ca.pem"
    [ -z "$server_name" ] || echo "  serverName: $server_name"
    echo "# nats: { servers: [nats://NATS-HOST:4222] }   # without NATS the agent polls the controller over gRPC"
    echo "# http01: { listen: \"0.0.0.0:80\", advertise: \"THIS-NODE:80\" }"
    echo "# hooks: { reload: { command: [/bin/systemctl, reload, nginx] } }"
  } >"$config.tmp"
  chmod 0600 "$config.tmp"
  mv "$config.tmp" "$config"
  say "configuration: wrote $config (add NATS, HTTP-01 and the reload hook there)"
fi

# Under --root, the daemon's absolute paths name the target system: enrol with a copy
# that points into the root.
run_config=$config
if [ -n "$root" ]; then
  run_config=$(mktemp)
  trap 'rm -f "$run_config"' EXIT
  sed -e "s#^stateDir: /#stateDir: $root/#" -e "s#^\(  caFile: \)/#\1$root/#" "$config" >"$run_config"
fi
"$node" "$code/dist/cli/main.js" agent --check --config "$run_config" >/dev/null || die "$config is not valid (see above)"

# 3. State.
mkdir -p "$state"
chmod 0700 "$state"

# 4. The unit, as shipped.
mkdir -p "$(dirname "$unit")"
install -m 0644 "$code/deploy/systemd/certfleet-agent.service" "$unit"
say "unit: $unit"

# 5. Enrolment, once.
# agent.json is the last file enrolment writes.
if [ -f "$state/identity/agent.json" ]; then
  say "already enrolled: $(tr -d '\n ' <"$state/identity/agent.json") ($state/identity); the token was not used"
else
  [ -n "$token_file" ] || die "missing --token-file FILE (certfleet token create NAME --label k=v on the controller)"
  [ -f "$token_file" ] || die "no such file: $token_file"
  enrolled=$("$node" "$code/dist/cli/main.js" agent enroll --config "$run_config" --token-file "$token_file") || die "enrolment failed (see above)"
  echo "$enrolled"
  if [ -n "$labels" ]; then
    want=$(echo "$labels" | tr ',' '\n' | sed '/^$/d' | LC_ALL=C sort | paste -sd, -)
    got=$(echo "$enrolled" | sed -n 's/^labels: //p' | tr ',' '\n' | sed '/^-$/d;/^$/d' | LC_ALL=C sort | paste -sd, -)
    [ "$want" = "$got" ] || die "the token gave labels '${got:--}', not the expected '$want': the agent is enrolled but not started; retire it on the controller or fix --labels"
  fi
fi

# 6. Start.
if [ "$start" = yes ]; then
  systemctl daemon-reload
  systemctl enable --now certfleet-agent
  systemctl is-active --quiet certfleet-agent || die "certfleet-agent did not become active: journalctl -u certfleet-agent"
  say "certfleet-agent is running: systemctl status certfleet-agent"
else
  say "not started (--no-start)"
fi

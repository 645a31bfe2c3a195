#!/usr/bin/env bash
# certfleet quick start: a whole local fleet on loopback with one command.
#
#   deploy/quickstart.sh [up]   install what is missing, build, start (or restart) everything,
#                               wait until every certificate is served, show the fleet
#   deploy/quickstart.sh status the controller's view (certfleet status, certs, agents)
#   deploy/quickstart.sh down   stop what the quick start started; keep .quickstart/ to inspect
#   deploy/quickstart.sh clean  down, then remove .quickstart/
#
#   deploy/quickstart.sh ha [up|status|down|clean]
#                               the high-availability variant (docs/high-availability.md),
#                               state in .quickstart-ha/: a three-node nats-server cluster
#                               (every bucket and stream at 3 replicas), TWO controllers
#                               (c1, c2: one leader, chosen by a lease in NATS) sharing one
#                               Vault store, the two agents knowing both controllers, and
#                               admin credentials listing both. The Vault store is the
#                               project's Vault KV v2 double (test/harness/vault-double.ts,
#                               run from dist/), because HashiCorp Vault cannot be installed
#                               here: it keeps everything in memory, so every `ha up` starts
#                               a new fleet. Kill the leader (kill -9) and watch `certfleet
#                               status`; `deploy/quickstart.sh ha start-controller c1` starts
#                               a stopped controller again.
#
# What runs (all on 127.0.0.0/8, all state under .quickstart/ in the repository, one pid
# file and one log file per process in .quickstart/logs/):
#   pebble-challtestsrv  DNS (A records) for HTTP-01 names         127.0.0.1:8053 (mgmt :8055)
#   named (BIND 9)       DNS for Pebble's validation authority     127.0.0.1:15353 (UDP and TCP):
#                        primary of the DNS-01 zones (internal.test) with TSIG-signed dynamic
#                        updates, and a resolver that forwards every other name to challtestsrv
#   pebble               the ACME CA                               127.0.0.1:14000 (mgmt :15000)
#   pebble-backup        a second CA, only with the template's `issuers:` block uncommented
#                        (the fallback issuer, docs/renewal.md)    127.0.0.1:14001 (mgmt :15001)
#   nats-server          JetStream, operator-mode authorization    127.0.0.1:14222
#   controller           certfleet controller (gRPC API)           127.0.0.1:17443
# (ha: nats-1..3 on 127.0.0.1:14222-14224, cluster routes 16222-16224; controller-c1 and
#  controller-c2 on 127.0.0.1:17443 and 17444; vault, the KV v2 double, on 127.0.0.1:18200)
#   agent edge-a         role=web, site=a: HTTP-01 on 127.0.0.2:5002, nginx on 127.0.0.2:8443
#   agent edge-b         role=web, site=b: HTTP-01 on 127.0.0.3:5002, nginx on 127.0.0.3:8443
# Each nginx is started by its agent's reload hook (deploy/nginx-reload.sh) once its
# certificates exist, and by this script on a restart when they already do.
#
# The certificate `wild` (*.internal.test, internal.test) is issued through DNS-01: the
# controller writes its TXT records into named's zone with RFC 2136 updates signed by the
# TSIG key in .quickstart/bind/certfleet-key.conf (made by tsig-keygen, 0600), and Pebble
# reads them through the same named.
#
# Ports can be changed through the environment: QS_PEBBLE_PORT, QS_PEBBLE_MGMT_PORT,
# QS_CHALL_MGMT_PORT, QS_DNS_PORT, QS_BIND_PORT, QS_NATS_PORT, QS_API_PORT, QS_HTTP01_PORT,
# QS_TLS_PORT; ha also QS_NATS_ROUTE_PORT (first of three), QS_API2_PORT, QS_VAULT_PORT (the
# three NATS client ports are QS_NATS_PORT and the two after it).
# QS_BUILD=0 skips `npm run build` (when dist/ is already current). QS_WAIT_SECONDS (default
# 180) bounds the wait for the certificates.
#
# Runs as root, or as a user with sudo for apt-get (only when a package is missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# `ha` first selects the high-availability variant; the sub-command follows it.
MODE=single
if [ "${1:-}" = ha ]; then
  MODE=ha
  shift
fi
if [ "$MODE" = ha ]; then QS=$REPO/.quickstart-ha; else QS=$REPO/.quickstart; fi
# How the user names this variant in commands we print.
if [ "$MODE" = ha ]; then QS_CMD="deploy/quickstart.sh ha"; else QS_CMD=deploy/quickstart.sh; fi
LOGS=$QS/logs
TEMPLATE=$REPO/deploy/examples/quickstart-controller.yaml
RELOAD_HOOK=$REPO/deploy/nginx-reload.sh
CLI=$REPO/dist/cli/main.js
# The (first) controller's state directory: its CA (what agents trust) and the admin
# credentials it writes.
if [ "$MODE" = ha ]; then CONTROLLER_DIR=$QS/c1; else CONTROLLER_DIR=$QS/controller; fi
CREDENTIALS=$CONTROLLER_DIR/admin-credentials.json

PEBBLE_PORT=${QS_PEBBLE_PORT:-14000}
PEBBLE_MGMT_PORT=${QS_PEBBLE_MGMT_PORT:-15000}
# A second Pebble, started only when the controller template names its port (the
# commented `issuers:` block in deploy/examples/quickstart-controller.yaml).
PEBBLE_BACKUP_PORT=${QS_PEBBLE_BACKUP_PORT:-14001}
PEBBLE_BACKUP_MGMT_PORT=${QS_PEBBLE_BACKUP_MGMT_PORT:-15001}
CHALL_MGMT_PORT=${QS_CHALL_MGMT_PORT:-8055}
DNS_PORT=${QS_DNS_PORT:-8053}
# named: the DNS server Pebble asks, and the primary the controller sends updates to.
BIND_PORT=${QS_BIND_PORT:-15353}
# The TSIG key named accepts updates with; the template's dns01 provider names it.
TSIG_KEY=certfleet-key
TSIG_KEY_FILE=$QS/bind/$TSIG_KEY.conf
NATS_PORT=${QS_NATS_PORT:-14222}
API_PORT=${QS_API_PORT:-17443}
# Pebble's validation authority connects to this port on whatever address a name resolves
# to; each agent answers HTTP-01 there on its own loopback address.
HTTP01_PORT=${QS_HTTP01_PORT:-5002}
# The port each agent's nginx serves TLS on.
TLS_PORT=${QS_TLS_PORT:-8443}
WAIT_SECONDS=${QS_WAIT_SECONDS:-180}
# ha only: the other two NATS nodes take the client ports after NATS_PORT; cluster routes.
NATS_ROUTE_PORT=${QS_NATS_ROUTE_PORT:-16222}
API2_PORT=${QS_API2_PORT:-17444}
VAULT_PORT=${QS_VAULT_PORT:-18200}
HA_CONTROLLERS=(c1 c2)
HA_API_PORTS=("$API_PORT" "$API2_PORT")
HA_NATS_NODES=(1 2 3)

# The demo agents: name, loopback address, labels. Which certificates each one serves is
# derived from the controller configuration (its `agents` selectors), not repeated here.
AGENT_NAMES=(edge-a edge-b)
AGENT_IPS=(127.0.0.2 127.0.0.3)
AGENT_LABELS=("role=web,site=a" "role=web,site=b")

PACKAGES=(pebble nats-server nginx-light bind9 openssl ca-certificates iproute2)

# The daemons this script starts besides the agents (and the agents' nginx), the CA last.
SERVICES_STOP_ORDER=(controller nats-server pebble pebble-backup named pebble-challtestsrv)
if [ "$MODE" = ha ]; then
  SERVICES_STOP_ORDER=(controller-c1 controller-c2 nats-1 nats-2 nats-3 vault pebble pebble-backup named pebble-challtestsrv)
fi

say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'quickstart: warning: %s\n' "$*" >&2; }
die() {
  printf 'quickstart: error: %s\n' "$*" >&2
  exit 1
}

# Installs missing Debian packages without starting their services; shared with test/run.sh
# and .ci/run.
# shellcheck source=lib/apt.sh
. "$REPO/deploy/lib/apt.sh"

# The CLI. --no-deprecation: grpc-js sets the TLS server name to the dialled IP address
# when the credentials file names one, and Node warns about it on every command.
cli() { node --no-deprecation "$CLI" "$@"; }

# ---------------------------------------------------------------------------- set-up

check_repo_path() {
  # The path goes into YAML, nginx configuration and shell commands; refuse the characters
  # that would need quoting rules of their own ($ would also be read as ${ENV} by the loader).
  case $REPO in
    *[!A-Za-z0-9._/+\ -]*) die "the repository path has characters the quick start does not handle: $REPO (move it to a plain path)" ;;
  esac
}

install_packages() {
  certfleet_apt_install quickstart "${PACKAGES[@]}" || die "could not install ${PACKAGES[*]} (run as root, or as a user with sudo)"
  local bin
  for bin in /usr/bin/pebble /usr/bin/pebble-challtestsrv /usr/sbin/nats-server /usr/sbin/nginx /usr/sbin/named /usr/sbin/tsig-keygen; do
    [ -x "$bin" ] || die "$bin is missing although its package is installed"
  done
  command -v openssl > /dev/null || die "openssl is missing"
  command -v ss > /dev/null || die "ss (package iproute2) is missing"
  command -v node > /dev/null || die "node is missing: install Node.js 20 or newer"
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "Node.js $(node --version) is too old: certfleet needs 20 or newer"
}

build() {
  cd "$REPO"
  # npm ci when node_modules is missing or older than the lock file (npm records the
  # installed tree in node_modules/.package-lock.json).
  if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci"
    npm ci --no-audit --no-fund
  fi
  if [ "${QS_BUILD:-1}" != 0 ]; then
    say "npm run build"
    if ! npm run build > "$QS/logs/build.log" 2>&1; then
      tail -n 30 "$QS/logs/build.log" >&2
      die "npm run build failed (full output: $QS/logs/build.log)"
    fi
  fi
  [ -f "$CLI" ] || die "$CLI does not exist: the build produced no CLI"
}

# --------------------------------------------------------------------------- processes

pid_file() { printf '%s/%s.pid' "$LOGS" "$1"; }
log_file() { printf '%s/%s.log' "$LOGS" "$1"; }
# The exact argv a daemon was started with (NUL-separated, as in /proc/PID/cmdline): a pid
# is signalled only while its command line still matches, never a recycled pid.
argv_file() { printf '%s/%s.argv' "$LOGS" "$1"; }

# same_argv PID FILE: the process's command line is exactly FILE's content. (Through a
# pipe: /proc files report size 0, and `cmp FILE /proc/...` would stop at the sizes.)
# shellcheck disable=SC2002 # the pipe is the point
same_argv() { cat "/proc/$1/cmdline" 2> /dev/null | cmp -s "$2" -; }

# alive PID: the process exists and is not a zombie.
alive() {
  local line
  { read -r line < "/proc/$1/stat"; } 2> /dev/null || return 1
  case ${line##*) } in Z* | X* | x*) return 1 ;; esac
}

# running NAME: prints the pid of daemon NAME when it runs with the command line it was started with.
running() {
  local pid
  pid=$(cat "$(pid_file "$1")" 2> /dev/null) || return 1
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  alive "$pid" || return 1
  same_argv "$pid" "$(argv_file "$1")" || return 1
  printf '%s\n' "$pid"
}

# start_daemon NAME CWD [VAR=VALUE...] -- PROGRAM ARGS...: runs PROGRAM in its own session
# (so Ctrl-C or closing the terminal does not stop it), output appended to logs/NAME.log.
start_daemon() {
  local name=$1 cwd=$2
  shift 2
  local envs=()
  while [ "$1" != -- ]; do
    envs+=("$1")
    shift
  done
  shift
  local bin
  bin=$(command -v "$1") || die "$1 not found"
  shift
  local argv pid log
  argv=$(argv_file "$name")
  log=$(log_file "$name")
  printf '%s\0' "$bin" "$@" > "$argv"
  printf '\n--- %s: starting %s %s\n' "$(date -u +%FT%TZ)" "$bin" "$*" >> "$log"
  # env and setsid exec in place (a background job of a script is not a process group
  # leader, so setsid does not fork): $! is the daemon's own pid.
  (cd "$cwd" && exec env "${envs[@]}" setsid "$bin" "$@" < /dev/null >> "$log" 2>&1) &
  pid=$!
  printf '%s\n' "$pid" > "$(pid_file "$name")"
  # Wait for the exec to finish so the command line check holds from now on.
  local i
  for i in $(seq 1 100); do
    if same_argv "$pid" "$argv"; then return 0; fi
    alive "$pid" || break
    sleep 0.05
  done
  show_log "$name"
  die "$name did not start (pid $pid); see $log"
}

show_log() {
  local log
  log=$(log_file "$1")
  if [ -s "$log" ]; then
    printf -- '--- last lines of %s ---\n' "$log" >&2
    tail -n "${2:-25}" "$log" >&2
  fi
}

# port_open HOST PORT: something accepts TCP connections there.
port_open() { (exec 3<> "/dev/tcp/$1/$2") 2> /dev/null; }

# wait_port NAME HOST PORT: waits up to 30 s for the port, failing early if NAME exits.
wait_port() {
  local name=$1 host=$2 port=$3 i
  for i in $(seq 1 300); do
    port_open "$host" "$port" && return 0
    if ! running "$name" > /dev/null; then
      show_log "$name"
      die "$name exited before listening on $host:$port"
    fi
    sleep 0.1
  done
  show_log "$name"
  die "$name did not listen on $host:$port within 30 s"
}

# stop_pid NAME PID: SIGTERM, up to 30 s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2> /dev/null || return 0
  for i in $(seq 1 300); do
    alive "$pid" || {
      info "stopped $name (pid $pid)"
      return 0
    }
    sleep 0.1
  done
  warn "$name (pid $pid) did not stop within 30 s: SIGKILL"
  kill -KILL "$pid" 2> /dev/null || true
}

stop_daemon() {
  local name=$1 pid
  [ -f "$(pid_file "$name")" ] || return 0
  if pid=$(running "$name"); then
    stop_pid "$name" "$pid"
  else
    pid=$(cat "$(pid_file "$name")" 2> /dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
      warn "not stopping pid $pid: its command line is no longer $name's (pid reused?)"
    fi
  fi
  rm -f "$(pid_file "$name")"
}

# nginx is started by the agents' reload hook, so it has no pid file of ours: its own
# pid file names the master, whose title must name our configuration file.
stop_nginx() {
  local agent=$1 prefix pid title
  prefix=$QS/$agent/nginx
  pid=$(cat "$prefix/logs/nginx.pid" 2> /dev/null) || return 0
  case $pid in '' | *[!0-9]*) return 0 ;; esac
  alive "$pid" || return 0
  title=$(tr '\000' ' ' < "/proc/$pid/cmdline" 2> /dev/null || true)
  case $title in
    "nginx: master process"*"-c $prefix/nginx.conf"*) ;;
    *)
      warn "not stopping pid $pid named by $prefix/logs/nginx.pid: it is not this quick start's nginx ($title)"
      return 0
      ;;
  esac
  local workers
  workers=$(cat "/proc/$pid/task/$pid/children" 2> /dev/null || true)
  stop_pid "nginx of $agent" "$pid"
  local w
  for w in $workers; do
    for _ in $(seq 1 50); do alive "$w" || break; sleep 0.1; done
  done
}

cmd_down() {
  [ -d "$QS" ] || {
    info "nothing to stop ($QS does not exist)"
    return 0
  }
  say "stopping the quick start"
  local name agent
  # The controller first: an issuance in flight waits for the agents to serve its
  # challenges. Then the agents, before their nginx (an agent's hook could start it again).
  for name in "${SERVICES_STOP_ORDER[@]}"; do
    case $name in controller | controller-*) stop_daemon "$name" ;; esac
  done
  for agent in "${AGENT_NAMES[@]}"; do stop_daemon "agent-$agent"; done
  for agent in "${AGENT_NAMES[@]}"; do stop_nginx "$agent"; done
  for name in "${SERVICES_STOP_ORDER[@]}"; do
    case $name in controller | controller-*) ;; *) stop_daemon "$name" ;; esac
  done
}

# ---------------------------------------------------------------------------- ports

# require_free PROTO PORT WHAT: fails naming the port and what holds it.
require_free() {
  local proto=$1 port=$2 what=$3 flag holders
  case $proto in tcp) flag=-Hltnp ;; udp) flag=-Hlunp ;; esac
  holders=$(ss "$flag" "( sport = :$port )" 2> /dev/null || true)
  if [ -n "$holders" ]; then
    printf 'quickstart: error: %s port %s (%s) is already in use:\n%s\n' "$proto" "$port" "$what" "$holders" >&2
    printf 'Stop that process, or choose another port (see the QS_*_PORT variables at the top of %s).\n' "$0" >&2
    exit 1
  fi
}

check_ports() {
  require_free tcp "$PEBBLE_PORT" "Pebble ACME API"
  require_free tcp "$PEBBLE_MGMT_PORT" "Pebble management API"
  if backup_ca_configured; then
    require_free tcp "$PEBBLE_BACKUP_PORT" "second Pebble ACME API (fallback issuer)"
    require_free tcp "$PEBBLE_BACKUP_MGMT_PORT" "second Pebble management API"
  fi
  require_free tcp "$CHALL_MGMT_PORT" "pebble-challtestsrv management API"
  require_free tcp "$DNS_PORT" "pebble-challtestsrv DNS"
  require_free udp "$DNS_PORT" "pebble-challtestsrv DNS"
  require_free tcp "$BIND_PORT" "named (BIND) DNS"
  require_free udp "$BIND_PORT" "named (BIND) DNS"
  require_free tcp "$NATS_PORT" "nats-server"
  require_free tcp "$API_PORT" "certfleet controller API"
  if [ "$MODE" = ha ]; then
    local n
    for n in "${HA_NATS_NODES[@]}"; do
      require_free tcp "$((NATS_PORT + n - 1))" "nats-server node $n"
      require_free tcp "$((NATS_ROUTE_PORT + n - 1))" "nats-server node $n cluster routes"
    done
    require_free tcp "$API2_PORT" "second certfleet controller API"
    require_free tcp "$VAULT_PORT" "Vault KV v2 double"
  fi
  require_free tcp "$HTTP01_PORT" "agents' HTTP-01 responders"
  require_free tcp "$TLS_PORT" "agents' nginx"
}

# ---------------------------------------------------------------------------- pebble

# Pebble has no certificate of its own for its HTTPS endpoints: make a throwaway CA and a
# certificate for localhost/127.0.0.1 (as test/harness/pebble.ts does). Kept across runs
# while valid for another day.
pebble_tls() {
  local dir=$QS/pebble
  if [ -f "$dir/wfe-cert.pem" ] && [ -f "$dir/wfe-key.pem" ] && [ -f "$dir/wfe-ca.pem" ] &&
    openssl x509 -checkend 86400 -noout -in "$dir/wfe-cert.pem" > /dev/null 2>&1; then
    return 0
  fi
  info "making Pebble's HTTPS certificate"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  (
    umask 077
    cd "$dir"
    openssl req -x509 "${ec[@]}" -keyout wfe-ca-key.pem -out wfe-ca.pem -days 30 \
      -subj '/CN=certfleet quick start Pebble HTTPS CA' \
      -addext 'basicConstraints=critical,CA:TRUE,pathlen:0' \
      -addext 'keyUsage=critical,keyCertSign,cRLSign' 2> /dev/null
    openssl req -new "${ec[@]}" -keyout wfe-key.pem -out wfe.csr -subj '/CN=localhost' 2> /dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
      'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' > wfe-ext.cnf
    openssl x509 -req -in wfe.csr -CA wfe-ca.pem -CAkey wfe-ca-key.pem -CAcreateserial \
      -days 30 -extfile wfe-ext.cnf -out wfe-cert.pem 2> /dev/null
    # Public: the controller reads the CA, Pebble the certificate.
    chmod 0644 wfe-ca.pem wfe-cert.pem
  ) || die "openssl could not make Pebble's HTTPS certificate"
}

# True when the controller template uses the second Pebble: a line that is not a comment
# names its port (the `issuers:` block, uncommented).
backup_ca_configured() {
  grep -q '^[^#]*@PEBBLE_BACKUP_PORT@' "$TEMPLATE"
}

# pebble_config FILE PORT MGMT_PORT: a Pebble configuration (HTTPS certificate shared).
pebble_config() {
  local dir=$QS/pebble
  cat > "$1" << EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$2",
    "managementListenAddress": "127.0.0.1:$3",
    "certificate": "$dir/wfe-cert.pem",
    "privateKey": "$dir/wfe-key.pem",
    "httpPort": $HTTP01_PORT,
    "tlsPort": 5001,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
}

prepare_pebble() {
  local dir=$QS/pebble
  mkdir -p "$dir"
  chmod 0700 "$dir"
  pebble_tls
  pebble_config "$dir/pebble-config.json" "$PEBBLE_PORT" "$PEBBLE_MGMT_PORT"
  # The fallback CA: another Pebble (its own accounts, orders and roots) with the same
  # HTTPS certificate, so the template's caFile serves both.
  pebble_config "$dir/pebble-backup-config.json" "$PEBBLE_BACKUP_PORT" "$PEBBLE_BACKUP_MGMT_PORT"
}

start_challtestsrv() {
  say "starting pebble-challtestsrv (DNS 127.0.0.1:$DNS_PORT)"
  # challtestsrv binds every interface by default: keep it on loopback and switch off the
  # responders we do not use. Pebble asks for AAAA first, so no default IPv6 answer.
  start_daemon pebble-challtestsrv "$QS/pebble" -- pebble-challtestsrv \
    -management "127.0.0.1:$CHALL_MGMT_PORT" -dns01 "127.0.0.1:$DNS_PORT" \
    -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv6 "" -defaultIPv4 127.0.0.1
  wait_port pebble-challtestsrv 127.0.0.1 "$CHALL_MGMT_PORT"
  wait_port pebble-challtestsrv 127.0.0.1 "$DNS_PORT"
}

start_pebble() {
  local dir=$QS/pebble
  say "starting pebble (https://127.0.0.1:$PEBBLE_PORT/dir), resolving through named"
  # Pebble takes one DNS server: named, which answers the DNS-01 zones itself and
  # forwards every other name (the HTTP-01 names) to challtestsrv.
  start_daemon pebble "$dir" PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 PEBBLE_WFE_NONCEREJECT=0 -- \
    pebble -config "$dir/pebble-config.json" -dnsserver "127.0.0.1:$BIND_PORT"
  wait_port pebble 127.0.0.1 "$PEBBLE_PORT"
  wait_port pebble 127.0.0.1 "$PEBBLE_MGMT_PORT"
  backup_ca_configured || return 0
  say "starting a second pebble, the fallback CA (https://127.0.0.1:$PEBBLE_BACKUP_PORT/dir)"
  start_daemon pebble-backup "$dir" PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 PEBBLE_WFE_NONCEREJECT=0 -- \
    pebble -config "$dir/pebble-backup-config.json" -dnsserver "127.0.0.1:$BIND_PORT"
  wait_port pebble-backup 127.0.0.1 "$PEBBLE_BACKUP_PORT"
  wait_port pebble-backup 127.0.0.1 "$PEBBLE_BACKUP_MGMT_PORT"
}

# ---------------------------------------------------------------------------- named (BIND)

# The TSIG key, made once by tsig-keygen and kept across runs: named includes the file,
# the controller reads the same file (dns01.providers.bind.secretFile). Only its owner
# may read it.
prepare_bind() {
  local dir=$QS/bind
  mkdir -p "$dir"
  chmod 0700 "$dir"
  if [ ! -s "$TSIG_KEY_FILE" ]; then
    info "making the TSIG key $TSIG_KEY (tsig-keygen)"
    (
      umask 077
      tsig-keygen -a hmac-sha256 "$TSIG_KEY" > "$TSIG_KEY_FILE.tmp"
    ) || die "tsig-keygen failed"
    mv "$TSIG_KEY_FILE.tmp" "$TSIG_KEY_FILE"
  fi
  chmod 0600 "$TSIG_KEY_FILE"
}

# Debian's bind9 package ships an AppArmor profile that confines /usr/sbin/named to
# /etc/bind, /var/lib/bind and /var/cache/bind: where it is enforced, named could not read
# its files under .quickstart/. Say so, with the fix, before starting anything.
check_apparmor() {
  local profiles=/sys/kernel/security/apparmor/profiles local_rules=/etc/apparmor.d/local/usr.sbin.named
  [ -r "$profiles" ] || return 0
  grep -Eq '^(/usr/sbin/)?named \(enforce\)' "$profiles" 2> /dev/null || return 0
  grep -Fq "$QS/bind/" "$local_rules" 2> /dev/null && return 0
  printf 'quickstart: error: AppArmor confines named to /etc/bind, /var/lib/bind and /var/cache/bind,\n' >&2
  printf 'but the quick start keeps its files in %s. Allow that directory once:\n' "$QS/bind" >&2
  printf '  %s\n' "printf '  %s\\n' '$QS/bind/ r,' '$QS/bind/** rwk,' | sudo tee -a $local_rules" >&2
  printf '  sudo apparmor_parser -r /etc/apparmor.d/usr.sbin.named\n' >&2
  exit 1
}

# bind_zones: the zones of the controller configuration's dns01.zones whose provider is an
# rfc2136 provider sending to this named, one a line. Fails when such a provider uses
# another key than the one named is given.
bind_zones() {
  # shellcheck disable=SC2016 # JavaScript, not shell: ${...} are template literals.
  (cd "$REPO" && node --input-type=module -e '
    import fs from "node:fs";
    import { parse } from "yaml";
    const [configFile, server, keyName] = process.argv.slice(1);
    const dns01 = parse(fs.readFileSync(configFile, "utf8")).dns01 ?? {};
    const ours = (name) => {
      const p = dns01.providers?.[name];
      if (!p || p.type !== "rfc2136" || p.server !== server) return false;
      if (p.keyName !== keyName) {
        console.error(`dns01.providers.${name}: keyName must be ${keyName}, the key the quick start gives named`);
        process.exit(1);
      }
      return true;
    };
    for (const z of dns01.zones ?? []) if (ours(z.provider)) console.log(String(z.zone).toLowerCase().replace(/\.$/, ""));
  ' "$QS/controller.yaml" "127.0.0.1:$BIND_PORT" "$TSIG_KEY")
}

# start_bind: writes named.conf and one zone file per DNS-01 zone, then starts named.
# Zone files are rewritten on every run (and their journals dropped): they only ever hold
# challenge records, which the controller's janitor would remove anyway.
start_bind() {
  local dir=$QS/bind zones zone
  zones=$(bind_zones) || die "could not read dns01 from $QS/controller.yaml"
  {
    printf '%s\n' \
      "// Written by deploy/quickstart.sh; rewritten on every run." \
      "options {" \
      "  directory \"$dir\";" \
      "  pid-file \"$dir/named.pid\";" \
      "  session-keyfile \"$dir/session.key\";" \
      "  managed-keys-directory \"$dir\";" \
      "  listen-on port $BIND_PORT { 127.0.0.1; };" \
      "  listen-on-v6 { none; };" \
      "  // A resolver for Pebble: names outside the zones below go to challtestsrv, which" \
      "  // holds the HTTP-01 names' A records (it answers every name, so forward only)." \
      "  // Expect 'DNS format error ... unrelated SOA challtestsrv.invalid' in named's log for" \
      "  // AAAA lookups: challtestsrv says 'no AAAA' with an SOA of another name, named answers" \
      "  // SERVFAIL, and Pebble uses the A record." \
      "  recursion yes;" \
      "  allow-recursion { 127.0.0.0/8; };" \
      "  allow-query { 127.0.0.0/8; };" \
      "  forward only;" \
      "  forwarders { 127.0.0.1 port $DNS_PORT; };" \
      "  // challtestsrv's answers change at run time: cache nothing for long." \
      "  max-cache-ttl 1;" \
      "  max-ncache-ttl 1;" \
      "  max-cache-size 32M;" \
      "  dnssec-validation no;" \
      "  notify no;" \
      "};" \
      "// No rndc: the quick start stops named with SIGTERM." \
      "controls { };" \
      "include \"$TSIG_KEY_FILE\";"
    for zone in $zones; do
      printf '%s\n' \
        "zone \"$zone\" {" \
        "  type primary;" \
        "  file \"$dir/$zone.db\";" \
        "  // The controller's key may change TXT records in this zone, nothing else." \
        "  update-policy { grant $TSIG_KEY subdomain $zone. TXT; };" \
        "};"
    done
  } > "$dir/named.conf"
  chmod 0600 "$dir/named.conf"
  for zone in $zones; do
    rm -f "$dir/$zone.db.jnl"
    # shellcheck disable=SC2016 # $TTL is a zone file directive, not a shell variable.
    printf '%s\n' \
      '$TTL 60' \
      "@ IN SOA ns1.$zone. hostmaster.$zone. 1 3600 600 86400 60" \
      "@ IN NS ns1.$zone." \
      "ns1 IN A 127.0.0.1" > "$dir/$zone.db"
  done

  local list=${zones//$'\n'/, }
  say "starting named (DNS 127.0.0.1:$BIND_PORT): primary for ${list:-no zone}, forwarding other names to challtestsrv"
  local log offset i
  log=$(log_file named)
  offset=$(stat -c %s "$log" 2> /dev/null || echo 0)
  # -g: foreground, log to stderr (our log file); -4: no IPv6 sockets.
  start_daemon named "$dir" -- named -g -4 -c "$dir/named.conf"
  # named logs "running" once every zone is loaded.
  for i in $(seq 1 300); do
    if tail -c +"$((offset + 1))" "$log" | grep -q ' running$'; then
      wait_port named 127.0.0.1 "$BIND_PORT"
      return 0
    fi
    if ! running named > /dev/null; then
      show_log named 40
      die "named exited during start-up; see $log"
    fi
    sleep 0.1
  done
  show_log named 40
  die "named did not finish loading within 30 s; see $log"
}

# add_a HOST IP: makes HOST resolve to IP for Pebble's validation authority.
add_a() {
  # shellcheck disable=SC2016 # JavaScript, not shell: ${...} are template literals.
  node -e '
    const [url, host, ip] = process.argv.slice(1);
    fetch(url, { method: "POST", body: JSON.stringify({ host, addresses: [ip] }) })
      .then(async (res) => { if (!res.ok) { console.error(`HTTP ${res.status} ${await res.text()}`); process.exit(1); } })
      .catch((err) => { console.error(String(err)); process.exit(1); });
  ' "http://127.0.0.1:$CHALL_MGMT_PORT/add-a" "${1%.}." "$2" || die "challtestsrv add-a $1 -> $2 failed"
}

# ---------------------------------------------------------------------------- nats, controller

start_nats() {
  mkdir -p "$QS/nats"
  chmod 0700 "$QS/nats"
  # Operator mode: the controller creates the NATS operator and account keys in its store
  # and writes the server's authorization include; nats-server starts with it, so only
  # the controller and enrolled agents (read-only) get in.
  local auth
  auth=$(cli controller --config "$QS/controller.yaml" --write-nats-config) || die "could not write the NATS authorization include"
  # nats-server resolves `include` relative to the including file.
  printf '# Written by deploy/quickstart.sh.\ninclude "%s"\n' "$(realpath --relative-to="$QS" "$auth")" > "$QS/nats-server.conf"
  say "starting nats-server with JetStream and authorization (nats://127.0.0.1:$NATS_PORT)"
  start_daemon nats-server "$QS" -- nats-server -c "$QS/nats-server.conf" -js -sd "$QS/nats" -a 127.0.0.1 -p "$NATS_PORT"
  wait_port nats-server 127.0.0.1 "$NATS_PORT"
}

render_controller_config() {
  local out=$QS/controller.yaml
  sed -e "s|@QS@|$QS|g" -e "s|@API_PORT@|$API_PORT|g" -e "s|@NATS_PORT@|$NATS_PORT|g" \
    -e "s|@PEBBLE_PORT@|$PEBBLE_PORT|g" -e "s|@PEBBLE_BACKUP_PORT@|$PEBBLE_BACKUP_PORT|g" \
    -e "s|@BIND_PORT@|$BIND_PORT|g" "$TEMPLATE" > "$out.tmp"
  if grep -n '@[A-Z_]*@' "$out.tmp" > /dev/null; then
    die "unknown placeholder left in $out.tmp: $(grep -n '@[A-Z_]*@' "$out.tmp" | head -n 1)"
  fi
  mv "$out.tmp" "$out"
  cli controller --config "$out" --check > /dev/null || die "the controller rejects $out (rendered from $TEMPLATE)"
}

start_controller() {
  say "starting the controller (API 127.0.0.1:$API_PORT)"
  mkdir -p "$QS/controller"
  chmod 0700 "$QS/controller"
  start_daemon controller "$REPO" -- node "$CLI" controller --config "$QS/controller.yaml"
  local i
  for i in $(seq 1 600); do
    if [ -f "$CREDENTIALS" ] && port_open 127.0.0.1 "$API_PORT"; then return 0; fi
    if ! running controller > /dev/null; then
      show_log controller 40
      die "the controller exited during start-up; see $(log_file controller)"
    fi
    sleep 0.1
  done
  show_log controller 40
  die "the controller did not write $CREDENTIALS and listen on 127.0.0.1:$API_PORT within 60 s"
}

# ---------------------------------------------------------------------------- ha: vault, nats cluster, controllers

# nats_urls: the NATS client URLs every controller and agent lists, as a YAML flow list body.
nats_urls() {
  if [ "$MODE" != ha ]; then
    printf '"nats://127.0.0.1:%s"' "$NATS_PORT"
    return 0
  fi
  local n sep=
  for n in "${HA_NATS_NODES[@]}"; do
    printf '%s"nats://127.0.0.1:%s"' "$sep" "$((NATS_PORT + n - 1))"
    sep=', '
  done
}

# The Vault double keeps everything in memory (CA, keys, versions, NATS authority): a new
# double is an empty store, so the controllers' state directories, the NATS stores and the
# agents' identities and certificates of an earlier run no longer fit. Start them over.
ha_fresh_state() {
  local d agent
  for d in "${HA_CONTROLLERS[@]}" vault nats-1 nats-2 nats-3; do rm -rf "${QS:?}/$d"; done
  for agent in "${AGENT_NAMES[@]}"; do rm -rf "${QS:?}/$agent/state"; done
}

start_vault() {
  local dir=$QS/vault i
  mkdir -p "$dir"
  chmod 0700 "$dir"
  rm -f "$dir/token"
  say "starting the Vault KV v2 double (http://127.0.0.1:$VAULT_PORT)"
  info "NOT HashiCorp Vault, which cannot be installed here: the project's test double of its KV v2"
  info "API (test/harness/vault-double.ts), in memory only. Against a real Vault, set store.address"
  info "and store.auth in .quickstart-ha/c1.yaml and c2.yaml (docs/storage.md)."
  start_daemon vault "$REPO" -- node "$REPO/dist/test/harness/vault-double-main.js" --port "$VAULT_PORT" --token-file "$dir/token"
  wait_port vault 127.0.0.1 "$VAULT_PORT"
  for i in $(seq 1 100); do
    [ -s "$dir/token" ] && return 0
    sleep 0.1
  done
  die "the Vault double wrote no token to $dir/token"
}

# render_ha_configs: c1.yaml and c2.yaml from the rendered controller.yaml: each its own
# state directory, ha.name and API address, the other as its peer; every NATS node with 3
# replicas; the shared Vault store. Everything else (CA, certificates, DNS-01) is the same.
render_ha_configs() {
  local i name port peer
  for i in "${!HA_CONTROLLERS[@]}"; do
    name=${HA_CONTROLLERS[$i]}
    port=${HA_API_PORTS[$i]}
    peer=
    local j
    for j in "${!HA_API_PORTS[@]}"; do
      [ "$j" = "$i" ] || peer="${peer:+$peer,}127.0.0.1:${HA_API_PORTS[$j]}"
    done
    (cd "$REPO" && node --input-type=module -e '
      import fs from "node:fs";
      import { parseDocument } from "yaml";
      const [base, out, name, stateDir, listen, peers, natsUrls, vault, tokenFile] = process.argv.slice(1);
      const doc = parseDocument(fs.readFileSync(base, "utf8"));
      doc.commentBefore = [
        ` certfleet controller ${name} of the quick start high-availability variant.`,
        ` Written by deploy/quickstart.sh ha from controller.yaml (itself rendered from`,
        ` deploy/examples/quickstart-controller.yaml); rewritten on every run. What differs:`,
        ` stateDir, ha, api.advertise/peers, nats.servers/replicas and store. See`,
        ` deploy/examples/ha-controller.yaml and docs/high-availability.md.`,
      ].join("\n");
      doc.set("stateDir", stateDir);
      doc.set("ha", doc.createNode({ name, leaseTtl: "15s" }));
      doc.setIn(["api", "listen"], listen);
      doc.setIn(["api", "advertise"], listen);
      doc.setIn(["api", "peers"], doc.createNode(peers.split(","), { flow: true }));
      doc.setIn(["nats", "servers"], doc.createNode(JSON.parse(`[${natsUrls}]`), { flow: true }));
      doc.setIn(["nats", "replicas"], 3);
      doc.set("store", doc.createNode({ type: "vault", address: vault, auth: { method: "token", tokenFile } }));
      fs.writeFileSync(out, String(doc), { mode: 0o600 });
    ' "$QS/controller.yaml" "$QS/$name.yaml" "$name" "$QS/$name" "127.0.0.1:$port" "$peer" "$(nats_urls)" \
      "http://127.0.0.1:$VAULT_PORT" "$QS/vault/token") || die "could not write $QS/$name.yaml"
    cli controller --config "$QS/$name.yaml" --check > /dev/null || die "the controller rejects $QS/$name.yaml"
  done
}

# start_nats_cluster: three nats-server nodes in one cluster, each with its own JetStream
# store, all with the authorization include the controllers' store authority writes.
start_nats_cluster() {
  local auth n m routes conf offsets=()
  auth=$(cli controller --config "$QS/c1.yaml" --write-nats-config) || die "could not write the NATS authorization include"
  for n in "${HA_NATS_NODES[@]}"; do
    mkdir -p "$QS/nats-$n"
    chmod 0700 "$QS/nats-$n"
    routes=
    for m in "${HA_NATS_NODES[@]}"; do
      [ "$m" = "$n" ] || routes="${routes:+$routes, }\"nats-route://127.0.0.1:$((NATS_ROUTE_PORT + m - 1))\""
    done
    conf=$QS/nats-$n.conf
    printf '%s\n' \
      "# Written by deploy/quickstart.sh ha; rewritten on every run." \
      "server_name: n$n" \
      "listen: 127.0.0.1:$((NATS_PORT + n - 1))" \
      "include \"$(realpath --relative-to="$QS" "$auth")\"" \
      "jetstream { store_dir: \"$QS/nats-$n\" }" \
      "cluster {" \
      "  name: certfleet-quickstart" \
      "  listen: 127.0.0.1:$((NATS_ROUTE_PORT + n - 1))" \
      "  routes: [$routes]" \
      "}" > "$conf"
    offsets+=("$(stat -c %s "$(log_file "nats-$n")" 2> /dev/null || echo 0)")
  done
  say "starting a three-node nats-server cluster (nats://127.0.0.1:$NATS_PORT-$((NATS_PORT + 2)), routes :$NATS_ROUTE_PORT-$((NATS_ROUTE_PORT + 2)))"
  for n in "${HA_NATS_NODES[@]}"; do
    start_daemon "nats-$n" "$QS" -- nats-server -c "$QS/nats-$n.conf"
  done
  for n in "${HA_NATS_NODES[@]}"; do wait_port "nats-$n" 127.0.0.1 "$((NATS_PORT + n - 1))"; done
  # JetStream answers once the nodes agree on a metadata leader.
  local i ready
  for i in $(seq 1 300); do
    ready=yes
    for n in "${HA_NATS_NODES[@]}"; do
      tail -c +"$((offsets[n - 1] + 1))" "$(log_file "nats-$n")" | grep -qi 'metadata leader' || ready=no
    done
    [ "$ready" = yes ] && return 0
    sleep 0.1
  done
  for n in "${HA_NATS_NODES[@]}"; do show_log "nats-$n" 10; done
  die "the NATS cluster elected no JetStream metadata leader within 30 s"
}

# start_ha_controller NAME: starts controller NAME and waits for its API.
start_ha_controller() {
  local name=$1 i port=
  for i in "${!HA_CONTROLLERS[@]}"; do
    [ "${HA_CONTROLLERS[$i]}" = "$name" ] && port=${HA_API_PORTS[$i]}
  done
  [ -n "$port" ] || die "no controller $name (the controllers are ${HA_CONTROLLERS[*]})"
  mkdir -p "$QS/$name"
  chmod 0700 "$QS/$name"
  start_daemon "controller-$name" "$REPO" -- node "$CLI" controller --config "$QS/$name.yaml"
  for i in $(seq 1 600); do
    port_open 127.0.0.1 "$port" && return 0
    if ! running "controller-$name" > /dev/null; then
      show_log "controller-$name" 40
      die "controller $name exited during start-up; see $(log_file "controller-$name")"
    fi
    sleep 0.1
  done
  show_log "controller-$name" 40
  die "controller $name did not listen on 127.0.0.1:$port within 60 s"
}

start_ha_controllers() {
  local i name
  for i in "${!HA_CONTROLLERS[@]}"; do
    name=${HA_CONTROLLERS[$i]}
    say "starting controller $name (API 127.0.0.1:${HA_API_PORTS[$i]})"
    start_ha_controller "$name"
    # The first one creates the CA and the bootstrap admin in the store and writes the
    # admin credentials (listing every controller); the others write none.
    if [ "$i" = 0 ]; then
      for _ in $(seq 1 300); do
        [ -f "$CREDENTIALS" ] && break
        sleep 0.1
      done
      [ -f "$CREDENTIALS" ] || die "controller $name wrote no $CREDENTIALS"
    fi
  done
}

cmd_start_controller() {
  [ -n "${1:-}" ] || die "usage: deploy/quickstart.sh ha start-controller NAME (${HA_CONTROLLERS[*]})"
  if running "controller-$1" > /dev/null; then
    info "controller $1 is already running"
    return 0
  fi
  say "starting controller $1 again (it follows until the leader's lease runs out)"
  start_ha_controller "$1"
}

# ---------------------------------------------------------------------------- agents, nginx

# served_certs: one line per (agent, certificate) the controller configuration assigns,
# "AGENT<TAB>CERT<TAB>CHALLENGE<TAB>NAME NAME...", evaluated with certfleet's own selector code.
served_certs() {
  local specs=() i
  for i in "${!AGENT_NAMES[@]}"; do specs+=("${AGENT_NAMES[$i]}|${AGENT_LABELS[$i]}"); done
  (cd "$REPO" && node --input-type=module -e '
    import fs from "node:fs";
    import { pathToFileURL } from "node:url";
    import { parse } from "yaml";
    const [configFile, selectorModule, ...agents] = process.argv.slice(1);
    const { selects } = await import(pathToFileURL(selectorModule).href);
    const cfg = parse(fs.readFileSync(configFile, "utf8"));
    for (const spec of agents) {
      const [agent, labelText] = spec.split("|");
      const labels = Object.fromEntries(labelText.split(",").map((kv) => kv.split("=")));
      for (const c of cfg.certificates ?? []) {
        if (selects(c.agents, labels)) console.log([agent, c.name, c.challenge ?? "http-01", c.names.join(" ")].join("\t"));
      }
    }
  ' "$QS/controller.yaml" "$REPO/dist/shared/selector/index.js" "${specs[@]}")
}

# sni_for NAME: a host name NAME covers, for SNI: NAME itself, or for a wildcard *.ZONE,
# foo.ZONE.
sni_for() {
  case $1 in
    '*.'*) printf 'foo.%s\n' "${1#\*.}" ;;
    *) printf '%s\n' "$1" ;;
  esac
}

# served_by AGENT: the lines of served.tsv for AGENT.
served_by() { awk -F '\t' -v agent="$1" '$1 == agent' "$QS/served.tsv"; }

# nginx *_temp_path directives must name only modules compiled in (Debian's packages
# differ); every path nginx writes stays under the prefix.
nginx_temp_paths() {
  local configure m
  configure=$(/usr/sbin/nginx -V 2>&1)
  printf '%s\n' client_body
  for m in proxy fastcgi uwsgi scgi; do
    case $configure in *"--without-http_${m}_module"*) ;; *) printf '%s\n' "$m" ;; esac
  done
}

# write_agent AGENT IP: the agent's configuration and its nginx configuration.
write_agent() {
  local agent=$1 ip=$2 dir=$QS/$1
  local prefix=$dir/nginx certs=$dir/state/certs
  mkdir -p "$dir/state" "$prefix/logs" "$prefix/temp"
  chmod 0700 "$dir" "$dir/state" "$prefix" "$prefix/logs" "$prefix/temp"

  local cert names
  {
    printf '%s\n' \
      "# Written by deploy/quickstart.sh for agent $agent; rewritten on every run." \
      "# Every field is explained in deploy/examples/agent.yaml." \
      "stateDir: \"$dir/state\"" \
      "log:" \
      "  level: info" \
      "controller:"
    if [ "$MODE" = ha ]; then
      # Every controller: the agent fails over between them (enrolment works with any).
      printf '%s\n' "  addresses: [\"127.0.0.1:$API_PORT\", \"127.0.0.1:$API2_PORT\"]"
    else
      printf '%s\n' "  address: \"127.0.0.1:$API_PORT\""
    fi
    printf '%s\n' \
      "  caFile: \"$CONTROLLER_DIR/ca.pem\"" \
      "nats:" \
      "  servers: [$(nats_urls)]" \
      "http01:" \
      "  listen: \"$ip:$HTTP01_PORT\"" \
      "resyncInterval: 30s" \
      "reportInterval: 5s" \
      "hooks:" \
      "  reload:" \
      "    # Tests nginx's configuration, reloads it (starts it on the first install) and" \
      "    # returns once new connections get the new certificates." \
      "    command: [\"/bin/bash\", \"$RELOAD_HOOK\", \"$prefix/nginx.conf\", \"$prefix\"]" \
      "    timeout: 30s" \
      "certificates:"
    while IFS=$'\t' read -r _ cert _ names; do
      printf '%s\n' "  $cert:" "    verify:" "      - address: \"$ip:$TLS_PORT\""
      # The agent's check sends the certificate's first name as SNI; a wildcard is not a
      # host name, so name one host it covers.
      case $names in
        '*.'*) printf '%s\n' "        serverName: \"$(sni_for "${names%% *}")\"" ;;
      esac
    done < <(served_by "$agent")
  } > "$dir/agent.yaml"
  cli agent --config "$dir/agent.yaml" --check > /dev/null || die "the agent rejects $dir/agent.yaml"

  {
    printf '%s\n' \
      "# Written by deploy/quickstart.sh for agent $agent; rewritten on every run." \
      "# Started and reloaded by deploy/nginx-reload.sh (the agent's reload hook)." \
      "worker_processes 1;" \
      "pid \"$prefix/logs/nginx.pid\";" \
      "error_log \"$prefix/logs/error.log\" notice;" \
      "# An old worker on an idle keep-alive connection would otherwise delay the end of a reload." \
      "worker_shutdown_timeout 2s;"
    # The certificate files are 0600 and owned by the agent's user; quick start only.
    if [ "$(id -u)" -eq 0 ]; then printf '%s\n' "user root;"; fi
    printf '%s\n' "events {" "  worker_connections 256;" "}" "http {" \
      "  access_log \"$prefix/logs/access.log\";" "  keepalive_timeout 5s;" "  default_type text/plain;"
    local m
    while read -r m; do printf '  %s_temp_path "%s";\n' "$m" "$prefix/temp/$m"; done < <(nginx_temp_paths)
    while IFS=$'\t' read -r _ cert _ names; do
      # server_name takes wildcards (*.internal.test) as they are.
      printf '%s\n' \
        "  server {" \
        "    listen $ip:$TLS_PORT ssl;" \
        "    server_name $names;" \
        "    ssl_certificate \"$certs/$cert/current/fullchain.pem\";" \
        "    ssl_certificate_key \"$certs/$cert/current/privkey.pem\";" \
        "    return 200 \"certfleet quick start: $agent serves certificate $cert for \$ssl_server_name\\n\";" \
        "  }"
    done < <(served_by "$agent")
    printf '%s\n' "}"
  } > "$prefix/nginx.conf"
  chmod 0600 "$prefix/nginx.conf"
}

# agent_removed NAME: exit 0 when the controller lists NAME as removed.
agent_removed() {
  cli agents --json --credentials "$CREDENTIALS" 2> "$LOGS/cli.err" | node -e '
    let text = "";
    process.stdin.on("data", (c) => (text += c)).on("end", () => {
      const doc = JSON.parse(text);
      const a = (doc.agents || []).find((x) => x.name === process.argv[1]);
      process.exit(a && a.removedAt ? 0 : 1);
    });
  ' "$1"
}

enroll_agent() {
  local agent=$1 labels=$2 dir=$QS/$1
  if [ -f "$dir/state/identity/agent.json" ]; then
    # An agent removed with `certfleet agents remove` keeps its identity files, which the
    # controller now refuses: enrol it again with a new token (what the removal message
    # tells an operator to do).
    if agent_removed "$agent"; then
      info "$agent was removed (certfleet agents remove): enrolling it again"
      rm -rf "$dir/state/identity"
    else
      info "$agent is already enrolled"
      return 0
    fi
  fi
  local args=() l token
  IFS=, read -r -a l <<< "$labels"
  for token in "${l[@]}"; do args+=(--label "$token"); done
  # The token goes through a 0600 file, not the command line (where `ps` would show it).
  (
    umask 077
    cli token create "$agent" "${args[@]}" --ttl 15m --json --credentials "$CREDENTIALS" > "$dir/token.json"
  ) || die "certfleet token create $agent failed"
  node -e '
    const fs = require("node:fs");
    const doc = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    if (typeof doc.token !== "string" || doc.token === "") { console.error("no token field in " + process.argv[1]); process.exit(1); }
    fs.writeFileSync(process.argv[2], doc.token + "\n", { mode: 0o600 });
  ' "$dir/token.json" "$dir/token" || die "unexpected output of certfleet token create (see $dir/token.json)"
  rm -f "$dir/token.json"
  info "enrolling $agent ($labels)"
  if ! cli agent enroll --config "$dir/agent.yaml" --token-file "$dir/token" | sed 's/^/    /'; then
    rm -f "$dir/token"
    die "certfleet agent enroll failed for $agent"
  fi
  rm -f "$dir/token"
}

# On a restart the certificates are already installed, so the agent has nothing to install
# and runs no hook: start nginx here when every file its configuration names exists.
start_nginx_if_ready() {
  local agent=$1 prefix=$QS/$1/nginx f
  while read -r f; do
    [ -e "$f" ] || return 0
  done < <(sed -n 's/^ *ssl_certificate\(_key\)\? "\(.*\)";$/\2/p' "$prefix/nginx.conf")
  info "certificates of $agent already installed: starting its nginx"
  /bin/bash "$RELOAD_HOOK" "$prefix/nginx.conf" "$prefix" || warn "nginx of $agent did not start; its agent will retry"
}

start_agents() {
  say "enrolling and starting the agents"
  local i agent ip
  for i in "${!AGENT_NAMES[@]}"; do
    agent=${AGENT_NAMES[$i]}
    ip=${AGENT_IPS[$i]}
    write_agent "$agent" "$ip"
    enroll_agent "$agent" "${AGENT_LABELS[$i]}"
    start_nginx_if_ready "$agent"
    start_daemon "agent-$agent" "$REPO" -- node "$CLI" agent --config "$QS/$agent/agent.yaml"
    info "$agent: HTTP-01 on $ip:$HTTP01_PORT, nginx on $ip:$TLS_PORT, log $(log_file "agent-$agent")"
  done
}

# Each HTTP-01 name resolves (for Pebble) to the first agent that serves it; every agent
# that serves a certificate answers its challenges anyway. DNS-01 names need no address:
# Pebble only reads their TXT records, from named.
publish_dns() {
  local agent cert challenge names name i ip
  declare -A done_names=()
  while IFS=$'\t' read -r agent cert challenge names; do
    [ "$challenge" = http-01 ] || continue
    ip=
    for i in "${!AGENT_NAMES[@]}"; do
      [ "${AGENT_NAMES[$i]}" = "$agent" ] && ip=${AGENT_IPS[$i]}
    done
    for name in $names; do
      [ -z "${done_names[$name]:-}" ] || continue
      done_names[$name]=1
      add_a "$name" "$ip"
      info "$name -> $ip ($agent, certificate $cert)"
    done
  done < "$QS/served.tsv"
}

# ---------------------------------------------------------------------------- wait, show

# certs_progress: prints "web ready 2/2, api pending 0/1 ..."; exit 0 when all are ready.
certs_progress() {
  # shellcheck disable=SC2016 # JavaScript, not shell: ${...} are template literals.
  cli certs --json --credentials "$CREDENTIALS" 2> "$LOGS/cli.err" | node -e '
    let text = "";
    process.stdin.on("data", (c) => (text += c)).on("end", () => {
      const doc = JSON.parse(text);
      const list = Array.isArray(doc) ? doc : (doc.certificates ?? []);
      const parts = list.map((c) => {
        const err = c.lastError ? ` (${c.lastError})` : "";
        return `${c.name} ${c.state} ${c.agentsCurrent}/${c.agentsAssigned}${err}`;
      });
      console.log(parts.join(", ") || "(no certificates)");
      const ready = list.length > 0 && list.every((c) => c.state === "ready" && c.agentsAssigned > 0 && c.agentsCurrent === c.agentsAssigned);
      process.exit(ready ? 0 : 3);
    });
  '
}

wait_ready() {
  say "waiting until every certificate is issued and served (up to ${WAIT_SECONDS}s)"
  info "(the controller may fail a first attempt before the agents are online: it retries)"
  local start=$SECONDS line rc last=
  while :; do
    rc=0
    line=$(certs_progress) || rc=$?
    if [ "$rc" -eq 0 ]; then
      info "$line"
      return 0
    fi
    if [ -z "$line" ]; then line="controller not answering: $(tail -n 2 "$LOGS/cli.err" | tr '\n' ' ')"; fi
    if [ "$line" != "$last" ]; then
      info "[$((SECONDS - start))s] $line"
      last=$line
    fi
    local name
    for name in "${SERVICES_STOP_ORDER[@]}" "${AGENT_NAMES[@]/#/agent-}"; do
      # The second CA runs only when the template's issuers: block is uncommented.
      if [ "$name" = pebble-backup ] && ! backup_ca_configured; then continue; fi
      running "$name" > /dev/null || {
        dump_logs
        die "$name is not running any more"
      }
    done
    if [ $((SECONDS - start)) -ge "$WAIT_SECONDS" ]; then
      dump_logs
      die "the certificates were not all ready within ${WAIT_SECONDS}s: $line (everything is left running to inspect: $QS_CMD status, then $QS_CMD down)"
    fi
    sleep 2
  done
}

dump_logs() {
  local f
  for f in "$LOGS"/*.log "$QS"/*/nginx/logs/error.log; do
    [ -s "$f" ] || continue
    printf '\n--- last lines of %s ---\n' "$f" >&2
    tail -n 20 "$f" >&2
  done
}

show_served() {
  say "what each nginx serves (openssl s_client)"
  local agent cert names name sni i ip out
  while IFS=$'\t' read -r agent cert _ names; do
    for i in "${!AGENT_NAMES[@]}"; do
      [ "${AGENT_NAMES[$i]}" = "$agent" ] && ip=${AGENT_IPS[$i]}
    done
    for name in $names; do
      # A wildcard is shown through one name it covers (*.internal.test: foo.internal.test).
      sni=$(sni_for "$name")
      printf '    %s %s:%s  SNI %s\n' "$agent" "$ip" "$TLS_PORT" "$sni"
      if out=$(openssl s_client -connect "$ip:$TLS_PORT" -servername "$sni" < /dev/null 2> /dev/null |
        openssl x509 -noout -subject -issuer -ext subjectAltName -enddate -fingerprint -sha256 2> /dev/null); then
        printf '%s\n' "$out" | grep -v '^X509v3 Subject Alternative Name' | sed 's/^ */        /'
      else
        printf '        (no certificate served)\n'
      fi
    done
  done < "$QS/served.tsv"
}

show_fleet() {
  say "certfleet status"
  cli status --credentials "$CREDENTIALS" | sed 's/^/    /'
  say "certfleet certs"
  cli certs --credentials "$CREDENTIALS" | sed 's/^/    /'
  say "certfleet agents"
  cli agents --credentials "$CREDENTIALS" | sed 's/^/    /'
}

show_usage() {
  local rel=${QS#"$PWD"/}
  cat << EOF

==> the quick start is running
    Use the CLI (from $REPO):
      export CERTFLEET_CREDENTIALS=$CREDENTIALS
      node dist/cli/main.js certs          # or: npx certfleet certs
      node dist/cli/main.js agents
      node dist/cli/main.js status
      node dist/cli/main.js renew web --wait   # orders, then waits until both nginx serve it
    Budgets: preset none (Pebble has no rate limits; renew as often as you like).
      With Let's Encrypt use budgets.preset letsencrypt: see $rel/controller.yaml.
    Talk to an nginx:
      curl --cacert <(curl -s --cacert $QS/pebble/wfe-ca.pem https://127.0.0.1:$PEBBLE_MGMT_PORT/roots/0) \\
           --resolve www.example.test:$TLS_PORT:${AGENT_IPS[0]} https://www.example.test:$TLS_PORT/
      (the root comes from Pebble's management API: it changes whenever Pebble restarts;
      the wildcard certificate: --resolve foo.internal.test:$TLS_PORT:${AGENT_IPS[0]} https://foo.internal.test:$TLS_PORT/)
    DNS-01 zone (named, TSIG key $TSIG_KEY_FILE):
      dig @127.0.0.1 -p $BIND_PORT internal.test SOA
    Logs:    $LOGS/  (one per process; nginx: $rel/<agent>/nginx/logs/)
    Configs: $rel/controller.yaml, $rel/<agent>/agent.yaml, $rel/<agent>/nginx/nginx.conf
    Stop:    $QS_CMD down     (keeps $rel/ for inspection)
    Remove:  $QS_CMD clean
EOF
  [ "$MODE" = ha ] || return 0
  cat << EOF

==> high availability (docs/high-availability.md)
    Controllers: c1 127.0.0.1:$API_PORT and c2 127.0.0.1:$API2_PORT (configs $rel/c1.yaml, $rel/c2.yaml);
    the admin credentials and the agents list both. One leads (a lease in NATS, 15 s).
    Store: the Vault KV v2 double on 127.0.0.1:$VAULT_PORT, NOT HashiCorp Vault (which cannot be
    installed here): in memory only, so every '$QS_CMD' run starts a new fleet.
    NATS: three nodes, 127.0.0.1:$NATS_PORT-$((NATS_PORT + 2)), every bucket and stream at 3 replicas.
    Try it:
      node dist/cli/main.js status                 # leader: c1 (epoch N) at ..., and CONTROLLERS
      kill -9 \$(cat $LOGS/controller-c1.pid)      # the leader's machine dies (if c1 leads)
      node dist/cli/main.js status                 # 10-25 s later (lease 15 s): c2 leads, epoch N+1
      node dist/cli/main.js certs                  # still ready; renew and rollback work
      $QS_CMD start-controller c1    # c1 comes back, as the follower
EOF
}

# ---------------------------------------------------------------------------- commands

cmd_up() {
  check_repo_path
  install_packages
  mkdir -p "$LOGS"
  chmod 0700 "$QS" "$LOGS"
  build
  cmd_down
  check_ports
  check_apparmor
  # The controller configuration names Pebble's CA and the TSIG key file: make both first.
  [ "$MODE" != ha ] || ha_fresh_state
  prepare_pebble
  prepare_bind
  render_controller_config
  if [ "$MODE" = ha ]; then
    start_vault
    render_ha_configs
  fi
  served_certs > "$QS/served.tsv" || die "could not read the certificates from $QS/controller.yaml"
  start_challtestsrv
  start_bind
  start_pebble
  if [ "$MODE" = ha ]; then
    start_nats_cluster
    start_ha_controllers
  else
    start_nats
    start_controller
  fi
  say "pointing the names at the agents (challtestsrv A records)"
  publish_dns
  start_agents
  wait_ready
  show_fleet
  show_served
  show_usage
}

cmd_status() {
  [ -f "$CREDENTIALS" ] || die "no credentials at $CREDENTIALS: run $QS_CMD first"
  local name pid
  say "processes"
  for name in "${SERVICES_STOP_ORDER[@]}" "${AGENT_NAMES[@]/#/agent-}"; do
    if [ "$name" = pebble-backup ] && ! backup_ca_configured; then info "$name: not configured (the template's issuers: block is commented out)"; continue; fi
    if pid=$(running "$name"); then info "$name: running (pid $pid)"; else info "$name: stopped"; fi
  done
  show_fleet
}

cmd_clean() {
  cmd_down
  if [ -d "$QS" ]; then
    say "removing $QS"
    rm -rf "$QS"
  fi
}

case ${1:-up} in
  up) cmd_up ;;
  down) cmd_down ;;
  clean) cmd_clean ;;
  status) cmd_status ;;
  start-controller)
    [ "$MODE" = ha ] || die "start-controller belongs to the ha variant (deploy/quickstart.sh ha start-controller NAME)"
    cmd_start_controller "${2:-}"
    ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (use up, status, down or clean; or ha [up|status|down|clean|start-controller NAME])" ;;
esac

#!/usr/bin/env bash
# certfleet reload hook for nginx: test the configuration, then reload nginx - or start it
# when it is not running - and return only once NEW connections are served by workers
# that loaded the new configuration (so the agent's served-certificate check that runs
# right after the hook sees the new certificate, not the old one).
#
# Usage: nginx-reload.sh CONF [PREFIX]
#   CONF     nginx configuration file (nginx -c)
#   PREFIX   nginx prefix directory (nginx -p). When given, the pid file and error log
#            default to PREFIX/logs/nginx.pid and PREFIX/logs/error.log (what the
#            configuration written by deploy/quickstart.sh uses).
# Environment (all optional; CONF and PREFIX may also come from here):
#   NGINX_CONF, NGINX_PREFIX       instead of the arguments
#   NGINX                          the nginx binary (default: nginx on PATH, else /usr/sbin/nginx)
#   NGINX_PID_FILE                 the `pid` file the configuration names
#                                  (default PREFIX/logs/nginx.pid, or /run/nginx.pid without PREFIX)
#   NGINX_ERROR_LOG                the main `error_log` file, scanned for [emerg] after a reload
#                                  (default PREFIX/logs/error.log, or /var/log/nginx/error.log)
#   NGINX_START                    command that starts nginx when it is not running, e.g.
#                                  "systemctl start nginx" for a systemd-managed nginx
#                                  (default: run the nginx binary, which daemonizes)
#   CERTFLEET_NGINX_WAIT_TRIES     rounds of 50 ms to wait for the workers (default 300 = 15 s)
# Exit status: 0 when the new configuration is live; 1 (nginx's messages on stderr) when
# the configuration test, the start or the reload fails, or the workers are not replaced in time.
#
# Why it waits, and for what: `nginx -s reload` (SIGHUP) returns before the master has even
# read the new configuration. The master then starts new workers and ~100 ms later tells the
# old ones to quit; an old worker closes its listening sockets when it handles that, then
# drains its connections (at most worker_shutdown_timeout). Until then a new connection may
# be accepted by an old worker and get the OLD certificate. So success = every pre-reload
# worker is gone (a zombie counts as gone) and at least one new worker runs. A reload the
# master rejects (it keeps the old workers) shows up as an [emerg] line in the error log.
#
# The integration and end-to-end tests run this very file as their agents' reload hook
# (test/harness/nginx.ts). It reads only /proc and the pid file with shell builtins,
# because hooks may run on busy, small machines.
set -euo pipefail
# Hooks may run with a bare environment; the helpers below need coreutils and grep.
PATH=${PATH:+$PATH:}/usr/sbin:/usr/bin:/sbin:/bin
export PATH

conf=${1:-${NGINX_CONF:-}}
prefix=${2:-${NGINX_PREFIX:-}}
if [ -z "$conf" ]; then
  echo "usage: $0 CONF [PREFIX]   (or NGINX_CONF / NGINX_PREFIX in the environment)" >&2
  exit 2
fi
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
# nginx itself reads $NGINX (listening sockets inherited across a binary upgrade) and
# fails with "invalid socket number" when it holds a path: never pass it on.
unset NGINX
if [ -n "$prefix" ]; then
  pidfile=${NGINX_PID_FILE:-$prefix/logs/nginx.pid}
  log=${NGINX_ERROR_LOG:-$prefix/logs/error.log}
  prefix_args=(-p "$prefix")
else
  pidfile=${NGINX_PID_FILE:-/run/nginx.pid}
  log=${NGINX_ERROR_LOG:-/var/log/nginx/error.log}
  prefix_args=()
fi
tries=${CERTFLEET_NGINX_WAIT_TRIES:-300}

fail() {
  echo "nginx reload: $*" >&2
  if [ -s "$log" ]; then
    echo "nginx reload: last lines of $log:" >&2
    tail -n 15 "$log" >&2 || true
  fi
  exit 1
}

# live PID: the process exists and is not a zombie.
live() {
  local line
  { read -r line < "/proc/$1/stat"; } 2>/dev/null || return 1
  case ${line##*) } in Z*|X*|x*) return 1 ;; esac
  return 0
}

# children PID: sets $kids to the live children of PID (" 12 34"). The kernel's children
# list is cheap; scanning /proc is the fallback for kernels without it.
children() {
  local list c f line
  kids=
  if [ -r "/proc/$1/task/$1/children" ]; then
    list=
    { read -r list < "/proc/$1/task/$1/children"; } 2>/dev/null || :
    for c in $list; do
      if live "$c"; then kids="$kids $c"; fi
    done
    return 0
  fi
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    # fields after "(comm) ": state ppid ...
    read -r -a fields <<< "${line##*) }"
    [ "${fields[1]:-}" = "$1" ] || continue
    case ${fields[0]:-} in Z*|X*|x*) continue ;; esac
    f=${f#/proc/}
    kids="$kids ${f%/stat}"
  done
}

# master_pid: sets $master to the running master named by the pid file (a stale file may
# name a pid that now belongs to another process: check its title).
master_pid() {
  local pid title
  master=
  { read -r pid < "$pidfile"; } 2>/dev/null || return 1
  case $pid in ''|*[!0-9]*) return 1 ;; esac
  live "$pid" || return 1
  title=$(tr '\000' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $title in "nginx: master process"*) ;; *) return 1 ;; esac
  master=$pid
}

"$nginx" -t -q -e stderr -c "$conf" "${prefix_args[@]}" || fail "configuration test failed: $conf"

if master_pid; then
  children "$master"
  old=$kids
  size=$(wc -c < "$log" 2>/dev/null) || size=0
  kill -HUP "$master" || fail "cannot signal nginx master $master"
  i=0
  while :; do
    live "$master" || fail "nginx master $master exited during the reload"
    replaced=yes
    for p in $old; do
      if live "$p"; then replaced=no; break; fi
    done
    if [ "$replaced" = yes ]; then
      children "$master"
      for p in $kids; do
        case "$old " in *" $p "*) ;; *) exit 0 ;; esac
      done
    fi
    i=$((i + 1))
    # A rejected reload keeps the old workers: fail fast on the master's [emerg] line
    # rather than at the timeout (checked every few rounds: tail and grep are forks).
    if [ $((i % 4)) -eq 0 ] && tail -c +"$((size + 1))" "$log" 2>/dev/null | grep -q '\[emerg\]'; then
      fail "nginx rejected the new configuration"
    fi
    [ "$i" -lt "$tries" ] || fail "nginx master $master did not replace its workers in time"
    sleep 0.05
  done
fi

# Not running (first install: nginx cannot start before its certificates exist): start the
# daemon. It binds the listening sockets before returning; the pid file and the workers
# follow from the forked master, so wait for them (a second hook right after this one must
# find the pid file, not start a second nginx).
if [ -n "${NGINX_START:-}" ]; then
  sh -c "$NGINX_START" || fail "nginx did not start ($NGINX_START)"
else
  "$nginx" -e stderr -c "$conf" "${prefix_args[@]}" || fail "nginx did not start"
fi
i=0
while :; do
  if master_pid; then
    children "$master"
    [ -z "$kids" ] || exit 0
  fi
  i=$((i + 1))
  [ "$i" -lt "$tries" ] || fail "nginx started but no master with workers appeared (pid file $pidfile)"
  sleep 0.05
done

# shellcheck shell=bash
# Installs missing Debian packages without starting their services. Sourced by .ci/run,
# deploy/quickstart.sh and test/run.sh, so that each of them sets up a fresh Debian 12
# by itself and they work in any order.
#
#   certfleet_apt_install PREFIX PKG...
#     Installs those of PKG that dpkg does not list as installed (naming an installed
#     package would also upgrade it, which costs minutes and is not our business), with
#     `apt-get update` first. Runs as root, else through sudo (`sudo -n` when there is no
#     terminal to ask a password on). PREFIX starts the messages ("test/run.sh").
#     Postinst scripts are kept from starting services (nginx on :80, named on :53,
#     haproxy, nats-server): the tests and the quick start run their own copies on other
#     ports. Returns non-zero when it cannot install (no root, no sudo, apt failure).
#
#   certfleet_apt_missing PKG...   prints the packages of PKG that are not installed.
#   certfleet_as_root CMD...       runs CMD as root (directly, or through sudo as above).

certfleet_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
  else
    echo "not root and no sudo: cannot run $*" >&2
    return 1
  fi
}

certfleet_apt_missing() {
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || printf '%s\n' "$pkg"
  done
}

certfleet_apt_install() {
  local prefix=$1
  shift
  local missing=()
  mapfile -t missing < <(certfleet_apt_missing "$@")
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || {
    echo "$prefix: missing Debian packages ${missing[*]} and no apt-get to install them" >&2
    return 1
  }
  echo "$prefix: installing Debian packages: ${missing[*]}"
  # invoke-rc.d and deb-systemd-invoke both honour policy-rc.d: exit 101 means "do not
  # start". Only a policy file we created is removed afterwards.
  local made_policy=no rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    certfleet_as_root sh -c 'printf "#!/bin/sh\n# written by certfleet deploy/lib/apt.sh while installing packages\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d' || return 1
    made_policy=yes
  fi
  {
    certfleet_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      certfleet_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  } || rc=$?
  if [ "$made_policy" = yes ]; then certfleet_as_root rm -f /usr/sbin/policy-rc.d || true; fi
  return "$rc"
}

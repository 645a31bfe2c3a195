#!/usr/bin/env bash
# bench/setup.sh NAME: installs the Debian packages benchmark NAME starts (only those
# missing; deploy/lib/apt.sh, as test/run.sh and the quick start do), so `npm run
# bench:NAME` works on a fresh machine. Exits non-zero, naming them, when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../deploy/lib/apt.sh
. deploy/lib/apt.sh
case "${1:-}" in
  issuance) pkgs=(pebble nats-server nginx-light bind9 bind9-dnsutils openssl lego certbot) ;;
  failover) pkgs=(pebble nats-server nginx-light openssl) ;;
  fanout | footprint) pkgs=(pebble nats-server openssl) ;;
  *) echo "bench/setup.sh: unknown benchmark '${1:-}' (issuance, failover, fanout, footprint)" >&2; exit 2 ;;
esac
certfleet_apt_install "bench:$1" "${pkgs[@]}"

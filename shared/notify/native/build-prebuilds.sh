#!/usr/bin/env bash
# Builds the prebuilt addons committed under prebuilds/, so that `npm ci` on a node needs
# no compiler, no Node headers and no network (install.cjs uses them when one loads).
#
#   shared/notify/native/build-prebuilds.sh           rebuild prebuilds/linux-{x64,arm64}/
#   shared/notify/native/build-prebuilds.sh --check   rebuild into a scratch folder and
#                                                     compare with the committed files
#
# Needs Debian 12's gcc (x64), and gcc-aarch64-linux-gnu with libc6-dev-arm64-cross (arm64, a
# cross compiler), and the Node-API headers (node_api.h: /usr/include/node from Node's packages, or
# NODE_API_HEADERS=DIR). Node-API is ABI-stable, so one build serves Node 20, 22 and later;
# the addon links nothing but glibc (socket, sendto, bind, recvmsg, close).
#
# Reproducible: no build id, no debug info, paths mapped away, symbols stripped; the same
# compiler gives the same bytes (SHA256SUMS records them; --check proves it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

headers=${NODE_API_HEADERS:-}
if [ -z "$headers" ]; then
  for d in "$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node" /usr/include/node /usr/local/include/node; do
    if [ -f "$d/node_api.h" ]; then headers=$d; break; fi
  done
fi
[ -n "$headers" ] && [ -f "$headers/node_api.h" ] || {
  echo "build-prebuilds.sh: node_api.h not found (set NODE_API_HEADERS)" >&2
  exit 1
}

# Only the four Node-API headers, copied aside: /usr/include/node also holds OpenSSL and
# libuv headers, and must not put the host's /usr/include before a cross compiler's own.
api=$(mktemp -d)
cleanup() { rm -rf "$api" "${scratch:-}"; }
trap cleanup EXIT
cp "$headers"/node_api.h "$headers"/node_api_types.h "$headers"/js_native_api.h "$headers"/js_native_api_types.h "$api"/

out=prebuilds
scratch=
if [ "${1:-}" = --check ]; then
  scratch=$(mktemp -d)
  out=$scratch
fi

# target dir : compiler
targets=("linux-x64:x86_64-linux-gnu-gcc" "linux-arm64:aarch64-linux-gnu-gcc")
for t in "${targets[@]}"; do
  dir=${t%%:*}
  cc=${t#*:}
  command -v "$cc" >/dev/null 2>&1 || {
    echo "build-prebuilds.sh: $cc not found (apt-get install gcc$([ "$dir" = linux-arm64 ] && echo ' gcc-aarch64-linux-gnu libc6-dev-arm64-cross'))" >&2
    exit 1
  }
  mkdir -p "$out/$dir"
  "$cc" -std=gnu11 -O2 -fPIC -shared -Wall -Wextra -Werror \
    -fvisibility=hidden -fno-ident -ffile-prefix-map="$PWD"=. \
    -DNODE_GYP_MODULE_NAME=certfleet_sd_notify -DBUILDING_NODE_EXTENSION \
    -isystem "$api" \
    -Wl,--build-id=none -Wl,-s -Wl,-z,noexecstack \
    -o "$out/$dir/certfleet_sd_notify.node" sd_notify.c
  echo "built $out/$dir/certfleet_sd_notify.node with $("$cc" -dumpfullversion) ($cc)"
done
(cd "$out" && sha256sum linux-*/certfleet_sd_notify.node) > "$out/SHA256SUMS.new"

if [ "${1:-}" = --check ]; then
  if diff -u prebuilds/SHA256SUMS "$out/SHA256SUMS.new"; then
    echo "build-prebuilds.sh: the committed prebuilds are what this script builds"
  else
    echo "build-prebuilds.sh: the committed prebuilds differ from a fresh build" >&2
    exit 1
  fi
else
  mv "$out/SHA256SUMS.new" "$out/SHA256SUMS"
  cat "$out/SHA256SUMS"
fi

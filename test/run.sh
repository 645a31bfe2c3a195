#!/usr/bin/env bash
# certfleet's test command: install dependencies when needed, lint, build, then run the
# compiled tests with Node's test runner, one file at a time.
#
# Usage: test/run.sh [unit|integration|e2e|chaos|PATH ...]
#   (nothing)                 every test: test/unit, test/integration, test/e2e, test/chaos
#   unit, integration, e2e, chaos
#                             that folder (several may be given); chaos is the fault
#                             matrix (docs/reliability.md)
#   PATH                      a test file (test/unit/x.test.ts or dist/test/unit/x.test.js)
#                             or a folder under test/
# Environment:
#   CERTFLEET_SKIP_LINT=1         skip `npm run lint`
#   CERTFLEET_TEST_TIMEOUT_MS     per-test timeout for node --test (default 600000)
#   CERTFLEET_TEST_REPORTER       node --test reporter (default: node's own choice)
#
# Tests never skip because a server is missing: when integration, e2e or chaos tests are selected,
# the Debian packages they start are installed when missing (as root, or through sudo;
# deploy/lib/apt.sh, shared with deploy/quickstart.sh and .ci/run), and it fails up front
# when that is impossible. Exit status is non-zero on
# any failure (lint, build, a test, or an empty selection).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian installs nginx, named, haproxy and nats-server in /usr/sbin, which is not on a
# normal user's PATH; the test harnesses look them up there too.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() {
  echo "test/run.sh: $*" >&2
  exit 1
}

# --test-concurrency and --test-timeout arrived in Node 20.10 and 20.11.
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)' 2>/dev/null ||
  die "Node.js 20.11 or later is required, found $(node --version 2>/dev/null || echo none)"

# --- which tests -------------------------------------------------------------------------

# Node 20's `node --test` finds no .ts files and, given a folder, exits 0 having run
# nothing; so the list is always explicit, built from the sources (a test deleted from
# test/ but still in a stale dist/ is not run).
sources=()
add_folder() {
  local dir=$1
  [ -d "$dir" ] || return 0
  while IFS= read -r f; do sources+=("$f"); done < <(find "$dir" -type f -name '*.test.ts' | LC_ALL=C sort)
}

if [ "$#" -eq 0 ]; then
  set -- unit integration e2e chaos
fi
for arg in "$@"; do
  case "$arg" in
    unit | integration | e2e | chaos) add_folder "test/$arg" ;;
    dist/test/*.test.js)
      src="test/${arg#dist/test/}"
      src="${src%.js}.ts"
      [ -f "$src" ] || die "no source $src for $arg"
      sources+=("$src")
      ;;
    test/*.test.ts)
      [ -f "$arg" ] || die "no such test file: $arg"
      sources+=("$arg")
      ;;
    test/*)
      [ -d "$arg" ] || die "no such test folder: $arg"
      add_folder "${arg%/}"
      ;;
    *) die "unknown argument '$arg' (expected unit, integration, e2e, chaos, a test/**/*.test.ts file or a test/ folder)" ;;
  esac
done
[ "${#sources[@]}" -gt 0 ] || die "no test files selected by: $*"

# --- servers the integration and end-to-end tests start ----------------------------------

needs_servers=no
for f in "${sources[@]}"; do
  case "$f" in test/integration/* | test/e2e/* | test/chaos/*) needs_servers=yes ;; esac
done
if [ "$needs_servers" = yes ]; then
  # The same list as .ci/run; installed only when missing (apt-get update, then apt-get
  # install as root or through sudo), without starting their services.
  # shellcheck source=../deploy/lib/apt.sh
  . deploy/lib/apt.sh
  certfleet_apt_install test/run.sh pebble nats-server nginx-light haproxy bind9 bind9-dnsutils openssl ca-certificates systemd certbot chromium prometheus ||
    die "could not install the Debian packages the tests start (run as root, or as a user with passwordless sudo)"
  missing=()
  for pair in pebble:pebble pebble-challtestsrv:pebble nats-server:nats-server nginx:nginx-light \
    haproxy:haproxy named:bind9 openssl:openssl certbot:certbot promtool:prometheus chromium:chromium; do
    bin=${pair%%:*}
    pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin (Debian package $pkg)")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'test/run.sh: missing programs the tests start:\n' >&2
    printf '  %s\n' "${missing[@]}" >&2
    die "their packages are installed but the programs are not on PATH"
  fi
fi

# --- dependencies, lint, build -----------------------------------------------------------

# npm ci stamps node_modules/.package-lock.json; a lock file newer than that stamp means
# the dependencies changed since the last install.
if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "test/run.sh: installing dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

if [ "${CERTFLEET_SKIP_LINT:-}" != 1 ]; then
  # Lint is type-aware: the generated gRPC types must exist first.
  npm run --silent gen
  echo "test/run.sh: npm run lint"
  npm run --silent lint
fi

echo "test/run.sh: npm run build"
npm run --silent build

# --- run ---------------------------------------------------------------------------------

files=()
for src in "${sources[@]}"; do
  js="dist/${src%.ts}.js"
  [ -f "$js" ] || die "build did not produce $js"
  files+=("$js")
done

args=(--test --test-concurrency=1 "--test-timeout=${CERTFLEET_TEST_TIMEOUT_MS:-600000}")
if [ -n "${CERTFLEET_TEST_REPORTER:-}" ]; then
  args+=("--test-reporter=$CERTFLEET_TEST_REPORTER")
fi
echo "test/run.sh: node ${args[*]} (${#files[@]} files)"
exec node "${args[@]}" "${files[@]}"

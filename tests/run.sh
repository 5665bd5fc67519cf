#!/usr/bin/env bash
# Builds relay and runs every test: once in a normal build and once under AddressSanitizer and
# UndefinedBehaviorSanitizer. Installs what it needs first (deploy/install-deps.sh); the tests
# start their own redis-server, relay-node and haproxy processes on free loopback ports.
#   tests/run.sh            both builds
#   tests/run.sh --quick    normal build only
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

deploy/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

run_suite() {
  local dir=$1; shift
  echo "== build $dir ($*)"
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "== test $dir"
  ctest --test-dir "$dir" --output-on-failure --timeout 900
}

run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "$quick" = 0 ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DRELAY_SANITIZE=ON
fi
echo "== all tests passed"

#!/usr/bin/env bash
# Installs everything relay needs to build, test and run on Debian 12: the compiler and build
# tools, the -dev libraries, redis-server and haproxy (real parts for the tests), and Node.js
# with npm (the Helm chart test fetches helm and kubernetes-models from the npm registry).
# Idempotent: does nothing when every package is already present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates curl unzip procps iproute2
  libwebsockets-dev libwebsockets-evlib-ev libev-dev libhiredis-dev libevent-dev libmsgpack-dev
  check libjansson-dev libjwt-dev
  libssl-dev libsubunit-dev
  redis-server redis-tools haproxy
)
# Node.js may come from elsewhere (a newer nodejs that bundles npm conflicts with Debian's npm
# package); any working node + npm will do.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

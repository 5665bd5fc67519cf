#!/usr/bin/env bash
# Runs a relay cluster on this machine: a private redis-server, N relay-node processes and
# haproxy in front of them, all on loopback. Installs what it needs (Debian 12), builds, prints
# the URL and a development token, and stops everything it started on Ctrl-C.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: deploy/local-cluster.sh [options]

  --nodes N         relay-node processes (1-9, default 3)
  --port P          haproxy port clients connect to (default 8080); nodes use P+1..P+N
  --redis-port P    private redis-server port (default 6390)
  --secret S        JWT secret (default: a random one, printed)
  --no-install      do not run deploy/install-deps.sh
  --build-dir DIR   where to build (default: build)
  --run-for SECS    stop by itself after SECS seconds (default: until Ctrl-C)
  -h, --help        this help
USAGE
}

nodes=3 port=8080 redis_port=6390 secret="" install=1 build_dir=build run_for=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --redis-port) redis_port=$2; shift 2 ;;
    --secret) secret=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --run-for) run_for=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$nodes" in [1-9]) ;; *) echo "--nodes must be 1-9" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ "$install" = 1 ] && deploy/install-deps.sh
echo "== building relay-node and relayctl in $build_dir"
[ -f "$build_dir/CMakeCache.txt" ] || cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target relay-node relayctl >/dev/null
[ -n "$secret" ] || secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

work=$(mktemp -d /tmp/relay-local.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping (${#pids[@]} processes)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
  echo "== stopped; nothing left running"
}
# Ctrl-C also reaches our children (redis exits on SIGINT): remember the request and stop in
# the main loop rather than mistaking a child's exit for a failure.
stop_requested=0
trap 'stop_requested=1' INT TERM
trap cleanup EXIT

wait_http() { # url, seconds
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    "$build_dir/relayctl" health "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "timed out waiting for $1" >&2
  return 1
}

echo "== redis-server on 127.0.0.1:$redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly yes \
  --appendfsync everysec --daemonize no --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

lb_env=(RELAY_LB_BIND="127.0.0.1:$port")
for i in $(seq 1 "$nodes"); do
  p=$((port + i))
  RELAY_JWT_SECRET="$secret" "$build_dir/relay-node" --port "$p" --bind 127.0.0.1 \
    --redis "redis://127.0.0.1:$redis_port" --node-id "node$i" --drain-delay 2 --drain-time 3 \
    --shed --log-level info 2>"$work/node$i.log" &
  pids+=($!)
  lb_env+=(RELAY_NODE${i}_ADDR="127.0.0.1:$p")
done
for i in $(seq 1 "$nodes"); do wait_http "http://127.0.0.1:$((port + i))/readyz" 20; done

env "${lb_env[@]}" haproxy -f deploy/haproxy.cfg -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/readyz" 20

token=$("$build_dir/relayctl" token --secret "$secret" --sub dev --name Developer --ttl 86400)
cat <<READY

relay local cluster ready: $nodes nodes behind haproxy
  WebSocket URL   ws://127.0.0.1:$port/ws/documents/<document-id>
  dev token       $token
  JWT secret      $secret
  cluster stats   $build_dir/relayctl --redis redis://127.0.0.1:$redis_port stats
                  curl 'http://127.0.0.1:$port/stats?scope=cluster'
  logs            $work/
Press Ctrl-C to stop everything.
READY

deadline=$((SECONDS + run_for))
while [ "$stop_requested" = 0 ]; do
  [ "$run_for" -gt 0 ] && [ $SECONDS -ge $deadline ] && break
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      [ "$stop_requested" = 1 ] && break 2
      echo "process $p exited; stopping" >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
exit 0

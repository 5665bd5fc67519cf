# shellcheck shell=bash disable=SC2034
# bench/lib.sh - shared helpers for the bench/*.sh scripts (sourced, not run).
#
# Each script starts its own redis-server and relay nodes on free loopback ports inside a
# private temp directory, and everything it started is stopped by the EXIT trap (by pid, never
# by name). Every wait is bounded.
#
# Environment: RELAY_BUILD (default: <repo>/build) holds relay-node and relay-bench; NODE_LOG sets
# the nodes' --log-level (default warn); node logs are in the temp dir, removed on exit.

set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELAY_BUILD=${RELAY_BUILD:-$BENCH_ROOT/build}
RELAY_NODE=$RELAY_BUILD/relay-node
RELAY_BENCH=$RELAY_BUILD/relay-bench
BENCH_SECRET=${BENCH_SECRET:-bench-secret-0123456789abcdef}
BENCH_TMP=$(mktemp -d /tmp/relay-bench.XXXXXX)
BENCH_PIDS=()
QUICK=0
for a in "$@"; do
    [ "$a" = "--quick" ] && QUICK=1
done

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ -n "${BENCH_KEEP:-}" ]; then echo "logs kept in $BENCH_TMP" >&2; else rm -rf "$BENCH_TMP"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_need() {
    local f
    for f in "$@"; do
        if [ ! -x "$f" ] && ! command -v "$f" >/dev/null 2>&1; then
            echo "missing $f (build with: cmake -S $BENCH_ROOT -B $RELAY_BUILD && cmake --build $RELAY_BUILD)" >&2
            exit 2
        fi
    done
}

# Prints a free TCP port on 127.0.0.1 (bind to port 0 and read what the kernel chose).
bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (bounded, 10 s) until host:port accepts TCP connections.
bench_wait_port() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $port did not open" >&2
    return 1
}

# Starts redis-server without persistence; sets REDIS_PORT and REDIS_PID.
bench_start_redis() {
    REDIS_PORT=$(bench_free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$BENCH_TMP" --logfile "$BENCH_TMP/redis.log" --maxclients 10000 &
    REDIS_PID=$!
    BENCH_PIDS+=("$REDIS_PID")
    bench_wait_port "$REDIS_PORT"
}

# Starts one relay node: bench_start_node NAME [extra args...]. Appends to NODE_PORTS/NODE_PIDS.
# Uses Redis when REDIS_PORT is set. The rate limit is raised so senders are never throttled.
NODE_PORTS=()
NODE_PIDS=()
bench_start_node() {
    local name=$1
    shift
    local port
    port=$(bench_free_port)
    local redis_args=()
    [ -n "${REDIS_PORT:-}" ] && redis_args=(--redis "redis://127.0.0.1:$REDIS_PORT" --node-id "$name")
    "$RELAY_NODE" --port "$port" --bind 127.0.0.1 --jwt-secret "$BENCH_SECRET" "${redis_args[@]}" \
        --rate-limit 1000000 --rate-burst 1000000 --log-level ${NODE_LOG:-warn} "$@" \
        >"$BENCH_TMP/$name.log" 2>&1 &
    local pid=$!
    BENCH_PIDS+=("$pid")
    NODE_PORTS+=("$port")
    NODE_PIDS+=("$pid")
    bench_wait_port "$port"
}

# Comma-joined endpoint list and pid list of the started nodes.
bench_endpoints() {
    local out="" p
    for p in "${NODE_PORTS[@]}"; do out+="${out:+,}127.0.0.1:$p"; done
    echo "$out"
}
bench_node_pids() {
    local out="" p
    for p in "${NODE_PIDS[@]}"; do out+="${out:+,}$p"; done
    echo "$out"
}

# VmRSS of a pid in kB.
bench_rss_kb() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# Median of numbers on stdin.
bench_median() {
    sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

bench_machine() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
}

# Options of the repeated-run scripts (fanout, latency): sets RUNS (3, 1 with --quick),
# DURATION (10 s, 4 with --quick) and EXTRA (relay-bench arguments: --binary, --query Q).
bench_run_options() {
    RUNS=3 DURATION=10 EXTRA=()
    [ "$QUICK" = 1 ] && RUNS=1 DURATION=4
    while [ $# -gt 0 ]; do
        case $1 in
        --runs) RUNS=$2; shift ;;
        --binary) EXTRA+=(--binary) ;;
        --query) EXTRA+=(--query "$2"); shift ;;
        esac
        shift
    done
}

# bench_runs PREFIX LINE WORKLOAD...: RUNS relay-bench runs of the workload against the started
# nodes (2 s warm-up, DURATION s window, 2 threads, EXTRA), each report in
# $BENCH_TMP/run-<run>.json and printed as one line from the jq template LINE ($run is set).
bench_runs() {
    local prefix=$1 line=$2 run
    shift 2
    for run in $(seq "$RUNS"); do
        "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --node-pids "$(bench_node_pids)" \
            --secret "$BENCH_SECRET" "$@" --warmup 2 --duration "$DURATION" --threads 2 --json \
            "${EXTRA[@]}" --doc-prefix "$prefix-$run-" 2>"$BENCH_TMP/bench-$run.err" \
            >"$BENCH_TMP/run-$run.json"
        jq -r --arg run "$run" "$line" "$BENCH_TMP/run-$run.json"
    done
}

# Median over the runs' reports of a jq expression.
bench_med() {
    jq -r "$1" "$BENCH_TMP"/run-*.json | bench_median
}

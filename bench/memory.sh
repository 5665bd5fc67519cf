#!/usr/bin/env bash
# bench/memory.sh - node memory per idle connection, and the open-file ceiling.
#  1. 10,000 authenticated and joined connections (1,000 documents x 10) held idle on ONE node
#     (with Redis): node VmRSS after they are all joined minus VmRSS before, per connection.
#  2. 19,000 joined connections on one node (the process cap here is 20,000 open files): two
#     relay-bench processes of 9,500 each, over source addresses 127.0.0.2-127.0.0.5; reports
#     joined/failed and RSS per connection. The two bench processes share the 2 cores with the
#     node, so they open BIG_RAMP (default 1,000) connections/s each, and this node gets
#     --auth-timeout BIG_AUTH_TIMEOUT (default 60 s): a handshake queued behind the bench's own
#     backlog must not be cut by the 10 s default, which measures the bench, not the node.
#     RAMP (default 3,000/s) sets the 10k step's rate.
# The median of 3 rounds of step 1 is printed (1 with --quick, which also skips step 2).
#
# Usage: bench/memory.sh [--quick] [--big-only]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server jq

ROUNDS=3 BIG_ONLY=0
[ "$QUICK" = 1 ] && ROUNDS=1
for a in "$@"; do [ "$a" = --big-only ] && ROUNDS=0 BIG_ONLY=1; done
bench_machine
bench_start_redis

# idle_run NAME CONNS PROCS RAMP [node args...]: starts a fresh node, holds CONNS joined
# connections with PROCS bench processes (each opening RAMP connections per second) until all
# are joined, prints "joined failed rss_before rss_after stats bench-errors".
idle_run() {
    local name=$1 conns=$2 procs=$3 ramp=$4 per i pids=()
    shift 4
    NODE_PORTS=() NODE_PIDS=()
    bench_start_node "$name" "$@"
    local node=${NODE_PIDS[0]}
    # Warm the node up (lws pools, allocator arenas, Redis link) with a short run first.
    "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --secret "$BENCH_SECRET" --conns 200 \
        --clients 10 --idle 0.5 --doc-prefix "warm-$name-" --json >/dev/null 2>&1
    sleep 1
    local before
    before=$(bench_rss_kb "$node")
    per=$((conns / procs))
    for i in $(seq "$procs"); do
        "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --secret "$BENCH_SECRET" --conns "$per" \
            --clients 10 --idle 600 --ramp "$ramp" --threads 2 --connect-timeout 120 \
            --bind-addrs "127.0.0.$((2 * i)),127.0.0.$((2 * i + 1))" \
            --doc-prefix "mem-$name-$i-" --ready-file "$BENCH_TMP/ready-$name-$i" --json \
            >"$BENCH_TMP/idle-$name-$i.json" 2>"$BENCH_TMP/idle-$name-$i.err" &
        pids+=("$!")
        BENCH_PIDS+=("$!")
    done
    for i in $(seq "$procs"); do
        for _ in $(seq 1500); do [ -f "$BENCH_TMP/ready-$name-$i" ] && break; sleep 0.1; done
    done
    sleep 2 # let the node settle (deferred frees, Redis replies)
    local after joined=0 failed=0
    after=$(bench_rss_kb "$node")
    for i in $(seq "$procs"); do
        read -r _ j _ f <"$BENCH_TMP/ready-$name-$i" || true
        joined=$((joined + ${j:-0})) failed=$((failed + ${f:-0}))
    done
    local stats
    stats=$(curl -s "http://127.0.0.1:${NODE_PORTS[0]}/stats" | jq -c .connections 2>/dev/null || echo "{}")
    for i in "${pids[@]}"; do kill "$i" 2>/dev/null || true; done
    for i in "${pids[@]}"; do wait "$i" 2>/dev/null || true; done
    grep -h "first connect error" "$BENCH_TMP"/idle-$name-*.err >&2 || true
    local errs=""
    for i in $(seq "$procs"); do
        errs+=$(jq -c '.errors' "$BENCH_TMP/idle-$name-$i.json" 2>/dev/null || echo '?')
    done
    kill "$node" 2>/dev/null || true
    wait "$node" 2>/dev/null || true
    echo "$joined $failed $before $after $stats bench-errors:$errs"
}

for round in $(seq "$ROUNDS"); do
    read -r j f b a st < <(idle_run "r$round" 10000 1 "${RAMP:-3000}")
    per=$(awk -v a="$a" -v b="$b" -v j="$j" 'BEGIN {printf "%.0f", (a - b) * 1024 / (j ? j : 1)}')
    echo "round $round: 10k idle: joined $j failed $f, node rss $b kB -> $a kB = $per bytes/connection, node stats $st"
    echo "$per" >>"$BENCH_TMP/per.txt"
done
[ "$ROUNDS" -gt 0 ] && echo "memory (median of $ROUNDS): $(bench_median <"$BENCH_TMP/per.txt") bytes of node RSS per idle joined connection (target <= 4096)"

if [ "$QUICK" = 0 ] || [ "$BIG_ONLY" = 1 ]; then
    read -r j f b a st < <(idle_run big 19000 2 "${BIG_RAMP:-1000}" --auth-timeout "${BIG_AUTH_TIMEOUT:-60}")
    per=$(awk -v a="$a" -v b="$b" -v j="$j" 'BEGIN {printf "%.0f", (a - b) * 1024 / (j ? j : 1)}')
    echo "19k on one node: joined $j failed $f, node rss $b kB -> $a kB = $per bytes/connection, node stats $st"
fi

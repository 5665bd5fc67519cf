#!/usr/bin/env bash
# bench/many-docs.sh - many documents with churning subscriptions: each round opens 10,000
# documents x 2 members (20,000 connections over 2 nodes + Redis, from two relay-bench
# processes over several source addresses), sends about one operation per document, then
# closes everything, so each node subscribes to and unsubscribes from 10,000 document channels
# per round. Node RSS and Redis used_memory are printed after every round; the figure is the
# growth from round 2 to the last round (round 1 fills allocator pools).
#
# Usage: bench/many-docs.sh [--quick] [--rounds N]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server redis-cli jq

ROUNDS=5
[ "$QUICK" = 1 ] && ROUNDS=3
while [ $# -gt 0 ]; do
    case $1 in --rounds) ROUNDS=$2; shift ;; esac
    shift
done
bench_machine
bench_start_redis
bench_start_node n1
bench_start_node n2

for round in $(seq "$ROUNDS"); do
    pids=()
    for p in 1 2; do
        "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --secret "$BENCH_SECRET" --docs 5000 \
            --clients 2 --senders 1 --rate 0.2 --warmup 0 --duration 5 --drain 5 --ramp 3000 \
            --connect-timeout 120 --threads 2 --bind-addrs "127.0.0.$((10 + 2 * p)),127.0.0.$((11 + 2 * p))" \
            --doc-prefix "many-$p-" --json >"$BENCH_TMP/many-$round-$p.json" 2>"$BENCH_TMP/many-$round-$p.err" &
        pids+=("$!")
        BENCH_PIDS+=("$!")
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    # Wait (bounded) until both nodes report no connections, then give deferred frees a moment.
    for port in "${NODE_PORTS[@]}"; do
        for _ in $(seq 100); do
            [ "$(curl -s "http://127.0.0.1:$port/stats" | jq -r .connections.active)" = 0 ] && break
            sleep 0.1
        done
    done
    sleep 2
    r1=$(bench_rss_kb "${NODE_PIDS[0]}") r2=$(bench_rss_kb "${NODE_PIDS[1]}")
    rm=$(redis-cli -p "$REDIS_PORT" INFO memory | awk -F: '/^used_memory:/ {print int($2/1024)}')
    docs=$(curl -s "http://127.0.0.1:${NODE_PORTS[0]}/stats" | jq -r .documents)
    sum=$(jq -s '[.[] | {j: .joined, o: .offered, a: .acked, d: .delivered, e: .expected, err: .errors}]
        | "joined \(map(.j)|add) ops \(map(.a)|add)/\(map(.o)|add) delivered \(map(.d)|add)/\(map(.e)|add) errors \(map(.err)|add|tostring)"' -r \
        "$BENCH_TMP/many-$round-1.json" "$BENCH_TMP/many-$round-2.json")
    echo "round $round: $sum; after close: node rss $r1 kB + $r2 kB, node1 documents $docs, redis used_memory $rm kB"
    echo "$r1 $r2 $rm" >>"$BENCH_TMP/rss.txt"
done
awk 'NR==2 {a=$1; b=$2; c=$3} END {printf "many-docs: node rss growth round 2 -> %d: %+d kB and %+d kB; redis %+d kB\n", NR, $1-a, $2-b, $3-c}' "$BENCH_TMP/rss.txt"

#!/usr/bin/env bash
# bench/fanout.sh - fan-out efficiency: 1 document, 100 clients over 2 nodes + Redis, 4 senders
# at 200 ops/s each, 100-byte payloads (79,200 deliveries/s). Prints the node CPU time per
# delivered message (utime+stime of both nodes from /proc over the measured window) and the
# sender-to-receiver latency, as medians of 3 runs (1 with --quick).
#
# Usage: bench/fanout.sh [--quick] [--binary] [--runs N]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server jq

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

bench_machine
bench_start_redis
bench_start_node n1
bench_start_node n2

for run in $(seq "$RUNS"); do
    "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --node-pids "$(bench_node_pids)" \
        --secret "$BENCH_SECRET" --docs 1 --clients 100 --senders 4 --rate 200 --payload 100 \
        --warmup 2 --duration "$DURATION" --threads 2 --json "${EXTRA[@]}" \
        --doc-prefix "fanout-$run-" 2>"$BENCH_TMP/bench-$run.err" >"$BENCH_TMP/run-$run.json"
    jq -r --arg run "$run" '"run \($run): delivered \(.delivered)/\(.expected) (ratio \(.delivery_ratio)) \(.delivered_per_s|floor) msg/s, node cpu \(.node_cpu_s*1000|floor) ms = \(.node_us_per_msg*1000|floor/1000) us/msg, p50 \(.latency_us.p50) us p99 \(.latency_us.p99) us p99.9 \(.latency_us."p99.9") us max \(.latency_us.max) us, bench cpu \(.bench.cpu_pct|floor)%, errors \(.errors|tostring)"' "$BENCH_TMP/run-$run.json"
done

med() { jq -r "$1" "$BENCH_TMP"/run-*.json | bench_median; }
echo "fanout (median of $RUNS): node_us_per_msg $(med .node_us_per_msg) p50_us $(med .latency_us.p50) p99_us $(med .latency_us.p99) p99.9_us $(med '.latency_us."p99.9"') delivery_ratio $(med .delivery_ratio)"

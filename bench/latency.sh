#!/usr/bin/env bash
# bench/latency.sh - cross-node latency at moderate load: 20 documents x 10 clients spread over
# 2 nodes + Redis, 2 senders per document at 25 ops/s each (50 ops/s per document, 9,000
# deliveries/s). Members alternate between the nodes, so every operation reaches receivers on
# both. Prints sender-to-receiver p50/p99/p99.9/max, median of 3 runs (1 with --quick).
#
# Usage: bench/latency.sh [--quick] [--runs N] [--binary]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server jq

bench_run_options "$@"

bench_machine
bench_start_redis
bench_start_node n1
bench_start_node n2

bench_runs lat '"run \($run): delivered \(.delivered)/\(.expected), p50 \(.latency_us.p50) us p90 \(.latency_us.p90) us p99 \(.latency_us.p99) us p99.9 \(.latency_us."p99.9") us max \(.latency_us.max) us, node \(.node_us_per_msg*1000|floor/1000) us/msg, bench cpu \(.bench.cpu_pct|floor)%, errors \(.errors|tostring)"' \
    --docs 20 --clients 10 --senders 2 --rate 25 --payload 100

echo "latency (median of $RUNS): p50_us $(bench_med .latency_us.p50) p99_us $(bench_med .latency_us.p99) p99.9_us $(bench_med '.latency_us."p99.9"') max_us $(bench_med .latency_us.max) delivery_ratio $(bench_med .delivery_ratio)"

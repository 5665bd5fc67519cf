#!/usr/bin/env bash
# bench/fanout.sh - fan-out efficiency: 1 document, 100 clients over 2 nodes + Redis, 4 senders
# at 200 ops/s each, 100-byte payloads (79,200 deliveries/s). Prints the node CPU time per
# delivered message (utime+stime of both nodes from /proc over the measured window) and the
# sender-to-receiver latency, as medians of 3 runs (1 with --quick).
#
# Usage: bench/fanout.sh [--quick] [--binary] [--runs N]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server jq

bench_run_options "$@"

bench_machine
bench_start_redis
bench_start_node n1
bench_start_node n2

bench_runs fanout '"run \($run): delivered \(.delivered)/\(.expected) (ratio \(.delivery_ratio)) \(.delivered_per_s|floor) msg/s, node cpu \(.node_cpu_s*1000|floor) ms = \(.node_us_per_msg*1000|floor/1000) us/msg, p50 \(.latency_us.p50) us p99 \(.latency_us.p99) us p99.9 \(.latency_us."p99.9") us max \(.latency_us.max) us, bench cpu \(.bench.cpu_pct|floor)%, errors \(.errors|tostring)"' \
    --docs 1 --clients 100 --senders 4 --rate 200 --payload 100

echo "fanout (median of $RUNS): node_us_per_msg $(bench_med .node_us_per_msg) p50_us $(bench_med .latency_us.p50) p99_us $(bench_med .latency_us.p99) p99.9_us $(bench_med '.latency_us."p99.9"') delivery_ratio $(bench_med .delivery_ratio)"

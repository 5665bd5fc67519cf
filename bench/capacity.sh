#!/usr/bin/env bash
# bench/capacity.sh - fan-out capacity: the fanout shape (1 document, 100 clients over 2 nodes +
# Redis, 4 senders, 100-byte payloads) with the sender rate doubled step by step until delivery
# drops below 99.99% or p99 exceeds 50 ms (or the bench itself falls behind). Prints the
# highest delivered messages/s that passed. The bench runs on the same 2 cores, so the figure
# is a floor for the nodes (see docs/BENCHMARKS.md).
#
# The rate ladder is finer above 1600 ops/s per sender (633,600 deliveries/s), where the
# 1,000,000/s target lies (2,526 ops/s per sender).
#
# Usage: bench/capacity.sh [--quick] [--query Q] [--binary] [--threads T]
#        (RELAY_BUILD=<build dir>; T: relay-bench event-loop threads, default 2)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server jq

DURATION=5 RATES=(200 400 800 1600 2000 2300 2600 2900 3200 4000 5000 6400 12800)
[ "$QUICK" = 1 ] && DURATION=2 RATES=(200 800 3200)
EXTRA=() THREADS=2
while [ $# -gt 0 ]; do
    case $1 in
    --binary) EXTRA+=(--binary) ;;
    --query) EXTRA+=(--query "$2"); shift ;;
    --threads) THREADS=$2; shift ;;
    esac
    shift
done
bench_machine
bench_start_redis
bench_start_node n1
bench_start_node n2

BEST=0 BEST_RATE=0
for rate in "${RATES[@]}"; do
    "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --node-pids "$(bench_node_pids)" \
        --secret "$BENCH_SECRET" --docs 1 --clients 100 --senders 4 --rate "$rate" --payload 100 \
        --warmup 1 --duration "$DURATION" --threads "$THREADS" --json "${EXTRA[@]}" \
        --doc-prefix "cap-$rate-" 2>"$BENCH_TMP/bench-$rate.err" >"$BENCH_TMP/cap-$rate.json"
    F="$BENCH_TMP/cap-$rate.json"
    jq -r --arg r "$rate" '"rate \($r)/sender: offered \(.offered) delivered \(.delivered)/\(.expected) ratio \(.delivery_ratio) = \(.delivered_per_s|floor) msg/s, p50 \(.latency_us.p50) us p99 \(.latency_us.p99) us, node \(.node_us_per_msg*1000|floor/1000) us/msg, node cpu \(.node_cpu_s) s, bench cpu \(.bench.cpu_pct|floor)% skipped \(.bench.skipped) throttled \(.bench.throttled), lagged \(.lagged.missed)"' "$F"
    PASS=$(jq -r --argjson want "$(( rate * 4 * DURATION * 95 / 100 ))" \
        'if .delivery_ratio >= 0.9999 and .latency_us.p99 <= 50000 and .lagged.missed == 0 and .offered >= $want then 1 else 0 end' "$F")
    if [ "$PASS" = 1 ]; then
        BEST=$(jq -r '.delivered_per_s|floor' "$F") BEST_RATE=$rate
    else
        echo "stop: delivery < 99.99%, p99 > 50 ms, lag, or the offered load was not reached"
        break
    fi
done
echo "capacity: $BEST delivered msg/s (4 senders x $BEST_RATE ops/s x 99 receivers)"

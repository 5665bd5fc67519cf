#!/usr/bin/env bash
# bench/compare-socketio.sh - the fan-out workload (1 document, 100 clients over 2 server
# processes + Redis, 4 senders at 200 ops/s, 100-byte payloads) against Socket.IO 4 +
# @socket.io/redis-adapter and against relay, alternating in the same run. relay runs twice per
# round: with its defaults (write pacing on: --write-delay 5) and with --write-delay 0 (every
# message written at once). Prints server CPU time per delivered message and latency for each,
# and the ratios (median of 3 rounds, 1 with --quick). Socket.IO is installed from npm into a temp dir (not committed) on every run.
#
# Usage: bench/compare-socketio.sh [--quick] [--rounds N]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server jq node npm
SIO_SRC=$(cd "$(dirname "$0")/socketio" && pwd)

ROUNDS=3 DURATION=10
[ "$QUICK" = 1 ] && ROUNDS=1 DURATION=4
while [ $# -gt 0 ]; do
    case $1 in --rounds) ROUNDS=$2; shift ;; esac
    shift
done
WORKLOAD=(--docs 1 --clients 100 --senders 4 --rate 200 --payload 100 --warmup 2
          --duration "$DURATION")

bench_machine
mkdir -p "$BENCH_TMP/sio"
cp "$SIO_SRC/package.json" "$SIO_SRC/server.js" "$SIO_SRC/client.js" "$BENCH_TMP/sio/"
echo "installing socket.io from npm into $BENCH_TMP/sio ..."
(cd "$BENCH_TMP/sio" && timeout 300 npm install --no-audit --no-fund --loglevel=error >/dev/null)
echo "socket.io $(jq -r .version "$BENCH_TMP/sio/node_modules/socket.io/package.json"), @socket.io/redis-adapter $(jq -r .version "$BENCH_TMP/sio/node_modules/@socket.io/redis-adapter/package.json"), node $(node --version)"
bench_start_redis

# Starts the two Socket.IO processes; sets SIO_PIDS and SIO_EPS.
start_sio() {
    SIO_PIDS=() SIO_EPS=""
    local i port
    for i in 1 2; do
        port=$(bench_free_port)
        node "$BENCH_TMP/sio/server.js" --port "$port" --redis "redis://127.0.0.1:$REDIS_PORT" \
            >"$BENCH_TMP/sio-$i.log" 2>&1 &
        SIO_PIDS+=("$!")
        BENCH_PIDS+=("$!")
        SIO_EPS+="${SIO_EPS:+,}127.0.0.1:$port"
        bench_wait_port "$port"
    done
    sleep 1 # the Redis adapter subscribes asynchronously after listen()
}
stop_pids() {
    local p
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
}

for round in $(seq "$ROUNDS"); do
    start_sio
    node "$BENCH_TMP/sio/client.js" --endpoints "$SIO_EPS" --pids "${SIO_PIDS[0]},${SIO_PIDS[1]}" \
        --workers 2 --doc-prefix "sio-$round-" "${WORKLOAD[@]}" \
        >"$BENCH_TMP/sio-$round.json" 2>"$BENCH_TMP/sio-$round.err" || cat "$BENCH_TMP/sio-$round.err"
    stop_pids "${SIO_PIDS[@]}"

    for variant in relay:5 relay0:0; do
        name=${variant%%:*}
        # shellcheck disable=SC2034 # read by bench_endpoints in lib.sh
        NODE_PORTS=() NODE_PIDS=()
        bench_start_node "$name-r$round-1" --write-delay "${variant##*:}"
        bench_start_node "$name-r$round-2" --write-delay "${variant##*:}"
        "$RELAY_BENCH" --endpoints "$(bench_endpoints)" --node-pids "$(bench_node_pids)" \
            --secret "$BENCH_SECRET" --threads 2 --json --doc-prefix "$name-$round-" \
            "${WORKLOAD[@]}" >"$BENCH_TMP/$name-$round.json" 2>"$BENCH_TMP/$name-$round.err"
        stop_pids "${NODE_PIDS[@]}"
    done

    for s in sio relay relay0; do
        jq -r --arg s "$s" --arg r "$round" '"round \($r) \($s): delivered \(.delivered)/\(.expected) \(.delivered_per_s|floor) msg/s, server cpu \(.node_cpu_s*1000|floor) ms = \(.node_us_per_msg*1000|floor/1000) us/msg, p50 \(.latency_us.p50) p99 \(.latency_us.p99) p99.9 \(.latency_us."p99.9") us, client cpu \(.bench.cpu_pct|floor)%, errors \(.errors|tostring)"' "$BENCH_TMP/$s-$round.json"
    done
done

med() { jq -r "$2" "$BENCH_TMP"/"$1"-*.json | bench_median; }
S_US=$(med sio .node_us_per_msg) R_US=$(med relay .node_us_per_msg)
S_P99=$(med sio .latency_us.p99) R_P99=$(med relay .latency_us.p99)
S_P50=$(med sio .latency_us.p50) R_P50=$(med relay .latency_us.p50)
S_P999=$(med sio '.latency_us."p99.9"') R_P999=$(med relay '.latency_us."p99.9"')
Z_US=$(med relay0 .node_us_per_msg) Z_P50=$(med relay0 .latency_us.p50)
Z_P99=$(med relay0 .latency_us.p99) Z_P999=$(med relay0 '.latency_us."p99.9"')
echo "socket.io        (median of $ROUNDS): us_per_msg $S_US p50_us $S_P50 p99_us $S_P99 p99.9_us $S_P999"
echo "relay            (median of $ROUNDS): us_per_msg $R_US p50_us $R_P50 p99_us $R_P99 p99.9_us $R_P999"
echo "relay, no pacing (median of $ROUNDS): us_per_msg $Z_US p50_us $Z_P50 p99_us $Z_P99 p99.9_us $Z_P999"
ratio() {
    awk -v s="$S_US" -v r="$2" -v s99="$S_P99" -v r99="$4" -v s50="$S_P50" -v r50="$3" -v n="$1" \
        'BEGIN {printf "ratio socket.io/%s: cpu per message %.2fx, p50 %.2fx, p99 %.2fx\n", n, s/r, s50/r50, s99/r99}'
}
ratio relay "$R_US" "$R_P50" "$R_P99"
ratio "relay (no pacing)" "$Z_US" "$Z_P50" "$Z_P99"
echo "target: socket.io/relay cpu per message >= 3x (relay with its defaults)"

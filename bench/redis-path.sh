#!/usr/bin/env bash
# bench/redis-path.sh - the node's own Redis path. Three figures on the same machine:
#  1. sequenced operations/s from ONE relay node (acks/s: each operation runs the op Lua
#     script in Redis), 100 documents x 2 clients, 1 sender per document pushing hard;
#  2. redis-benchmark running the same Lua script (text copied from node/bridge_scripts.c at
#     run time) on one connection at pipeline depth 16 - the target is 1 >= 80% of 2;
#  3. raw PUBLISH/s from redis-benchmark (1 connection, pipeline 16; and 50 connections), the
#     physical limit of any relay that fans out through Redis pub/sub.
#
# Usage: bench/redis-path.sh [--quick]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" "$RELAY_BENCH" redis-server redis-benchmark redis-cli jq

N=1000000 DURATION=10
[ "$QUICK" = 1 ] && N=200000 DURATION=4
bench_machine
bench_start_redis
RC=(redis-cli -p "$REDIS_PORT")

# The op script, extracted from the C string literal (one "...\n" literal per line).
awk '/static const char script_op\[\] =/{f=1;next} f{ l=$0; sub(/^[ \t]*"/,"",l); sub(/\\n"[;]?[ \t]*$/,"",l); gsub(/\\"/,"\"",l); print l; if ($0 ~ /;[ \t]*$/) exit }' \
    "$BENCH_ROOT/node/bridge_scripts.c" >"$BENCH_TMP/op.lua"
SHA=$("${RC[@]}" SCRIPT LOAD "$(cat "$BENCH_TMP/op.lua")")
[ ${#SHA} = 40 ] || { echo "SCRIPT LOAD failed: $SHA" >&2; exit 1; }
# KEYS and ARGV as the node passes them, read from the comment above script_op
# ("KEYS: epoch seq ... ARGV: prefix suffix ... Returns"), so the call follows the script when
# it changes: one key per KEYS name, and a value per known ARGV name (~100-byte payload).
SIG=$(awk '/static const char script_op\[\]/{print c; exit} /^\/\*/{c=""} {c=c" "$0}' \
    "$BENCH_ROOT/node/bridge_scripts.c" | tr -d '*/' | tr -s ' \n' ' ')
KEY_NAMES=$(sed -n 's/.*KEYS: \(.*\)\. ARGV:.*/\1/p' <<<"$SIG")
ARG_NAMES=$(sed -n 's/.*ARGV: \([^.]*\)\..*/\1/p' <<<"$SIG")
P=relay:doc:bench
KEYS=() ARGS=()
for k in $KEY_NAMES; do KEYS+=("$P:$k"); done
for a in $ARG_NAMES; do
    case $a in
    prefix) ARGS+=("$(printf 'x%.0s' $(seq 60))") ;;
    suffix) ARGS+=("$(printf 'y%.0s' $(seq 110))") ;;
    hist_len) ARGS+=(10000) ;;
    ttl) ARGS+=(86400) ;;
    channel) ARGS+=(relay:ch:bench) ;;
    new_epoch) ARGS+=(e1) ;;
    dedup_ttl) ARGS+=(300) ;;
    *) ARGS+=(0) ;;
    esac
done
echo "op script: KEYS ($KEY_NAMES) ARGV ($ARG_NAMES)"
"${RC[@]}" EVALSHA "$SHA" "${#KEYS[@]}" "${KEYS[@]}" "${ARGS[@]}" >/dev/null || {
    echo "the op script does not run with these arguments; update bench/redis-path.sh" >&2; exit 1; }
echo "redis-benchmark: op script (EVALSHA), 1 connection, pipeline 16, $N ops:"
redis-benchmark -p "$REDIS_PORT" -c 1 -P 16 -n "$N" -q EVALSHA "$SHA" "${#KEYS[@]}" "${KEYS[@]}" \
    "${ARGS[@]}" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 | sed 's/.*: \([0-9.]* requests\)/\1/' | tee "$BENCH_TMP/lua.txt"
LUA_RPS=$(grep -ao '[0-9.]* requests per second' "$BENCH_TMP/lua.txt" | awk '{print $1}')
echo "redis-benchmark: PUBLISH 100-byte message, 1 connection, pipeline 16:"
redis-benchmark -p "$REDIS_PORT" -c 1 -P 16 -n "$N" -q PUBLISH relay:ch:bench "$(printf 'z%.0s' $(seq 100))" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 | sed 's/.*: \([0-9.]* requests\)/\1/' | tee "$BENCH_TMP/pub1.txt"
echo "redis-benchmark: PUBLISH 100-byte message, 50 connections, pipeline 16:"
redis-benchmark -p "$REDIS_PORT" -c 50 -P 16 -n "$N" -q PUBLISH relay:ch:bench "$(printf 'z%.0s' $(seq 100))" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 | sed 's/.*: \([0-9.]* requests\)/\1/' | tee "$BENCH_TMP/pub50.txt"
PUB_RPS=$(grep -ao '[0-9.]* requests per second' "$BENCH_TMP/pub1.txt" | awk '{print $1}')
"${RC[@]}" DEL "${KEYS[@]}" >/dev/null

bench_start_node n1
"$RELAY_BENCH" --endpoints "$(bench_endpoints)" --node-pids "$(bench_node_pids)" \
    --secret "$BENCH_SECRET" --docs 100 --clients 2 --senders 1 --rate 3000 --payload 100 \
    --max-inflight 16 --warmup 2 --duration "$DURATION" --threads 2 --json --binary \
    2>"$BENCH_TMP/bench.err" >"$BENCH_TMP/node.json"
jq -r '"relay node: offered \(.offered) acked \(.acked) in \(.window_s) s = \(.acked_per_s|floor) sequenced ops/s (redis cpu not included), node cpu \(.node_cpu_s) s, p99 \(.latency_us.p99) us, errors \(.errors|tostring)"' "$BENCH_TMP/node.json"
NODE_OPS=$(jq -r .acked_per_s "$BENCH_TMP/node.json")
awk -v n="$NODE_OPS" -v l="$LUA_RPS" -v p="$PUB_RPS" 'BEGIN {
    printf "redis-path: node %.0f ops/s, redis-benchmark lua %.0f ops/s -> %.0f%% (target >= 80%%); raw PUBLISH %.0f/s\n", n, l, 100*n/l, p }'

#!/usr/bin/env bash
# bench/redis-path.sh - the node's own Redis path. Three figures on the same machine:
#  1. sequenced operations/s from ONE relay node (acks/s: each operation runs the op Lua
#     script in Redis), 100 documents x 2 clients, 1 sender per document pushing hard;
#  2. redis-benchmark running the same Lua script (text copied from node/bridge_scripts.c at
#     run time) on one connection at pipeline depth 16 - the target is 1 >= 80% of 2;
#  3. raw PUBLISH/s from redis-benchmark (1 connection, pipeline 16; and 50 connections), the
#     physical limit of any relay that fans out through Redis pub/sub.
#
# Figure 2 runs the script the way the node runs it in figure 1, so that Redis does the same
# work per operation in both: relay-bench sends every operation with a `ref`, so the script
# takes its dedup branch (GET of the ref key, SET of a new ref key with a TTL; here a distinct
# key per call through redis-benchmark's __rand_int__), and the node is subscribed to the
# document's channel, so the PUBLISH inside the script delivers to one subscriber (here a
# redis-cli SUBSCRIBE). The script without a ref and with nobody subscribed is printed too
# (2b): it skips that work and is ~30% cheaper for Redis. Redis' own CPU per operation is
# printed for every figure (from /proc), which says whether the paths compare like for like.
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
for k in $KEY_NAMES; do
    case $k in
    dedup) KEYS+=("$P:ref:s:__rand_int__") ;; # a new ref per operation, as relay-bench sends
    *) KEYS+=("$P:$k") ;;
    esac
done
for a in $ARG_NAMES; do
    case $a in
    prefix) ARGS+=("$(printf 'x%.0s' $(seq 60))") ;;
    suffix) ARGS+=("$(printf 'y%.0s' $(seq 110))") ;;
    hist_len) ARGS+=(10000) ;;
    ttl) ARGS+=(86400) ;;
    channel) ARGS+=(relay:ch:bench) ;;
    new_epoch) ARGS+=(e1) ;;
    dedup_ttl) ARGS+=(300) ;;
    has_ref) ARGS+=(1) ;;
    *) ARGS+=(0) ;;
    esac
done
echo "op script: KEYS ($KEY_NAMES) ARGV ($ARG_NAMES)"
"${RC[@]}" EVALSHA "$SHA" "${#KEYS[@]}" "${KEYS[@]}" "${ARGS[@]}" >/dev/null || {
    echo "the op script does not run with these arguments; update bench/redis-path.sh" >&2; exit 1; }
redis_cpu() { awk '{print $14+$15}' "/proc/$REDIS_PID/stat"; } # clock ticks (1/100 s)
evalsha_calls() { "${RC[@]}" INFO commandstats | awk -F'[:=,]' '/^cmdstat_evalsha:/{print $3+0}'; }
# redis_rate LABEL OUTFILE ARGS...: runs redis-benchmark on the op script, prints its rate,
# Redis' CPU per call and how busy Redis was (100% = it was the limit).
redis_rate() {
    local label=$1 out=$2
    shift 2
    local c0 c1 t0 t1
    c0=$(redis_cpu) t0=$(date +%s%N)
    redis-benchmark -p "$REDIS_PORT" -c 1 -P 16 -n "$N" -r 100000000 -q EVALSHA "$SHA" \
        "${#KEYS[@]}" "$@" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 |
        sed 's/.*: \([0-9.]* requests\)/\1/' >"$out"
    c1=$(redis_cpu) t1=$(date +%s%N)
    echo "redis-benchmark: $label: $(cat "$out"), redis $(awk -v c=$((c1 - c0)) -v n="$N" -v t=$(((t1 - t0) / 1000000)) 'BEGIN { printf "%.1f us cpu/op, busy %.0f%%", c * 1e4 / n, c * 1000 / t }')"
}
# The subscriber reads and discards in large chunks (cat), so it takes next to no CPU from Redis
# and redis-benchmark on this 2-core machine (redis-cli would format every message).
(
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"
    printf 'SUBSCRIBE relay:ch:bench\r\n' >&3
    exec cat <&3 >/dev/null
) &
BENCH_PIDS+=("$!")
for _ in $(seq 100); do
    [ "$("${RC[@]}" PUBSUB NUMSUB relay:ch:bench | tail -1)" = 1 ] && break
    sleep 0.1
done
redis_rate "op script as the node runs it (ref, 1 subscriber), 1 connection, pipeline 16, $N ops" \
    "$BENCH_TMP/lua.txt" "${KEYS[@]}" "${ARGS[@]}"
LUA_RPS=$(grep -ao '[0-9.]* requests per second' "$BENCH_TMP/lua.txt" | awk '{print $1}')
kill "${BENCH_PIDS[-1]}" 2>/dev/null || true
LIGHT_KEYS=("${KEYS[@]}") LIGHT_ARGS=("${ARGS[@]}")
LIGHT_ARGS[${#LIGHT_ARGS[@]} - 1]=0 # has_ref (the last ARGV) = 0: no dedup
redis_rate "2b: op script without ref, no subscriber, 1 connection, pipeline 16, $N ops" \
    "$BENCH_TMP/lua-light.txt" "${LIGHT_KEYS[@]}" "${LIGHT_ARGS[@]}"
LIGHT_RPS=$(grep -ao '[0-9.]* requests per second' "$BENCH_TMP/lua-light.txt" | awk '{print $1}')
echo "redis-benchmark: PUBLISH 100-byte message, 1 connection, pipeline 16:"
redis-benchmark -p "$REDIS_PORT" -c 1 -P 16 -n "$N" -q PUBLISH relay:ch:bench "$(printf 'z%.0s' $(seq 100))" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 | sed 's/.*: \([0-9.]* requests\)/\1/' | tee "$BENCH_TMP/pub1.txt"
echo "redis-benchmark: PUBLISH 100-byte message, 50 connections, pipeline 16:"
redis-benchmark -p "$REDIS_PORT" -c 50 -P 16 -n "$N" -q PUBLISH relay:ch:bench "$(printf 'z%.0s' $(seq 100))" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 | sed 's/.*: \([0-9.]* requests\)/\1/' | tee "$BENCH_TMP/pub50.txt"
PUB_RPS=$(grep -ao '[0-9.]* requests per second' "$BENCH_TMP/pub1.txt" | awk '{print $1}')
"${RC[@]}" FLUSHALL >/dev/null

bench_start_node n1
C0=$(redis_cpu) E0=$(evalsha_calls) T0=$(date +%s%N)
"$RELAY_BENCH" --endpoints "$(bench_endpoints)" --node-pids "$(bench_node_pids)" \
    --secret "$BENCH_SECRET" --docs 100 --clients 2 --senders 1 --rate 3000 --payload 100 \
    --max-inflight 16 --warmup 2 --duration "$DURATION" --threads 2 --json --binary \
    2>"$BENCH_TMP/bench.err" >"$BENCH_TMP/node.json"
C1=$(redis_cpu) E1=$(evalsha_calls) T1=$(date +%s%N)
jq -r '"relay node: offered \(.offered) acked \(.acked) in \(.window_s) s = \(.acked_per_s|floor) sequenced ops/s (redis cpu not included), node cpu \(.node_cpu_s) s, p99 \(.latency_us.p99) us, errors \(.errors|tostring)"' "$BENCH_TMP/node.json"
jq -r '"relay node: delivered/expected \(.delivery_ratio), sequence \(.sequence|tostring)"' "$BENCH_TMP/node.json" 2>/dev/null || true
echo "relay node run: redis $(awk -v c=$((C1 - C0)) -v n=$((E1 - E0)) -v t=$(((T1 - T0) / 1000000)) 'BEGIN { printf "%.1f us cpu/op, busy %.0f%%", c * 1e4 / n, c * 1000 / t }') (whole run incl. connect and warm-up), load average $(cut -d' ' -f1-3 /proc/loadavg)"
NODE_OPS=$(jq -r .acked_per_s "$BENCH_TMP/node.json")
awk -v n="$NODE_OPS" -v l="$LUA_RPS" -v g="$LIGHT_RPS" -v p="$PUB_RPS" 'BEGIN {
    printf "redis-path: node %.0f ops/s, redis-benchmark lua %.0f ops/s -> %.0f%% (target >= 80%%); without ref/subscriber %.0f ops/s -> %.0f%%; raw PUBLISH %.0f/s\n", n, l, 100*n/l, g, 100*n/g, p }'

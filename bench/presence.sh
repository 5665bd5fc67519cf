#!/usr/bin/env bash
# bench/presence.sh - presence at scale: a burst of cursor moves into one document, read by a
# fast reader and by a slow one (small receive buffer, not reading during the burst) on another
# node, over 2 nodes + Redis. A lagging reader must get the latest cursor of every session
# rather than every move: prints cursors sent, what each reader received, what `lagged` reported
# missed (received + missed must equal sent), and whether every mover's last cursor arrived.
# The client is bench/presence.py (Python standard library only). Median of 3 runs (1 with
# --quick) of the slow reader's received share.
#
# Usage: bench/presence.sh [--quick] [--movers N] [--moves M]      (RELAY_BUILD=<build dir>)
source "$(dirname "$0")/lib.sh"
bench_need "$RELAY_NODE" redis-server python3 jq

RUNS=3 EXTRA=()
[ "$QUICK" = 1 ] && RUNS=1
while [ $# -gt 0 ]; do
    case $1 in
    --movers) EXTRA+=(--movers "$2"); shift ;;
    --moves) EXTRA+=(--moves "$2"); shift ;;
    esac
    shift
done

bench_machine
bench_start_redis
bench_start_node n1
bench_start_node n2

for run in $(seq "$RUNS"); do
    python3 "$BENCH_ROOT/bench/presence.py" --endpoints "$(bench_endpoints)" \
        --secret "$BENCH_SECRET" --doc "presence-$run" "${EXTRA[@]}" >"$BENCH_TMP/run-$run.json" ||
        echo "run $run: a check failed (see below)"
    jq -r --arg run "$run" '"run \($run): sent \(.cursors_sent), fast reader \(.fast_reader_received), slow reader received \(.slow_reader_received) + missed \(.slow_reader_missed) (exact: \(.accounting_exact)), latest cursor of every mover: \(.latest_cursor_of_every_mover), burst \(.burst_s) s"' "$BENCH_TMP/run-$run.json"
done
share() { jq -r '.slow_reader_received / .cursors_sent' "$BENCH_TMP"/run-*.json | bench_median; }
echo "presence (median of $RUNS): the slow reader received $(share) of the cursors sent; the rest were coalesced or reported as missed"

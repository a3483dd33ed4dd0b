#!/usr/bin/env bash
# A/B: runs the held scenarios (idle, unicast, fanout, receive; or those in
# $SCENARIOS, which may also name outage) against two release builds in
# alternating rounds, so that both see the same machine state, and appends
# every JSON line to $OUT (default docs/ab.json).
#
#   bash docs/ab-benchmarks.sh A_RELEASE_DIR B_RELEASE_DIR [ROUNDS]
#   SCENARIOS="receive outage" bash docs/ab-benchmarks.sh A B 3
#
# Each directory holds a `kuiperbelt` and a `kuiperbelt-bench` built from one
# commit (e.g. `git worktree add /tmp/a REV && cd /tmp/a && cargo build
# --release --bins`). Loopback only; every run stops by itself.
set -euo pipefail
a="$1"; b="$2"; rounds="${3:-2}"
OUT="${OUT:-docs/ab.json}"
SCENARIOS="${SCENARIOS:-idle unicast fanout receive}"
for dir in "$a" "$b"; do
  [ -x "$dir/kuiperbelt" ] && [ -x "$dir/kuiperbelt-bench" ] || { echo "no kuiperbelt and kuiperbelt-bench in $dir" >&2; exit 1; }
done
for round in $(seq "$rounds"); do
  for side in a b; do
    dir="$a"; [ "$side" = b ] && dir="$b"
    run() { "$dir/kuiperbelt-bench" --label "$side" --json-out "$OUT" "$@" | tail -1; }
    echo "== round $round, $side ($dir)"
    for scenario in $SCENARIOS; do
      case "$scenario" in
        idle) run --scenario idle --connections 19000 ;;
        unicast) run --scenario unicast --connections 1000 --senders 32 --size 64 --duration 5 ;;
        fanout) run --scenario fanout --connections 10000 --targets 100 --senders 4 --size 64 --duration 5 ;;
        receive) run --scenario receive --connections 1000 --rate 20000 --size 64 --duration 5 ;;
        outage) run --scenario outage --connections 1000 --rate 5000 --outage-seconds 10 --duration 5 ;;
        *) echo "unknown scenario $scenario" >&2; exit 1 ;;
      esac
    done
  done
done
echo "wrote $OUT"

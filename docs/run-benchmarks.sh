#!/usr/bin/env bash
# Builds release, runs every kuiperbelt-bench scenario at the sizes of the
# budgets in docs/benchmarks.md plus the unicast latency sweep, writes the
# JSON lines to docs/benchmarks.json and plots docs/latency-vs-load.png.
#
#   bash docs/run-benchmarks.sh                    # our server
#   OUT=docs/go.json bash docs/run-benchmarks.sh --server-cmd 'ekbo -config={config}' --label go
#
# Extra arguments go to every kuiperbelt-bench run. Takes about 3 minutes;
# every run stops by itself. Loopback only (127.0.0.0/8).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
OUT="${OUT:-docs/benchmarks.json}"
PNG="${PNG:-docs/latency-vs-load.png}"
SWEEP="${SWEEP:-5000,10000,20000,30000,40000,50000,60000,70000,80000}"

cargo build --release --bins
BENCH="$CARGO_TARGET_DIR/release/kuiperbelt-bench"
# The bench raises its soft open-file limit to the hard one; 19,000
# connections need a hard limit of at least ~19,600.
echo "open files: soft $(ulimit -Sn), hard $(ulimit -Hn)"

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
run() { "$BENCH" --json-out "$tmp" "$@"; }

run --scenario idle --connections 19000 "$@"
run --scenario unicast --connections 1000 --senders 32 --size 64 "$@"
run --scenario fanout --connections 10000 --targets 100 --senders 4 --size 64 "$@"
run --scenario receive --connections 1000 --rate 20000 --size 64 "$@"
run --scenario storm --connections 3000 "$@"
run --scenario outage --connections 1000 --rate 5000 --outage-seconds 10 --duration 5 "$@"
if [ -x /usr/sbin/nats-server ]; then
  run --scenario cluster "$@"
else
  echo "skipping the cluster scenario: no /usr/sbin/nats-server (apt install nats-server)"
fi
run --scenario unicast --connections 1000 --senders 32 --size 64 --duration 5 --sweep "$SWEEP" "$@"
mv "$tmp" "$OUT"
trap - EXIT
echo "wrote $OUT"

# matplotlib from PyPI in a venv under the target directory, made once.
VENV="$CARGO_TARGET_DIR/plot-venv"
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet matplotlib
fi
"$VENV/bin/python" docs/plot_benchmarks.py "$OUT" "$PNG"

#!/usr/bin/env bash
# Runs the benchmark suite and draws its throughput chart.
#
#   scripts/bench.sh            # full run (a few minutes): bench/results.{md,csv},
#                               # bench/samples.csv and bench/throughput.png
#   scripts/bench.sh --quick    # smoke run, same files under target/bench
#
# Any other arguments go to the suite (see `cargo bench --bench suite -- --help`).
# Needs root or `unshare --user --map-root-user` (every node runs in a private
# network namespace), and python3 with matplotlib for the chart
# (`pip install matplotlib`); without matplotlib the chart is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench
for a in "$@"; do
  if [ "$a" = "--quick" ]; then out=target/bench; fi
done
# The mass-start section launches demo processes.
cargo build --release --example demo
cargo bench --bench suite -- --out "$out" "$@"
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 scripts/chart.py "$out/results.csv" "$out/throughput.png"
else
  echo "bench.sh: no matplotlib (pip install matplotlib); chart skipped" >&2
fi

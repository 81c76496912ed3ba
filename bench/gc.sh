#!/usr/bin/env bash
# Garbage collection figures (bench/gc.py): mark+sweep of 10,000 blobs in 1,000 repositories on
# the filesystem and on S3 (moto), and push throughput while the server collects.
#
#   bash bench/gc.sh                       # writes bench/results/gc.md
#   GC_S3_REPOS=0 GC_PUSHES=50 bash bench/gc.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
export BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/berth-bench}
[ -x "$BERTH_BIN" ] || { echo "bench: $BERTH_BIN not found: cargo build --release -p berth" >&2; exit 2; }
[ -x "$BENCH_BIN" ] || { echo "bench: $BENCH_BIN not found: cargo build --release -p berth-bench" >&2; exit 2; }
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/berth-gc.XXXXXX")
export WORK
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$HERE/results"
{
  echo "# Garbage collection"
  echo
  echo "$(date -u +%FT%TZ), $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start."
  echo
  python3 "$HERE/gc.py"
} | tee "$HERE/results/gc.md.tmp"
mv "$HERE/results/gc.md.tmp" "$HERE/results/gc.md"

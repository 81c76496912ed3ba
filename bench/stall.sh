#!/usr/bin/env bash
# Memory under clients that stall (issue 13): peak and after-load RSS for 100 stalled 8 MiB
# manifest PUTs and for 2,000 idle keep-alive connections, for each build side by side in one
# run (bench/stall.py does the loads and prints the table).
#
#   bash bench/stall.sh                                   # target/release/berth alone
#   BERTH_BEFORE=/path/to/older/berth bash bench/stall.sh # before / after
#   BENCH_EXTRA='label=/path/berth,manifestmemory=0' bash bench/stall.sh  # more builds/configs
#
# Writes bench/results/stall.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
[ -x "$BERTH_BIN" ] || die "$BERTH_BIN is not built (cargo build --release -p berth)"
# 2,000 connections and the server's own descriptors.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

builds=()
[ -n "${BERTH_BEFORE:-}" ] && builds+=("before=$BERTH_BEFORE")
builds+=("after=$BERTH_BIN")
# shellcheck disable=SC2206
[ -n "${BENCH_EXTRA:-}" ] && builds+=(${BENCH_EXTRA})

say "stall loads: ${builds[*]}"
table=$(python3 "$HERE/stall.py" "${builds[@]}")
mkdir -p "$HERE/results"
{
  echo "# Memory under stalled and idle clients"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r); each load alternates builds, fresh server and directory each time."
  echo "Peak: VmRSS sampled every 20 ms during the load (and VmHWM); after: VmRSS ${BENCH_SETTLE_S:-6} s after every connection closed."
  echo
  for b in "${builds[@]}"; do echo "- \`${b%%=*}\`: \`${b#*=}\`"; done
  echo
  echo "$table"
} >"$HERE/results/stall.md"
cat "$HERE/results/stall.md"

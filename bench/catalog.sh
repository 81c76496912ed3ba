#!/usr/bin/env bash
# Catalog pages, Berth vs distribution 2.8.2 on the same directory, same run (bench/catalog.py).
#
#   bash bench/catalog.sh            # writes bench/results/catalog.md
#   CATALOG_SIZES="1000 10000" CATALOG_S3=0 bash bench/catalog.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
[ -x "$BERTH_BIN" ] || { echo "bench: $BERTH_BIN not found: cargo build --release -p berth" >&2; exit 2; }
command -v docker-registry >/dev/null || { echo "bench: docker-registry (distribution 2.8.2) is required" >&2; exit 2; }
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/berth-catalog.XXXXXX")
export WORK
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$HERE/results"
{
  echo "# Catalog pages: Berth vs distribution 2.8.2"
  echo
  echo "$(date -u +%FT%TZ), $(nproc) cores, $(uname -r); flat layout (repo-NNNNNN), both read-only on one directory."
  echo
  python3 "$HERE/catalog.py"
} | tee "$HERE/results/catalog.md.tmp"
mv "$HERE/results/catalog.md.tmp" "$HERE/results/catalog.md"

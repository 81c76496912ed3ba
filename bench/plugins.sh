#!/usr/bin/env bash
# The plugin runtime's figures (issue 3), all in one run on this machine:
#   - a fresh storage plugin instance from InstancePre (store + instantiate + init), and a
#     trivial call on a warm instance (`berth plugin bench` on storage-memory);
#   - 256 MiB blob push (POST + PUT) and pull (GET) through the storage-fs component, against
#     the native filesystem driver, medians of BENCH_RUNS. storage-fs runs with its default
#     `handover: file` (the host reads and writes the plugin's files itself);
#     BENCH_HANDOVER=stream or copy measures the other paths.
#
#   bash bench/plugins.sh                 # builds berth and the plugins, runs, prints the table
#   BENCH_NO_BUILD=1 bash bench/plugins.sh
#   BENCH_BASELINE_BIN=/path/to/older/berth bash bench/plugins.sh
#                                         # also measures an older build's instantiation and call
#                                         # cost, alternating with this one, medians of BENCH_RUNS
#
# Writes bench/results/plugins.md. Exits 0 when every figure meets its target, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
WASM_DIR=${BERTH_PLUGIN_DIR:-$ROOT/plugins/target/wasm32-wasip2/release}
BLOB_MIB=${BENCH_BLOB_MIB:-256}
RUNS=${BENCH_RUNS:-5}
NCPU=$(nproc)
CLIENT_CPUS=${BENCH_CLIENT_CPUS:-0-$((NCPU - 1))}

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "building berth and the plugins (release)"
  (cd "$ROOT/plugins" && cargo build --target wasm32-wasip2 --release)
  (cd "$ROOT" && cargo build --release -p berth)
fi
for f in "$BERTH_BIN" "$WASM_DIR/berth_storage_fs.wasm" "$WASM_DIR/berth_storage_memory.wasm"; do
  [ -e "$f" ] || die "$f not found (build it, or unset BENCH_NO_BUILD)"
done

mkdir -p "$HERE/results"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/berth-plugins.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "instantiation and call cost (storage-memory)"
declare -A COSTS
cost() { # label binary: one `plugin bench` run, appended to COSTS[instantiate:label] and COSTS[call:label]
  local out
  out=$("$2" plugin bench "$WASM_DIR/berth_storage_memory.wasm") || die "$1: plugin bench failed"
  COSTS[instantiate:$1]+="$(awk '$1=="instantiate_us" {print $2}' <<<"$out") "
  COSTS[call:$1]+="$(awk '$1=="call_us" {print $2}' <<<"$out") "
}
for i in $(seq 1 "$RUNS"); do
  cost this "$BERTH_BIN"
  [ -n "${BENCH_BASELINE_BIN:-}" ] && cost baseline "$BENCH_BASELINE_BIN"
done
INSTANTIATE_US=$(median ${COSTS[instantiate:this]})
CALL_US=$(median ${COSTS[call:this]})
echo "  instantiate $INSTANTIATE_US µs, call $CALL_US µs (runs: ${COSTS[instantiate:this]}/ ${COSTS[call:this]})" >&2
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
  BASE_INSTANTIATE_US=$(median ${COSTS[instantiate:baseline]})
  BASE_CALL_US=$(median ${COSTS[call:baseline]})
  echo "  baseline: instantiate $BASE_INSTANTIATE_US µs, call $BASE_CALL_US µs" >&2
fi

declare -A URL
start() { # name, extra YAML for the storage section and plugins
  local name=$1 port
  port=$(free_port)
  mkdir -p "$WORK/$name/data"
  printf 'log: {level: warn}\nhttp: {addr: "127.0.0.1:%s"}\n%s\n' "$port" "$2" >"$WORK/$name/config.yml"
  (cd "$WORK/$name" && exec "$BERTH_BIN" serve --config config.yml) >"$WORK/$name/log" 2>&1 &
  PIDS+=($!)
  URL[$name]="http://127.0.0.1:$port"
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "${URL[$name]}/v2/" && return 0
    sleep 0.1
  done
  cat "$WORK/$name/log" >&2
  die "$name did not start"
}
start native "storage: {filesystem: {rootdirectory: $WORK/native/data}}"
start storage-fs "storage: {plugin: {name: storage-fs}}
plugins:
  storage-fs:
    path: $WASM_DIR/berth_storage_fs.wasm
    instances: 2
    grants: {dirs: [{host: $WORK/storage-fs/data, guest: /data, mode: rw}]}
    config: {root: /data, handover: ${BENCH_HANDOVER:-file}}"

say "generating $RUNS x $BLOB_MIB MiB blobs"
make_blobs

declare -A RUNLIST
for i in $(seq 1 "$RUNS"); do
  for s in native storage-fs; do
    sync
    v=$(put_blob "${URL[$s]}" "${BLOB[$i]}" "${DIGEST[$i]}" bench/blobs) || die "$s: push $i failed"
    RUNLIST[push:$s]+="$v "
    get_blob "${URL[$s]}" "${DIGEST[$i]}" bench/blobs >/dev/null || die "$s: warm-up pull $i failed"
    v=$(get_blob "${URL[$s]}" "${DIGEST[$i]}" bench/blobs) || die "$s: pull $i failed"
    RUNLIST[pull:$s]+="$v "
    echo "  $s run $i: push ${RUNLIST[push:$s]##* }, pull $v MB/s" >&2
  done
done

row() { # label value target pass
  printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"
}
pass() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = (op == "<" ? v < t : v >= t); print ok ? "PASS" : "FAIL"}'; }
PUSH_N=$(median ${RUNLIST[push:native]}); PUSH_P=$(median ${RUNLIST[push:storage-fs]})
PULL_N=$(median ${RUNLIST[pull:native]}); PULL_P=$(median ${RUNLIST[pull:storage-fs]})
PUSH_R=$(awk -v a="$PUSH_P" -v b="$PUSH_N" 'BEGIN {printf "%.2f", a/b}')
PULL_R=$(awk -v a="$PULL_P" -v b="$PULL_N" 'BEGIN {printf "%.2f", a/b}')
{
  echo "# Plugin runtime benchmark"
  echo
  echo "Written by \`bench/plugins.sh\` on $(date -u +%Y-%m-%dT%H:%M:%SZ), berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), $NCPU cores, medians of $RUNS."
  echo
  echo "| figure | measured | target | result |"
  echo "|---|---:|---|---|"
  row "new instance from InstancePre (store + instantiate + init) [µs]" "$INSTANTIATE_US" "< 50" "$(pass "$INSTANTIATE_US" "<" 50)"
  row "trivial plugin call on a warm instance [µs]" "$CALL_US" "< 5" "$(pass "$CALL_US" "<" 5)"
  if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
    row "baseline ($BENCH_BASELINE_BIN): new instance / trivial call [µs]" "$BASE_INSTANTIATE_US / $BASE_CALL_US" "" ""
  fi
  row "256 MiB push via storage-fs / native [MB/s]" "$PUSH_P / $PUSH_N = ${PUSH_R}x" ">= 0.70x" "$(pass "$PUSH_R" ">=" 0.70)"
  row "256 MiB pull via storage-fs / native [MB/s]" "$PULL_P / $PULL_N = ${PULL_R}x" ">= 0.70x" "$(pass "$PULL_R" ">=" 0.70)"
  echo
  echo "Individual runs (µs): instantiate ${COSTS[instantiate:this]}; call ${COSTS[call:this]}${BENCH_BASELINE_BIN:+; baseline instantiate ${COSTS[instantiate:baseline]}; baseline call ${COSTS[call:baseline]}}"
  echo
  echo "Individual runs (MB/s): push native ${RUNLIST[push:native]}; push storage-fs ${RUNLIST[push:storage-fs]}; pull native ${RUNLIST[pull:native]}; pull storage-fs ${RUNLIST[pull:storage-fs]}"
} >"$HERE/results/plugins.md"
cat "$HERE/results/plugins.md"
! grep -q '| FAIL |' "$HERE/results/plugins.md"

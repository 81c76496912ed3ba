#!/usr/bin/env bash
# The first pull right after a push (issue 13), as a CI pipeline does it: COUNT blobs of BLOB_MIB
# MiB pushed in parallel, then pulled in parallel at once (first pull), then again (second pull),
# against distribution 2.8.2 and against Berth with each `storage.filesystem.warmbytes` given
# (the default: the first 256 MiB of an upload through the page cache; 0: all direct writes),
# side by side in one run. Every server starts on a fresh directory; before each push the page cache is dropped
# (when the kernel lets us) and the source blobs read back in, so every server starts equal.
#
#   bash bench/firstpull.sh                      # builds berth, runs, prints the table
#   BENCH_NO_BUILD=1 BENCH_MODES="warm=268435456 direct=0" bash bench/firstpull.sh
#   BENCH_SMALL_CACHE_GIB=20 ...                 # pin that much anonymous memory first, leaving
#                                                # a small page cache (the small-cache figures)
#
# Writes bench/results/firstpull.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
DIST_BIN=${DIST_BIN:-docker-registry}
COUNT=${BENCH_COUNT:-8}
BLOB_MIB=${BENCH_BLOB_MIB:-128}
RUNS=${BENCH_RUNS:-3}
MODES=${BENCH_MODES:-warm=268435456 direct=0}
SMALL_GIB=${BENCH_SMALL_CACHE_GIB:-0}
NCPU=$(nproc)
CLIENT_CPUS=${BENCH_CLIENT_CPUS:-0-$((NCPU - 1))}
OUT=${BENCH_OUT:-$HERE/results/firstpull.md}

for tool in curl python3 taskset "$DIST_BIN"; do command -v "$tool" >/dev/null || die "$tool is required"; done
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "building berth (release)"
  (cd "$ROOT" && cargo build --release -p berth)
fi

WORK=$(mktemp -d "${BENCH_DIR:-$ROOT/target}/berth-firstpull.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$SMALL_GIB" -gt 0 ]; then
  say "pinning ${SMALL_GIB} GiB of anonymous memory (a small page cache)"
  python3 -c "
import sys, time
b = bytearray(${SMALL_GIB} << 30)
for i in range(0, len(b), 4096): b[i] = 1
sys.stdout.write('pinned\n'); sys.stdout.flush(); time.sleep(1e9)" >"$WORK/pin.out" &
  PIDS+=($!)
  for _ in $(seq 1 600); do grep -q pinned "$WORK/pin.out" 2>/dev/null && break; sleep 0.5; done
fi

say "$COUNT random blobs of $BLOB_MIB MiB"
declare -a FILES DIGS
for i in $(seq 1 "$COUNT"); do
  FILES[$i]="$WORK/blob$i.bin"
  head -c "${BLOB_MIB}M" /dev/urandom >"${FILES[$i]}"
  DIGS[$i]="sha256:$(sha256sum "${FILES[$i]}" | cut -d' ' -f1)"
done

drop_caches() {
  sync
  if echo 1 >/proc/sys/vm/drop_caches 2>/dev/null; then DROPPED=yes; else DROPPED=no; fi
  cat "${FILES[@]:1}" >/dev/null
}

start() { # name warmbytes -> URL in $URL, pid in $SPID
  local name=$1 warm=$2 port
  port=$(free_port)
  rm -rf "$WORK/$name" && mkdir -p "$WORK/$name/data"
  if [ "$name" = distribution ]; then
    printf 'version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
      "$WORK/$name/data" "$port" >"$WORK/$name/config.yml"
    (cd "$WORK/$name" && exec "$DIST_BIN" serve config.yml) >"$WORK/$name/log" 2>&1 &
  else
    printf 'log: {level: warn}\nhttp: {addr: "127.0.0.1:%s"}\nstorage: {filesystem: {rootdirectory: %s, warmbytes: %s}}\n' \
      "$port" "$WORK/$name/data" "$warm" >"$WORK/$name/config.yml"
    (cd "$WORK/$name" && exec "$BERTH_BIN" serve --config config.yml) >"$WORK/$name/log" 2>&1 &
  fi
  SPID=$!
  PIDS+=("$SPID")
  URL="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do curl -s -o /dev/null "$URL/v2/" && return 0; sleep 0.05; done
  cat "$WORK/$name/log" >&2
  die "$name did not start"
}

parallel_push() { # url -> seconds
  local url=$1 t0 i
  t0=$(now)
  for i in $(seq 1 "$COUNT"); do
    put_blob "$url" "${FILES[$i]}" "${DIGS[$i]}" bench/firstpull >/dev/null &
  done
  wait_all || return 1
  elapsed "$t0" "$(now)"
}

parallel_pull() { # url -> seconds
  local url=$1 t0 i
  t0=$(now)
  for i in $(seq 1 "$COUNT"); do
    get_blob "$url" "${DIGS[$i]}" bench/firstpull >/dev/null &
  done
  wait_all || return 1
  elapsed "$t0" "$(now)"
}

wait_all() {
  local ok=0 j
  for j in $(jobs -p); do
    # Servers are jobs too: wait only for the clients started since.
    case " ${PIDS[*]} " in *" $j "*) continue ;; esac
    wait "$j" || ok=1
  done
  return $ok
}

declare -A PUSH FIRST SECOND
SERVERS=(distribution)
for m in $MODES; do SERVERS+=("berth-${m%%=*}:${m#*=}"); done
for run in $(seq 1 "$RUNS"); do
  for s in "${SERVERS[@]}"; do
    name=${s%%:*}; mode=${s#*:}
    drop_caches
    start "$name" "$mode"
    p=$(parallel_push "$URL") || p=ERR
    f=$(parallel_pull "$URL") || f=ERR
    g=$(parallel_pull "$URL") || g=ERR
    PUSH[$s]+="$p "; FIRST[$s]+="$f "; SECOND[$s]+="$g "
    echo "  run $run $s: push $p s, first pull $f s, second pull $g s" >&2
    kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
    rm -rf "$WORK/$name/data"
  done
done

mkdir -p "$(dirname "$OUT")"
{
  echo "# First pull after a push"
  echo
  echo "Written by \`bench/firstpull.sh\` on $(date -u +%Y-%m-%dT%H:%M:%SZ), berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), $NCPU x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM$( [ "$SMALL_GIB" -gt 0 ] && echo ", ${SMALL_GIB} GiB pinned (small page cache)"), $COUNT x $BLOB_MIB MiB in parallel, medians of $RUNS, page cache dropped before each push: $DROPPED."
  echo
  echo "| server | push [s] | first pull [s] | second pull [s] | first / second |"
  echo "|---|---:|---:|---:|---:|"
  for s in "${SERVERS[@]}"; do
    # shellcheck disable=SC2086
    p=$(median ${PUSH[$s]//ERR/}); f=$(median ${FIRST[$s]//ERR/}); g=$(median ${SECOND[$s]//ERR/})
    r=$(awk -v a="$f" -v b="$g" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "-"}')
    echo "| $s | $p | $f | $g | $r |"
  done
  echo
  echo "Individual runs (push / first / second):"
  for s in "${SERVERS[@]}"; do echo "- $s: ${PUSH[$s]}/ ${FIRST[$s]}/ ${SECOND[$s]}"; done
} >"$OUT"
cat "$OUT"

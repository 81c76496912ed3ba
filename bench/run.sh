#!/usr/bin/env bash
# Berth vs distribution 2.8.2, side by side, same machine, same run. See bench/README.md.
#
#   bash bench/run.sh                 # build (release), run everything, print the table
#   BENCH_NO_BUILD=1 bash bench/run.sh
#
# Writes bench/results/latest.md. Exits 0 when every figure meets its target, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/berth-bench}
DIST_BIN=${DIST_BIN:-docker-registry}
BLOB_MIB=${BENCH_BLOB_MIB:-256}          # size of the big blob and of the skopeo image's layer
RUNS=${BENCH_RUNS:-5}                    # blob PUT/GET, skopeo push/pull: median of this many
RPS_SECS=${BENCH_RPS_SECS:-10}           # seconds per requests/s measurement
CONNS=${BENCH_CONNECTIONS:-32}
PUSHES=${BENCH_PUSHES:-200}
LOADGEN=${BENCH_LOADGEN:-wrk}            # wrk: wrk for GETs, berth-bench load for HEAD; berth-bench: it for all
BENCH_LOG_LEVEL=${BENCH_LOG_LEVEL:-warn} # both servers log at this level (distribution: access log off)
NCPU=$(nproc)
# By default nothing is pinned: each server may use the whole machine, as it would in
# production, and the clients share it. BENCH_SERVER_CPUS / BENCH_CLIENT_CPUS pin them
# (e.g. 0 and 1 to give each server one core and the load generator the other).
SERVER_CPUS=${BENCH_SERVER_CPUS:-0-$((NCPU - 1))}
CLIENT_CPUS=${BENCH_CLIENT_CPUS:-0-$((NCPU - 1))}


for tool in curl skopeo python3 taskset "$DIST_BIN"; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
[ "$LOADGEN" = wrk ] && { command -v wrk >/dev/null || die "wrk is required (or BENCH_LOADGEN=berth-bench)"; }

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "cargo build --release -p berth -p berth-bench"
  (cd "$ROOT" && cargo build --release -p berth -p berth-bench)
fi
[ -x "$BERTH_BIN" ] || die "$BERTH_BIN not found (build it, or unset BENCH_NO_BUILD)"
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN not found"

mkdir -p "$HERE/results"
PARENT=${BENCH_DIR:-/tmp}
mkdir -p "$PARENT"
WORK=$(mktemp -d "$PARENT/berth-bench.XXXXXX")
DPID=""
BPID=""
cleanup() {
  for pid in $DPID $BPID; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in $DPID $BPID; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


declare -A R        # R[metric:server] = value (or ERR)
declare -A RAW      # RAW[metric:server] = individual runs, for the report
NOTES=()
note() { NOTES+=("$*"); echo "bench: $*" >&2; }

# ---------------------------------------------------------------------------------------------
say "work dir $WORK (server cpus $SERVER_CPUS, client cpus $CLIENT_CPUS)"
mkdir -p "$WORK/distribution/data" "$WORK/berth/data"
DPORT=$(free_port)
BPORT=$(free_port)
while [ "$BPORT" = "$DPORT" ]; do BPORT=$(free_port); done

cat >"$WORK/distribution/config.yml" <<EOF
version: 0.1
log:
  level: $BENCH_LOG_LEVEL
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $WORK/distribution/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$DPORT
EOF
cat >"$WORK/berth/config.yml" <<EOF
log: {level: $BENCH_LOG_LEVEL}
http: {addr: "127.0.0.1:$BPORT"}
storage:
  filesystem: {rootdirectory: $WORK/berth/data}
  delete: {enabled: true}
EOF

(cd "$WORK/distribution" && exec taskset -c "$SERVER_CPUS" "$DIST_BIN" serve config.yml) \
  >"$WORK/distribution/log" 2>&1 &
DPID=$!
(cd "$WORK/berth" && exec taskset -c "$SERVER_CPUS" "$BERTH_BIN" serve --config config.yml) \
  >"$WORK/berth/log" 2>&1 &
BPID=$!

declare -A URL=([distribution]="http://127.0.0.1:$DPORT" [berth]="http://127.0.0.1:$BPORT")
declare -A PID=([distribution]=$DPID [berth]=$BPID)
SERVERS=(distribution berth)

wait_ready() {
  local name=$1 i
  for i in $(seq 1 300); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      cat "$WORK/$name/log" >&2; die "$name exited during startup"
    fi
    if curl -sf -o /dev/null "${URL[$name]}/v2/"; then return 0; fi
    sleep 0.1
  done
  cat "$WORK/$name/log" >&2; die "$name did not become ready"
}
for s in "${SERVERS[@]}"; do wait_ready "$s"; done
declare -A HWM_TRAIL  # VmHWM after each phase, to show where each server's peak came from
hwm_snapshot() {
  local s
  for s in "${SERVERS[@]}"; do
    [ -r "/proc/${PID[$s]}/status" ] || continue
    HWM_TRAIL[$s]+="$1 $(awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/${PID[$s]}/status"), "
  done
}
declare -A DEAD
alive() {
  kill -0 "${PID[$1]}" 2>/dev/null && return 0
  if [ -z "${DEAD[$1]:-}" ]; then
    local rc=0
    wait "${PID[$1]}" 2>/dev/null || rc=$?
    DEAD[$1]=$rc
    note "$1 is not running any more (exit status $rc$( [ "$rc" -gt 128 ] && echo ", signal $((rc - 128))")); last lines of its log:"
    NOTES+=("$(tail -30 "$WORK/$1/log")")
    tail -30 "$WORK/$1/log" >&2
    cp "$WORK/$1/log" "$HERE/results/$1-died.log" 2>/dev/null || true
  fi
  return 1
}
hwm_snapshot start

# ---------------------------------------------------------------------------------------------
say "generating test data: $RUNS x $BLOB_MIB MiB blobs and $RUNS $BLOB_MIB MiB OCI images"
make_blobs
for i in $(seq 1 "$RUNS"); do  # one distinct image per run, so no push can reuse an earlier one's blobs
  python3 "$ROOT/tests/ocilayout.py" big "$WORK/image$i" --tag big --size-mib "$BLOB_MIB" --seed "$i" >/dev/null
done

# ---------------------------------------------------------------------------------------------
# 1. monolithic blob upload (put_blob in lib.sh), 2. blob GET (get_blob)
say "blob PUT ${BLOB_MIB} MiB x $RUNS"
declare -A RUNLIST
for i in $(seq 1 "$RUNS"); do
  for s in "${SERVERS[@]}"; do
    alive "$s" || { RUNLIST[put:$s]+="ERR "; continue; }
    sync  # start from a clean page cache: no run pays for the previous server's unflushed data
    v=$(put_blob "${URL[$s]}" "${BLOB[$i]}" "${DIGEST[$i]}" bench/blobs) || { note "$s: blob PUT run $i failed"; v=ERR; }
    RUNLIST[put:$s]+="$v "
    echo "  $s run $i: $v MB/s" >&2
  done
done

hwm_snapshot put
say "blob GET ${BLOB_MIB} MiB x $RUNS (after one warm-up GET each)"
for s in "${SERVERS[@]}"; do get_blob "${URL[$s]}" "${DIGEST[1]}" bench/blobs >/dev/null || true; done
for i in $(seq 1 "$RUNS"); do
  for s in "${SERVERS[@]}"; do
    alive "$s" || { RUNLIST[get:$s]+="ERR "; continue; }
    v=$(get_blob "${URL[$s]}" "${DIGEST[1]}" bench/blobs) || { note "$s: blob GET run $i failed"; v=ERR; }
    RUNLIST[get:$s]+="$v "
    echo "  $s run $i: $v MB/s" >&2
  done
done

hwm_snapshot get
for m in put get; do
  for s in "${SERVERS[@]}"; do
    RAW[$m:$s]=${RUNLIST[$m:$s]% }
    if [[ " ${RUNLIST[$m:$s]} " == *" ERR "* ]]; then R[$m:$s]=ERR; else R[$m:$s]=$(median ${RUNLIST[$m:$s]}); fi
  done
done

# ---------------------------------------------------------------------------------------------
say "$PUSHES small image pushes (berth-bench, sequential, keep-alive)"
for s in "${SERVERS[@]}"; do
  alive "$s" || { R[pushes:$s]=ERR; continue; }
  sync
  if v=$(client "$BENCH_BIN" pushes --url "${URL[$s]}" --count "$PUSHES" --repo bench/pushes 2>"$WORK/pushes-$s.err"); then
    R[pushes:$s]=$v
  else
    R[pushes:$s]=ERR; note "$s: pushes failed: $(tail -3 "$WORK/pushes-$s.err")"
  fi
  RAW[pushes:$s]=$(cat "$WORK/pushes-$s.err")
  echo "  $s: ${R[pushes:$s]} s" >&2
done

hwm_snapshot pushes
# ---------------------------------------------------------------------------------------------
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
printf 'wrk.method = "HEAD"\n' >"$WORK/head.lua"

rps() { # tool server url method -> requests/s (ERR on any non-2xx/error)
  local tool=$1 url=$2 method=$3 out rate non2xx errs
  if [ "$tool" = wrk ]; then
    out=$(client wrk -t1 -c"$CONNS" -d"${RPS_SECS}s" -H "$ACCEPT" "$url" 2>&1) || { echo "$out" >&2; return 1; }
    echo "$out" >>"$WORK/rps.log"
    rate=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
    errs=$(awk '/Socket errors:/ {print $0}' <<<"$out")
    [ -z "$non2xx" ] || { echo "wrk: $non2xx non-2xx responses from $url" >&2; return 1; }
    [ -z "$errs" ] || { echo "wrk: $errs" >&2; return 1; }
  else
    out=$(client "$BENCH_BIN" load --url "$url" --method "$method" --connections "$CONNS" \
          --duration "$RPS_SECS" -H "$ACCEPT" 2>>"$WORK/rps.log") || return 1
    read -r rate non2xx errs <<<"$out"
    [ "$non2xx" = 0 ] && [ "$errs" = 0 ] || { echo "load: $non2xx non-2xx, $errs errors from $url" >&2; return 1; }
  fi
  [ -n "$rate" ] && [ "$rate" != 0 ] || return 1
  echo "$rate"
}

MREPO=bench/pushes
for s in "${SERVERS[@]}"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$ACCEPT" "${URL[$s]}/v2/$MREPO/manifests/t0")
  [ "$code" = 200 ] || note "$s: manifest $MREPO:t0 answers $code (the pushes step failed?)"
done
for m in v2 mget mhead; do
  case $m in
    v2)    path=/v2/;                      method=GET;  tool=$LOADGEN ;;
    mget)  path=/v2/$MREPO/manifests/t0;   method=GET;  tool=$LOADGEN ;;
    mhead) path=/v2/$MREPO/manifests/t0;   method=HEAD; tool=berth-bench ;;
  esac
  say "$method $path: $CONNS connections, ${RPS_SECS} s ($tool)"
  for s in "${SERVERS[@]}"; do
    alive "$s" || { R[$m:$s]=ERR; continue; }
    # 1 s warm-up, not counted
    client "$BENCH_BIN" load --url "${URL[$s]}$path" --method "$method" --connections "$CONNS" \
      --duration 1 -H "$ACCEPT" >/dev/null 2>&1 || true
    if v=$(rps "$tool" "${URL[$s]}$path" "$method"); then R[$m:$s]=$v; else R[$m:$s]=ERR; note "$s: $method $path failed"; fi
    RAW[$m:$s]="$tool"
    echo "  $s: ${R[$m:$s]} requests/s" >&2
  done
done

# ---------------------------------------------------------------------------------------------
hwm_snapshot rates
say "skopeo push + pull of a ${BLOB_MIB} MiB image x $RUNS"
SKOPEO=(skopeo --insecure-policy copy --preserve-digests)
manifest_digest() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$1/index.json"; }
for i in $(seq 1 "$RUNS"); do
  want=$(manifest_digest "$WORK/image$i")
  for s in "${SERVERS[@]}"; do
    alive "$s" || { RUNLIST[spush:$s]+="ERR "; continue; }
    host=${URL[$s]#http://}
    sync
    t0=$(now)
    if client "${SKOPEO[@]}" -q --dest-tls-verify=false "oci:$WORK/image$i:big" "docker://$host/bench/big$i:big" \
         >"$WORK/skopeo-push-$s-$i.log" 2>&1; then
      v=$(elapsed "$t0" "$(now)")
    else
      v=ERR; note "$s: skopeo push $i failed: $(tail -3 "$WORK/skopeo-push-$s-$i.log")"
    fi
    RUNLIST[spush:$s]+="$v "
    echo "  $s push $i: $v s" >&2
  done
  for s in "${SERVERS[@]}"; do
    alive "$s" || { RUNLIST[spull:$s]+="ERR "; continue; }
    host=${URL[$s]#http://}
    dest="$WORK/pull-$s-$i"
    sync
    t0=$(now)
    if client "${SKOPEO[@]}" -q --src-tls-verify=false "docker://$host/bench/big$i:big" "oci:$dest:big" \
         >"$WORK/skopeo-pull-$s-$i.log" 2>&1; then
      v=$(elapsed "$t0" "$(now)")
      got=$(manifest_digest "$dest")
      [ "$want" = "$got" ] || { note "$s: pulled manifest $got, pushed $want"; v=ERR; }
    else
      v=ERR; note "$s: skopeo pull $i failed: $(tail -3 "$WORK/skopeo-pull-$s-$i.log")"
    fi
    rm -rf "$dest"
    RUNLIST[spull:$s]+="$v "
    echo "  $s pull $i: $v s" >&2
  done
done
for m in spush spull; do
  for s in "${SERVERS[@]}"; do
    RAW[$m:$s]=${RUNLIST[$m:$s]% }
    if [[ " ${RUNLIST[$m:$s]} " == *" ERR "* ]]; then R[$m:$s]=ERR; else R[$m:$s]=$(median ${RUNLIST[$m:$s]}); fi
  done
done

# ---------------------------------------------------------------------------------------------
hwm_snapshot skopeo
for s in "${SERVERS[@]}"; do
  if alive "$s"; then
    R[mem:$s]=$(awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/${PID[$s]}/status")
    RAW[mem:$s]="VmHWM (MiB) after ${HWM_TRAIL[$s]}VmRSS at end $(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/${PID[$s]}/status")"
  else
    R[mem:$s]=ERR
  fi
done

say "stopping servers (SIGTERM)"
for s in "${SERVERS[@]}"; do
  if kill -0 "${PID[$s]}" 2>/dev/null; then
    kill -TERM "${PID[$s]}"
    rc=0; wait "${PID[$s]}" || rc=$?
    [ "$s" = berth ] && [ "$rc" != 0 ] && note "berth exited $rc on SIGTERM (expected 0)"
  fi
done
DPID=""; BPID=""

# ---------------------------------------------------------------------------------------------
mkdir -p "$HERE/results"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
for m in put get v2 mget mhead pushes mem spush spull; do
  rd=${RAW[$m:distribution]:-}; rb=${RAW[$m:berth]:-}
  printf '%s\t%s\t%s\t%s\t%s\n' "$m" "${R[$m:distribution]:-ERR}" "${R[$m:berth]:-ERR}" \
    "${rd//$'\n'/; }" "${rb//$'\n'/; }" >>"$RESULTS"
done
{
  printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'cpu\t%s x %s\n' "$NCPU" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'berth\t%s (%s)\n' "$BERTH_BIN" "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
  printf 'distribution\t%s\n' "$("$DIST_BIN" --version 2>&1 | head -1)"
  printf 'tools\tcurl %s; wrk %s; skopeo %s\n' "$(curl --version | awk 'NR==1 {print $2}')" \
    "$(wrk --version 2>&1 | awk 'NR==1 {print $2}')" "$(skopeo --version | awk '{print $3}')"
  printf 'setup\tservers pinned to cpu %s, clients to cpu %s; %s connections; %s s per rate; median of %s; logs at %s\n' \
    "$SERVER_CPUS" "$CLIENT_CPUS" "$CONNS" "$RPS_SECS" "$RUNS" "$BENCH_LOG_LEVEL"
} >"$WORK/meta.tsv"
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$WORK/notes.txt"
for s in "${SERVERS[@]}"; do
  if grep -qi 'panic' "$WORK/$s/log"; then
    echo "--- $s log (panics) ---" >>"$WORK/notes.txt"
    grep -i -A3 'panic' "$WORK/$s/log" | head -20 >>"$WORK/notes.txt"
  fi
done

set +e
python3 "$HERE/report.py" --results "$RESULTS" --meta "$WORK/meta.tsv" --notes "$WORK/notes.txt" \
  --blob-mib "$BLOB_MIB" --pushes "$PUSHES" --conns "$CONNS" --markdown "$HERE/results/latest.md"
status=$?
set -e
echo "bench: wrote $HERE/results/latest.md" >&2
exit $status

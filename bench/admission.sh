#!/usr/bin/env bash
# Admission figures (issue 12), with the release binary:
#   (a) per plugin (admission-rules in Rust, JavaScript and Python; immutable-tags in
#       JavaScript), in-process through `berth plugin bench-admission`: first load (compile into
#       an empty cache, instantiate, init), load from the cache, a fresh instance, and warm
#       `check` calls at p50 and p99; targets: Rust p50 < 20 us, JavaScript and Python < 500 us;
#   (b) manifest PUT rate (wrk, BENCH_CONNECTIONS connections, BENCH_RPS_SECS s, the same
#       manifest to the same tag) with no admission, and with each plugin as the only chain
#       (instances: 2); target: immutable-tags (JavaScript) >= 80% of the rate without;
#   (c) each server's start-up to ready, with the component cache warm.
#
#   bash bench/admission.sh                  # builds berth and the plugins, runs, prints the table
#   BENCH_NO_BUILD=1 bash bench/admission.sh
#
# Writes bench/results/admission.md. Exits 0 when every figure meets its target, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
WASM_DIR=${BERTH_PLUGIN_DIR:-$ROOT/plugins/target/wasm32-wasip2/release}
COMP_DIR=$ROOT/plugins/target/components
RPS_SECS=${BENCH_RPS_SECS:-10}
CONNS=${BENCH_CONNECTIONS:-16}
CALLS=${BENCH_CALLS:-5000}
NCPU=$(nproc)
CLIENT_CPUS=${BENCH_CLIENT_CPUS:-0-$((NCPU - 1))}

for tool in curl wrk python3 taskset; do command -v "$tool" >/dev/null || die "$tool is required"; done
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "building berth and the plugins (release)"
  (cd "$ROOT/plugins" && cargo build --target wasm32-wasip2 --release)
  (cd "$ROOT" && cargo build --release -p berth)
  bash "$ROOT/plugins/build-components.sh"
fi
declare -A WASM=(
  [rules-rust]=$WASM_DIR/berth_admission_rules.wasm
  [rules-js]=$COMP_DIR/berth_admission_rules_js.wasm
  [rules-python]=$COMP_DIR/berth_admission_rules_py.wasm
  [immutable-js]=$COMP_DIR/berth_admission_immutable_tags.wasm
)
ORDER=(rules-rust rules-js rules-python immutable-js)
for f in "$BERTH_BIN" "${WASM[@]}"; do [ -e "$f" ] || die "$f not found (build it, or unset BENCH_NO_BUILD)"; done
RULES=(maxlayerbytes=536870912 maximagebytes=1073741824 "tags=v*,latest" annotations=org.opencontainers.image.source)
IMMUTABLE=("protect.bench/**=v*,semver")
config_args() { # name -> --config k=v ...
  local kv
  if [ "$1" = immutable-js ]; then for kv in "${IMMUTABLE[@]}"; do printf -- '--config\0%s\0' "$kv"; done
  else for kv in "${RULES[@]}"; do printf -- '--config\0%s\0' "$kv"; done; fi
}
config_yaml() { # name -> YAML flow map
  if [ "$1" = immutable-js ]; then echo '{"protect.bench/**": "v*, semver"}'
  else echo '{maxlayerbytes: 536870912, maximagebytes: 1073741824, tags: "v*, latest", annotations: org.opencontainers.image.source}'; fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$HERE/results"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/berth-admission.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- (a) per call -------------------------------------------------------------------------------
declare -A FIG
for name in "${ORDER[@]}"; do
  say "bench-admission $name ($CALLS calls)"
  mapfile -d '' args < <(config_args "$name")
  out=$("$BERTH_BIN" plugin bench-admission "${WASM[$name]}" "${args[@]}" --iterations "$CALLS") || die "$name: $out"
  grep -qx 'allowed true' <<<"$out" || die "$name did not allow the sample push: $out"
  while read -r k v; do FIG[$name.$k]=$v; done <<<"$out"
done

# --- (b), (c) servers ---------------------------------------------------------------------------
declare -A URL START
start() { # name extra-yaml
  local name=$1 port t0
  port=$(free_port)
  mkdir -p "$WORK/$name/data"
  printf 'log: {level: warn}\nhttp: {addr: "127.0.0.1:%s"}\nstorage: {filesystem: {rootdirectory: %s}}\n%s\n' \
    "$port" "$WORK/$name/data" "$2" >"$WORK/$name/config.yml"
  t0=$(now)
  (cd "$WORK/$name" && exec "$BERTH_BIN" serve --config config.yml) >"$WORK/$name/log" 2>&1 &
  PIDS+=($!)
  URL[$name]="http://127.0.0.1:$port"
  for _ in $(seq 1 3000); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "${URL[$name]}/v2/" || true)" = 200 ]; then
      START[$name]=$(elapsed "$t0" "$(now)")
      return 0
    fi
    sleep 0.02
  done
  cat "$WORK/$name/log" >&2
  die "$name did not start"
}
start none ""
for name in "${ORDER[@]}"; do
  start "$name" "plugins:
  p: {path: ${WASM[$name]}, instances: 2, config: $(config_yaml "$name")}
admission:
  chains: [{repository: '**', plugins: [p]}]"
done

# One image's blobs in every server, and its manifest for wrk to PUT.
TESTS="$ROOT/tests" python3 - "$WORK/manifest.json" "${URL[@]}" <<'PY'
import os, sys
sys.path.insert(0, os.environ["TESTS"])
from ocihelpers import build_manifest, image_config, push_blob, push_manifest, to_bytes
config, layer = image_config("bench"), b"l" * 4096
m = to_bytes(build_manifest(config, [layer], annotations={"org.opencontainers.image.source": "https://example.test/b"}))
# The very bytes wrk sends: the same manifest again moves no tag (immutable-tags allows it).
open(sys.argv[1], "wb").write(m)
for url in sys.argv[2:]:
    push_blob(url, "bench/app", config)
    push_blob(url, "bench/app", layer)
    r = push_manifest(url, "bench/app", "v1", m)
    assert r.status_code == 201, (url, r.status_code, r.text)
PY
cat >"$WORK/put.lua" <<EOF
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
local f = io.open("$WORK/manifest.json", "rb")
wrk.body = f:read("*a")
f:close()
EOF
put_rate() { # name -> "requests/s p50 p99"
  local out rate non2xx errs
  out=$(client wrk -t1 -c"$CONNS" -d"${RPS_SECS}s" --latency -s "$WORK/put.lua" "${URL[$1]}/v2/bench/app/manifests/v1" 2>&1) ||
    { echo "$out" >&2; return 1; }
  echo "$out" >>"$WORK/wrk.log"
  rate=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  errs=$(awk '/Socket errors:/ {print $0}' <<<"$out")
  [ -z "$non2xx" ] || { echo "wrk: $non2xx non-2xx responses from $1" >&2; return 1; }
  [ -z "$errs" ] || { echo "wrk: $errs" >&2; return 1; }
  echo "$rate $(awk '$1=="50%" {print $2} $1=="99%" {print $2}' <<<"$out" | tr '\n' ' ')"
}
declare -A RATE P50 P99
for name in none "${ORDER[@]}"; do
  say "manifest PUT rate: $name"
  line=$(put_rate "$name") || die "$name: PUT rate failed"
  read -r RATE[$name] P50[$name] P99[$name] <<<"$line"
done

# --- report -------------------------------------------------------------------------------------
ok=0
below() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a+0 < b+0)}'; }
target() { # name -> p50 target (us)
  case $1 in rules-rust) echo 20 ;; *) echo 500 ;; esac
}
report="$HERE/results/admission.md"
{
  echo "# Admission figures"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, load average at the start: $LOAD_BEFORE, commit $(cd "$ROOT" && git rev-parse --short HEAD)."
  echo
  echo "## Per call and load (in-process, \`berth plugin bench-admission\`, $CALLS warm calls)"
  echo
  echo "| plugin | component | first load (compile) | load from cache | fresh instance | check p50 | check p99 | p50 target |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for name in "${ORDER[@]}"; do
    size=$(stat -c %s "${WASM[$name]}")
    t=$(target "$name")
    verdict=met
    below "${FIG[$name.call_p50_us]}" "$t" || { verdict=MISSED; ok=1; }
    printf '| %s | %.2f MB | %s ms | %s ms | %s us | %s us | %s us | < %s us: %s |\n' "$name" \
      "$(awk -v s="$size" 'BEGIN {print s/1e6}')" "${FIG[$name.first_load_ms]}" "${FIG[$name.cached_load_ms]}" \
      "${FIG[$name.instantiate_us]}" "${FIG[$name.call_p50_us]}" "${FIG[$name.call_p99_us]}" "$t" "$verdict"
  done
  echo
  echo "## Manifest PUT (wrk, $CONNS connections, ${RPS_SECS} s, the same manifest to the same tag; plugins with 2 instances)"
  echo
  echo "| admission | PUT/s | vs none | latency p50 | latency p99 | start-up to ready (warm cache) |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for name in none "${ORDER[@]}"; do
    printf '| %s | %s | %s%% | %s | %s | %s s |\n' "$name" "${RATE[$name]}" \
      "$(awk -v a="${RATE[$name]}" -v b="${RATE[none]}" 'BEGIN {printf "%.0f", 100*a/b}')" "${P50[$name]}" "${P99[$name]}" "${START[$name]}"
  done
  share=$(awk -v a="${RATE[immutable-js]}" -v b="${RATE[none]}" 'BEGIN {printf "%.0f", 100*a/b}')
  echo
  if [ "$share" -ge 80 ]; then
    echo "immutable-tags (JavaScript): $share% of the PUT rate without admission (target >= 80%): met."
  else
    echo "immutable-tags (JavaScript): $share% of the PUT rate without admission (target >= 80%): MISSED."
    ok=1
  fi
} >"$report"
cat "$report"
exit $ok

#!/usr/bin/env bash
# Auth figures (issue 9), side by side in one run with the release binary:
#   (a) manifest HEAD, BENCH_CONNECTIONS connections, with a valid bearer token (external-issuer
#       mode, token minted by tests/authtokens.py) against the same server config without auth;
#       target: token >= 80% of open;
#   (b) token issue rate through Berth's issuer with auth-acl: anonymous pull of one scope, of
#       distinct scopes (a new scope per request defeats the decision cache), and authenticated
#       (Basic, bcrypt cost BENCH_ACL_COST) with one scope and with distinct scopes;
#       target >= 5,000 tokens/s for the anonymous and the cached authenticated cases;
#   (c) the same authenticated rates through auth-htpasswd at bcrypt cost BENCH_HTPASSWD_COST
#       (default 5, what `htpasswd -B` writes): reported, no target.
#
#   bash bench/auth.sh                  # builds berth, berth-bench and the plugins, runs, prints the table
#   BENCH_NO_BUILD=1 bash bench/auth.sh
#
# Writes bench/results/auth.md. Exits 0 when every figure meets its target, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/berth-bench}
WASM_DIR=${BERTH_PLUGIN_DIR:-$ROOT/plugins/target/wasm32-wasip2/release}
RUNS=${BENCH_RUNS:-3}
RPS_SECS=${BENCH_RPS_SECS:-10}
CONNS=${BENCH_CONNECTIONS:-32}
ACL_COST=${BENCH_ACL_COST:-5}
HTPASSWD_COST=${BENCH_HTPASSWD_COST:-5}
BENCH_LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
NCPU=$(nproc)
CLIENT_CPUS=${BENCH_CLIENT_CPUS:-0-$((NCPU - 1))}

for tool in curl wrk python3 taskset; do command -v "$tool" >/dev/null || die "$tool is required"; done
python3 -c 'import jwt, bcrypt, cryptography' 2>/dev/null || die "python3 needs PyJWT, bcrypt, cryptography (bash tests/setup.sh)"

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "building berth, berth-bench and the plugins (release)"
  (cd "$ROOT/plugins" && cargo build --target wasm32-wasip2 --release)
  (cd "$ROOT" && cargo build --release -p berth -p berth-bench)
fi
for f in "$BERTH_BIN" "$BENCH_BIN" "$WASM_DIR/berth_auth_acl.wasm" "$WASM_DIR/berth_auth_htpasswd.wasm"; do
  [ -e "$f" ] || die "$f not found (build it, or unset BENCH_NO_BUILD)"
done

mkdir -p "$HERE/results"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/berth-auth.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- keys, htpasswd files -----------------------------------------------------------------------
say "keys and htpasswd files (bcrypt cost $ACL_COST for auth-acl, $HTPASSWD_COST for auth-htpasswd)"
python3 "$ROOT/tests/authtokens.py" keys "$WORK/keys" >/dev/null
BENCH_PW=bench-password-$RANDOM$RANDOM
mkhtpasswd() { # dir cost
  mkdir -p "$1"
  python3 -c 'import sys, bcrypt; h = bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=int(sys.argv[3]))).decode(); print(f"bench:$2y${h[4:]}")' \
    bench "$BENCH_PW" "$2" >"$1/htpasswd"
}
mkhtpasswd "$WORK/acl-auth" "$ACL_COST"
mkhtpasswd "$WORK/htpasswd-auth" "$HTPASSWD_COST"

# --- servers ------------------------------------------------------------------------------------
declare -A URL
start() { # name, extra YAML
  local name=$1 port
  port=$(free_port)
  mkdir -p "$WORK/$name/data"
  printf 'log: {level: %s}\nhttp: {addr: "127.0.0.1:%s"}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\n%s\n' \
    "$BENCH_LOG_LEVEL" "$port" "$WORK/$name/data" "$2" >"$WORK/$name/config.yml"
  (cd "$WORK/$name" && exec "$BERTH_BIN" serve --config config.yml) >"$WORK/$name/log" 2>&1 &
  PIDS+=($!)
  URL[$name]="http://127.0.0.1:$port"
  for _ in $(seq 1 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[$name]}/v2/" || true)
    case $code in 200|401) return 0 ;; esac
    sleep 0.1
  done
  cat "$WORK/$name/log" >&2
  die "$name did not start"
}
start open ""
start token "auth:
  token: {realm: https://auth.example.test/token, service: berth-test, issuer: test-issuer, rootcertbundle: $WORK/keys/bundle.pem}"
start acl "plugins:
  auth-acl:
    path: $WASM_DIR/berth_auth_acl.wasm
    grants: {dirs: [{host: $WORK/acl-auth, guest: /auth, mode: ro}]}
    config:
      users: /auth/htpasswd
      rules: |
        anonymous bench/** pull
        user:bench bench/** pull,push
auth:
  issuer: {policy: auth-acl}"
start htpasswd "plugins:
  auth-htpasswd:
    path: $WASM_DIR/berth_auth_htpasswd.wasm
    grants: {dirs: [{host: $WORK/htpasswd-auth, guest: /auth, mode: ro}]}
    config: {path: /auth/htpasswd, own: 'pull,push,delete', others: pull, anonymous: '', admins: '', cachettl: '60'}
auth:
  issuer: {policy: auth-htpasswd}"

TOKEN=$(python3 "$ROOT/tests/authtokens.py" mint "$WORK/keys" --scope repository:bench/app:pull,push --exp 86400)
seed() { # url [token]
  TESTS="$ROOT/tests" python3 - "$@" <<'EOF'
import os, sys
sys.path.insert(0, os.environ["TESTS"])
from ocihelpers import Client, make_image
c = Client()
if len(sys.argv) > 2:
    c.headers["Authorization"] = "Bearer " + sys.argv[2]
make_image(sys.argv[1], "bench/app", "v1", session=c)
EOF
}
seed "${URL[open]}" || die "seeding the open server failed"
seed "${URL[token]}" "$TOKEN" || die "seeding the token server failed"

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
AUTHZ="Authorization: Bearer $TOKEN"
BASIC="Authorization: Basic $(printf 'bench:%s' "$BENCH_PW" | base64 -w0)"

head_rate() { # url [header] -> requests/s
  local out rate non2xx errs
  out=$(client "$BENCH_BIN" load --url "$1/v2/bench/app/manifests/v1" --method HEAD --connections "$CONNS" \
        --duration "$RPS_SECS" -H "$ACCEPT" ${2:+-H "$2"} 2>>"$WORK/load.log") || return 1
  read -r rate non2xx errs <<<"$out"
  [ "$non2xx" = 0 ] && [ "$errs" = 0 ] || { echo "load: $non2xx non-2xx, $errs errors from $1" >&2; return 1; }
  echo "$rate"
}

cat >"$WORK/distinct.lua" <<'EOF'
-- a new repository name per request: no decision cache can answer it
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/auth/token?service=berth&scope=repository:bench/r" .. n .. ":pull")
end
EOF
token_rate() { # url distinct(0|1) [header] -> tokens/s
  local url=$1 distinct=$2 hdr=${3:-} out rate non2xx errs args=()
  [ -n "$hdr" ] && args+=(-H "$hdr")
  [ "$distinct" = 1 ] && args+=(-s "$WORK/distinct.lua")
  out=$(client wrk -t1 -c"$CONNS" -d"${RPS_SECS}s" "${args[@]}" \
        "$url/auth/token?service=berth&scope=repository:bench/app:pull" 2>&1) || { echo "$out" >&2; return 1; }
  echo "$out" >>"$WORK/wrk.log"
  rate=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  errs=$(awk '/Socket errors:/ {print $0}' <<<"$out")
  [ -z "$non2xx" ] || { echo "wrk: $non2xx non-2xx responses from $url" >&2; return 1; }
  [ -z "$errs" ] || { echo "wrk: $errs" >&2; return 1; }
  echo "$rate"
}
# One token answer checked by hand before measuring: a wrong password would be measured as fast 401s.
for s in acl htpasswd; do
  code=$(curl -s -o "$WORK/tok.json" -w '%{http_code}' -H "$BASIC" "${URL[$s]}/auth/token?service=berth&scope=repository:bench/app:pull")
  [ "$code" = 200 ] || die "$s: token endpoint answered $code: $(head -c 300 "$WORK/tok.json")"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -I -H "$ACCEPT" -H "$AUTHZ" "${URL[token]}/v2/bench/app/manifests/v1")
[ "$code" = 200 ] || die "token server answered $code to a HEAD with a valid token"

declare -A RUNLIST
measure() { # key command...
  local key=$1 v
  shift
  v=$("$@") || { echo "bench: $key failed" >&2; v=ERR; }
  RUNLIST[$key]+="$v "
  echo "  $key: $v" >&2
}
say "(a) manifest HEAD, $CONNS connections, ${RPS_SECS} s x $RUNS, open and token alternating"
head_rate "${URL[open]}" >/dev/null || true   # warm-up
head_rate "${URL[token]}" "$AUTHZ" >/dev/null || true
for i in $(seq 1 "$RUNS"); do
  measure head:open head_rate "${URL[open]}"
  measure head:token head_rate "${URL[token]}" "$AUTHZ"
done
say "(b) tokens/s through the issuer with auth-acl, (c) with auth-htpasswd; ${RPS_SECS} s x $RUNS"
for i in $(seq 1 "$RUNS"); do
  measure acl:anon-one token_rate "${URL[acl]}" 0
  measure acl:anon-distinct token_rate "${URL[acl]}" 1
  measure acl:basic-one token_rate "${URL[acl]}" 0 "$BASIC"
  measure acl:basic-distinct token_rate "${URL[acl]}" 1 "$BASIC"
  measure htpasswd:basic-one token_rate "${URL[htpasswd]}" 0 "$BASIC"
  measure htpasswd:basic-distinct token_rate "${URL[htpasswd]}" 1 "$BASIC"
done

med() { local l=${RUNLIST[$1]}; [[ " $l " == *" ERR "* ]] && echo ERR || median $l; }
pass() { awk -v v="$1" -v t="$2" 'BEGIN {print (v != "ERR" && v >= t) ? "PASS" : "FAIL"}'; }
H_OPEN=$(med head:open); H_TOKEN=$(med head:token)
H_RATIO=$(awk -v a="$H_TOKEN" -v b="$H_OPEN" 'BEGIN {if (a == "ERR" || b == "ERR" || b == 0) print "ERR"; else printf "%.2f", a/b}')
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }
{
  echo "# Auth benchmark"
  echo
  echo "Written by \`bench/auth.sh\` on $(date -u +%Y-%m-%dT%H:%M:%SZ), berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), $NCPU x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $CONNS connections, ${RPS_SECS} s per rate, medians of $RUNS, logs at $BENCH_LOG_LEVEL."
  echo
  echo "| figure | measured | target | result |"
  echo "|---|---:|---|---|"
  row "(a) manifest HEAD with a bearer token (ES256, x5c) / without auth [req/s]" "$H_TOKEN / $H_OPEN = ${H_RATIO}x" ">= 0.80x" "$(pass "$H_RATIO" 0.80)"
  row "(b) auth-acl, anonymous, one scope [tokens/s]" "$(med acl:anon-one)" ">= 5000" "$(pass "$(med acl:anon-one)" 5000)"
  row "(b) auth-acl, anonymous, a new scope per request [tokens/s]" "$(med acl:anon-distinct)" ">= 5000" "$(pass "$(med acl:anon-distinct)" 5000)"
  row "(b) auth-acl, Basic (bcrypt cost $ACL_COST), one scope [tokens/s]" "$(med acl:basic-one)" ">= 5000" "$(pass "$(med acl:basic-one)" 5000)"
  row "(b) auth-acl, Basic (bcrypt cost $ACL_COST), a new scope per request [tokens/s]" "$(med acl:basic-distinct)" "reported" ""
  row "(c) auth-htpasswd, Basic (bcrypt cost $HTPASSWD_COST), one scope [tokens/s]" "$(med htpasswd:basic-one)" "reported" ""
  row "(c) auth-htpasswd, Basic (bcrypt cost $HTPASSWD_COST), a new scope per request [tokens/s]" "$(med htpasswd:basic-distinct)" "reported" ""
  echo
  echo "Individual runs: $(for k in head:open head:token acl:anon-one acl:anon-distinct acl:basic-one acl:basic-distinct htpasswd:basic-one htpasswd:basic-distinct; do printf '%s %s; ' "$k" "${RUNLIST[$k]% }"; done)"
  echo
  echo "A new scope per request is a different decision-cache key, so the policy plugin (and, with Basic, bcrypt) runs for every token; one scope measures the cached path. Every request must answer 2xx, or the figure is ERR."
} >"$HERE/results/auth.md"
cat "$HERE/results/auth.md"
! grep -q '| FAIL |' "$HERE/results/auth.md"

# Helpers shared by bench/run.sh and bench/plugins.sh (sourced). Callers set CLIENT_CPUS and
# WORK (a scratch directory) before using client/put_blob/get_blob.

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "bench: $*" >&2; exit 2; }
client() { taskset -c "$CLIENT_CPUS" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "ERR"; else if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", b-a}'; }

# RUNS random blobs of BLOB_MIB MiB in $WORK: BLOB[i] (file) and DIGEST[i].
declare -a BLOB DIGEST
make_blobs() {
  local i
  for i in $(seq 1 "$RUNS"); do
    BLOB[$i]="$WORK/blob$i.bin"
    head -c "${BLOB_MIB}M" /dev/urandom >"${BLOB[$i]}"
    DIGEST[$i]="sha256:$(sha256sum "${BLOB[$i]}" | cut -d' ' -f1)"
  done
}

# 1. monolithic blob upload: POST /blobs/uploads/ then PUT <location>?digest= with the whole body.
#    (distribution 2.8.2 ignores POST ?digest= with a body, so both get the two-request form.)
put_blob() { # server file digest repo -> MB/s on stdout
  local base=$1 file=$2 digest=$3 repo=$4 hdrs loc out code t_post t_put size
  hdrs=$(client curl -s -o /dev/null -D - -w '\n%{time_total}' -X POST "$base/v2/$repo/blobs/uploads/") || return 1
  t_post=$(printf '%s\n' "$hdrs" | tail -1)
  loc=$(printf '%s\n' "$hdrs" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  [ -n "$loc" ] || { echo "POST gave no Location: $hdrs" >&2; return 1; }
  case "$loc" in http*) ;; /*) loc="$base$loc" ;; *) loc="$base/v2/$repo/blobs/uploads/$loc" ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  out=$(client curl -s -o "$WORK/put.body" -w '%{http_code} %{time_total} %{size_upload}' -X PUT \
        -H 'Content-Type: application/octet-stream' --data-binary "@$file" "$loc") || return 1
  read -r code t_put size <<<"$out"
  [ "$code" = 201 ] || { echo "PUT answered $code: $(head -c 500 "$WORK/put.body")" >&2; return 1; }
  awk -v s="$size" -v a="$t_post" -v b="$t_put" 'BEGIN {printf "%.1f\n", s/(a+b)/1e6}'
}

get_blob() { # server digest repo -> MB/s
  local base=$1 digest=$2 repo=$3 out code size t
  out=$(client curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
        "$base/v2/$repo/blobs/$digest") || return 1
  read -r code size t <<<"$out"
  [ "$code" = 200 ] || { echo "GET blob answered $code" >&2; return 1; }
  awk -v s="$size" -v t="$t" 'BEGIN {printf "%.1f\n", s/t/1e6}'
}


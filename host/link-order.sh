#!/usr/bin/env bash
# Writes host/link-order.txt: the functions of the `berth` binary that a registry runs (start,
# pushes and pulls with skopeo, curl and the Python client, listings, deletes, the benchmark's
# own clients, each request's notification delivered to a webhook, a metrics scrape, shutdown),
# as valgrind's callgrind saw them: the steady state of manifest and blob GETs first, its busiest
# functions first, then the rest in the order they first ran. host/build.rs hands the list to
# the linker, which lays those functions out first and together (see there for why). Run it
# after a change that moves much code (a new dependency, a reworked request path); a list gone
# stale costs locality, never correctness.
#
#   bash host/link-order.sh        # needs valgrind and skopeo; builds the release binaries
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "link-order.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "link-order.sh: skopeo is needed (bash tests/setup.sh)" >&2; exit 1; }
cargo build --release -p berth -p berth-bench
BIN=$PWD/target/release/berth
BENCH=$PWD/target/release/berth-bench
W=$(mktemp -d)
PID=
"$BENCH" receive >"$W/receiver" &
RECEIVER=$!
trap 'kill "$PID" "$RECEIVER" 2>/dev/null || true; rm -rf "$W"' EXIT
for _ in $(seq 1 100); do [ -s "$W/receiver" ] && break; sleep 0.1; done
RECEIVER_URL=$(head -1 "$W/receiver")
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
DPORT=$(free_port)
U=http://127.0.0.1:$PORT
H=127.0.0.1:$PORT
cat >"$W/config.yml" <<EOF
log: {level: info}
http:
  addr: "$H"
  debug: {addr: "127.0.0.1:$DPORT"}
storage:
  filesystem: {rootdirectory: $W/data}
  delete: {enabled: true}
notifications:
  endpoints: [{name: trace, url: "$RECEIVER_URL", timeout: 5s, backoff: 1s}]
  outbox: {directory: $W/outbox}
EOF
valgrind --tool=callgrind --demangle=no --dump-line=no --callgrind-out-file="$W/callgrind.out" \
  "$BIN" serve --config "$W/config.yml" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -sf -o /dev/null "$U/v2/" && break; sleep 0.2; done
curl -sf -o /dev/null "$U/v2/" || { cat "$W/log" >&2; echo "link-order.sh: berth did not start" >&2; exit 1; }

# skopeo: push and pull an image and a multi-arch index, inspect, list tags.
python3 tests/ocilayout.py big "$W/img" --tag t --size-mib 8 --seed 7 >/dev/null
python3 tests/ocilayout.py multiarch "$W/multi" --tag m >/dev/null
skopeo copy --quiet --dest-tls-verify=false --preserve-digests oci:"$W/img":t "docker://$H/work/img:1"
skopeo copy --quiet --dest-tls-verify=false --preserve-digests --all oci:"$W/multi":m "docker://$H/work/multi:1"
skopeo copy --quiet --src-tls-verify=false "docker://$H/work/img:1" oci:"$W/pulled":x
skopeo copy --quiet --src-tls-verify=false --all "docker://$H/work/multi:1" oci:"$W/pulled2":x
skopeo inspect --tls-verify=false "docker://$H/work/img:1" >/dev/null
skopeo list-tags --tls-verify=false "docker://$H/work/img" >/dev/null

# The Python client: every kind of request, the chunked upload, mount, deletes, bad input.
(cd tests && python3 - "$U" <<'PY'
import sys
import requests
import ocihelpers as oh
u = sys.argv[1]
s = requests.Session()
oh.make_image(u, "work/py", "a")
for accept in (oh.OCI_MANIFEST, ",".join(oh.ALL_MANIFEST_TYPES)):
    s.get(f"{u}/v2/work/py/manifests/a", headers={"Accept": accept})
    s.head(f"{u}/v2/work/py/manifests/a", headers={"Accept": accept})
for path in ("_catalog", "_catalog?n=1", "work/py/tags/list", "work/py/tags/list?n=1&last=a",
             "work/nope/manifests/zz", "work/py/blobs/sha256:" + "0" * 64, "work/py/referrers/sha256:" + "0" * 64):
    s.get(f"{u}/v2/{path}")
dg = oh.push_blob(u, "work/py", oh.random_bytes(300000))
s.get(f"{u}/v2/work/py/blobs/{dg}")
s.head(f"{u}/v2/work/py/blobs/{dg}")
s.get(f"{u}/v2/work/py/blobs/{dg}", headers={"Range": "bytes=0-99"})
data = oh.random_bytes(200000)
loc = oh.absolute(u, oh.start_upload(u, "work/py"))
for start in (0, 100000):
    r = s.patch(loc, data=data[start:start + 100000], headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"{start}-{start + 99999}"})
    loc = oh.absolute(u, r.headers["Location"])
    s.get(loc)
s.put(loc + ("&" if "?" in loc else "?") + "digest=" + oh.digest(data))
s.post(f"{u}/v2/work/other/blobs/uploads/?mount={dg}&from=work/py")
r = oh.get_manifest(u, "work/py", "a")
s.delete(f"{u}/v2/work/py/manifests/{r.headers['Docker-Content-Digest']}")
s.delete(f"{u}/v2/work/py/blobs/{dg}")
s.put(f"{u}/v2/work/py/manifests/bad", data=b"{", headers={"Content-Type": oh.OCI_MANIFEST})
PY
)

# The benchmark's clients (bench/run.sh): monolithic PUT and GET with curl, berth-bench.
head -c 8388608 /dev/urandom >"$W/blob"
D=sha256:$(sha256sum "$W/blob" | cut -d' ' -f1)
curl -sf -o /dev/null -X POST -H "Content-Type: application/octet-stream" --data-binary @"$W/blob" \
  "$U/v2/bench/blobs/uploads/?digest=$D"
curl -sf -o /dev/null "$U/v2/bench/blobs/$D"
curl -sf -o /dev/null -I "$U/v2/bench/blobs/$D"
"$BENCH" pushes --url "$U" --count 5 --repo bench/pushes >"$W/bench.log" 2>&1
curl -sf -o /dev/null "http://127.0.0.1:$DPORT/metrics"
curl -sf -o /dev/null "http://127.0.0.1:$DPORT/debug/health"
sleep 1  # the last events delivered

# The steady state the benchmarks measure, in a dump of its own: manifest and blob GETs, each
# with its pull event delivered (the hot path, laid out first).
callgrind_control -d "$PID" >/dev/null
"$BENCH" load --url "$U/v2/bench/pushes/manifests/t0" --connections 4 --duration 2 >>"$W/bench.log" 2>&1
"$BENCH" load --url "$U/v2/bench/blobs/$D" --connections 4 --duration 1 >>"$W/bench.log" 2>&1
sleep 1  # the last events delivered
callgrind_control -d "$PID" >/dev/null

kill -TERM "$PID"
wait "$PID" || true
# Every function callgrind named that the binary defines: the steady state's first, the most
# instructions first (what runs on every request shares the fewest pages and cache lines: GETs
# measured 3-8% faster than with the same functions in first-run order); then the rest,
# first appearance first.
python3 - "$W" "$BIN" host/link-order.txt <<'PY'
import re
import subprocess
import sys
work, binary, dest = sys.argv[1:]
defined = set()
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
# callgrind_annotate: "  1,234 (0.12%)  file:function [object]", each function's own instructions.
annotated = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", f"{work}/callgrind.out.2"],
                           capture_output=True, text=True, check=True).stdout
own = {}
for line in annotated.splitlines():
    m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+[^:]*:(\S+) \[", line)
    if m and m.group(2) in defined:
        own[m.group(2)] = own.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
names = sorted(own, key=lambda n: -own[n])
seen = set(names)
for dump in ("callgrind.out.1", "callgrind.out.2", "callgrind.out"):
    for line in open(f"{work}/{dump}"):
        m = re.match(r"^c?fn=\(\d+\) (\S+)", line)
        if m and m.group(1) in defined and m.group(1) not in seen:
            seen.add(m.group(1))
            names.append(m.group(1))
open(dest, "w").write("\n".join(names) + "\n")
print(f"link-order.sh: {len(names)} functions written to {dest}, the {len(own)} of the steady state first")
PY

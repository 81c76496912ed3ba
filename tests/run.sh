#!/usr/bin/env bash
# The whole test suite: unit and driver tests (cargo) beside the black-box suite that drives the
# release binary over HTTP with skopeo and Python clients, then (from the black-box suite's last
# file on) the registry's black-box API suite again on the storage-fs plugin, on S3 (moto's
# server) and on Azure Blob (Azurite), both started here on loopback. One release build serves
# all of it; the plugins are built from source first (no .wasm is committed).
set -euo pipefail
cd "$(dirname "$0")/.."
# The host's release build is the longest step and needs nothing the setup installs, so it
# runs while the setup downloads and installs and the plugins build (its own target
# directory); its output is shown when it ends.
build_log="$(mktemp)"
cargo build --release -p berth >"$build_log" 2>&1 & host_build=$!
bash tests/setup.sh
(cd plugins && cargo build --target wasm32-wasip2 --release)
# The JavaScript and Python plugins, each built once (an up-to-date one is left alone).
bash plugins/build-components.sh
status=0
wait "$host_build" || status=$?
cat "$build_log"
rm -f "$build_log"
[ "$status" -eq 0 ] || { echo "the host build failed" >&2; exit 1; }
# The object storage services (moto's S3 and Azurite), stopped on exit: one pair for the
# black-box suites, and one for the unit and driver tests, which run at the same time. moto is
# one Python process that scans a whole bucket on every listing: sharing it, the driver suite's
# listings paid for every object the black-box suite wrote, and both waited on one core.
work_dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work_dir"' EXIT
services() { # name: starts a pair, leaves their environment in $work_dir/name.env
  local env_file="$work_dir/$1.env"
  : >"$env_file"
  python3 tests/objectstores.py >"$env_file" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 600); do
    [ "$(wc -l <"$env_file")" -ge 2 ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "object storage services failed to start" >&2; exit 1; }
    sleep 0.1
  done
  echo "object storage services did not start within 60 s" >&2
  exit 1
}
services black-box
services unit
# The plugins and services were just set up: a test that finds one missing must fail, not skip.
export BERTH_REQUIRE_PLUGINS=1 BERTH_REQUIRE_SERVICES=1
# The unit and driver tests first build their own test binary (CPU) while the black-box suite
# mostly waits on sockets and timers, so the two run at once; cargo's output is shown whole
# at the end. The test binary reuses the release build's dependencies; only the berth crate
# itself is compiled again (with its tests), unoptimised: that compile is most of the cost,
# and the tests' work is in the dependencies (wasmtime, hashing, I/O), which stay optimised.
# shellcheck disable=SC1091
(source "$work_dir/unit.env"
 exec cargo test --release -p berth --lib --config 'profile.release.package.berth.opt-level=0' \
  >"$work_dir/cargo.log" 2>&1) & unit=$!
# shellcheck disable=SC1091
source "$work_dir/black-box.env"
failed=0
cd tests
echo "== black-box suite, native filesystem driver"
# Two workers, each taking whole files (module fixtures run once): most tests wait on servers,
# sockets and timers, so two at once nearly halve the suite's time on two cores. The longest
# files go first, in conftest.py's order (`--no-loadscope-reorder`), and the slowest tests are
# listed at the end to show where the time went.
# Once every file but the last has finished (conftest.py creates BERTH_TAIL_FILE), one worker
# has nothing left: the suites below start then, beside the last file, instead of after it.
tail_mark="$work_dir/black-box.tail"
BERTH_TAIL_FILE="$tail_mark" python3 -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder \
  --durations=15 "$@" & black_box=$!
while [ ! -e "$tail_mark" ] && kill -0 "$black_box" 2>/dev/null; do sleep 1; done
# The registry API suite on the other drivers: the three runs share nothing (their own servers,
# ports, temporary directories and key prefixes) and mostly wait on I/O, so they run at once;
# each one's output is shown whole when it ends.
suites_dir="$work_dir"
suite() { # name storage pytest-arguments...
  local name=$1 storage=$2
  shift 2
  BERTH_TEST_STORAGE=$storage python3 -m pytest -q -p no:cacheprovider --basetemp="$suites_dir/$name.tmp" "$@" \
    >"$suites_dir/$name.log" 2>&1
}
# The stalled-client tests too: the component driver's reader and writer threads park as the
# native driver's do.
suite storage-fs storage-fs test_api_*.py test_interop.py test_skopeo.py \
  test_limits.py::test_downloads_no_one_reads_hold_no_thread_and_little_memory test_limits.py::test_uploads_that_stall_hold_no_thread \
  test_limits.py::test_a_download_that_pauses_goes_on_where_it_stood \
  "$@" & fs=$!
# The S3 suite is the longest of the three, and most of its time is moto's (one Python process,
# one core): two workers, each starting a moto server of its own (no shared endpoint).
(unset BERTH_TEST_S3_ENDPOINT
 suite s3 s3 -n 2 --dist loadfile test_api_*.py test_interop.py test_skopeo.py "$@") & s3=$!
# Azurite answers requests concurrently; the suite mostly waits on it: two workers as well.
suite azure azure -n 2 --dist loadfile test_api_*.py test_skopeo.py "$@" & az=$!
wait "$black_box" || failed=1
for run in "storage-fs component driver:storage-fs:$fs" "S3 driver (moto server):s3:$s3" "Azure driver (Azurite):azure:$az"; do
  IFS=: read -r title name pid <<<"$run"
  status=0
  wait "$pid" || status=$?
  echo "== registry API suite, $title"
  cat "$suites_dir/$name.log"
  [ "$status" -eq 0 ] || failed=1
done
status=0
wait "$unit" || status=$?
echo "== unit and storage-driver tests (cargo test --release -p berth --lib)"
cat "$work_dir/cargo.log"
[ "$status" -eq 0 ] || failed=1
exit $failed

#!/usr/bin/env bash
# The whole test suite: unit and driver tests (cargo), then the black-box suite that drives the
# release binary over HTTP with skopeo and Python clients, then the registry's black-box API
# suite again on the storage-fs plugin. One release build serves all of it; the plugins are
# built from source first (no .wasm is committed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
(cd plugins && cargo build --target wasm32-wasip2 --release)
cargo build --release -p berth
# The plugins were just built: a test that finds one missing must fail, not skip.
export BERTH_REQUIRE_PLUGINS=1
cargo test --release -p berth
cd tests
echo "== black-box suite, native filesystem driver"
python3 -m pytest -q -p no:cacheprovider "$@"
echo "== registry API suite, storage-fs component driver"
BERTH_TEST_STORAGE=storage-fs python3 -m pytest -q -p no:cacheprovider test_api_*.py test_interop.py test_skopeo.py "$@"

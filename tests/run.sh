#!/usr/bin/env bash
# The whole test suite: unit and driver tests (cargo), then the black-box suite that drives the
# release binary over HTTP with skopeo and Python clients. One release build serves both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo build --release -p berth
cargo test --release -p berth
cd tests
python3 -m pytest -q -p no:cacheprovider "$@"

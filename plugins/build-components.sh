#!/usr/bin/env bash
# Builds the first-party plugins written in JavaScript and Python into
# plugins/target/components/ (the Rust ones come from `cargo build --target wasm32-wasip2`).
# Each is built with its SDK's one command (sdk-js/build.mjs, sdk-py/build.py), which leaves an
# up-to-date component alone, so a second run costs nothing. The JavaScript and Python builds
# run side by side (each is mostly one core). Needs tests/setup.sh's toolchains: node with
# sdk-js/node_modules (componentize-js), and componentize-py.
set -euo pipefail
cd "$(dirname "$0")/.."
out=plugins/target/components
mkdir -p "$out"
js() {
  node sdk-js/build.mjs admission-policy plugins/admission-immutable-tags/plugin.js "$out/berth_admission_immutable_tags.wasm"
  node sdk-js/build.mjs admission-policy plugins/admission-rules-js/plugin.js "$out/berth_admission_rules_js.wasm"
}
py() {
  python3 sdk-py/build.py admission-policy plugins/admission-rules-py "$out/berth_admission_rules_py.wasm"
  python3 sdk-py/build.py admission-policy plugins/admission-hostile-py "$out/berth_admission_hostile_py.wasm"
}
js & j=$!
py & p=$!
status=0
wait $j || status=$?
wait $p || status=$?
exit $status

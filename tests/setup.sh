#!/usr/bin/env bash
# Installs what the test suite and the benchmark use, skipping what is already there: the
# wasm32-wasip2 target for the plugins,
# skopeo and distribution (the interop/benchmark peer) from Debian, wrk for load, openssl for
# the HTTPS tests' certificates, the
# Python test client's packages from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import pytest, requests, yaml, prometheus_client' 2>/dev/null || python3 -m pip install -q -r tests/requirements.txt
# Plugins are WebAssembly components built for WASI preview 2.
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

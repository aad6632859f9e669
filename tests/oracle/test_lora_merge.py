"""A LoRA adapter applied at run time (shrink/expand over the base weights)
gives the same greedy tokens as the base model with the adapter merged into
its weights, W + (alpha/r)·B·A (alpha/sqrt(r) for rsLoRA), for adapters of
several ranks and target sets; q and k use llama.cpp's rope row order."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import SOURCE, run_tool
from test_quant_formats import HEAD_DIM, N_HEAD, N_KV, N_LAYER, T, write_model

GGUF_NAME = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
PROMPT = "Adapters change what a model says."


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "F16": np.float16}[t["dtype"]]
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(t["shape"]).astype(np.float64)
    return out


def rope_permute(b, n_head):
    """Hugging Face row order -> llama.cpp's (as its converter permutes)."""
    return b.reshape(n_head, 2, b.shape[0] // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def make_adapter(base, out, *args):
    subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", base, "--out", out,
                    *args], check=True, capture_output=True)
    return out


def storage_round(x, dtype):
    """What --lora-dtype stores for float weights: IEEE half, or bfloat16 by
    round-to-nearest-even of the float32 bits."""
    if dtype == "float16":
        return x.astype(np.float32).astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    return x


def merged_deltas(adapter_dir, dtype="float32"):
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / np.sqrt(r) if cfg["use_rslora"] else alpha / r
    tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    deltas = {}
    for layer in range(N_LAYER):
        for proj, name in GGUF_NAME.items():
            kind = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{kind}.{proj}"
            if f"{prefix}.lora_A.weight" not in tensors:
                continue
            a, b = tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"]
            a, b = storage_round(a, dtype), storage_round(b, dtype)
            if proj == "q_proj":
                b = rope_permute(b, N_HEAD)
            elif proj == "k_proj":
                b = rope_permute(b, N_KV)
            deltas[f"blk.{layer}.{name}.weight"] = (scale * (b @ a)).astype(np.float32)
    return deltas


def generate(model, *extra):
    r = run_tool("tessera-generate", "--model", model, "--prompt", PROMPT, "--max-tokens", "24", "--format", "json",
                 *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["token_ids"]


CASES = [
    ["--rank", "4", "--alpha", "8", "--targets", "q_proj,v_proj", "--seed", "1", "--scale", "0.08"],
    ["--rank", "16", "--alpha", "16", "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
     "--seed", "2", "--dtype", "F16"],
    ["--rank", "8", "--alpha", "4", "--rslora", "--targets", "k_proj,o_proj,down_proj", "--seed", "3",
     "--scale", "0.1"],
]


@pytest.mark.parametrize("args", CASES, ids=["r4-qv", "r16-all-f16", "r8-rslora-kod"])
def test_adapter_equals_merged_weights(tmp_path, args):
    base = str(tmp_path / "base.gguf")
    write_model(base, T.F32, seed=7)
    adapter = make_adapter(base, str(tmp_path / "adapter"), *args)
    merged = str(tmp_path / "merged.gguf")
    write_model(merged, T.F32, seed=7, deltas=merged_deltas(adapter))

    plain = generate(base)
    with_adapter = generate(base, "--lora", adapter, "--lora-dtype", "float32")
    reference = generate(merged)
    assert with_adapter == reference
    assert with_adapter != plain, "the adapter should change the output"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_adapter_equals_weights_merged_from_its_rounded_a_and_b(tmp_path, dtype):
    """--lora-dtype float16/bfloat16 stores A and B rounded to that type and
    accumulates in float32: the near-tie rule is exact equality with the base
    model merged with the rounded A and B (the rounding is the only change),
    and the adapter still changes the output."""
    base = str(tmp_path / "base.gguf")
    write_model(base, T.F32, seed=7)
    adapter = make_adapter(base, str(tmp_path / "adapter"), *CASES[1])
    merged = str(tmp_path / "merged.gguf")
    write_model(merged, T.F32, seed=7, deltas=merged_deltas(adapter, dtype))
    with_adapter = generate(base, "--lora", adapter, "--lora-dtype", dtype)
    assert with_adapter == generate(merged)
    assert with_adapter != generate(base)

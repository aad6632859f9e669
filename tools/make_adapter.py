#!/usr/bin/env python3
"""Writes a PEFT-format LoRA adapter for a GGUF base model, with deterministic
random weights: adapter_config.json and adapter_model.safetensors laid out
exactly as PEFT saves them (tensor names, shapes [r, in] / [out, r]).

    .venv/bin/python tools/make_adapter.py --base models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --out adapters/demo --rank 8 --alpha 16 --targets q_proj,v_proj --seed 1 [--rslora] [--dtype F16]
"""
import argparse
import json
import os
import struct

import gguf
import numpy as np

PROJ = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
        "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def base_shapes(path):
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    val = lambda k: int(r.fields[f"{arch}.{k}"].parts[-1][0])
    n_embd, n_ff, n_head, n_layer = val("embedding_length"), val("feed_forward_length"), val("attention.head_count"), val("block_count")
    n_kv = val("attention.head_count_kv") if f"{arch}.attention.head_count_kv" in r.fields else n_head
    head_dim = n_embd // n_head
    q, kv = n_head * head_dim, n_kv * head_dim
    shapes = {"q_proj": (n_embd, q), "k_proj": (n_embd, kv), "v_proj": (n_embd, kv), "o_proj": (q, n_embd),
              "gate_proj": (n_embd, n_ff), "up_proj": (n_embd, n_ff), "down_proj": (n_ff, n_embd)}
    return n_layer, shapes


def write_safetensors(path, tensors, dtype):
    np_dtype = {"F32": np.float32, "F16": np.float16}[dtype]
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name].astype(np_dtype)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # as safetensors pads the header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=0.05, help="standard deviation of the random weights")
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--dtype", choices=["F32", "F16"], default="F32")
    a = ap.parse_args()
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in targets:
        if t not in PROJ:
            ap.error(f"unknown target {t!r}; choose from {', '.join(PROJ)}")
    n_layer, shapes = base_shapes(a.base)
    rng = np.random.default_rng(a.seed)
    tensors = {}
    for layer in range(n_layer):
        for t in targets:
            fan_in, fan_out = shapes[t]
            prefix = f"base_model.model.model.layers.{layer}.{PROJ[t]}.{t}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((a.rank, fan_in)) * a.scale
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((fan_out, a.rank)) * a.scale
    os.makedirs(a.out, exist_ok=True)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": a.rank,
              "lora_alpha": a.alpha if a.alpha is not None else 2 * a.rank, "lora_dropout": 0.0,
              "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "use_rslora": a.rslora,
              "use_dora": False, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
              "base_model_name_or_path": os.path.basename(a.base), "inference_mode": True}
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(a.out, "adapter_model.safetensors"), tensors, a.dtype)
    print(f"wrote {a.out}: rank {a.rank}, targets {','.join(targets)}, {len(tensors)} tensors")


if __name__ == "__main__":
    main()

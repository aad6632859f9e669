#!/usr/bin/env python3
"""Writes an all-F32 GGUF that llama.cpp runs, from the dense weights of a
Hugging Face checkpoint directory, so llama.cpp can serve as the oracle for
HF-format (and quantized-then-dequantized) weights:

    .venv/bin/python tools/checkpoints/hf_to_gguf.py --hf DIR --like ORIGINAL.gguf --out OUT.gguf \\
        [--weights FILE.safetensors]

DIR holds model.safetensors or model-*-of-*.safetensors + model.safetensors.index.json
(F16, BF16 or F32). --weights names a safetensors file of float weights named
like the HF modules ("model.layers.N.self_attn.q_proj.weight", [out, in]), e.g.
the reference float weights of a quantized checkpoint; every tensor it holds
replaces the HF directory's, the rest come from DIR.

ORIGINAL.gguf (--like) is the GGUF the HF directory was derived from (see
gguf_to_hf.py): the output takes all its metadata (architecture, hyperparameters,
tokenizer, chat template), its tensor names and order, with general.file_type =
ALL_F32 and every tensor (token_embd and norms included) stored as F32. For the
llama architecture the q_proj/k_proj rows (and biases) are permuted back into
llama.cpp's interleaved rotary order as convert_hf_to_gguf.py's
LlamaModel.permute does:
    HF row h*hd + s*(hd/2) + i  ->  GGUF row h*hd + 2*i + s.
If the sources hold an lm_head.weight and ORIGINAL has no output.weight (tied
embeddings), output.weight is written from it (llama.cpp then uses it).

Written after (not copied from) llama.cpp's convert_hf_to_gguf.py and gguf-py's
GGUFWriter.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfio  # noqa: E402
from hfio import ConversionError, GGUFModel, HFCheckpoint, SafetensorsFile  # noqa: E402


def check_config(hf_dir: str, hp: dict) -> None:
    """config.json (when there is one) must describe the --like model: the q/k permutation
    depends on the head counts, which the tensor shapes alone do not pin down."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    pairs = [("num_hidden_layers", "n_layer"), ("hidden_size", "n_embd"), ("intermediate_size", "n_ff"),
             ("num_attention_heads", "n_head"), ("num_key_value_heads", "n_head_kv"), ("head_dim", "head_dim")]
    for key, hk in pairs:
        if key in cfg and cfg[key] is not None and int(cfg[key]) != hp[hk]:
            raise ConversionError(f"{path}: {key} is {cfg[key]}, the --like GGUF has {hp[hk]}")


def write_f32_gguf(hf_dir: str, like_gguf, out_path: str, weights: str | None = None) -> dict:
    """Writes `out_path` (see the module docstring); `like_gguf` is a path or an
    hfio.GGUFModel. Returns {"tensors", "from_weights", "from_hf"}."""
    ckpt = HFCheckpoint(hf_dir)
    override = SafetensorsFile(weights) if weights else None
    like = like_gguf if isinstance(like_gguf, GGUFModel) else GGUFModel(like_gguf)
    hp = like.hparams()
    check_config(hf_dir, hp)
    override_names = set(override.names()) if override else set()

    unknown = sorted(n for n in override_names if hfio.gguf_name(n) is None)
    if unknown:
        print(f"hf_to_gguf: ignoring {len(unknown)} tensor(s) of {weights} that are not HF module weights "
              f"(e.g. {unknown[0]})", file=sys.stderr)

    names = like.tensor_names()
    if "output.weight" not in names and ("lm_head.weight" in override_names or "lm_head.weight" in ckpt):
        names.insert(names.index("token_embd.weight") + 1, "output.weight")

    counts = {"from_weights": 0, "from_hf": 0}
    plan = []
    for g in names:
        h = hfio.hf_name(g)
        if h is None:
            raise ConversionError(f"{like.path}: tensor {g} has no HF counterpart")
        if h in override_names:
            src = "from_weights"
        elif h in ckpt:
            src = "from_hf"
        else:
            raise ConversionError(f"{h} is in neither {weights or '--weights (none)'} nor {hf_dir}")
        expect = like.shape(g) if g in like.tensors else like.shape("token_embd.weight")
        shape = override.shape(h) if src == "from_weights" else ckpt.file_of(h).shape(h)
        if tuple(shape) != tuple(expect):
            raise ConversionError(f"{h}: shape {list(shape)} from {src[5:]}, the GGUF needs {list(expect)}")
        counts[src] += 1
        plan.append((g, h, src))

    def loader(h: str, src: str):
        def load() -> np.ndarray:
            a = override.float32(h) if src == "from_weights" else ckpt.float32(h)
            if like.arch in hfio.PERMUTED_ARCHS:
                heads = hfio.qk_heads(h, hp["n_head"], hp["n_head_kv"])
                if heads is not None:
                    a = hfio.permute_qk(a, heads)
            return a
        return load

    hfio.write_f32_gguf_from(like, out_path, [(g, loader(h, src)) for g, h, src in plan])
    return {"tensors": len(plan), **counts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="HF checkpoint directory")
    ap.add_argument("--like", required=True, help="the GGUF the directory was derived from (metadata, names)")
    ap.add_argument("--out", required=True, help="the F32 GGUF to write")
    ap.add_argument("--weights", default=None, help="safetensors of float weights overriding the directory's")
    args = ap.parse_args(argv)
    try:
        s = write_f32_gguf(args.hf, args.like, args.out, args.weights)
    except ConversionError as e:
        print(f"hf_to_gguf: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {s['tensors']} F32 tensors ({s['from_weights']} from --weights, {s['from_hf']} from {args.hf})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

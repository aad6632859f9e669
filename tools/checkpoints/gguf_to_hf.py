#!/usr/bin/env python3
"""Derives a Hugging Face checkpoint directory from a GGUF model, laid out as
transformers' save_pretrained writes it (no HF checkpoint can be downloaded
here, so the GGUF is the source of truth):

    .venv/bin/python tools/checkpoints/gguf_to_hf.py --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --out /tmp/smollm2-hf [--dtype f16|bf16|f32] [--shards N] [--name NAME] [--merges-format pairs|strings]

Writes config.json, generation_config.json, model.safetensors (or
model-0000K-of-0000N.safetensors + model.safetensors.index.json),
tokenizer.json and tokenizer_config.json; *.safetensors and the index left
in DIR by an earlier run are removed first.

Weights: every tensor is dequantized to float32 with gguf-py
(GGUFReader + quants.dequantize), then stored as --dtype (bf16: round to
nearest even of the float32 bits, safetensors dtype "BF16"); norms and biases
too. Names and shapes are transformers' LlamaForCausalLM / Qwen2ForCausalLM
ones ([out_features, in_features]); lm_head.weight is left out when the GGUF
has no output.weight (tied embeddings, tie_word_embeddings=true). For the
llama architecture the q_proj/k_proj rows (and biases) are put back in HF's
half-split rotary order, inverting the permutation of llama.cpp's
convert_hf_to_gguf.py (LlamaModel.permute):
    GGUF row h*hd + 2*i + s  ->  HF row h*hd + s*(hd/2) + i
(h the head, hd the head dim, i < hd/2, s in {0,1}; heads = attention.head_count
for q, attention.head_count_kv for k). qwen2 GGUFs are not permuted.

Tokenizer: byte-level BPE only (tokenizer.ggml.model "gpt2"); tokenizer.json in
the `tokenizers` 1.0 format with the normalizer / pre-tokenizer / post-processor
/ decoder that the published tokenizer.json of the family carries, chosen by
tokenizer.ggml.pre: "smollm" (SmolLM2), "qwen2" (Qwen2.5), "llama-bpe"
(Llama 3), "gpt-2"/"default" (GPT-2).

Written after (not copied from) llama.cpp's convert_hf_to_gguf.py and gguf-py,
transformers' LlamaConfig/Qwen2Config and save_pretrained, and the tokenizers
library's tokenizer.json serialization.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfio  # noqa: E402
from hfio import ConversionError, GGUFModel  # noqa: E402

TRANSFORMERS_VERSION = "4.46.3"

DTYPES = {"f32": ("F32", "float32"), "f16": ("F16", "float16"), "bf16": ("BF16", "bfloat16")}

# --- tokenizer.json pieces, per tokenizer.ggml.pre ---------------------------------------

# The Split patterns exactly as the published tokenizer.json files carry them.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def _split(pattern: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


# pre -> (normalizer, pre_tokenizer, post-processor ByteLevel, decoder, ignore_merges)
FAMILIES = {
    # HuggingFaceTB/SmolLM2-*: Digits then GPT-2 ByteLevel regex.
    "smollm": (None,
               {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                      _byte_level(False, True, True)]},
               _byte_level(True, False, True), _byte_level(True, True, True), False),
    # Qwen/Qwen2.5-*: NFC, Split(Qwen2 regex, Isolated), ByteLevel without regex.
    "qwen2": ({"type": "NFC"},
              {"type": "Sequence", "pretokenizers": [_split(QWEN2_PATTERN), _byte_level(False, False, False)]},
              _byte_level(False, False, False), _byte_level(False, False, False), False),
    # meta-llama/Llama-3.*: Split(Llama 3 regex, Isolated), ByteLevel without regex, ignore_merges.
    "llama-bpe": (None,
                  {"type": "Sequence", "pretokenizers": [_split(LLAMA3_PATTERN), _byte_level(False, True, False)]},
                  _byte_level(True, False, True), _byte_level(True, True, True), True),
    # openai-community/gpt2: ByteLevel with its own GPT-2 regex.
    "gpt-2": (None, _byte_level(False, True, True), _byte_level(True, False, True), _byte_level(True, True, True),
              False),
}
FAMILIES["llama3"] = FAMILIES["llama-v3"] = FAMILIES["llama-bpe"]
FAMILIES["default"] = FAMILIES["gpt-2"]
# llama.cpp's default add_bos for these pre-tokenizers when tokenizer.ggml.add_bos_token is absent.
DEFAULT_ADD_BOS = {"llama-bpe": True, "llama3": True, "llama-v3": True}

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def _template_processor(bos: str | None, bos_id: int | None, eos: str | None, eos_id: int | None) -> dict:
    def special(tok, type_id):
        return {"SpecialToken": {"id": tok, "type_id": type_id}}

    single, pair, specials = [], [], {}
    if bos is not None:
        single.append(special(bos, 0))
        specials[bos] = {"id": bos, "ids": [bos_id], "tokens": [bos]}
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    if eos is not None:
        single.append(special(eos, 0))
        specials[eos] = {"id": eos, "ids": [eos_id], "tokens": [eos]}
    pair = list(single)
    if bos is not None:
        pair.append(special(bos, 1))
    pair.append({"Sequence": {"id": "B", "type_id": 1}})
    if eos is not None:
        pair.append(special(eos, 1))
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


def tokenizer_files(model: GGUFModel, merges_format: str = "pairs") -> tuple[dict, dict]:
    """(tokenizer.json, tokenizer_config.json) for the GGUF's byte-level BPE vocabulary."""
    kind = model.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConversionError(f"{model.path}: tokenizer.ggml.model is {kind!r}; only byte-level BPE (\"gpt2\") "
                              "vocabularies can be written as tokenizer.json by this tool")
    pre = model.get("tokenizer.ggml.pre", "default")
    if pre not in FAMILIES:
        raise ConversionError(f"{model.path}: tokenizer.ggml.pre {pre!r} is not supported "
                              f"(supported: {', '.join(sorted(FAMILIES))})")
    normalizer, pre_tokenizer, post_bl, decoder, ignore_merges = FAMILIES[pre]

    tokens = model.get("tokenizer.ggml.tokens")
    types = model.get("tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens))
    merges = model.get("tokenizer.ggml.merges", [])

    vocab: dict[str, int] = {}
    added = []
    for i, (text, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_UNUSED:
            continue  # llama.cpp's [PADn] fillers up to the embedding rows: not part of the HF vocabulary
        if ty == TOKEN_BYTE:
            raise ConversionError(f"{model.path}: token {i} is a BYTE token, unexpected in a byte-level BPE vocabulary")
        if text in vocab:
            if ty in (TOKEN_NORMAL, 0):
                raise ConversionError(f"{model.path}: token text {text!r} appears twice ({vocab[text]} and {i})")
        else:
            vocab[text] = i
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            special = ty != TOKEN_USER_DEFINED
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": not special, "special": special})

    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise ConversionError(f"{model.path}: merge {m!r} is not two tokens separated by one space")
        pairs.append(parts)
    merges_out = pairs if merges_format == "pairs" else [" ".join(p) for p in pairs]

    def tok(key):
        i = model.get(f"tokenizer.ggml.{key}_token_id")
        if i is None or not (0 <= int(i) < len(tokens)):
            return None, None
        return tokens[int(i)], int(i)

    bos, bos_id = tok("bos")
    eos, eos_id = tok("eos")
    unk, _ = tok("unknown")
    pad, _ = tok("padding")
    add_bos = bool(model.get("tokenizer.ggml.add_bos_token", DEFAULT_ADD_BOS.get(pre, False)))
    add_eos = bool(model.get("tokenizer.ggml.add_eos_token", False))
    if (add_bos and bos is None) or (add_eos and eos is None):
        raise ConversionError(f"{model.path}: add_bos/add_eos set but the token id is missing")

    post = post_bl
    if add_bos or add_eos:
        post = {"type": "Sequence", "processors": [
            post_bl, _template_processor(bos if add_bos else None, bos_id, eos if add_eos else None, eos_id)]}

    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges_out,
        },
    }

    config = {
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for a in added
        },
        "bos_token": bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "model_max_length": int(model.arch_get("context_length", 2048)),
        "pad_token": pad,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": unk,
    }
    template = model.get("tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    config = dict(sorted(config.items()))
    return tokenizer_json, config


# --- config.json ----------------------------------------------------------------------------

def model_config(model: GGUFModel, hp: dict, torch_dtype: str, tied: bool, qkv_bias: bool,
                 name: str | None) -> tuple[dict, dict]:
    arch = model.arch
    hf_arch, model_type = hfio.HF_ARCH[arch]
    bos = model.get("tokenizer.ggml.bos_token_id")
    eos = model.get("tokenizer.ggml.eos_token_id")
    eot = model.get("tokenizer.ggml.eot_token_id")
    eos_gen = eos if eot is None or eot == eos else [int(eos), int(eot)]

    rope_scaling = None
    stype = model.arch_get("rope.scaling.type")
    if stype is not None and stype != "none":
        factor = model.arch_get("rope.scaling.factor")
        rope_scaling = {"rope_type": stype, "type": stype, "factor": hfio.float_repr32(factor)}
        orig = model.arch_get("rope.scaling.original_context_length")
        if orig is not None:
            rope_scaling["original_max_position_embeddings"] = int(orig)

    cfg = {
        "architectures": [hf_arch],
        "attention_bias": qkv_bias,
        "attention_dropout": 0.0,
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_id": None if eos is None else int(eos),
        "head_dim": hp["head_dim"],
        "hidden_act": "silu",
        "hidden_size": hp["n_embd"],
        "initializer_range": 0.02,
        "intermediate_size": hp["n_ff"],
        "max_position_embeddings": hp["n_ctx"],
        "model_type": model_type,
        "num_attention_heads": hp["n_head"],
        "num_hidden_layers": hp["n_layer"],
        "num_key_value_heads": hp["n_head_kv"],
        "rms_norm_eps": hfio.float_repr32(hp["eps"]),
        "rope_scaling": rope_scaling,
        "rope_theta": hfio.float_repr32(hp["rope_theta"]),
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": hp["vocab_size"],
    }
    if model_type == "llama":
        cfg.update({"mlp_bias": False, "pretraining_tp": 1})
    else:
        cfg.update({"max_window_layers": hp["n_layer"], "sliding_window": None, "use_sliding_window": False})
    if name:
        cfg["_name_or_path"] = name
    cfg = dict(sorted(cfg.items()))
    gen = {"_from_model_config": True, "bos_token_id": cfg["bos_token_id"], "eos_token_id": eos_gen,
           "transformers_version": TRANSFORMERS_VERSION}
    return cfg, gen


# --- weights ----------------------------------------------------------------------------------

def hf_state_order(model: GGUFModel, hp: dict) -> list[tuple[str, str]]:
    """(HF name, GGUF name) in the order of the HF model's state dict; refuses GGUF
    tensors that have no HF counterpart."""
    by_hf = {}
    for g in model.tensor_names():
        h = hfio.hf_name(g)
        if h is None:
            raise ConversionError(f"{model.path}: tensor {g} has no Llama/Qwen2 HF counterpart")
        by_hf[h] = g
    order = ["model.embed_tokens.weight"]
    for i in range(hp["n_layer"]):
        order += [f"model.layers.{i}.{s}" for s in hfio.HF_LAYER_ORDER]
    order += ["model.norm.weight", "lm_head.weight"]
    out = [(h, by_hf.pop(h)) for h in order if h in by_hf]
    if by_hf:
        raise ConversionError(f"{model.path}: unexpected tensors {sorted(by_hf.values())[:5]}")
    for must in ("model.embed_tokens.weight", "model.norm.weight"):
        if must not in dict(out):
            raise ConversionError(f"{model.path}: {hfio.gguf_name(must)} is missing")
    return out


def hf_tensor(model: GGUFModel, hp: dict, hf: str, g: str) -> np.ndarray:
    """One HF tensor as float32: dequantized, q/k rows un-permuted for llama."""
    a = model.float32(g)
    if model.arch in hfio.PERMUTED_ARCHS:
        heads = hfio.qk_heads(hf, hp["n_head"], hp["n_head_kv"])
        if heads is not None:
            a = hfio.unpermute_qk(a, heads)
    return a


def shard_groups(items: list[tuple[str, int]], n: int) -> list[list[str]]:
    """Splits (name, bytes) in order into n contiguous non-empty groups of about equal size."""
    if n > len(items):
        raise ConversionError(f"--shards {n} exceeds the number of tensors ({len(items)})")
    groups, cur, cur_b = [], [], 0
    rem_b = sum(b for _, b in items)
    for idx, (name, nb) in enumerate(items):
        shards_left = n - len(groups)
        cur.append(name)
        cur_b += nb
        left_after = len(items) - idx - 1
        if shards_left > 1 and (cur_b >= rem_b / shards_left or left_after == shards_left - 1):
            groups.append(cur)
            rem_b -= cur_b
            cur, cur_b = [], 0
    groups.append(cur)
    assert len(groups) == n and all(groups)
    return groups


def _dump(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def convert_gguf_to_hf(gguf_path, out_dir: str, dtype: str = "f16", shards: int = 1,
                       merges_format: str = "pairs", name: str | None = None) -> dict:
    """Writes the HF directory for `gguf_path` (a path or an hfio.GGUFModel) into
    `out_dir`; returns a summary {"tensors", "files", "dtype", "tied", ...}."""
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {', '.join(DTYPES)}")
    if merges_format not in ("pairs", "strings"):
        raise ConversionError("--merges-format must be pairs or strings")
    if shards < 1:
        raise ConversionError("--shards must be >= 1")
    model = gguf_path if isinstance(gguf_path, GGUFModel) else GGUFModel(gguf_path)
    hp = model.hparams()
    st_dtype, torch_dtype = DTYPES[dtype]
    order = hf_state_order(model, hp)
    names = dict(order)
    tied = "lm_head.weight" not in names
    qkv_bias = "model.layers.0.self_attn.q_proj.bias" in names

    # Everything that can refuse the model is checked before anything is written.
    tok_json, tok_cfg = tokenizer_files(model, merges_format)
    cfg, gen = model_config(model, hp, torch_dtype, tied, qkv_bias, name)

    os.makedirs(out_dir, exist_ok=True)
    for stale in os.listdir(out_dir):
        if stale.endswith(".safetensors") or stale == "model.safetensors.index.json":
            os.remove(os.path.join(out_dir, stale))

    itemsize = 4 if st_dtype == "F32" else 2
    sizes = [(h, int(np.prod(model.shape(g))) * itemsize) for h, g in order]
    groups = shard_groups(sizes, shards)
    files = []
    weight_map = {}
    for k, group in enumerate(groups):
        fname = "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        data = {h: hfio.encode_tensor(hf_tensor(model, hp, h, names[h]), st_dtype) for h in group}
        hfio.write_safetensors(os.path.join(out_dir, fname), data)
        del data
        files.append(fname)
        for h in group:
            weight_map[h] = fname
    if shards > 1:
        index = {"metadata": {"total_size": sum(b for _, b in sizes)},
                 "weight_map": dict(sorted(weight_map.items()))}
        _dump(os.path.join(out_dir, "model.safetensors.index.json"), index)

    _dump(os.path.join(out_dir, "config.json"), cfg)
    _dump(os.path.join(out_dir, "generation_config.json"), gen)
    _dump(os.path.join(out_dir, "tokenizer.json"), tok_json)
    _dump(os.path.join(out_dir, "tokenizer_config.json"), tok_cfg)
    return {"tensors": len(order), "files": files, "dtype": st_dtype, "tied": tied, "arch": model.arch,
            "permuted": model.arch in hfio.PERMUTED_ARCHS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="f16", choices=sorted(DTYPES))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--name", default=None, help="written as _name_or_path in config.json")
    ap.add_argument("--merges-format", default="pairs", choices=["pairs", "strings"],
                    help='tokenizer.json merges as [["a","b"],...] (default) or legacy "a b" strings')
    args = ap.parse_args(argv)
    try:
        s = convert_gguf_to_hf(args.gguf, args.out, args.dtype, args.shards, args.merges_format, args.name)
    except ConversionError as e:
        print(f"gguf_to_hf: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {s['arch']}, {s['tensors']} tensors as {s['dtype']} in {len(s['files'])} file(s)"
          f"{', tied embeddings' if s['tied'] else ''}{', q/k rows un-permuted' if s['permuted'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

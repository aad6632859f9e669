"""Writes the seed corpus of the hf_json fuzzer: config.json, tokenizer.json,
tokenizer_config.json and a text, NUL-separated, for each model family and
quantization format the reader supports (small: libFuzzer runs with
-max_len=65536); and EXL2 linears for the safetensors fuzzer, which decodes
them as the loader does: valid layers (every width in one matrix, act order,
4-bit only, padded output columns) packed by the independent reference
(tools/checkpoints/exl2_format.py) and hostile ones (a permutation that is not
one, group tables that do not cover the rows, widths outside the set, sizes
that disagree).

    .venv/bin/python tests/fuzz/make_hf_corpus.py
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "hf_json")
OUT_SAFETENSORS = os.path.join(HERE, "corpus", "safetensors")
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "checkpoints"))
import exl2_format  # noqa: E402
import quant_formats  # noqa: E402
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def byte_level_vocab():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): i for i, c in enumerate(cs)}
    merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"]]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def config(arch, **extra):
    c = {"architectures": [arch], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": True}
    c.update(extra)
    return c


def byte_level(pre, normalizer=None, added=(), post=None, merges_as_strings=False):
    vocab, merges = byte_level_vocab()
    if merges_as_strings:
        merges = [f"{a} {b}" for a, b in merges]
    return {"version": "1.0", "added_tokens": list(added), "normalizer": normalizer, "pre_tokenizer": pre,
            "post_processor": post, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": False,
                      "byte_fallback": False, "fuse_unk": False, "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None}}


def spm(pre=None, normalizer=None, decoder=None):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t in ["▁", "a", "b", "c", "▁a", "▁ab", "bc", "é"]:
        vocab[t] = len(vocab)
    return {"version": "1.0",
            "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
            "normalizer": normalizer, "pre_tokenizer": pre,
            "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                         {"Sequence": {"id": "A", "type_id": 0}}],
                               "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
            "decoder": decoder,
            "model": {"type": "BPE", "vocab": vocab, "merges": [["▁", "a"], ["▁a", "b"], ["b", "c"]],
                      "byte_fallback": True, "fuse_unk": True, "unk_token": "<unk>", "dropout": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None}}


SPECIAL = [{"id": 290, "content": "<|im_start|>", "special": True, "lstrip": False, "rstrip": False,
            "normalized": False, "single_word": False},
           {"id": 291, "content": "<|im_end|>", "special": True, "lstrip": False, "rstrip": False,
            "normalized": False, "single_word": False},
           {"id": 292, "content": "<mask>", "special": False, "lstrip": True, "rstrip": True,
            "normalized": True, "single_word": True}]
CHATML = {"chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
          "eos_token": "<|im_end|>", "bos_token": None}
TEXT = "Hello the world, it's 12345 <|im_start|>x<mask>y café naïve 日本 😀\n\n  end"

SEEDS = {
    "smollm": (config("LlamaForCausalLM"),
               byte_level({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                                 {"type": "ByteLevel", "add_prefix_space": False,
                                                                  "use_regex": True}]}, added=SPECIAL),
               CHATML),
    "qwen2-awq": (config("Qwen2ForCausalLM", tie_word_embeddings=False,
                         quantization_config={"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                                              "version": "gemm"}),
                  byte_level({"type": "Sequence", "pretokenizers": [
                      {"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated", "invert": False},
                      {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
                      normalizer={"type": "NFC"}, added=SPECIAL), CHATML),
    "llama3-gptq": (config("LlamaForCausalLM", rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                             "original_max_position_embeddings": 256},
                           quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 32,
                                                "desc_act": True, "sym": False, "checkpoint_format": "gptq"}),
                    byte_level({"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False},
                        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}, added=SPECIAL,
                        post={"type": "Sequence", "processors": [
                            {"type": "ByteLevel"},
                            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>",
                                                                                         "type_id": 0}},
                                                                      {"Sequence": {"id": "A", "type_id": 0}}],
                             "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [290],
                                                                  "tokens": ["<|im_start|>"]}}}]}),
                    {"chat_template": [{"name": "default", "template": "{{ messages[0]['content'] }}"}]}),
    "gpt2-ct": (config("LlamaForCausalLM", quantization_config={
                    "quant_method": "compressed-tensors", "format": "pack-quantized",
                    "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                                  "weights": {"num_bits": 8, "type": "int", "symmetric": False,
                                                              "strategy": "channel"}}},
                    "ignore": ["lm_head"]}),
                byte_level({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
                           merges_as_strings=True), {}),
    "llama-exl2": (config("LlamaForCausalLM", tie_word_embeddings=False,
                          quantization_config={"quant_method": "exl2", "version": "0.3.2", "bits": 4.65,
                                               "head_bits": 6, "calibration": {"rows": 115, "length": 2048,
                                                                               "dataset": "(default)"}}),
                   byte_level({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, added=SPECIAL),
                   CHATML),
    "mistral-spm-legacy": (config("MistralForCausalLM", sliding_window=128),
                           spm(normalizer={"type": "Sequence", "normalizers": [
                               {"type": "Prepend", "prepend": "▁"},
                               {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
                               decoder={"type": "Sequence", "decoders": [
                                   {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                   {"type": "ByteFallback"}, {"type": "Fuse"},
                                   {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
                           {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "bos_token": "<s>",
                            "eos_token": "</s>"}),
    "spm-metaspace-split": (config("LlamaForCausalLM", rope_scaling={"type": "linear", "factor": 2.0}),
                            spm(pre={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                     "split": True},
                                decoder={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}),
                            {"bos_token": {"content": "<s>", "__type": "AddedToken"}}),
}


def exl2_layers():
    """{file name: {tensor: array}}: one EXL2 linear per file under 'model.layers.0.mlp.down_proj'."""
    rng = np.random.default_rng(20)
    w = rng.standard_normal((32, 256)) * 0.02
    perm = rng.permutation(256)
    mixed = exl2_format.quantize_rtn(w, "8:0.125,6:0.125,5:0.125,4:0.125,3:0.25,2:0.25", 32, perm=perm)
    low = exl2_format.quantize_rtn(w[:, :128], "4:0.5,3:0.25,2:0.25", 32)
    padded = exl2_format.quantize_rtn(w[:24, :64], "6:0.5,5:0.5", 32, bias=np.ones(24))
    cases = {"exl2_mixed": mixed, "exl2_low": low, "exl2_padded": padded}

    def mutated(**changes):
        t = {k: v.copy() for k, v in mixed.items()}
        t.update(changes)
        return t
    groups = mixed["q_groups"].astype(np.int64) & 0xFFFF
    dup = mixed["q_invperm"].copy()
    dup[1] = dup[0]
    bits7 = groups.copy()
    bits7[6] = 7
    overlap = groups.copy()
    overlap[5] = overlap[3]
    cases.update({
        "exl2_hostile_not_a_permutation": mutated(q_invperm=dup),
        "exl2_hostile_bits_7": mutated(q_groups=bits7.astype(np.uint16).view(np.int16)),
        "exl2_hostile_groups_overlap": mutated(q_groups=overlap.astype(np.uint16).view(np.int16)),
        "exl2_hostile_rows_not_covered": mutated(q_weight=mixed["q_weight"][:-4]),
        "exl2_hostile_scale_max_count": mutated(q_scale_max=mixed["q_scale_max"][:-1]),
        "exl2_hostile_q_perm": mutated(q_perm=np.arange(256, dtype=np.int32)),
    })
    return {name: {f"model.layers.0.mlp.down_proj.{k}": v for k, v in t.items()} for name, t in cases.items()}


def main():
    os.makedirs(OUT_SAFETENSORS, exist_ok=True)
    for name, tensors in exl2_layers().items():
        path = os.path.join(OUT_SAFETENSORS, name + ".safetensors")
        quant_formats.write_safetensors(path, tensors)
        assert os.path.getsize(path) < 65536, (name, os.path.getsize(path))
    os.makedirs(OUT, exist_ok=True)
    for name, (cfg, tok, tok_cfg) in SEEDS.items():
        data = b"\0".join([json.dumps(cfg).encode(), json.dumps(tok, ensure_ascii=False).encode(),
                           json.dumps(tok_cfg).encode(), TEXT.encode()])
        assert len(data) < 65536, (name, len(data))
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    # Malformed on purpose: wrong types where numbers and objects belong.
    with open(os.path.join(OUT, "wrong-types"), "wb") as f:
        f.write(b'{"architectures": "LlamaForCausalLM", "hidden_size": "64", "rope_scaling": [1]}\0'
                b'{"model": {"type": "BPE", "vocab": {"a": "0"}, "merges": [1, 2]}, "added_tokens": {}}\0'
                b'{"chat_template": 5, "bos_token": []}\0text')


if __name__ == "__main__":
    main()

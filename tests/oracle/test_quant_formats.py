"""Every GGUF weight format end to end: a small Llama model is written with
all its matrices in one format, and Tessera's next-token logits are compared
with llama.cpp's on the same file; Tessera's dequantization is compared with
gguf-py's."""
import json
import subprocess

import gguf
import numpy as np
import pytest
from llama_cpp import Llama

from conftest import run_tool, tool

T = gguf.GGMLQuantizationType
N_EMBD, N_FF, N_HEAD, N_KV, N_LAYER = 256, 512, 4, 2, 2
HEAD_DIM = N_EMBD // N_HEAD
BYTE_TOKENS = 256
K_FORMATS = {T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}


def byte_level_vocab():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return ["<s>", "</s>"] + [chr(table[b]) for b in range(256)] + ["ab"]


def random_k_blocks(rng, fmt, rows, cols):
    """Random K-format blocks with finite, moderate scales (gguf-py cannot
    quantize to the K formats)."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[fmt]
    data = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)
    d = np.float16(0.002)
    offsets = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[fmt]
    for off in offsets:
        scales = rng.uniform(0.0005, 0.004, size=(rows, cols // block_elems)).astype(np.float16)
        data[:, :, off:off + 2] = scales.view(np.uint8).reshape(rows, cols // block_elems, 2)
    return data.reshape(rows, -1)


def weight(rng, fmt, rows, cols):
    if fmt in K_FORMATS:
        return random_k_blocks(rng, fmt, rows, cols), fmt
    x = (rng.standard_normal((rows, cols)) * 0.06).astype(np.float32)
    if fmt == T.F32:
        return x, None
    if fmt == T.F16:
        return x.astype(np.float16), None
    return gguf.quants.quantize(x, fmt), fmt


def write_model(path, fmt, seed=0, deltas=None):
    """deltas: {tensor name: array added to that (float) tensor}, to build
    merged-weight references."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(byte_level_vocab())
    w.add_token_types([3, 3] + [1] * BYTE_TOKENS + [1])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    n_vocab = BYTE_TOKENS + 3

    def add(name, rows, cols, f=fmt):
        data, raw = weight(rng, f, rows, cols)
        if deltas and name in deltas:
            assert raw is None
            data = (data.astype(np.float32) + deltas[name]).astype(data.dtype)
        if raw is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=raw)

    add("token_embd.weight", n_vocab, N_EMBD, T.Q8_0 if fmt in K_FORMATS else fmt)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32))
    add("output.weight", n_vocab, N_EMBD, T.Q8_0 if fmt in K_FORMATS else fmt)
    for l in range(N_LAYER):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32))
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32))
        add(p + "attn_q.weight", N_HEAD * HEAD_DIM, N_EMBD)
        add(p + "attn_k.weight", N_KV * HEAD_DIM, N_EMBD)
        add(p + "attn_v.weight", N_KV * HEAD_DIM, N_EMBD)
        add(p + "attn_output.weight", N_EMBD, N_HEAD * HEAD_DIM)
        add(p + "ffn_gate.weight", N_FF, N_EMBD)
        add(p + "ffn_up.weight", N_FF, N_EMBD)
        add(p + "ffn_down.weight", N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


FORMATS = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_logits_match_llama_cpp(tmp_path, fmt):
    path = str(tmp_path / f"tiny-{fmt.name}.gguf")
    write_model(path, fmt)
    ids = [0] + [2 + b for b in b"Tessera checks every weight format."]
    r = run_tool("tessera-logits", "--model", path, "--ids", " ".join(map(str, ids)), "--full")
    assert r.returncode == 0, r.stderr
    ours = np.asarray(json.loads(r.stdout)["logits"], dtype=np.float32)
    ref_model = Llama(path, n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    ref_model.eval(ids)
    ref = np.asarray(ref_model.scores[len(ids) - 1])
    scale = float(np.abs(ref).max())
    diff = float(np.abs(ours - ref).max())
    print(f"{fmt.name}: max |logit diff| {diff:.3g} (logit scale {scale:.3g})")
    assert int(np.argmax(ours)) == int(np.argmax(ref))
    assert diff <= 0.02 * scale + 1e-4


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f not in (T.F32,)], ids=lambda f: f.name)
def test_dequantize_matches_gguf_py(tmp_path, fmt):
    path = str(tmp_path / f"tiny-{fmt.name}.gguf")
    write_model(path, fmt)
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
    got = np.frombuffer(subprocess.run([tool("tessera-gguf"), "dequant", path, t.name], capture_output=True,
                                       check=True).stdout, dtype=np.float32)
    np.testing.assert_array_equal(got, want)

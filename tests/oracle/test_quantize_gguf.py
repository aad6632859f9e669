"""tessera-quantize --format gguf:TYPE held to llama.cpp's own quantizer
(llama_cpp.llama_model_quantize of llama-cpp-python 0.3.36, through ctypes).

Split of the coverage (CI has two cores):
  * every TYPE and mix (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q3_K_S Q3_K_M Q3_K_L
    Q4_K Q4_K_S Q4_K_M Q5_K Q5_K_S Q5_K_M Q6_K F16 BF16 F32) on a synthetic
    2-layer F32 GGUF whose rows are all multiples of 256 (hidden 512, ffn 1536,
    GQA 4:1, 1024 tokens, tied embeddings), so the real K-quants and each mix's
    per-tensor choices run without fallback;
  * Q2_K, Q3_K_M and Q4_K_M on the bundled model (hidden 576: every
    K-type on a 576-wide row falls back, Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0,
    Q6_K -> Q8_0; ffn_down's 1536-wide rows keep theirs), from its all-F32 GGUF.
In both the WHOLE FILE is byte-identical to llama.cpp's: header, metadata
(order, types, values), tensor infos, data and padding.

From the bundled model's Hugging Face directory (F16): gguf:Q8_0 and gguf:F16
hold exactly the tensors (names, order, types, bytes) llama.cpp's quantizer
makes from the converter-style F32 GGUF of the same directory
(tools/checkpoints/hf_to_gguf.py: q/k rows permuted as convert_hf_to_gguf.py
does) and the same architecture/vocabulary values; the Q8_0 file loads in
llama.cpp, which computes on it exactly the logits it computes on its own
file, and Tessera's greedy tokens on it agree with llama.cpp's logits under
near_tie.py's rule (cap LOGIT_CAP).

Errors: an unknown type, an already quantized input and hostile inputs give
one line on stderr, a non-zero exit and no output (nor staging) file.
"""
import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODEL, SOURCE, run_tool, tool
from gguf_bytes import raw_gguf
from near_tie import check_greedy, llama_rows, tessera_rows

import checkpoints as ck

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

# llama.cpp's file types (llama.h) by llama-quantize's names; the plain K
# names of 3/4/5 bits are its aliases for the _M mixes.
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q2_K": 10, "Q3_K": 12, "Q3_K_S": 11,
          "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K": 15, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K": 17, "Q5_K_S": 16,
          "Q5_K_M": 17, "Q6_K": 18, "F16": 1, "BF16": 32, "F32": 0}
BUNDLED_TYPES = ["Q2_K", "Q3_K_M", "Q4_K_M"]

# Tessera against llama.cpp on the same Q8_0/F16 file (near_tie.py's rule):
# llama.cpp's default CPU kernels (repacked/tiled Q8_0 and F16 orders) sum
# differently from Tessera's; measured max |diff| over the contenders 1.03 on
# "def fibonacci(n):" for Q8_0, exactly the same on llama.cpp's own Q8_0 file,
# so it is runtime noise, not the file. A wrong rope, norm or permutation
# moves logits by whole units and breaks the exact checks below first.
LOGIT_CAP = 2.0
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


def llama_quantize(src, dst, name):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[name]
    p.nthread = 2
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0, name


def tessera_quantize(src, dst, name, *extra):
    r = run_tool("tessera-quantize", "--input", src, "--output", dst, "--format", "gguf:" + name, *extra, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def first_difference(a, b):
    """Where two GGUF files part, in words (for the assertion message)."""
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    ka, kb = list(ra.fields), list(rb.fields)
    if ka != kb:
        return f"metadata keys differ: {ka} vs {kb}"
    for k in ka:
        if ra.fields[k].types != rb.fields[k].types or str(ra.fields[k].contents()) != str(rb.fields[k].contents()):
            return f"metadata {k}: {str(ra.fields[k].contents())[:80]} vs {str(rb.fields[k].contents())[:80]}"
    for ta, tb in zip(ra.tensors, rb.tensors):
        if (ta.name, ta.tensor_type, list(ta.shape)) != (tb.name, tb.tensor_type, list(tb.shape)):
            return f"tensor {ta.name} {ta.tensor_type.name} {list(ta.shape)} vs {tb.name} {tb.tensor_type.name}"
        if not np.array_equal(np.asarray(ta.data).view(np.uint8), np.asarray(tb.data).view(np.uint8)):
            return f"tensor {ta.name} ({ta.tensor_type.name}): data differs"
    return "layout/padding differs"


def assert_identical(ours, ref, what):
    with open(ours, "rb") as f:
        a = f.read()
    with open(ref, "rb") as f:
        b = f.read()
    assert a == b, f"{what}: {first_difference(ours, ref)}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 2-layer llama-architecture F32 GGUF with every row a multiple of 256:
    the bundled model's metadata and first 1024 tokens (and the merges among them), seeded
    random weights with outliers and an all-zero group (the K-quants' searches
    see real work), tied embeddings, GQA 4:1 (Q2_K's attn_v rule)."""
    path = str(tmp_path_factory.mktemp("synthetic") / "synthetic-f32.gguf")
    src = gguf.GGUFReader(MODEL)
    n_embd, n_ff, n_head, n_kv, n_layer, n_vocab = 512, 1536, 8, 2, 2, 1024
    dims = {"llama.embedding_length": n_embd, "llama.feed_forward_length": n_ff, "llama.block_count": n_layer,
            "llama.attention.head_count": n_head, "llama.attention.head_count_kv": n_kv,
            "llama.rope.dimension_count": n_embd // n_head, "general.file_type": 0}
    w = gguf.GGUFWriter(path, "llama")
    for key, field in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        if key in dims:
            w.add_key_value(key, dims[key], vtype)
        elif key == "tokenizer.ggml.merges":  # only those within the kept tokens
            kept = set(src.fields["tokenizer.ggml.tokens"].contents()[:n_vocab])
            merges = [m for m in field.contents() if set(m.split(" ")) | {m.replace(" ", "")} <= kept]
            w.add_key_value(key, merges, vtype, sub_type=field.types[-1])
        elif vtype == gguf.GGUFValueType.ARRAY:
            value = field.contents()
            w.add_key_value(key, value[:n_vocab] if key.startswith("tokenizer.ggml.") else value, vtype,
                            sub_type=field.types[-1])
        elif key == "llama.vocab_size":
            w.add_key_value(key, n_vocab, vtype)
        else:
            w.add_key_value(key, field.contents(), vtype)
    rng = np.random.default_rng(1234)

    def matrix(rows, cols, scale=0.02):
        m = rng.normal(0, scale, size=(rows, cols)).astype(np.float32)
        m[rng.integers(0, rows, rows // 8), rng.integers(0, cols, rows // 8)] *= 12  # outliers
        m[0, :64] = 0  # an all-zero group
        return m

    hd = n_embd // n_head
    w.add_tensor("token_embd.weight", matrix(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.normal(size=n_embd)).astype(np.float32))
    for layer in range(n_layer):
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.normal(size=n_embd)).astype(np.float32))
        w.add_tensor(p + "attn_q.weight", matrix(n_embd, n_embd))
        w.add_tensor(p + "attn_k.weight", matrix(n_kv * hd, n_embd))
        w.add_tensor(p + "attn_v.weight", matrix(n_kv * hd, n_embd))
        w.add_tensor(p + "attn_output.weight", matrix(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.normal(size=n_embd)).astype(np.float32))
        w.add_tensor(p + "ffn_gate.weight", matrix(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", matrix(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", matrix(n_embd, n_ff, 0.05))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("name", list(FTYPES))
def test_synthetic_byte_identical(synthetic, tmp_path, name):
    ref, ours = str(tmp_path / "ref.gguf"), str(tmp_path / "ours.gguf")
    llama_quantize(synthetic, ref, name)
    tessera_quantize(synthetic, ours, name)
    assert_identical(ours, ref, name)


def test_synthetic_same_bytes_for_any_thread_count(synthetic, tmp_path):
    a, b = str(tmp_path / "t1.gguf"), str(tmp_path / "t2.gguf")
    tessera_quantize(synthetic, a, "Q4_K_M", "--threads", "1")
    tessera_quantize(synthetic, b, "Q4_K_M", "--threads", "3")
    assert_identical(a, b, "threads 1 vs 3")


@pytest.fixture(scope="module")
def bundled_f32():
    return ck.f32_gguf("smollm2-hf-f16", ck.bundled_hf("f16"))


@pytest.mark.parametrize("name", BUNDLED_TYPES)
def test_bundled_byte_identical(bundled_f32, tmp_path, name):
    ref, ours = str(tmp_path / "ref.gguf"), str(tmp_path / "ours.gguf")
    llama_quantize(bundled_f32, ref, name)
    r = tessera_quantize(bundled_f32, ours, name)
    assert "fell back" in r.stderr  # the 576-wide rows of a K mix
    assert_identical(ours, ref, name)


def generate(model, prompt, n):
    r = run_tool("tessera-generate", "--model", model, "--prompt", prompt, "--max-tokens", str(n), "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def from_hf(bundled_f32, tmp_path_factory):
    """gguf:NAME of the bundled HF directory by Tessera, and llama.cpp's
    quantization of the converter-style F32 GGUF of the same directory."""
    d = tmp_path_factory.mktemp("from_hf")
    made = {}

    def make(name):
        if name not in made:
            ours, ref = str(d / f"hf-{name}.gguf"), str(d / f"ref-{name}.gguf")
            tessera_quantize(ck.bundled_hf("f16"), ours, name)
            llama_quantize(bundled_f32, ref, name)
            made[name] = (ours, ref)
        return made[name]
    return make


@pytest.mark.parametrize("name", ["Q8_0", "F16"])
def test_from_hf_directory_is_llama_cpps_quantization(from_hf, name):
    ours, ref = from_hf(name)
    ra, rb = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    assert [t.name for t in ra.tensors] == [t.name for t in rb.tensors]
    for ta, tb in zip(ra.tensors, rb.tensors):
        assert (ta.tensor_type, list(ta.shape)) == (tb.tensor_type, list(tb.shape)), ta.name
        assert np.array_equal(np.asarray(ta.data).view(np.uint8), np.asarray(tb.data).view(np.uint8)), ta.name
    fields = ra.fields
    assert fields["general.file_type"].contents() == FTYPES[name]
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.chat_template", "llama.rope.freq_base", "llama.context_length", "llama.vocab_size",
                "llama.attention.layer_norm_rms_epsilon", "llama.rope.dimension_count"):
        assert fields[key].contents() == rb.fields[key].contents(), key


def test_from_hf_q8_0_runs_in_llama_cpp_and_tessera(from_hf):
    """llama.cpp loads it and computes exactly what it computes on its own
    file (the metadata means the same to it); Tessera's greedy generation on
    it agrees with llama.cpp's logits under the near-tie rule."""
    from llama_cpp import Llama
    ours, ref = from_hf("Q8_0")

    def load(path):
        return Llama(path, n_ctx=128, n_batch=128, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)

    p = PROMPTS[1]
    out = generate(ours, p, 12)
    ids = out["prompt_token_ids"] + out["token_ids"]
    n = len(out["prompt_token_ids"])
    llm = load(ours)
    assert out["prompt_token_ids"] == llm.tokenize(p.encode(), add_bos=False, special=False), p
    theirs = llama_rows(llm, ids, n)
    del llm
    assert np.array_equal(theirs, llama_rows(load(ref), ids, n)), "llama.cpp computes otherwise on our file"
    s = check_greedy(tessera_rows(ours, ids, n), theirs, out["token_ids"], LOGIT_CAP, p)
    print("Q8_0", s)


def expect_refusal(tmp_path, src, fmt, needle, before_writing=True):
    """One stderr line (the last, after progress lines, for a fault found
    while writing), a non-zero exit, nothing left behind."""
    out = tmp_path / "out.gguf"
    r = run_tool("tessera-quantize", "--input", str(src), "--output", str(out), "--format", fmt)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert (len(lines) == 1 or not before_writing) and needle in lines[-1], r.stderr
    assert os.listdir(tmp_path) == [p.name for p in tmp_path.iterdir() if p.name != "out.gguf" and
                                    not p.name.startswith(".out.gguf")], os.listdir(tmp_path)
    assert not out.exists()
    return lines[-1]


def test_refusals(tmp_path, synthetic):
    line = expect_refusal(tmp_path, synthetic, "gguf:Q9_K", "unknown GGUF type")
    assert "Q4_K_M" in line and "Q8_0" in line
    expect_refusal(tmp_path, MODEL, "gguf:Q4_K_M", "already quantized")
    truncated = tmp_path / "truncated.gguf"
    with open(synthetic, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    expect_refusal(tmp_path, truncated, "gguf:Q8_0", "GGUF")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(raw_gguf(kv=[(b"general.architecture", 8, b"\xff" * 8)]))
    expect_refusal(tmp_path, garbage, "gguf:Q8_0", "")
    nan = tmp_path / "nan.gguf"
    w = gguf.GGUFWriter(str(nan), "llama")
    src = gguf.GGUFReader(synthetic)
    for key, field in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, field.contents(), vtype)
    for t in src.tensors:
        data = np.array(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
        if t.name == "blk.1.ffn_up.weight":
            data[3, 5] = np.nan
        w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expect_refusal(tmp_path, nan, "gguf:Q4_K_M", "NaN", before_writing=False)

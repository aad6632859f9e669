"""Self-checks of tools/checkpoints/quant_formats.py, the independent numpy
reference for AWQ (GEMM), GPTQ (v1 / v2) and compressed-tensors pack-quantized
checkpoints:

* dequantize(quantize(x)) equals the reference weights bit for bit, for every
  supported combination, and stays within ~half a quantization step of x;
* known answers: tiny checkpoints whose int32 words were worked out by hand
  from the published packing code (AutoAWQ's nibble order, GPTQ's v1 zero - 1
  with its word-level borrow, compressed-tensors' offset and zero-point axis);
* the vectorised packers agree with loop transliterations of the published
  code and with a bit-by-bit packer;
* files are ordinary safetensors (read back by the safetensors package),
  non-quantized tensors and side files are copied unchanged, config.json has
  the quantization_config each tool writes, and the CLI works.

Needs numpy and safetensors only; builds its own small dense HF directories.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(ROOT, "tools", "checkpoints", "quant_formats.py")
sys.path.insert(0, os.path.dirname(TOOL))
import quant_formats as qf  # noqa: E402

HIDDEN, INTER, LAYERS, VOCAB = 256, 512, 2, 300
INTER1 = 384  # intermediate size of the one-layer model the sweeps use
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def write_dense(d, dtype="F16", hidden=HIDDEN, inter=INTER, kv=None, layers=LAYERS, vocab=VOCAB, seed=0,
                bias=False, shards=1):
    """A small Llama-shaped dense HF checkpoint: config.json, tokenizer files, model.safetensors
    (or `shards` shards + model.safetensors.index.json), written with the safetensors package
    (BF16 through our own codec, which the package's numpy API cannot write)."""
    rng = np.random.default_rng(seed)
    kv = kv or hidden // 2
    os.makedirs(d, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": vocab, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": False, "torch_dtype": {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}[dtype]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    for name, body in [("tokenizer.json", '{"model": {}}'), ("tokenizer_config.json", '{"bos_token": "<s>"}'),
                       ("generation_config.json", '{"do_sample": false}'), ("special_tokens_map.json", "{}")]:
        with open(os.path.join(d, name), "w") as f:
            f.write(body)
    weights = {}

    def mat(shape, scale=0.05):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        # a few outliers so that groups differ a lot
        x.reshape(-1)[rng.integers(0, x.size, size=max(1, x.size // 500))] *= 8
        return x

    weights["model.embed_tokens.weight"] = mat((vocab, hidden))
    weights["lm_head.weight"] = mat((vocab, hidden))
    weights["model.norm.weight"] = 1 + mat((hidden,))
    for layer in range(layers):
        p = f"model.layers.{layer}."
        shapes = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden), (inter, hidden), (inter, hidden),
                  (hidden, inter)]
        for proj, shape in zip(PROJ, shapes):
            weights[p + proj + ".weight"] = mat(shape)
            if bias and proj.startswith("self_attn.") and proj != "self_attn.o_proj":
                weights[p + proj + ".bias"] = mat((shape[0],))
        weights[p + "input_layernorm.weight"] = 1 + mat((hidden,))
        weights[p + "post_attention_layernorm.weight"] = 1 + mat((hidden,))
    if dtype == "BF16":
        stored = {k: qf.StTensor("BF16", qf.f32_to_bf16_bits(v)) for k, v in weights.items()}
        writer = qf.write_safetensors
    else:
        np_dt = np.float16 if dtype == "F16" else np.float32
        stored = {k: v.astype(np_dt) for k, v in weights.items()}
        writer = lambda path, t: save_file(t, path, metadata={"format": "pt"})  # noqa: E731
    names = sorted(stored)
    if shards == 1:
        writer(os.path.join(d, "model.safetensors"), stored)
    else:
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: stored[k] for k in names[s::shards]}
            writer(os.path.join(d, fname), part)
            weight_map.update({k: fname for k in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return d


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return write_dense(str(tmp_path_factory.mktemp("dense") / "hf"))


@pytest.fixture(scope="module")
def dense1(tmp_path_factory):
    """One layer of the same shapes, for the long parameter sweeps."""
    return write_dense(str(tmp_path_factory.mktemp("dense1") / "hf"), inter=INTER1, layers=1, seed=1)


def bits_equal(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def step_bound(method, bits, scale_dtype="F16"):
    """max |w - w_q| / scale: half a step, plus the stored scale's rounding times the largest |q - z|."""
    rel = {"F16": 2.0 ** -11, "BF16": 2.0 ** -8, "F32": 2.0 ** -24}[scale_dtype]
    return 0.5 + rel * (2 ** bits) + 1e-4


def check_roundtrip(hf_dir, out_dir, ref_path, expect_dtype="F16", **kw):
    summary = qf.quantize(hf_dir, out_dir, reference_out=ref_path, **kw)
    ref = load_file(ref_path)
    deq = qf.dequantize(out_dir)
    assert sorted(deq) == sorted(ref)
    for name in ref:
        assert bits_equal(deq[name], ref[name]), name
    # close to the dense weights
    _, dense_t = qf.load_checkpoint(hf_dir)
    assert summary["max_err_over_scale"] <= step_bound(kw["method"], kw.get("bits", 4), expect_dtype)
    for name, w in ref.items():
        orig = dense_t[name].to_f32()
        assert w.shape == orig.shape
        assert np.max(np.abs(w - orig)) < 0.2 * np.max(np.abs(orig))
    # every non-quantized tensor copied byte for byte, same dtype
    _, q_t = qf.load_checkpoint(out_dir)
    for name, t in dense_t.items():
        if name in ref:
            assert name not in q_t
            continue
        assert q_t[name].dtype == t.dtype and np.array_equal(q_t[name].data, t.data), name
    for side in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
        with open(os.path.join(hf_dir, side)) as a, open(os.path.join(out_dir, side)) as b:
            assert a.read() == b.read()
    return summary, ref, deq


# ---------------------------------------------------------------------------
# round trips over every supported combination
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
def test_awq_roundtrip(dense, tmp_path, group_size):
    check_roundtrip(dense, str(tmp_path / "q"), str(tmp_path / "ref.safetensors"), method="awq", bits=4,
                    group_size=group_size)
    st = load_file(str(tmp_path / "q" / "model.safetensors"))
    ng = HIDDEN // (HIDDEN if group_size == -1 else group_size)
    m = "model.layers.1.self_attn.k_proj"
    assert st[m + ".qweight"].dtype == np.int32 and st[m + ".qweight"].shape == (HIDDEN, HIDDEN // 2 // 8)
    assert st[m + ".qzeros"].dtype == np.int32 and st[m + ".qzeros"].shape == (ng, HIDDEN // 2 // 8)
    assert st[m + ".scales"].dtype == np.float16 and st[m + ".scales"].shape == (ng, HIDDEN // 2)
    assert set(k[len(m) + 1:] for k in st if k.startswith(m + ".")) == {"qweight", "qzeros", "scales"}
    with open(tmp_path / "q" / "config.json") as f:
        qc = json.load(f)["quantization_config"]
    assert qc == {"quant_method": "awq", "zero_point": True, "group_size": group_size, "bits": 4,
                  "version": "gemm", "modules_to_not_convert": None}


GPTQ_COMBOS = [(b, g, s, d, f) for b in (4, 8) for g in (-1, 32, 64, 128) for s in (True, False)
               for d in (False, True) for f in ("gptq", "gptq_v2")]


@pytest.mark.parametrize("bits,group_size,sym,desc_act,fmt", GPTQ_COMBOS)
def test_gptq_roundtrip(dense1, tmp_path, bits, group_size, sym, desc_act, fmt):
    out = str(tmp_path / "q")
    check_roundtrip(dense1, out, str(tmp_path / "ref.safetensors"), method="gptq", bits=bits,
                    group_size=group_size, sym=sym, desc_act=desc_act, checkpoint_format=fmt)
    st = load_file(os.path.join(out, "model.safetensors"))
    m = "model.layers.0.mlp.down_proj"  # in = INTER1, out = HIDDEN
    G = INTER1 if group_size == -1 else group_size
    ng = INTER1 // G
    assert st[m + ".qweight"].shape == (INTER1 * bits // 32, HIDDEN) and st[m + ".qweight"].dtype == np.int32
    assert st[m + ".qzeros"].shape == (ng, HIDDEN * bits // 32) and st[m + ".qzeros"].dtype == np.int32
    assert st[m + ".scales"].shape == (ng, HIDDEN) and st[m + ".scales"].dtype == np.float16
    g_idx = st[m + ".g_idx"]
    assert g_idx.dtype == np.int32 and g_idx.shape == (INTER1,)
    assert np.array_equal(np.bincount(g_idx, minlength=ng), np.full(ng, G))
    if not desc_act:
        assert np.array_equal(g_idx, np.arange(INTER1) // G)
    elif ng > 1:
        assert not np.array_equal(g_idx, np.arange(INTER1) // G)
    if sym:  # every zero is 2^(bits-1); v1 stores it minus one
        z = (2 ** (bits - 1)) - (1 if fmt == "gptq" else 0)
        word = sum(z << (bits * j) for j in range(32 // bits))
        assert np.all(st[m + ".qzeros"].view(np.uint32) == word)
    with open(os.path.join(out, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    for k, v in {"quant_method": "gptq", "bits": bits, "group_size": group_size, "sym": sym, "desc_act": desc_act,
                 "checkpoint_format": fmt, "static_groups": False, "true_sequential": True,
                 "damp_percent": 0.01}.items():
        assert qc[k] == v, k


CT_COMBOS = [(b, g, s) for b in (4, 8) for g in (32, 128, -1) for s in (True, False)]


@pytest.mark.parametrize("bits,group_size,sym", CT_COMBOS)
def test_ct_roundtrip(dense1, tmp_path, bits, group_size, sym):
    out = str(tmp_path / "q")
    check_roundtrip(dense1, out, str(tmp_path / "ref.safetensors"), method="compressed-tensors", bits=bits,
                    group_size=group_size, sym=sym)
    st = load_file(os.path.join(out, "model.safetensors"))
    m = "model.layers.0.self_attn.v_proj"  # out = HIDDEN/2, in = HIDDEN
    out_f, in_f = HIDDEN // 2, HIDDEN
    ng = 1 if group_size == -1 else in_f // group_size
    assert st[m + ".weight_packed"].shape == (out_f, in_f * bits // 32) and st[m + ".weight_packed"].dtype == np.int32
    assert st[m + ".weight_scale"].shape == (out_f, ng) and st[m + ".weight_scale"].dtype == np.float16
    assert st[m + ".weight_shape"].dtype == np.int64 and st[m + ".weight_shape"].tolist() == [out_f, in_f]
    if sym:
        assert m + ".weight_zero_point" not in st
    else:
        zp = st[m + ".weight_zero_point"]
        assert zp.dtype == np.int32 and zp.shape == (out_f * bits // 32, ng)
    with open(os.path.join(out, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["quantization_status"] == "compressed" and qc["ignore"] == ["lm_head"]
    w = qc["config_groups"]["group_0"]
    assert w["targets"] == ["Linear"] and w["format"] == "pack-quantized"
    assert w["weights"] == {"num_bits": bits, "type": "int", "symmetric": sym,
                            "group_size": None if group_size == -1 else group_size,
                            "strategy": "channel" if group_size == -1 else "group", "dynamic": False}


@pytest.mark.parametrize("dense_dtype,scale_dtype,expect", [("BF16", None, "BF16"), ("F32", None, "F32"),
                                                             ("F16", "bf16", "BF16"), ("BF16", "f16", "F16"),
                                                             ("F16", "f32", "F32")])
def test_ct_scale_dtypes(tmp_path, dense_dtype, scale_dtype, expect):
    hf = write_dense(str(tmp_path / "hf"), dtype=dense_dtype, layers=1)
    for sym in (True, False):
        out = str(tmp_path / f"q{sym}")
        check_roundtrip(hf, out, str(tmp_path / f"ref{sym}.safetensors"), expect_dtype=expect,
                        method="compressed-tensors", bits=4, group_size=64, sym=sym, scale_dtype=scale_dtype)
        _, q_t = qf.load_checkpoint(out)
        assert q_t["model.layers.0.mlp.up_proj.weight_scale"].dtype == expect


def test_bf16_dense_awq_gptq(tmp_path):
    """BF16 dense input: scales still f16 for AWQ/GPTQ, other tensors stay BF16."""
    hf = write_dense(str(tmp_path / "hf"), dtype="BF16", layers=1)
    check_roundtrip(hf, str(tmp_path / "a"), str(tmp_path / "a.safetensors"), method="awq", group_size=64)
    check_roundtrip(hf, str(tmp_path / "g"), str(tmp_path / "g.safetensors"), method="gptq", bits=8, group_size=32,
                    desc_act=True)
    _, q_t = qf.load_checkpoint(str(tmp_path / "g"))
    assert q_t["model.layers.0.self_attn.q_proj.scales"].dtype == "F16"
    assert q_t["model.embed_tokens.weight"].dtype == "BF16"


def test_sharded_input_and_bias(tmp_path):
    """A sharded input gives the same checkpoint as a single file; biases are copied unchanged."""
    one = write_dense(str(tmp_path / "one"), layers=1, bias=True, seed=3)
    many = write_dense(str(tmp_path / "many"), layers=1, bias=True, seed=3, shards=3)
    for d in (one, many):
        qf.quantize(d, d + "-q", "gptq", bits=4, group_size=64, reference_out=d + ".ref.safetensors")
    a, b = load_file(one + "-q/model.safetensors"), load_file(many + "-q/model.safetensors")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert "model.layers.0.self_attn.q_proj.bias" in a and "model.layers.0.self_attn.q_proj.weight" not in a
    assert not os.path.exists(many + "-q/model.safetensors.index.json")
    ra, rb = load_file(one + ".ref.safetensors"), load_file(many + ".ref.safetensors")
    assert all(bits_equal(ra[k], rb[k]) for k in ra)


def test_indivisible_shapes(tmp_path):
    """hidden 192 (not a multiple of 128): GPTQ writes a partial last group (ceil groups, as GPTQModel),
    AWQ and compressed-tensors refuse, or with skip_indivisible leave those modules dense and say so."""
    hf = write_dense(str(tmp_path / "hf"), hidden=192, inter=256, kv=96, layers=1)
    out = str(tmp_path / "g")
    check_roundtrip(hf, out, str(tmp_path / "g.safetensors"), method="gptq", bits=4, group_size=128, desc_act=True)
    st = load_file(out + "/model.safetensors")
    assert st["model.layers.0.self_attn.q_proj.scales"].shape == (2, 192)
    assert np.array_equal(np.bincount(st["model.layers.0.self_attn.q_proj.g_idx"]), [128, 64])
    for method in ("awq", "compressed-tensors"):
        with pytest.raises(ValueError):
            qf.quantize(hf, str(tmp_path / "x"), method, group_size=128)
        out = str(tmp_path / method)
        summary, ref, _ = check_roundtrip(hf, out, str(tmp_path / f"{method}.safetensors"), method=method,
                                          group_size=128, skip_indivisible=True)
        assert sorted(summary["skipped"]) == sorted(f"model.layers.0.{p}" for p in PROJ if p != "mlp.down_proj")
        assert list(ref) == ["model.layers.0.mlp.down_proj.weight"]
        with open(out + "/config.json") as f:
            qc = json.load(f)["quantization_config"]
        listed = qc["modules_to_not_convert"] if method == "awq" else qc["ignore"][1:]
        assert sorted(listed) == sorted(summary["skipped"])


# ---------------------------------------------------------------------------
# known answers, hand-computed from the published packing code
# ---------------------------------------------------------------------------

def i32(words):
    return np.array(words, dtype=np.uint32).view(np.int32)


def write_q_dir(d, qc, tensors):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "quantization_config": qc}, f)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return d


M = "model.layers.0.self_attn.q_proj"


def test_known_awq(tmp_path):
    # AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]: nibble i (from the bottom) holds output column AWQ_ORDER[i].
    # Columns with codes 0..7 -> nibbles (top to bottom) 7 5 3 1 6 4 2 0 = 0x75316420.
    # Codes 7-j -> 0 2 4 6 1 3 5 7 = 0x02461357.  Zeros j+1 -> 8 6 4 2 7 5 3 1 = 0x86427531.
    assert qf.awq_pack(np.arange(8, dtype=np.int32)[None, :]).view(np.uint32)[0, 0] == 0x75316420
    assert qf.awq_pack((7 - np.arange(8, dtype=np.int32))[None, :]).view(np.uint32)[0, 0] == 0x02461357
    assert qf.awq_pack(np.arange(1, 9, dtype=np.int32)[None, :]).view(np.uint32)[0, 0] == 0x86427531
    s0 = 0.25 * np.arange(1, 9)
    d = write_q_dir(str(tmp_path / "awq"),
                    {"quant_method": "awq", "zero_point": True, "group_size": 4, "bits": 4, "version": "gemm",
                     "modules_to_not_convert": None},
                    {M + ".qweight": i32([[0x75316420]] * 4 + [[0x02461357]] * 4),
                     M + ".qzeros": i32([[0x86427531], [0x33333333]]),
                     M + ".scales": np.array([s0, [0.125] * 8], dtype=np.float16)})
    w = qf.dequantize(d)[M + ".weight"]
    j = np.arange(8)[:, None]
    expect = np.concatenate([np.broadcast_to(-s0[:, None], (8, 4)), np.broadcast_to(0.125 * (4 - j), (8, 4))], 1)
    assert w.dtype == np.float32 and w.shape == (8, 8)
    assert np.array_equal(w, expect.astype(np.float32))


def gptq_qc(bits, group_size, fmt, sym=True, desc_act=False):
    return {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act, "sym": sym,
            "checkpoint_format": fmt}


def test_known_gptq_4bit_v1_v2(tmp_path):
    # qweight packs 8 input rows per word, row r*8+j in bits 4j..4j+3: codes i -> 0x76543210,
    # codes 15-i -> 0x89ABCDEF.  Sym zero 8: v1 stores 7 -> 0x77777777, v2 stores 8 -> 0x88888888.
    assert qf.gptq_pack_rows(np.arange(8)[:, None], 4)[0, 0] == 0x76543210
    qweight = i32([[0x76543210, 0x89ABCDEF] * 4])
    i = np.arange(8)[None, :]
    expect = np.where(np.arange(8)[:, None] % 2 == 0, 0.5 * (i - 8), 0.5 * (7 - i)).astype(np.float32)
    for fmt, zword in (("gptq", 0x77777777), ("gptq_v2", 0x88888888)):
        d = write_q_dir(str(tmp_path / fmt), gptq_qc(4, 8, fmt),
                        {M + ".qweight": qweight, M + ".qzeros": i32([[zword]]),
                         M + ".scales": np.full((1, 8), 0.5, np.float16), M + ".g_idx": np.zeros(8, np.int32)})
        assert np.array_equal(qf.dequantize(d)[M + ".weight"], expect), fmt


def test_known_gptq_v1_zero_borrow(tmp_path):
    # zeros 0..7 pack to 0x76543210; GPTQModel's v2->v1 subtracts 0x11111111 from the WORD:
    # 0x654320FF (the zero of 0 borrows from column 1).  Reading adds 0x11111111 back.  A reader that
    # adds 1 per nibble would see column 1's zero as 0 (and exllama's unmasked +1 column 0's as 16).
    zeros = np.arange(8, dtype=np.uint32)[None, :]
    words = qf.gptq_pack_cols(zeros, 4) - np.uint32(0x11111111)
    assert words[0, 0] == 0x654320FF
    d = write_q_dir(str(tmp_path / "v1"), gptq_qc(4, 8, "gptq", sym=False),
                    {M + ".qweight": i32([[0x76543210] * 8]), M + ".qzeros": i32([[0x654320FF]]),
                     M + ".scales": np.full((1, 8), 0.25, np.float16), M + ".g_idx": np.zeros(8, np.int32)})
    w = qf.dequantize(d)[M + ".weight"]
    assert np.array_equal(w, (0.25 * (np.arange(8)[None, :] - np.arange(8)[:, None])).astype(np.float32))


def test_known_gptq_8bit_v1_and_act_order(tmp_path):
    # 8-bit: 4 input rows per word, row 4r+j in bits 8j..8j+7.  Column 0 codes 1,2,3,4 -> 0x04030201,
    # column 1 codes 255,128,0,127 -> 0x7F0080FF.  Zeros 128, 100 pack to 0x00006480 (two of the four
    # byte fields used); v1 = 0x00006480 - 0x01010101 = 0xFEFF637F.
    assert (qf.gptq_pack_cols(np.array([[128, 100]]), 8) - np.uint32(0x01010101))[0, 0] == 0xFEFF637F
    d = write_q_dir(str(tmp_path / "b8"), gptq_qc(8, 4, "gptq", sym=False),
                    {M + ".qweight": i32([[0x04030201, 0x7F0080FF]]), M + ".qzeros": i32([[0xFEFF637F]]),
                     M + ".scales": np.array([[1.0, 0.5]], np.float16), M + ".g_idx": np.zeros(4, np.int32)})
    w = qf.dequantize(d)[M + ".weight"]
    assert np.array_equal(w, np.array([[-127, -126, -125, -124], [77.5, 14, -50, 13.5]], np.float32))
    # act order: g_idx picks the group of each input row; v2 zeros 0 (group 0) and 2 (group 1).
    g_idx = np.array([1, 0, 1, 0, 0, 1, 1, 0], np.int32)
    d = write_q_dir(str(tmp_path / "ao"), gptq_qc(4, 4, "gptq_v2", sym=False, desc_act=True),
                    {M + ".qweight": i32([[0x76543210] * 8]), M + ".qzeros": i32([[0x00000000], [0x22222222]]),
                     M + ".scales": np.array([[1.0] * 8, [0.25] * 8], np.float16), M + ".g_idx": g_idx})
    i = np.arange(8)
    row = np.where(g_idx == 0, i * 1.0, 0.25 * (i - 2))
    assert np.array_equal(qf.dequantize(d)[M + ".weight"], np.tile(row, (8, 1)).astype(np.float32))


def ct_qc(bits, group_size, sym):
    return qf.ct_config(bits, group_size, sym, [])


def test_known_ct(tmp_path):
    # pack_to_int32 adds 2^(b-1): row of signed -8..-1 -> 0..7 -> 0x76543210; 0..7 -> 8..15 -> 0xFEDCBA98.
    assert qf.ct_pack_to_int32(np.arange(-8, 0)[None, :], 4).view(np.uint32)[0, 0] == 0x76543210
    # zero points [out=2, groups=2] = [[-2, 1], [3, -8]] -> unsigned [[6, 9], [11, 0]], packed along out
    # (packed_dim=0): group 0 word = 6 | 11 << 4 = 0xB6, group 1 word = 9 | 0 << 4 = 0x09 -> shape [1, 2].
    zp = qf.ct_pack_to_int32(np.array([[-2, 1], [3, -8]]), 4, packed_dim=0)
    assert zp.shape == (1, 2) and zp.view(np.uint32).tolist() == [[0xB6, 0x09]]
    d = write_q_dir(str(tmp_path / "w4"), ct_qc(4, 4, False),
                    {M + ".weight_packed": i32([[0x76543210], [0xFEDCBA98]]),
                     M + ".weight_scale": np.array([[1, 0.5], [0.25, 2]], np.float16),
                     M + ".weight_zero_point": i32([[0xB6, 0x09]]),
                     M + ".weight_shape": np.array([2, 8], np.int64)})
    i = np.arange(8)
    expect = np.array([np.where(i < 4, i - 6, 0.5 * (i - 9)), np.where(i < 4, 0.25 * (i - 3), 2.0 * (i + 8))])
    assert np.array_equal(qf.dequantize(d)[M + ".weight"], expect.astype(np.float32))
    # 8-bit channel, symmetric: signed -128, -1, 0, 127 -> bytes 0x00, 0x7F, 0x80, 0xFF -> 0xFF807F00.
    d = write_q_dir(str(tmp_path / "w8"), ct_qc(8, -1, True),
                    {M + ".weight_packed": i32([[0xFF807F00]]), M + ".weight_scale": np.array([[0.5]], np.float16),
                     M + ".weight_shape": np.array([1, 4], np.int64)})
    assert np.array_equal(qf.dequantize(d)[M + ".weight"], np.array([[-64, -0.5, 0, 63.5]], np.float32))
    # 8-bit asymmetric channel, out = 5: zero points -128, -1, 0, 5, 127 -> 0, 127, 128, 133, 255 packed
    # down the output axis: [[0x85807F00], [0x000000FF]]; codes all 0 (stored 0x80808080).
    zp = qf.ct_pack_to_int32(np.array([[-128], [-1], [0], [5], [127]]), 8, packed_dim=0)
    assert zp.view(np.uint32).tolist() == [[0x85807F00], [0x000000FF]]
    d = write_q_dir(str(tmp_path / "w8a"), ct_qc(8, -1, False),
                    {M + ".weight_packed": i32([[0x80808080]] * 5), M + ".weight_scale": np.ones((5, 1), np.float16),
                     M + ".weight_zero_point": i32([[0x85807F00], [0x000000FF]]),
                     M + ".weight_shape": np.array([5, 4], np.int64)})
    expect = -np.array([-128, -1, 0, 5, 127], np.float32)[:, None] * np.ones((1, 4), np.float32)
    assert np.array_equal(qf.dequantize(d)[M + ".weight"], expect)


# ---------------------------------------------------------------------------
# packers vs loop transliterations of the published code and a bit-by-bit packer
# ---------------------------------------------------------------------------

def bitstream_pack(values, bits):
    """Row-wise: value e of a row occupies global bits e*bits .. e*bits+bits-1 (LSB first)."""
    rows, cols = values.shape
    words = np.zeros((rows, -(-cols * bits // 32)), dtype=np.uint64)
    for r in range(rows):
        for e in range(cols):
            for b in range(bits):
                if (int(values[r, e]) >> b) & 1:
                    pos = e * bits + b
                    words[r, pos // 32] |= np.uint64(1 << (pos % 32))
    return words.astype(np.uint32)


def test_packers_match_published_loops():
    rng = np.random.default_rng(7)
    # AutoAWQ WQLinear_GEMM.from_linear
    intweight = rng.integers(0, 16, size=(24, 32))
    loop = np.zeros((24, 4), dtype=np.int64)
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    for col in range(4):
        for i in range(8):
            loop[:, col] |= intweight[:, col * 8 + order_map[i]] << (i * 4)
    assert np.array_equal(qf.awq_pack(intweight).view(np.uint32), loop.astype(np.uint32))
    # GPTQModel pack_original (bits 4 and 8, in not a multiple of the pack factor)
    for bits in (4, 8):
        pf = 32 // bits
        int_weight = rng.integers(0, 2 ** bits, size=(37, 6))
        q = np.zeros((-(-37 * bits // 32), 6), dtype=np.int64)
        for row in range(q.shape[0]):
            for j in range(min(pf, 37 - row * pf)):
                q[row] |= int_weight[row * pf + j] << (bits * j)
        assert np.array_equal(qf.gptq_pack_rows(int_weight, bits), q.astype(np.uint32))
        assert np.array_equal(qf.gptq_pack_rows(int_weight, bits), bitstream_pack(int_weight.T, bits).T)
        zeros = rng.integers(0, 2 ** bits, size=(3, 13))
        qz = np.zeros((3, -(-13 * bits // 32)), dtype=np.int64)
        for col in range(qz.shape[1]):
            for j in range(min(pf, 13 - col * pf)):
                qz[:, col] |= zeros[:, col * pf + j] << (bits * j)
        assert np.array_equal(qf.gptq_pack_cols(zeros, bits), qz.astype(np.uint32))
    # compressed-tensors pack_to_int32 (dense bit stream; odd widths straddle words) and its inverse
    for bits in (2, 3, 4, 5, 7, 8):
        v = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(5, 45))
        packed = qf.ct_pack_to_int32(v, bits)
        assert np.array_equal(packed.view(np.uint32), bitstream_pack(v + 2 ** (bits - 1), bits))
        assert np.array_equal(qf.ct_unpack_from_int32(packed, bits, v.shape), v)
        packed0 = qf.ct_pack_to_int32(v.T, bits, packed_dim=0)
        assert np.array_equal(packed0, packed.T)
        assert np.array_equal(qf.ct_unpack_from_int32(packed0, bits, v.T.shape, packed_dim=0), v.T)


def test_awq_unpack_matches_published_dequantize_gemm():
    """unpack_awq + reverse_awq_order + repeat_interleave, transliterated, vs the reference dequantizer."""
    rng = np.random.default_rng(11)
    in_f, out_f, G = 64, 48, 16
    qweight = rng.integers(0, 2 ** 32, size=(in_f, out_f // 8), dtype=np.uint64).astype(np.uint32).view(np.int32)
    qzeros = rng.integers(0, 2 ** 32, size=(in_f // G, out_f // 8), dtype=np.uint64).astype(np.uint32).view(np.int32)
    scales = rng.uniform(0.001, 0.01, size=(in_f // G, out_f)).astype(np.float16)
    shifts = np.arange(0, 32, 4)
    iw = ((qweight.astype(np.int64)[:, :, None] >> shifts[None, None, :]) & 15).reshape(in_f, -1)
    iz = ((qzeros.astype(np.int64)[:, :, None] >> shifts[None, None, :]) & 15).reshape(in_f // G, -1)
    rev = np.arange(out_f).reshape(-1, 8)[:, [0, 4, 1, 5, 2, 6, 3, 7]].reshape(-1)
    iw, iz = iw[:, rev], iz[:, rev]
    expect = (np.repeat(scales.astype(np.float32), G, axis=0) * (iw - np.repeat(iz, G, axis=0)).astype(np.float32)).T
    got = qf.dequant_awq({"qweight": qf.to_st(qweight), "qzeros": qf.to_st(qzeros), "scales": qf.to_st(scales)},
                         {"bits": 4, "group_size": G, "zero_point": True})
    assert bits_equal(got, expect)


def test_bf16_codec_and_reader(tmp_path):
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38, 0.0], np.float32)
    assert qf.f32_to_bf16_bits(x).tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F62, 0x0000]
    assert qf.bf16_bits_to_f32(np.array([0x3F80, 0xC020], np.uint16)).tolist() == [1.0, -2.5]
    # our reader reads what the safetensors package wrote, and the package reads what we wrote
    t = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "b": np.linspace(0, 1, 5).astype(np.float16),
         "c": np.array([7, 9], np.int64)}
    save_file(t, str(tmp_path / "p.safetensors"))
    r = qf.read_safetensors(str(tmp_path / "p.safetensors"))
    assert all(np.array_equal(r[k].data, v) and r[k].data.dtype == v.dtype for k, v in t.items())
    qf.write_safetensors(str(tmp_path / "o.safetensors"), t)
    back = load_file(str(tmp_path / "o.safetensors"))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in t.items())


# ---------------------------------------------------------------------------
# CLI and the named test set
# ---------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300)


def test_cli_quantize_dequantize(dense, tmp_path):
    out, ref, deq = str(tmp_path / "q"), str(tmp_path / "ref.safetensors"), str(tmp_path / "deq.safetensors")
    r = run_cli("quantize", "--in", dense, "--out", out, "--method", "gptq", "--bits", "4", "--group-size", "32",
                "--desc-act", "--checkpoint-format", "gptq_v2", "--reference-out", ref)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["quantized"] == 7 * LAYERS
    r = run_cli("dequantize", "--in", out, "--out", deq)
    assert r.returncode == 0, r.stderr
    a, b = load_file(ref), load_file(deq)
    assert sorted(a) == sorted(b) and all(bits_equal(a[k], b[k]) for k in a)
    r = run_cli("quantize", "--in", dense, "--out", str(tmp_path / "bad"), "--method", "awq", "--bits", "8")
    assert r.returncode != 0 and "error" in r.stderr


def test_make_test_set(dense, tmp_path):
    root = str(tmp_path / "set")
    r = run_cli("make-test-set", "--in", dense, "--out", root)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    assert sorted(manifest) == sorted(qf.TEST_SET)
    for name, params in qf.TEST_SET.items():
        ref = load_file(os.path.join(root, f"{name}.reference.safetensors"))
        deq = qf.dequantize(os.path.join(root, name))
        assert len(ref) == 7 * LAYERS and sorted(ref) == sorted(deq), name
        assert all(bits_equal(ref[k], deq[k]) for k in ref), name
        with open(os.path.join(root, name, "config.json")) as f:
            qc = json.load(f)["quantization_config"]
        assert qc["quant_method"] == params["method"]
        assert manifest[name]["max_err_over_scale"] <= step_bound(params["method"], params["bits"])

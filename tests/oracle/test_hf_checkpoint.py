"""Hugging Face checkpoints (dense, AWQ, GPTQ, compressed-tensors) as Tessera
serves them, against independent oracles (tests/oracle/checkpoints.py):

  * every quantized layout dequantizes, through the kernels' own repacked
    blocks (tessera-weights), to exactly the float weights the reference
    packer's integer codes stand for;
  * the HF directory tokenizes exactly as the GGUF it came from;
  * an F16 HF directory generates the tokens Tessera generates from an F32
    GGUF of the same weights, and both stay within a tight near-tie of
    llama.cpp on that GGUF (no activation quantization on either side);
  * AWQ and GPTQ checkpoints stay within the near-tie rule of llama.cpp
    evaluating an F32 GGUF of their dequantized weights;
  * a PEFT adapter on an HF base (q/k in Hugging Face row order) equals the
    merged weights token for token, and on AWQ and GPTQ bases stays within
    the near-tie of llama.cpp on the merged weights."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODEL, SOURCE, JsonLinesTool, run_tool, tool

pytest.importorskip("safetensors", reason="pip install -r tools/setup/requirements.txt")
import checkpoints as ck  # noqa: E402
from near_tie import check_greedy, llama_rows, tessera_rows  # noqa: E402
from test_tokenizer import corpus  # noqa: E402

# Extra layouts beyond the reference packer's named set: act-order with a
# partial last group (576 = 4 x 128 + 64), bf16 scales.
EXTRA = {
    "gptq-b4-g128-actorder-asym": dict(method="gptq", bits=4, group_size=128, sym=False, desc_act=True),
    "ct-w4a16-g64-asym-bf16": dict(method="compressed-tensors", bits=4, group_size=64, sym=False, scale_dtype="bf16"),
    "ct-w8a16-g32-asym": dict(method="compressed-tensors", bits=8, group_size=32, sym=False),
}
VARIANTS = sorted(ck.quant_formats.TEST_SET) + sorted(EXTRA)

PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "Once upon a time, in a small village,",
           "List of prime numbers: 2, 3, 5,"]
# Near-tie caps (near_tie.py). Dense: F32/F16 weights multiplied in float on
# both sides, only summation order differs (measured <= 0.038). Quantized:
# Tessera's int8 activations against llama.cpp's float ones (measured <=
# 1.57 over these prompts and layouts, the same noise as the Q4_1 GGUF
# path against llama.cpp on AVX2 hosts; a wrong zero point, scale or column
# order moves logits by several units).
DENSE_CAP = 0.1
QUANT_CAP = 2.0


def tessera_weights(model, out, *extra):
    r = run_tool("tessera-weights", "--model", model, "--out", str(out), *extra, timeout=600)
    assert r.returncode == 0, r.stderr
    return ck.read_f32(str(out))


@pytest.mark.parametrize("variant", VARIANTS)
def test_dequantized_weights_equal_the_reference_packer(variant, tmp_path):
    qdir, ref = ck.quantized("smollm2-2layers", ck.tiny_hf(), variant, **EXTRA.get(variant, {}))
    ours = tessera_weights(qdir, tmp_path / "w.safetensors")
    theirs = ck.read_f32(ref)
    assert theirs, "the reference quantized nothing"
    base = ck.quant_formats.read_safetensors(os.path.join(ck.tiny_hf(), "model.safetensors"))
    for name, w in ours.items():
        if name in theirs:
            assert np.array_equal(w, theirs[name]), f"{name}: max |diff| {np.abs(w - theirs[name]).max()}"
        else:  # left dense by the packer (the group does not divide in_features)
            assert np.array_equal(w, np.asarray(base[name].data).astype(np.float32)), name


def test_hf_directory_tokenizes_as_the_gguf():
    a = JsonLinesTool([tool("tessera-tokenize"), "--model", MODEL])
    b = JsonLinesTool([tool("tessera-tokenize"), "--model", ck.bundled_hf("f16")])
    try:
        texts = corpus()
        assert len(texts) >= 300
        for text in texts:
            for special in (False, True):
                req = {"text": text, "parse_special": special, "add_special": special}
                assert a.ask(req) == b.ask(req), text
    finally:
        a.close()
        b.close()


def generate(model, prompt, n=48, *extra):
    r = run_tool("tessera-generate", "--model", model, "--prompt", prompt, "--max-tokens", str(n), "--format", "json",
                 *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def llama_for(gguf):
    from llama_cpp import Llama
    # F32 KV cache: the GGUF holds exact weights, keep the reference float.
    return Llama(gguf, n_ctx=1024, n_batch=512, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)


def near_tie_against(llama, model, prompts, cap, *extra):
    stats = []
    for p in prompts:
        out = generate(model, p, 48, *extra)
        ids = out["prompt_token_ids"] + out["token_ids"]
        n = len(out["prompt_token_ids"])
        rows_extra = ("--lora", extra[extra.index("--lora") + 1]) if "--lora" in extra else ()
        s = check_greedy(tessera_rows(model, ids, n, rows_extra), llama_rows(llama, ids, n), out["token_ids"], cap, p)
        stats.append(s)
    print(os.path.basename(model), stats)
    return stats


def test_hf_f16_matches_its_gguf_and_llama_cpp():
    hf = ck.bundled_hf("f16")
    gguf = ck.f32_gguf("smollm2-hf-f16", hf)
    for p in PROMPTS:
        assert generate(hf, p)["token_ids"] == generate(gguf, p)["token_ids"], p
    near_tie_against(llama_for(gguf), hf, PROMPTS, DENSE_CAP)


@pytest.mark.parametrize("variant", ["awq-g64", "gptq-b4-g128-actorder-asym", "gptq-b8-g64-asym-actorder"])
def test_quantized_checkpoint_within_near_tie_of_llama_cpp(variant):
    spec = {"awq-g64": dict(method="awq", bits=4, group_size=64)}.get(variant) or \
        EXTRA.get(variant) or ck.quant_formats.TEST_SET[variant]
    qdir, ref = ck.quantized("smollm2", ck.bundled_hf("f16"), variant, **spec)
    gguf = ck.f32_gguf(f"smollm2-{variant}", qdir, weights=ref)
    stats = near_tie_against(llama_for(gguf), qdir, PROMPTS, QUANT_CAP)
    assert sum(s["exact_argmax"] for s in stats) >= 0.9 * sum(s["tokens"] for s in stats)


# ---- LoRA on Hugging Face bases ---------------------------------------------

MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
ALL_LINEAR = ",".join(MODULES)


def make_adapter(out, layers, *args):
    """A PEFT adapter (tools/make_adapter.py) for the bundled model's shapes,
    kept to `layers` (the 2-layer model's adapter drops the rest)."""
    subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", MODEL, "--out", out,
                    *args], check=True, capture_output=True)
    path = os.path.join(out, "adapter_model.safetensors")
    tensors = ck.quant_formats.read_safetensors(path)
    keep = {k: v for k, v in tensors.items() if int(k.split(".layers.")[1].split(".")[0]) < layers}
    ck.quant_formats.write_safetensors(path, keep)
    return out


def merged(base_weights, adapter):
    """{module.weight: W + scale * B @ A} in Hugging Face row order (float64
    product rounded once to float32)."""
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r
    t = {k: np.asarray(v.data) for k, v in ck.quant_formats.read_safetensors(
        os.path.join(adapter, "adapter_model.safetensors")).items()}
    out = {}
    for key in t:
        if not key.endswith("lora_A.weight"):
            continue
        module = key[len("base_model.model."):-len(".lora_A.weight")]
        a = t[key].astype(np.float64)
        b = t[key.replace("lora_A", "lora_B")].astype(np.float64)
        w = base_weights(module + ".weight").astype(np.float64)
        out[module + ".weight"] = (w + scale * (b @ a)).astype(np.float32)
    return out


def tiny_f32():
    def build(path):
        src = ck.tiny_hf()
        os.makedirs(path)
        for f in os.listdir(src):
            if f != "model.safetensors":
                os.link(os.path.join(src, f), os.path.join(path, f))
        t = ck.quant_formats.read_safetensors(os.path.join(src, "model.safetensors"))
        ck.quant_formats.write_safetensors(os.path.join(path, "model.safetensors"),
                                           {k: np.asarray(v.data).astype(np.float32) for k, v in t.items()})
    return ck._cached("smollm2-2layers-hf-f32", build)


@pytest.mark.parametrize("args", [["--rank", "8", "--alpha", "16", "--targets", "q_proj,k_proj,v_proj", "--seed", "4",
                                   "--scale", "0.1"],
                                  ["--rank", "16", "--alpha", "8", "--rslora", "--targets", ALL_LINEAR, "--seed", "5",
                                   "--scale", "0.08"]], ids=["r8-qkv", "r16-all-rslora"])
def test_adapter_on_hf_base_equals_merged_weights(tmp_path, args):
    base = tiny_f32()
    adapter = make_adapter(str(tmp_path / "adapter"), 2, *args)
    t = ck.quant_formats.read_safetensors(os.path.join(base, "model.safetensors"))
    deltas = merged(lambda name: np.asarray(t[name].data), adapter)
    merged_dir = tmp_path / "merged"
    merged_dir.mkdir()
    for f in os.listdir(base):
        if f != "model.safetensors":
            os.link(os.path.join(base, f), merged_dir / f)
    weights = {k: np.asarray(v.data) for k, v in t.items()}
    weights.update(deltas)
    ck.quant_formats.write_safetensors(str(merged_dir / "model.safetensors"), weights)
    for p in PROMPTS[:2]:
        plain = generate(base, p, 24)["token_ids"]
        # float32 adapter storage: the merged weights carry unrounded deltas.
        with_adapter = generate(base, p, 24, "--lora", adapter, "--lora-dtype", "float32")["token_ids"]
        assert with_adapter == generate(str(merged_dir), p, 24)["token_ids"], p
        assert with_adapter != plain, "the adapter should change the output"


@pytest.mark.parametrize("variant", ["awq-g64", "gptq-b4-g128-actorder-asym"])
def test_adapter_on_quantized_base_within_near_tie_of_merged(tmp_path, variant):
    spec = {"awq-g64": dict(method="awq", bits=4, group_size=64)}.get(variant) or EXTRA[variant]
    qdir, ref = ck.quantized("smollm2", ck.bundled_hf("f16"), variant, **spec)
    adapter = make_adapter(str(tmp_path / "adapter"), 30, "--rank", "8", "--alpha", "16", "--targets", ALL_LINEAR,
                           "--seed", "6", "--scale", "0.06")
    reference = ck.read_f32(ref)
    deltas = merged(lambda name: reference[name], adapter)
    weights = dict(reference)
    weights.update(deltas)
    merged_ref = str(tmp_path / "merged.safetensors")
    ck.quant_formats.write_safetensors(merged_ref, weights)
    gguf = str(tmp_path / "merged.f32.gguf")
    ck.hf_to_gguf.write_f32_gguf(qdir, MODEL, gguf, weights=merged_ref)
    plain = generate(qdir, PROMPTS[0], 24)["token_ids"]
    assert generate(qdir, PROMPTS[0], 24, "--lora", adapter)["token_ids"] != plain
    near_tie_against(llama_for(gguf), qdir, PROMPTS[:2], QUANT_CAP, "--lora", adapter)


def test_same_adapter_on_hf_base_and_its_gguf(tmp_path):
    """q/k rows are half-split in the HF directory and interleaved in the GGUF
    written from it (llama.cpp's converter order): the same PEFT adapter gives
    the same tokens on both."""
    hf = ck.bundled_hf("f16")
    gguf = ck.f32_gguf("smollm2-hf-f16", hf)
    adapter = make_adapter(str(tmp_path / "adapter"), 30, "--rank", "8", "--alpha", "16", "--targets",
                           "q_proj,k_proj,v_proj,o_proj", "--seed", "7", "--scale", "0.08")
    for p in PROMPTS[:2]:
        on_hf = generate(hf, p, 24, "--lora", adapter)["token_ids"]
        assert on_hf == generate(gguf, p, 24, "--lora", adapter)["token_ids"], p
        assert on_hf != generate(hf, p, 24)["token_ids"], "the adapter should change the output"

"""Hostile Hugging Face directories: each gets one clear error (a single
line naming the problem), never a crash, a hang or a model that serves; the
worker refuses to start on them."""
import json
import os
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from conftest import run_tool, tool

pytest.importorskip("safetensors", reason="pip install -r tools/setup/requirements.txt")
import checkpoints as ck  # noqa: E402


def clone(src, dst):
    """A copy of a checkpoint directory; large files are hard links (never
    modified in place: a case rewrites a file by replacing it)."""
    os.makedirs(dst)
    for f in os.listdir(src):
        os.link(os.path.join(src, f), os.path.join(dst, f))
    return dst


def replace_json(path, edit):
    with open(path) as f:
        j = json.load(f)
    edit(j)
    os.remove(path)
    with open(path, "w") as f:
        json.dump(j, f)


def replace_tensors(path, edit):
    t = {k: np.asarray(v.data).copy() if v.dtype != "BF16" else v for k, v in ck.quant_formats.read_safetensors(path).items()}
    edit(t)
    os.remove(path)
    ck.quant_formats.write_safetensors(path, t)


def expect_refused(model, pattern):
    r = run_tool("tessera-generate", "--model", model, "--prompt", "x", "--max-tokens", "1", timeout=120)
    assert r.returncode > 0, f"exit {r.returncode}: {r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert re.search(pattern, lines[0]), lines[0]
    print(lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def dense():
    return ck.tiny_hf()


@pytest.fixture(scope="module")
def awq():
    return ck.quantized("smollm2-2layers", ck.tiny_hf(), "awq-g32")[0]


@pytest.fixture(scope="module")
def gptq():
    return ck.quantized("smollm2-2layers", ck.tiny_hf(), "gptq-b4-g32-actorder-asym")[0]


def sharded(dense, tmp_path):
    """The dense model as two shards with an index."""
    d = str(tmp_path / "sharded")
    os.makedirs(d)
    for f in os.listdir(dense):
        if f != "model.safetensors":
            os.link(os.path.join(dense, f), os.path.join(d, f))
    t = ck.quant_formats.read_safetensors(os.path.join(dense, "model.safetensors"))
    names = sorted(t)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        fn = f"model-0000{i + 1}-of-00002.safetensors"
        ck.quant_formats.write_safetensors(os.path.join(d, fn), {k: t[k] for k in part})
        weight_map.update({k: fn for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return d


def test_the_clean_sharded_copy_serves(dense, tmp_path):
    r = run_tool("tessera-generate", "--model", sharded(dense, tmp_path), "--prompt", "Hi", "--max-tokens", "2")
    assert r.returncode == 0, r.stderr


def test_shard_outside_the_directory(dense, tmp_path):
    d = sharded(dense, tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(os.path.join(d, "model-00001-of-00002.safetensors"), outside)
    replace_json(os.path.join(d, "model.safetensors.index.json"),
                 lambda j: j["weight_map"].update({k: "../elsewhere.safetensors" for k, v in j["weight_map"].items()
                                                   if v.startswith("model-00001")}))
    expect_refused(d, "resolves outside the model directory")


def test_shard_symlink_out_of_the_directory(dense, tmp_path):
    d = sharded(dense, tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(os.path.join(d, "model-00002-of-00002.safetensors"), outside)
    os.symlink(outside, os.path.join(d, "model-00002-of-00002.safetensors"))
    expect_refused(d, "resolves outside the model directory")


def test_missing_shard(dense, tmp_path):
    d = sharded(dense, tmp_path)
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    expect_refused(d, "model-00002-of-00002.safetensors.*does not exist")


def test_index_names_a_tensor_its_shard_lacks(dense, tmp_path):
    d = sharded(dense, tmp_path)
    replace_json(os.path.join(d, "model.safetensors.index.json"),
                 lambda j: j["weight_map"].update({"model.norm.weight": "model-00001-of-00002.safetensors"})
                 if j["weight_map"]["model.norm.weight"] != "model-00001-of-00002.safetensors"
                 else j["weight_map"].update({"model.norm.weight": "model-00002-of-00002.safetensors"}))
    expect_refused(d, "maps 'model.norm.weight'.*which lacks it")


def test_shapes_disagree_with_config(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    replace_json(os.path.join(d, "config.json"), lambda j: j.update(intermediate_size=1024))
    expect_refused(d, r"gate projection of layer 0: shape \[1536, 576\].*expected \[1024, 576\]")


def test_unknown_quant_method(awq, tmp_path):
    d = clone(awq, str(tmp_path / "d"))
    replace_json(os.path.join(d, "config.json"), lambda j: j["quantization_config"].update(quant_method="hqq"))
    expect_refused(d, "quant_method 'hqq' is not supported; supported: awq, gptq, compressed-tensors")


def test_gptq_bits_3(gptq, tmp_path):
    d = clone(gptq, str(tmp_path / "d"))
    replace_json(os.path.join(d, "config.json"), lambda j: j["quantization_config"].update(bits=3))
    expect_refused(d, "GPTQ bits 3 is not supported; supported: 4, 8")


def test_group_size_not_dividing_in_features(awq, tmp_path):
    d = clone(awq, str(tmp_path / "d"))
    replace_json(os.path.join(d, "config.json"), lambda j: j["quantization_config"].update(group_size=160))
    expect_refused(d, "group_size 160 does not divide in_features 576")


def test_g_idx_out_of_range(gptq, tmp_path):
    d = clone(gptq, str(tmp_path / "d"))
    name = "model.layers.1.mlp.up_proj.g_idx"
    replace_tensors(os.path.join(d, "model.safetensors"), lambda t: t[name].__setitem__(7, 1000))
    expect_refused(d, r"up_proj\.g_idx\[7\] = 1000 is outside the 18 groups")


def test_nan_scale(awq, tmp_path):
    d = clone(awq, str(tmp_path / "d"))
    name = "model.layers.0.self_attn.v_proj.scales"
    replace_tensors(os.path.join(d, "model.safetensors"), lambda t: t[name].__setitem__((2, 5), np.float16("nan")))
    expect_refused(d, "v_proj: scale .* is not finite")


def test_huge_config(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    os.remove(os.path.join(d, "config.json"))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"pad": "' + "x" * (100 << 20) + '"}')
    expect_refused(d, r"config.json' is \d+ bytes; the limit for this file is 4194304")


def test_deeply_nested_config(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    os.remove(os.path.join(d, "config.json"))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("[" * 10000 + "]" * 10000)
    expect_refused(d, "nests 10000 levels deep; the limit is 64")


def test_config_that_is_not_a_regular_file(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    os.remove(os.path.join(d, "config.json"))
    os.mkfifo(os.path.join(d, "config.json"))
    expect_refused(d, "config.json' is not a regular file")
    os.remove(os.path.join(d, "config.json"))
    os.symlink("/dev/zero", os.path.join(d, "config.json"))
    expect_refused(d, "config.json' resolves outside the model directory")


def test_pickle_only(dense, tmp_path):
    d = str(tmp_path / "d")
    os.makedirs(d)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        os.link(os.path.join(dense, f), os.path.join(d, f))
    with open(os.path.join(d, "pytorch_model.bin"), "wb") as f:
        f.write(b"\x80\x02}q\x00.")
    expect_refused(d, "pytorch_model.bin, a pickle file, which is never opened")


def test_truncated_shard(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    path = os.path.join(d, "model.safetensors")
    data = open(path, "rb").read()
    os.remove(path)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    expect_refused(d, "model.safetensors: ")


def test_unsupported_tokenizer_model(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    replace_json(os.path.join(d, "tokenizer.json"), lambda j: j["model"].update(type="WordPiece"))
    expect_refused(d, "model type 'WordPiece' is not supported")


def test_unsupported_architecture(dense, tmp_path):
    d = clone(dense, str(tmp_path / "d"))
    replace_json(os.path.join(d, "config.json"), lambda j: j.update(architectures=["GPTNeoXForCausalLM"]))
    expect_refused(d, "architecture 'GPTNeoXForCausalLM' is not supported")


def test_worker_never_serves_a_hostile_directory(gptq, tmp_path):
    d = clone(gptq, str(tmp_path / "d"))
    replace_json(os.path.join(d, "config.json"), lambda j: j["quantization_config"].update(bits=3))
    p = subprocess.run([tool("tessera-worker"), "--model", d, "--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0
    assert "GPTQ bits 3 is not supported" in p.stderr


def test_chat_template_that_outgrows_its_memory(dense, tmp_path):
    # The model's own template (tokenizer_config.json) is code from the
    # checkpoint: one that cannot render a small conversation within its
    # memory bound stops the load, and the worker never serves.
    d = clone(dense, str(tmp_path / "d"))
    doubling = ("{%- set ns = namespace(s='xxxxxxxx') -%}"
                "{%- for i in range(64) -%}{%- set ns.s = ns.s ~ ns.s -%}{%- endfor -%}{{ ns.s }}")
    replace_json(os.path.join(d, "tokenizer_config.json"), lambda j: j.update(chat_template=doubling))
    expect_refused(d, r"chat template cannot render a sample conversation: .*memory limit")
    p = subprocess.run([tool("tessera-worker"), "--model", d, "--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0
    assert "chat template cannot render a sample conversation" in p.stderr

"""Test checkpoints derived reproducibly from the bundled GGUF (no package
ships an HF, AWQ or GPTQ checkpoint): Hugging Face directories written by
tools/checkpoints/gguf_to_hf.py, quantized by the independent reference
packers of tools/checkpoints/quant_formats.py (with the float weights their
codes stand for), and F32 GGUFs of those weights for llama.cpp.

Each artifact is built once into a cache directory ($TESSERA_CHECKPOINT_CACHE,
else build/test-checkpoints) under a file lock, so tests running in parallel
share them, and is marked complete only when whole."""
import fcntl
import os
import shutil
import sys
from contextlib import contextmanager

import numpy as np

# Paths as the test conftests define them (this module is shared by the
# oracle and end-to-end suites, each with its own conftest).
SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("TESSERA_BIN", os.path.join(SOURCE, "build", "bin"))
MODEL = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

sys.path.insert(0, os.path.join(SOURCE, "tools", "checkpoints"))
import gguf_to_hf  # noqa: E402
import hf_to_gguf  # noqa: E402
import hfio  # noqa: E402
import quant_formats  # noqa: E402

CACHE = os.environ.get("TESSERA_CHECKPOINT_CACHE") or os.path.join(os.path.dirname(BIN), "test-checkpoints")


@contextmanager
def _locked(name):
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cached(name, build):
    """The path CACHE/name, built by build(path) unless already complete."""
    path = os.path.join(CACHE, name)
    done = path + ".done"
    with _locked(name):
        if not os.path.exists(done):
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
            build(path)
            open(done, "w").close()
    return path


def bundled_hf(dtype="f16"):
    """The bundled model as an HF directory."""
    return _cached(f"smollm2-hf-{dtype}", lambda p: gguf_to_hf.convert_gguf_to_hf(MODEL, p, dtype=dtype))


def tiny_hf():
    """The first two layers of the bundled model (f16) as an HF directory: a
    real vocabulary and real weights, small enough to quantize every way."""
    def build(path):
        src = bundled_hf("f16")
        os.makedirs(path)
        for f in os.listdir(src):
            if f not in ("model.safetensors", "config.json"):
                shutil.copy(os.path.join(src, f), path)
        import json
        cfg = json.load(open(os.path.join(src, "config.json")))
        cfg["num_hidden_layers"] = 2
        json.dump(cfg, open(os.path.join(path, "config.json"), "w"), indent=2)
        tensors = quant_formats.read_safetensors(os.path.join(src, "model.safetensors"))
        keep = {k: v for k, v in tensors.items()
                if not k.startswith("model.layers.") or int(k.split(".")[2]) < 2}
        quant_formats.write_safetensors(os.path.join(path, "model.safetensors"), keep)
    return _cached("smollm2-2layers-hf-f16", build)


def quantized(base_name, base_dir, variant, **overrides):
    """(directory, reference weights file) of `base_dir` quantized as
    quant_formats.TEST_SET[variant] (or `overrides`)."""
    spec = dict(quant_formats.TEST_SET.get(variant, {}))
    spec.update(overrides)
    name = f"{base_name}-{variant}"
    ref = os.path.join(CACHE, name + ".reference.safetensors")

    def build(path):
        quant_formats.quantize(base_dir, path, reference_out=ref, skip_indivisible=True, **spec)
    return _cached(name, build), ref


def f32_gguf(name, hf_dir, weights=None):
    """An all-F32 GGUF of hf_dir (with `weights` overriding its tensors) for llama.cpp."""
    return _cached(name + ".f32.gguf", lambda p: hf_to_gguf.write_f32_gguf(hf_dir, MODEL, p, weights=weights))


def read_f32(path):
    """{name: float32 array} of a safetensors file of F32 tensors."""
    out = {}
    for k, v in quant_formats.read_safetensors(path).items():
        assert v.dtype == "F32", (k, v.dtype)
        out[k] = np.asarray(v.data)
    return out

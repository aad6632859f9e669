#!/usr/bin/env python3
"""Seconds per gguf:TYPE for the bundled model (from its all-F32 GGUF, 513 MiB):
tessera-quantize against llama.cpp's llama_model_quantize (llama-cpp-python),
measured in one run on the same machine, same input, same thread count.
Both produce the same bytes (tests/oracle/test_quantize_gguf.py); this only
times them. Tessera's time is the whole CLI process (open, check the input,
quantize, write, fsync, rename); llama.cpp's is the library call.

    .venv/bin/python tests/bench/bench_quantize.py [--threads N] [TYPE ...]
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
import checkpoints as ck  # noqa: E402
from conftest import tool  # noqa: E402

FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q2_K": 10, "Q3_K_M": 12, "Q4_K_S": 14,
          "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "F16": 1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("types", nargs="*", default=list(FTYPES))
    a = ap.parse_args()
    import llama_cpp
    src = ck.f32_gguf("smollm2-hf-f16", ck.bundled_hf("f16"))
    with open(src, "rb") as f:  # warm the page cache for both
        while f.read(1 << 24):
            pass
    print(f"input {src} ({os.path.getsize(src) / 2**20:.0f} MiB), {a.threads} threads")
    print(f"{'type':8} {'tessera s':>10} {'llama.cpp s':>12} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as d:
        for name in a.types:
            ours, ref = os.path.join(d, "ours.gguf"), os.path.join(d, "ref.gguf")
            t0 = time.perf_counter()
            r = subprocess.run([tool("tessera-quantize"), "--input", src, "--output", ours, "--format", "gguf:" + name,
                                "--threads", str(a.threads)], capture_output=True, text=True)
            t1 = time.perf_counter()
            assert r.returncode == 0, r.stderr
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype, p.nthread = FTYPES[name], a.threads
            t2 = time.perf_counter()
            assert llama_cpp.llama_model_quantize(src.encode(), ref.encode(), ctypes.byref(p)) == 0
            t3 = time.perf_counter()
            same = open(ours, "rb").read() == open(ref, "rb").read()
            print(f"{name:8} {t1 - t0:10.2f} {t3 - t2:12.2f} {(t1 - t0) / (t3 - t2):6.2f}"
                  + ("" if same else "  OUTPUTS DIFFER"), flush=True)
            os.remove(ours)
            os.remove(ref)


if __name__ == "__main__":
    main()

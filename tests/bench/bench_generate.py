"""Prompt processing (512 tokens) and generation (128 tokens) speed of
Tessera and of llama.cpp (llama-cpp-python), same GGUF file, same thread
count, measured in the same run. Prints a table with the ratios.

    .venv/bin/python tests/bench/bench_generate.py [--threads 2] [--reps 3]
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np
from llama_cpp import Llama

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def llama_cpp_speed(model, threads, pp, tg, reps):
    m = Llama(model, n_ctx=pp + tg + 16, n_batch=pp, n_ubatch=pp, n_threads=threads, n_threads_batch=threads,
              verbose=False)
    prompt = [int(x) for x in np.random.default_rng(1).integers(0, m.n_vocab(), pp)]
    best_pp = best_tg = 0.0
    for _ in range(reps):
        m.reset()
        t0 = time.perf_counter()
        m.eval(prompt)
        t1 = time.perf_counter()
        tok = 1
        for _ in range(tg):
            m.eval([tok])
        t2 = time.perf_counter()
        best_pp = max(best_pp, pp / (t1 - t0))
        best_tg = max(best_tg, tg / (t2 - t1))
    return best_pp, best_tg


def tessera_speed(bin_dir, model, threads, pp, tg, reps):
    out = subprocess.run([os.path.join(bin_dir, "tessera-bench"), "--model", model, "--threads", str(threads),
                          "--pp", str(pp), "--tg", str(tg), "--repetitions", str(reps)],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    return r["pp_tokens_per_s"], r["tg_tokens_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tessera-bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    t_pp, t_tg = tessera_speed(a.tessera_bin, a.model, a.threads, a.pp, a.tg, a.reps)
    l_pp, l_tg = llama_cpp_speed(a.model, a.threads, a.pp, a.tg, a.reps)
    print(f"model {os.path.basename(a.model)}, {a.threads} threads, best of {a.reps}")
    print(f"{'test':<22}{'tessera tok/s':>15}{'llama.cpp tok/s':>17}{'ratio':>8}{'target':>8}")
    print(f"{'pp' + str(a.pp) + ' (prompt)':<22}{t_pp:>15.1f}{l_pp:>17.1f}{t_pp / l_pp:>8.2f}{'>=0.80':>8}")
    print(f"{'tg' + str(a.tg) + ' (generation)':<22}{t_tg:>15.1f}{l_tg:>17.1f}{t_tg / l_tg:>8.2f}{'>=1.00':>8}")


if __name__ == "__main__":
    main()

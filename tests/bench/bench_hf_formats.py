"""Speed and memory of Hugging Face checkpoints beside the GGUF they came
from, measured in one run: the bundled SmolLM2-135M as its Q4_1 GGUF, as
AWQ (int4, group 64), as GPTQ (int4 group 128 act-order; int8 group 64
act-order), all derived by tests/oracle/checkpoints.py, and as EXL2 at 4.0
bits per weight (tessera-quantize --format exl2, head at 6 bits). Prompt (pp) and
decode (tg) tok/s from tessera-bench with the same threads, the ratio to the
GGUF, and each run's peak RSS against the checkpoint's weight bytes + 100 MB.

The GGUF's output projection is Q8_0 (as llama.cpp's converter stores it);
the HF checkpoints keep theirs in F16, as AutoAWQ and GPTQModel do: for this
135M model that head is 45% of the weight bytes a decode step reads, and the
comparison includes it as each format ships.

    .venv/bin/python tests/bench/bench_hf_formats.py [--threads N] [--reps 3]
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
import checkpoints as ck  # noqa: E402


def weight_bytes(model):
    if os.path.isdir(model):
        return sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model) if f.endswith(".safetensors"))
    return os.path.getsize(model)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera-bin", default=os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "bin")))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pp", type=int, default=256)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    base = ck.bundled_hf("f16")
    awq = ck.quantized("smollm2", base, "awq-g64", method="awq", bits=4, group_size=64)[0]
    gptq4 = ck.quantized("smollm2", base, "gptq-b4-g128-actorder-asym", method="gptq", bits=4, group_size=128,
                         sym=False, desc_act=True)[0]
    gptq8 = ck.quantized("smollm2", base, "gptq-b8-g64-asym-actorder", **ck.quant_formats.TEST_SET[
        "gptq-b8-g64-asym-actorder"])[0]
    # EXL2 at 4.0 bits per weight (tessera-quantize's, head at 6 bits as exllamav2's default), from the
    # quality test's calibration set; its first build measures the model (about 30 min on 2 cores).
    import test_quantize_exl2 as tq
    exl2 = tq.exl2("smollm2", base, 4.0, tq.QUALITY_CAL)
    rows = [("Q4_1 GGUF", ck.MODEL, ()), ("AWQ int4 g64", awq, ()), ("GPTQ int4 g128 act-order", gptq4, ()),
            ("GPTQ int8 g64 act-order", gptq8, ()), ("EXL2 4.0 bpw (head 6)", exl2, ()), ("F16 HF (dense)", base, ())]
    # Rounds over all rows, best of each: a slow spell of a shared machine
    # hits every row alike instead of whichever ran during it. Each run is a
    # fresh process, so its peak RSS is its own.
    best = {}
    for _ in range(a.reps):
        for name, model, extra in rows:
            out = subprocess.run([sys.executable, "-c", f"""
import json, resource, subprocess, sys
p = subprocess.run({[os.path.join(a.tessera_bin, "tessera-bench"), "--model", model, "--threads", str(a.threads),
                     "--pp", str(a.pp), "--tg", str(a.tg), "--repetitions", "1", *extra]!r},
                   capture_output=True, text=True)
if p.returncode: sys.exit(p.stderr)
r = json.loads(p.stdout)
r["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(r))
"""], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr)
            r = json.loads(out.stdout)
            b = best.setdefault(name, r)
            for k in ("pp_tokens_per_s", "tg_tokens_per_s"):
                b[k] = max(b[k], r[k])
            b["peak_rss_bytes"] = max(b["peak_rss_bytes"], r["peak_rss_bytes"])
    results = [(name, model, best[name]) for name, model, _ in rows]
    ref = results[0][2]
    print(f"SmolLM2-135M, {a.threads} threads, pp{a.pp} / tg{a.tg}, best of {a.reps} interleaved rounds, one run")
    print(f"{'checkpoint':<28}{'pp tok/s':>10}{'x GGUF':>8}{'tg tok/s':>10}{'x GGUF':>8}{'target':>8}"
          f"{'peak RSS MB':>13}{'weights+100':>13}")
    for name, model, r in results:
        budget = (weight_bytes(model) >> 20) + 100
        print(f"{name:<28}{r['pp_tokens_per_s']:>10.1f}{r['pp_tokens_per_s'] / ref['pp_tokens_per_s']:>8.2f}"
              f"{r['tg_tokens_per_s']:>10.1f}{r['tg_tokens_per_s'] / ref['tg_tokens_per_s']:>8.2f}"
              f"{'>=0.90' if 'int4' in name or 'EXL2' in name else '':>8}"
              f"{r['peak_rss_bytes'] / 2**20:>13.0f}{budget:>13}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""CUDA decode throughput of the Llama-3-8B shape (synthetic weights) in F16
and Q4_K at 1, 8, 32 and 64 concurrent sequences, each beside its HBM
roofline (weight bytes read per step / the GPU's bandwidth) and beside
PyTorch transformers generating with the same shapes on the same GPU, when
torch and transformers are installed; plus peak GPU memory.

    .venv/bin/python tests/bench/bench_cuda.py [--model llama3-8b] [--types f16,q4_k] [--batches 1,8,32,64]

Prints a skip line and exits 0 where no CUDA device is usable.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("TESSERA_BIN", os.path.join(SOURCE, "build", "bin"))

# Peak HBM bandwidth by product name (bytes/s), from NVIDIA's data sheets.
BANDWIDTH = [("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("A100-SXM4-80GB", 2.039e12),
             ("A100", 1.555e12), ("L40S", 0.864e12)]


def gpu_name():
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


class PeakMemory:
    """Polls nvidia-smi for the device's used memory while a run lasts."""

    def __init__(self):
        self.peak_mib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            try:
                self.peak_mib = max(self.peak_mib, int(out.stdout.split()[0]))
            except (ValueError, IndexError):
                pass
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def tessera(model, fmt, batch, tg):
    args = [f"{BIN}/tessera-bench", "--synthetic", model, "--synthetic-type", fmt, "--device", "cuda", "--pp", "128",
            "--tg", str(tg), "--decode-batch", str(batch), "--repetitions", "2"]
    with PeakMemory() as mem:
        out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    r = json.loads(out.stdout)
    r["peak_mib"] = mem.peak_mib
    return r


def transformers_baseline(batch, fmt, tg):
    """Tokens/s of transformers' generate() on a randomly initialised model of
    the Llama-3-8B shape, or None with the reason."""
    try:
        import torch
        import transformers
    except ImportError as e:
        return None, f"not installed ({e.name})"
    if fmt != "f16":
        return None, "no Q4_K path in transformers"
    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   rope_theta=500000.0, max_position_embeddings=8192)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).half().eval()
    ids = torch.randint(3, 1000, (batch, 128), device="cuda")
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    torch.cuda.synchronize()
    t0 = time.time()
    model.generate(ids, max_new_tokens=tg, min_new_tokens=tg, do_sample=False)
    torch.cuda.synchronize()
    return batch * tg / (time.time() - t0), ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--types", default="f16,q4_k")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--tg", type=int, default=64)
    args = ap.parse_args()
    probe = subprocess.run([f"{BIN}/tessera-bench", "--synthetic", "tiny", "--device", "cuda", "--pp", "8", "--tg",
                            "2", "--repetitions", "1"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"bench_cuda: skipped: no usable CUDA device ({probe.stderr.strip()})")
        return 0
    name = gpu_name() or "unknown GPU"
    bandwidth = next((bw for key, bw in BANDWIDTH if key in name), None)
    print(f"{name}; HBM roofline at {bandwidth / 1e12:.2f} TB/s" if bandwidth else f"{name}: bandwidth unknown")
    print(f"{'type':>5} {'seqs':>5} {'tok/s':>10} {'roofline tok/s':>15} {'of roofline':>12} "
          f"{'transformers':>13} {'ratio':>7} {'peak MiB':>9}")
    for fmt in args.types.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = tessera(args.model, fmt, batch, args.tg)
            roof = batch * bandwidth / r["weight_bytes_per_step"] if bandwidth else float("nan")
            base, why = transformers_baseline(batch, fmt, args.tg)
            ratio = f"{r['tg_tokens_per_s'] / base:.2f}x" if base else "n/a"
            base_s = f"{base:.1f}" if base else f"n/a: {why}"
            print(f"{fmt:>5} {batch:>5} {r['tg_tokens_per_s']:>10.1f} {roof:>15.1f} "
                  f"{r['tg_tokens_per_s'] / roof:>11.0%} {base_s:>13} {ratio:>7} {r['peak_mib']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decode and prompt speed per tensor-parallel size beside TP=1, measured in
one run with tessera-bench --tensor-parallel-size N (issue 19).

On the CPU the ranks are threads sharing the machine's cores (--threads is
split over them) and every layer adds two all-reduces over loopback, so TP>1
is slower there: CPU ranks exist for tests and for hosts whose memory, not
compute, is the limit. With --device cuda the sizes are 1..the visible GPUs.

    .venv/bin/python tests/bench/bench_tensor_parallel.py [--device cpu|cuda] [--sizes 1,2,4]
"""
import argparse
import json
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def bench(bin_dir, model, device, tp, threads, pp, tg, batch, reps):
    args = [os.path.join(bin_dir, "tessera-bench"), "--model", model, "--device", device, "--tensor-parallel-size",
            str(tp), "--pp", str(pp), "--tg", str(tg), "--decode-batch", str(batch), "--repetitions", str(reps)]
    if device == "cpu":
        args += ["--threads", str(threads)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    return json.loads(r.stdout), ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tessera-bin", default=os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "bin")))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="1,2,3,4")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pp", type=int, default=128)
    ap.add_argument("--tg", type=int, default=64)
    ap.add_argument("--decode-batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    for tp in sizes:
        r, err = bench(a.tessera_bin, a.model, a.device, tp, a.threads, a.pp, a.tg, a.decode_batch, a.reps)
        rows.append((tp, r, err))
    base = next((r for tp, r, _ in rows if tp == 1 and r), None)
    print(f"{os.path.basename(a.model)} on {a.device} ({a.threads} threads on the CPU), pp {a.pp}, tg {a.tg}, "
          f"decode batch {a.decode_batch}")
    print(f"{'TP':>3} {'prompt tok/s':>13} {'vs TP=1':>8} {'decode tok/s':>13} {'vs TP=1':>8}")
    for tp, r, err in rows:
        if r is None:
            print(f"{tp:>3}  refused: {err}")
            continue
        pp_ratio = r["pp_tokens_per_s"] / base["pp_tokens_per_s"] if base else float("nan")
        tg_ratio = r["tg_tokens_per_s"] / base["tg_tokens_per_s"] if base else float("nan")
        print(f"{tp:>3} {r['pp_tokens_per_s']:>13.1f} {pp_ratio:>8.2f} {r['tg_tokens_per_s']:>13.1f} {tg_ratio:>8.2f}")


if __name__ == "__main__":
    main()

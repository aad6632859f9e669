"""The format comparison a team chooses a quantization from (`make compare`):
one dense model quantized by tessera-quantize into every format Tessera
serves, each measured on this machine in one run: file size, bits per
weight, the serving worker's peak RSS, prompt tok/s, decode tok/s at 1 and 16
concurrent streamed requests through the gateway, perplexity on held-out
text (llama.cpp's method) and its change vs the dense baseline, the mean KL
divergence from the baseline's token distribution, top-token agreement with
it, and the time to quantize.

No package ships a small FP16 original, so the dense baseline is the bundled
SmolLM2-135M-Instruct (Q4_1) dequantized to F16 as an HF directory
(tools/checkpoints/gguf_to_hf.py); every other row is quantized from that F16
model, so the table measures what each format loses against it (the Q4_1
rounding of the original is in all rows alike). With the Qwen2.5-Coder-0.5B
model installed (`make setup-extra`) it is a second row set.

Calibration (GPTQ and EXL2; AWQ on a quarter as many samples, its grid search
being costly on a CPU) uses data/corpus/c4.utf8 + code.utf8; perplexity uses
data/corpus/wiki.utf8 (never calibration text).

    .venv/bin/python tests/bench/compare_formats.py [--models smollm2,qwen] [--chunks 16]
        [--readme README.md] [--work build/compare]
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
import checkpoints as ck  # noqa: E402
from bench_serving import pct, sse_request  # noqa: E402
from conftest import free_port, wait_ready  # noqa: E402

CORPUS = os.path.join(ROOT, "data", "corpus")
QWEN = os.path.join(ROOT, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")

# (row name, --format, extra flags). The dense baseline row is the F16 HF
# directory itself.
FORMATS = [
    ("Q8_0", "gguf:Q8_0", []),
    ("Q6_K", "gguf:Q6_K", []),
    ("Q5_K_M", "gguf:Q5_K_M", []),
    ("Q4_K_M", "gguf:Q4_K_M", []),
    ("Q4_0", "gguf:Q4_0", []),
    ("RTN int4 g128", "rtn", ["--bits", "4", "--group-size", "128"]),
    # AWQ groups must divide every input width (SmolLM2's 576 columns: not 128).
    ("AWQ int4 g64", "awq", ["--group-size", "64"]),
    ("GPTQ int4 g128 act-order", "gptq", ["--bits", "4", "--group-size", "128", "--desc-act"]),
    # EXL2 at four average bitrates (head at tessera-quantize's default 6
    # bits, as exllamav2's converter): the first of them runs the measurement
    # pass and writes it, the others read it back (--measurement), as a team
    # trying several targets would.
    ("EXL2 3.0 bpw", "exl2", ["--bits", "3.0"]),
    ("EXL2 4.0 bpw", "exl2", ["--bits", "4.0"]),
    ("EXL2 4.65 bpw", "exl2", ["--bits", "4.65"]),
    ("EXL2 6.0 bpw", "exl2", ["--bits", "6.0"]),
]


def path_bytes(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                   if f.endswith((".safetensors", ".gguf")))
    return os.path.getsize(path)


def run_measured(cmd):
    """Runs cmd in a fresh child; returns (stdout, seconds, the child's peak RSS in bytes)."""
    wrapper = f"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run({cmd!r}, capture_output=True, text=True)
dt = time.perf_counter() - t
if p.returncode: sys.exit(p.stderr[-4000:])
print(json.dumps({{"stdout": p.stdout, "seconds": dt,
                  "rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    return r["stdout"], r["seconds"], r["rss"]


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def serve_and_measure(bin_dir, model, threads, decode_tokens, prompt_words):
    """Prompt tok/s (one long prompt, max_tokens 1), decode tok/s at 1 and 16
    concurrent streams, and the worker's peak RSS, through a real gateway."""
    wport, hport = free_port(), free_port()
    worker = subprocess.Popen([os.path.join(bin_dir, "tessera-worker"), "--listen", f"127.0.0.1:{wport}",
                               "--model", model, "--max-num-seqs", "32", "--model-name", "m"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([os.path.join(bin_dir, "tessera-gateway"), "--listen", f"127.0.0.1:{hport}",
                                "--worker", f"127.0.0.1:{wport}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{hport}/ready", timeout=120)
        words = ("time river light stone garden market winter letter music engine window harbor forest number "
                 "signal machine paper silver orange yellow quiet simple ancient modern").split()
        long_prompt = " ".join(words[i % len(words)] + str(i) for i in range(prompt_words))

        def completion(prompt, max_tokens):
            return sse_request(hport, "/v1/completions",
                               {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8,
                                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}})

        completion("warm up", 4)
        # Prompt speed: the prompt token count comes back in the usage of a
        # non-streamed request; TTFT of the streamed one times it.
        req = urllib.request.Request(
            f"http://127.0.0.1:{hport}/v1/completions",
            data=json.dumps({"model": "m", "prompt": long_prompt, "max_tokens": 1}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            prompt_tokens = json.loads(r.read())["usage"]["prompt_tokens"]
        ttfts = []
        for i in range(3):
            ttfts.append(completion(f"{i} " + long_prompt, 1)[0])
        prompt_tps = prompt_tokens / min(ttfts)

        def level(concurrency):
            results = []
            lock = threading.Lock()

            def client(k):
                res = completion(f"request {k}: " + " ".join(words[(k + j) % len(words)] for j in range(32)),
                                 decode_tokens)
                with lock:
                    results.append(res)

            threads_ = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
            t0 = time.perf_counter()
            for t in threads_:
                t.start()
            for t in threads_:
                t.join()
            wall = time.perf_counter() - t0
            gaps = [g for r in results for g in r[1]]
            return sum(r[2] for r in results) / wall, pct(gaps, 50)

        tps1, _ = level(1)
        tps16, _ = level(16)
        return {"prompt_tps": prompt_tps, "decode_tps_1": tps1, "decode_tps_16": tps16, "peak_rss": vm_hwm(worker.pid)}
    finally:
        gateway.terminate()
        worker.terminate()
        gateway.wait(15)
        worker.wait(30)


def perplexity(bin_dir, model, base, text, ctx, chunks, threads):
    cmd = [os.path.join(bin_dir, "tessera-perplexity"), "--model", model, "--text", text, "--ctx", str(ctx),
           "--chunks", str(chunks), "--json", "--threads", str(threads)]
    if base is not None and base != model:
        cmd += ["--base", base]
    out, _, _ = run_measured(cmd)
    return json.loads(out.strip().splitlines()[-1])


def count_params(hf_dir):
    from safetensors import safe_open
    n = 0
    for f in os.listdir(hf_dir):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(hf_dir, f), "np") as s:
                for k in s.keys():
                    shape = s.get_slice(k).get_shape()
                    size = 1
                    for d in shape:
                        size *= d
                    n += size
    return n


def calibration_file(work):
    path = os.path.join(work, "calibration.utf8")
    if not os.path.exists(path):
        with open(path, "w") as out:
            for name in ("c4.utf8", "code.utf8"):
                with open(os.path.join(CORPUS, name)) as f:
                    out.write(f.read())
    return path


def compare_model(label, base_hf, a, work):
    bin_dir = a.tessera_bin
    os.makedirs(work, exist_ok=True)
    wiki = os.path.join(CORPUS, "wiki.utf8")
    calib = calibration_file(os.path.dirname(work))
    n_params = count_params(base_hf)
    rows = []
    # This run's EXL2 measurement: never one left by an earlier run.
    exl2_measurement = os.path.join(work, "exl2.measurement.json")
    if os.path.exists(exl2_measurement):
        os.remove(exl2_measurement)

    def measure(name, model, quant_seconds, quant_rss, measured_here=False):
        print(f"[compare] {label} {name}: perplexity", file=sys.stderr, flush=True)
        ppl = perplexity(bin_dir, model, base_hf, wiki, a.ctx, a.chunks, a.threads)
        size = path_bytes(model)
        rows.append({"name": name, "model": model, "size": size, "bpw": size * 8 / n_params,
                     "quant_seconds": quant_seconds, "quant_rss": quant_rss, "ppl": ppl["ppl"],
                     "ppl_stderr": ppl.get("ppl_stderr"),
                     "kld": ppl.get("mean_kld", 0.0), "top1": ppl.get("top1_agreement", 1.0),
                     "measured_here": measured_here})

    measure("F16 (baseline)", base_hf, None, None)
    for name, fmt, extra in FORMATS:
        if a.only and not any(s.lower() in name.lower() for s in a.only.split(",")):
            continue
        out = os.path.join(work, re.sub(r"[^A-Za-z0-9_]+", "-", name) + (".gguf" if fmt.startswith("gguf:") else ""))
        cmd = [os.path.join(bin_dir, "tessera-quantize"), "--input", base_hf, "--output", out, "--format", fmt,
               "--force", "--threads", str(a.threads), *extra]
        measured_here = False
        if fmt == "exl2":
            measured_here = not os.path.exists(exl2_measurement)
            cmd += ["--measurement-out" if measured_here else "--measurement", exl2_measurement]
        if fmt in ("gptq", "exl2"):
            cmd += ["--calibration", calib, "--calibration-samples", str(a.calibration_samples),
                    "--seq-len", str(a.seq_len)]
        elif fmt == "awq":
            # AWQ's grid search re-runs each block 20 times: on a CPU it gets
            # a quarter of GPTQ's calibration tokens.
            cmd += ["--calibration", calib, "--calibration-samples", str(max(1, a.calibration_samples // 4)),
                    "--seq-len", str(a.seq_len)]
        print(f"[compare] {label} {name}: quantizing", file=sys.stderr, flush=True)
        _, seconds, rss = run_measured(cmd)
        measure(name, out, seconds, rss, measured_here)
    return {"label": label, "params": n_params, "rows": rows}


SERVING_KEYS = ("prompt_tps", "decode_tps_1", "decode_tps_16", "peak_rss")


def measure_serving(results, a):
    """The speed columns and peak RSS of every row, in a.serving_rounds
    rounds over all rows (round-robin: a drift of the shared machine's speed,
    which moved single figures by up to 2x, spreads over every row instead of
    landing on a few); each figure is the row's best over the rounds."""
    for r in range(a.serving_rounds):
        for res in results:
            for row in res["rows"]:
                print(f"[compare] {res['label']} {row['name']}: serving, round {r + 1}/{a.serving_rounds}",
                      file=sys.stderr, flush=True)
                s = serve_and_measure(a.tessera_bin, row["model"], a.threads, a.decode_tokens, a.prompt_words)
                for key in SERVING_KEYS:
                    row[key] = max(row.get(key, 0), s[key])


def render(results, a):
    lines = []
    for res in results:
        base = res["rows"][0]
        lines.append(f"**{res['label']}** ({res['params'] / 1e6:.0f}M parameters)")
        lines.append("")
        lines.append("| format | size MiB | bpw | peak RSS MiB | prompt tok/s | decode tok/s c=1 | decode tok/s c=16 "
                     "| PPL | ΔPPL vs F16 | mean KL | top-1 agree | quantize s | s per M weights |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            delta = (r["ppl"] / base["ppl"] - 1) * 100
            q = "—" if r["quant_seconds"] is None else f"{r['quant_seconds']:.1f}" + ("*" if r.get("measured_here") else "")
            q_per_m = "—" if r["quant_seconds"] is None else f"{r['quant_seconds'] / (res['params'] / 1e6):.3f}"
            lines.append(f"| {r['name']} | {r['size'] / 2**20:.1f} | {r['bpw']:.2f} | {r['peak_rss'] / 2**20:.0f} "
                         f"| {r['prompt_tps']:.0f} | {r['decode_tps_1']:.1f} | {r['decode_tps_16']:.1f} "
                         f"| {r['ppl']:.3f} | {delta:+.2f}% | {r['kld']:.4f} | {r['top1'] * 100:.1f}% | {q} | {q_per_m} |")
        lines.append("")
    lines.append(f"Measured {datetime.date.today()} on {platform.machine()}, {a.threads} threads, in one run of "
                 f"`make compare` (`{' '.join(sys.argv[1:]) or 'defaults'}`): perplexity over {a.chunks} windows of "
                 f"{a.ctx} tokens of data/corpus/wiki.utf8 (second half of each window scored, as llama.cpp does), "
                 f"KL and top-1 against the F16 row; GPTQ calibrated on {a.calibration_samples} samples (AWQ on "
                 f"{max(1, a.calibration_samples // 4)}) of {a.seq_len} tokens of c4+code text, EXL2 on GPTQ's; the first EXL2 row's quantize time includes the measurement pass (marked *), the others reuse that measurement; decode rows stream {a.decode_tokens} tokens per request "
                 f"through the gateway, each speed the best of {a.serving_rounds} rounds over all rows"
                 f"{' (measured again on the quantized files of an earlier run, whose size, quality and quantize columns these are: --reuse-quantized)' if a.reuse_quantized else ''}; "
                 f"prompt tok/s is a ~{a.prompt_words}-word prompt's token count over its best "
                 f"time to first token; peak RSS is the serving worker's VmHWM (weights, scratch and its default 256 MiB "
                 f"KV cache).")
    return "\n".join(lines)


def quantize_and_score(a):
    """Every model's rows: quantized, sized and scored (perplexity, KL, top-1)."""
    results = []
    for m in a.models.split(","):
        if m == "smollm2":
            results.append(compare_model("SmolLM2-135M-Instruct", ck.bundled_hf("f16"), a, os.path.join(a.work, m)))
        elif m == "qwen":
            if not os.path.exists(QWEN):
                print("[compare] Qwen2.5-Coder-0.5B is not installed (make setup-extra): its rows are skipped",
                      file=sys.stderr)
                continue
            hf = os.path.join(a.work, "qwen-hf-f16")
            if not os.path.exists(os.path.join(hf, "config.json")):
                ck.gguf_to_hf.convert_gguf_to_hf(QWEN, hf, dtype="f16")
            results.append(compare_model("Qwen2.5-Coder-0.5B-Instruct", hf, a, os.path.join(a.work, m)))
        else:
            sys.exit(f"unknown model {m!r}: smollm2 or qwen")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera-bin", default=os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "bin")))
    ap.add_argument("--models", default="smollm2,qwen")
    ap.add_argument("--only", default="", help="comma-separated substrings of the rows to run (besides F16)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--calibration-samples", type=int, default=16, help="gptq; awq takes a quarter")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=400)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "compare"))
    ap.add_argument("--readme", default="", help="write the table into this README between the compare markers")
    ap.add_argument("--serving-rounds", type=int, default=2, help="rounds of the speed measurement over all rows")
    ap.add_argument("--reuse-quantized", action="store_true",
                    help="take the rows (files, size, quality, quantize time) from WORK/compare.json and measure "
                         "only the speeds again")
    a = ap.parse_args()
    if a.reuse_quantized:
        with open(os.path.join(a.work, "compare.json")) as f:
            results = json.load(f)
        for res in results:
            for row in res["rows"]:
                if not os.path.exists(row.get("model", "")):
                    sys.exit(f"--reuse-quantized: {row['name']}: its model {row.get('model')!r} is gone")
                for key in SERVING_KEYS:
                    row.pop(key, None)
    else:
        results = quantize_and_score(a)
    measure_serving(results, a)
    table = render(results, a)
    print(table)
    with open(os.path.join(a.work, "compare.json"), "w") as f:
        json.dump(results, f, indent=1)
    if a.readme:
        text = open(a.readme).read()
        begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
        if begin not in text or end not in text:
            sys.exit(f"{a.readme} has no {begin} ... {end} section")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(a.readme, "w") as f:
            f.write(head + begin + "\n" + table + "\n" + end + tail)


if __name__ == "__main__":
    main()

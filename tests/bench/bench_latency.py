"""Latency as users feel it, through the real gateway: streamed completions
with prompts of 16-1,000 tokens at several concurrencies, for the worker's
stall-free step budget (automatic, from the step cost it measures at start)
against the fixed 256-token budget it had before, in one run.

Per concurrency: output tok/s, time to first token, inter-token latency and
end-to-end latency at p50/p90/p99, and the longest stall a running stream
saw while another request's prompt was being prefilled (a gap between two of
its tokens that overlaps another request's send..first-token window).

    .venv/bin/python tests/bench/bench_latency.py [--concurrency 1,4,16] [--requests-per-client 2]
        [--max-tokens 96]

Targets (issue 16): at 16 concurrent, ITL p99 <= 3x ITL p50, and output
tok/s >= 0.9x the fixed budget's.
"""
import argparse
import os
import random
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import BIN, MODEL_ID, free_port, wait_ready  # noqa: E402
import sse_timing  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def streamed(port, body):
    """(send time, token arrival times, end time) of one streamed completion."""
    r = sse_timing.stream(port, body)
    return r.sent, r.arrivals, r.done


def run_level(port, concurrency, per_client, max_tokens, seed):
    results, lock = [], threading.Lock()

    def client(k):
        r = random.Random(seed * 1000 + k)
        for _ in range(per_client):
            n = r.randint(16, 1000)
            prompt = [r.randint(300, 40000) for _ in range(n)]
            res = streamed(port, {"model": MODEL_ID, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8,
                                  "ignore_eos": True, "stream": True, "seed": r.randint(0, 1 << 30)})
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(len(a) for _, a, _ in results)
    ttft = [a[0] - s for s, a, _ in results if a]
    itl = [b - a for _, arr, _ in results for a, b in zip(arr, arr[1:])]
    e2e = [e - s for s, _, e in results]
    prefills = [(s, a[0]) for s, a, _ in results if a]
    stall = 0.0
    for s, arr, _ in results:
        for a, b in zip(arr, arr[1:]):
            # A gap overlapping another request's prefill window.
            if any(ps < b and pe > a and not (ps == s) for ps, pe in prefills):
                stall = max(stall, b - a)
    return {"tps": tokens / wall, "ttft": ttft, "itl": itl, "e2e": e2e, "stall": stall}


def serve(extra):
    wport, hport = free_port(), free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-latency-worker-{wport}.log"), "w+")
    worker = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{wport}", "--max-num-seqs", "32",
                               *extra], stdout=log, stderr=subprocess.STDOUT)
    gateway = subprocess.Popen([f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{hport}", "--worker",
                                f"127.0.0.1:{wport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{hport}/ready", timeout=120)
    log.flush()
    with open(log.name) as f:
        m = re.search(r"tessera-worker: (max_num_batched_tokens \d+[^\n]*)", f.read())
    return worker, gateway, hport, m.group(1) if m else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--step-target-ms", type=float, default=0, help="the stall-free worker's target (0: its default)")
    a = ap.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    stall_free = ["--step-target-ms", str(a.step_target_ms)] if a.step_target_ms else []
    configs = [("stall-free (auto budget)", stall_free), ("fixed 256 (before)", ["--max-num-batched-tokens", "256"])]
    table = {}
    for name, extra in configs:
        worker, gateway, port, budget = serve(extra)
        try:
            streamed(port, {"model": MODEL_ID, "prompt": "warm up", "max_tokens": 4, "stream": True})
            print(f"{name}: {budget}", flush=True)
            for c in levels:
                table[(name, c)] = run_level(port, c, a.requests_per_client, a.max_tokens, seed=c)
        finally:
            gateway.terminate()
            worker.terminate()
            gateway.wait(15)
            worker.wait(30)
    print(f"\nstreamed completions, prompts of 16-1000 tokens, {a.max_tokens} output tokens, "
          f"{a.requests_per_client} per client; latencies in ms (p50/p90/p99)")
    print(f"{'config':<26}{'c':>3}{'out tok/s':>10}{'TTFT':>18}{'ITL':>16}{'E2E':>20}{'ITL p99/p50':>12}"
          f"{'max stall':>10}")
    ms = lambda xs: "/".join(f"{pct(xs, p) * 1000:.0f}" for p in (50, 90, 99))  # noqa: E731
    for c in levels:
        for name, _ in configs:
            r = table[(name, c)]
            print(f"{name:<26}{c:>3}{r['tps']:>10.1f}{ms(r['ttft']):>18}{ms(r['itl']):>16}{ms(r['e2e']):>20}"
                  f"{pct(r['itl'], 99) / pct(r['itl'], 50):>12.2f}{r['stall'] * 1000:>8.0f}ms")
    if 16 in levels:
        new, old = table[(configs[0][0], 16)], table[(configs[1][0], 16)]
        print(f"\nat 16 concurrent: ITL p99/p50 {pct(new['itl'], 99) / pct(new['itl'], 50):.2f} (target <= 3; before "
              f"{pct(old['itl'], 99) / pct(old['itl'], 50):.2f}); output tok/s {new['tps'] / old['tps']:.2f}x the "
              f"fixed budget's (target >= 0.90)")


if __name__ == "__main__":
    main()

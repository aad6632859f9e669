"""Serving throughput through the real gateway, in the style of vLLM's
benchmark_serving: streamed completions at concurrency 1, 4, 16 and 32;
output tokens/s, time to first token and inter-token latency p50/p99; then
time to first token for a chat request whose 1,000-token system prompt is
already in the prefix cache against one whose prompt is new.

    .venv/bin/python tests/bench/bench_serving.py [--requests-per-client 4] [--max-tokens 64]
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import BIN, MODEL_ID, free_port, wait_ready  # noqa: E402
import sse_timing  # noqa: E402

WORDS = ("time river light stone garden market winter letter music engine window harbor forest number "
         "signal machine paper silver orange yellow quiet simple ancient modern").split()


def sse_request(port, path, body):
    """Returns (ttft, [inter-token gaps], output tokens) of one streamed request."""
    r = sse_timing.stream(port, body, path)
    return r.ttft, r.gaps, (r.usage or {}).get("completion_tokens", 0)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def run_level(port, concurrency, per_client, max_tokens, rng):
    results = []
    lock = threading.Lock()

    def client(seed):
        r = random.Random(seed)
        for _ in range(per_client):
            prompt = " ".join(r.choice(WORDS) for _ in range(r.randint(16, 96)))
            body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            res = sse_request(port, "/v1/completions", body)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client, args=(rng.random(),)) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[2] for r in results)
    ttfts = [r[0] for r in results if r[0] is not None]
    gaps = [g for r in results for g in r[1]]
    return tokens / wall, ttfts, gaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args()
    wport, hport = free_port(), free_port()
    worker = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{wport}", "--max-num-seqs", "32"],
                              stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{hport}", "--worker",
                                f"127.0.0.1:{wport}"], stderr=subprocess.DEVNULL)
    rng = random.Random(0)
    try:
        wait_ready(f"http://127.0.0.1:{hport}/ready")
        sse_request(hport, "/v1/completions", {"model": MODEL_ID, "prompt": "warm up", "max_tokens": 4, "stream": True})
        print(f"streamed completions, {a.max_tokens} output tokens each, prompts of 16-96 words, temperature 0.8")
        print(f"{'concurrency':>11}{'output tok/s':>14}{'vs c=1':>8}{'TTFT p50':>11}{'TTFT p99':>11}"
              f"{'ITL p50':>10}{'ITL p99':>10}")
        base = None
        for c in (1, 4, 16, 32):
            tps, ttfts, gaps = run_level(hport, c, a.requests_per_client, a.max_tokens, rng)
            base = base or tps
            print(f"{c:>11}{tps:>14.1f}{tps / base:>7.2f}x{pct(ttfts, 50) * 1000:>9.0f}ms{pct(ttfts, 99) * 1000:>9.0f}ms"
                  f"{pct(gaps, 50) * 1000:>8.1f}ms{pct(gaps, 99) * 1000:>8.1f}ms")
        print("target: output tokens/s at 16 concurrent >= 3x the figure at 1")

        system = " ".join(rng.choice(WORDS) for _ in range(900))
        def chat(system_prompt, question):
            body = {"model": MODEL_ID, "max_tokens": 1, "stream": True,
                    "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]}
            return sse_request(hport, "/v1/chat/completions", body)[0]
        chat(system, "warm the cache")
        cached = [chat(system, f"question number {i}?") for i in range(5)]
        uncached = [chat(f"{i} {rng.random()} " + system, f"question number {i}?") for i in range(5)]
        c50, u50 = statistics.median(cached), statistics.median(uncached)
        print(f"time to first token, ~1000-token system prompt: uncached {u50 * 1000:.0f} ms, "
              f"cached {c50 * 1000:.0f} ms, speed-up {u50 / c50:.1f}x (target >= 5x)")
    finally:
        gateway.terminate()
        worker.terminate()
        gateway.wait(10)
        worker.wait(30)


if __name__ == "__main__":
    main()

"""Routing experiment: 8 simulated workers (tessera-worker --engine=sim)
behind one gateway, 200 adapters with Zipf(1.0) popularity, Poisson
arrivals at 50%, 70% and 90% of the cluster's capacity; for each routing
policy side by side: device-hit rate (requests that found their adapter on
the device of the worker they were sent to), adapter loads per 1,000
requests, time to first token p50/p99, throughput.

Each (policy, load) runs on fresh workers: a warm-up of --warmup one-token
requests with the same popularity (so that adapter residency reaches its
steady state quickly; a cold cluster's first sight of each tail adapter is
not what routing is judged by), then --requests measured ones. Simulated
workers: 16 sequences per batch, each step 20 ms + 2 ms per running
sequence + 50 us per prompt token, 48 output tokens per request, 32 adapter
slots on the device and 64 in host memory, 500 ms to load an adapter from
disk (125 ms from host).

    .venv/bin/python tests/bench/bench_routing.py [--requests 1000] [--warmup 6000] [--loads 0.5,0.7,0.9]
"""
import argparse
import concurrent.futures
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import BIN, compile_protos, free_port, wait_ready  # noqa: E402

WORKERS, ADAPTERS, SEQS, TOKENS = 8, 200, 16, 48
STEP_MS, DECODE_MS, PREFILL_US, LOAD_MS = 20.0, 2.0, 50.0, 500.0
WARMUP_RATE = 250.0  # one-token requests per second
PROMPT = "word " * 60  # ~75 simulated tokens
POLICIES = ["round-robin", "least-loaded", "adapter-affinity"]


def capacity_rps():
    """Requests/s the cluster sustains with full batches and warm adapters."""
    step = STEP_MS + SEQS * DECODE_MS + PREFILL_US * (len(PROMPT) // 4) / 1000 / TOKENS
    return WORKERS * SEQS / (TOKENS * step / 1000)


def stream_request(port, body):
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    t0 = time.perf_counter()
    ttft, buf, ok = None, b"", False
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        if ttft is None and b'"text":" tok' in chunk:
            ttft = time.perf_counter() - t0
        buf += chunk
    s.close()
    ok = b"HTTP/1.1 200" in buf[:20] and b"[DONE]" in buf
    return ttft, ok


def run(policy, rate, n_warm, n_measure, seed, pb, pb_grpc, gateway_log=None):
    import grpc
    procs, ports = [], [free_port() for _ in range(WORKERS)]
    try:
        for p in ports:
            procs.append(subprocess.Popen(
                [f"{BIN}/tessera-worker", "--engine", "sim", "--listen", f"127.0.0.1:{p}", "--sim-adapters",
                 str(ADAPTERS), "--max-num-seqs", str(SEQS), "--max-loras", "32", "--max-cpu-loras", "64",
                 "--max-waiting", "1024", "--sim-step-ms", str(STEP_MS), "--sim-decode-us-per-seq",
                 str(DECODE_MS * 1000), "--sim-prefill-us-per-token", str(PREFILL_US), "--sim-adapter-load-ms",
                 str(LOAD_MS)], stderr=subprocess.DEVNULL))
        hport = free_port()
        args = [f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{hport}", "--routing-policy", policy,
                "--io-threads", "2"]
        for p in ports:
            args += ["--worker", f"127.0.0.1:{p}"]
        if gateway_log:
            args.append("--log-routing=true")
        procs.append(subprocess.Popen(args, stderr=open(gateway_log, "w") if gateway_log else subprocess.DEVNULL))
        wait_ready(f"http://127.0.0.1:{hport}/ready")
        stubs = [pb_grpc.WorkerStub(grpc.insecure_channel(f"127.0.0.1:{p}")) for p in ports]
        # Every worker must be known to the gateway before traffic starts.
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.create_connection(("127.0.0.1", hport)) as s:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                body = b""
                while chunk := s.recv(65536):
                    body += chunk
            if body.count(b'"parent":"sim"') >= ADAPTERS:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # load reports of all workers

        rng = random.Random(seed)
        weights = [1.0 / (i + 1) for i in range(ADAPTERS)]
        names = [f"a{i}" for i in range(ADAPTERS)]
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=256)

        def phase(n, rate, tokens):
            results, futures = [], []
            t = time.perf_counter()
            start = t
            for _ in range(n):
                t += rng.expovariate(rate)
                delay = t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                body = {"model": rng.choices(names, weights)[0], "prompt": PROMPT, "max_tokens": tokens,
                        "stream": True}
                futures.append(pool.submit(stream_request, hport, body))
            for f in futures:
                results.append(f.result())
            return results, time.perf_counter() - start

        phase(n_warm, WARMUP_RATE, 1)
        time.sleep(0.5)
        before = [s.GetModelInfo(pb.GetModelInfoRequest()) for s in stubs]
        results, wall = phase(n_measure, rate, TOKENS)
        after = [s.GetModelInfo(pb.GetModelInfoRequest()) for s in stubs]
        pool.shutdown()
        reqs = sum(a.adapter_requests - b.adapter_requests for a, b in zip(after, before))
        hits = sum(a.adapter_device_hits - b.adapter_device_hits for a, b in zip(after, before))
        loads = sum(a.adapter_loads - b.adapter_loads for a, b in zip(after, before))
        ttfts = sorted(r[0] for r in results if r[0] is not None)
        ok = sum(1 for r in results if r[1])
        pct = lambda p: ttfts[min(len(ttfts) - 1, int(round(p / 100 * (len(ttfts) - 1))))] * 1000
        return {"hit": hits / max(reqs, 1), "loads_per_1k": 1000 * loads / max(reqs, 1), "p50": pct(50),
                "p99": pct(99), "rps": ok / wall, "ok": ok, "n": len(results)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=6000)
    ap.add_argument("--loads", default="0.5,0.7,0.9", help="fractions of capacity")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--gateway-log", help="write the gateway's routing decisions to this file")
    a = ap.parse_args()
    pb, pb_grpc = compile_protos("tessera/worker/v1/worker.proto", "tessera.worker.v1.worker")
    cap = capacity_rps()
    print(f"{WORKERS} simulated workers, {ADAPTERS} adapters with Zipf(1.0) popularity, Poisson arrivals; "
          f"capacity ~{cap:.0f} requests/s; {a.requests} measured requests after {a.warmup} warm-up ones")
    print(f"{'load':>5} {'policy':>17} {'device hits':>12} {'loads/1k req':>13} {'TTFT p50':>10} {'TTFT p99':>10}"
          f" {'req/s':>7} {'ok':>9}")
    table = {}
    for load in [float(x) for x in a.loads.split(",")]:
        for policy in a.policies.split(","):
            r = run(policy, load * cap, a.warmup, a.requests, 1, pb, pb_grpc, a.gateway_log)
            table[(load, policy)] = r
            print(f"{load:>5.0%} {policy:>17} {r['hit']:>11.1%} {r['loads_per_1k']:>13.1f} {r['p50']:>8.0f}ms"
                  f" {r['p99']:>8.0f}ms {r['rps']:>7.1f} {r['ok']:>4}/{r['n']:<4}")
    if (0.7, "round-robin") not in table or (0.7, "adapter-affinity") not in table:
        return
    rr, aff = table[(0.7, "round-robin")], table[(0.7, "adapter-affinity")]
    print(f"at 70% load: affinity p99 TTFT {aff['p99']:.0f} ms vs round-robin {rr['p99']:.0f} ms "
          f"(ratio {aff['p99'] / rr['p99']:.2f}, target <= 0.5); affinity device-hit rate {aff['hit']:.1%} "
          f"(target >= 90%)")


if __name__ == "__main__":
    main()

"""The gateway's own cost: time to first token and total latency of the same
streamed chat request sent through the gateway (HTTP/SSE) and straight to
the worker's gRPC service, interleaved, N requests each, p50 and p99 side
by side. Target: at most 1 ms added at p50.

    .venv/bin/python tests/bench/bench_gateway.py [--requests 200] [--max-tokens 8]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import BIN, MODEL_ID, compile_protos, free_port, wait_ready  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class SseClient:
    """Keep-alive HTTP/1.1 client reading SSE on a raw socket (little client
    overhead, so the figure is the gateway's)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port

    def run(self, body):
        data = json.dumps(body).encode()
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        t0 = time.perf_counter()
        self.sock.sendall(req)
        buf = b""
        ttft = None
        while not buf.endswith(b"0\r\n\r\n"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
            if ttft is None and b"data: " in buf:
                ttft = time.perf_counter() - t0
        return ttft, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=8)
    a = ap.parse_args()
    pb, rpc = compile_protos("tessera/worker/v1/worker.proto", "tessera.worker.v1.worker")
    wport, hport = free_port(), free_port()
    worker = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{wport}"], stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{hport}", "--worker",
                                f"127.0.0.1:{wport}"], stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{hport}/ready")
        stub = rpc.WorkerStub(grpc.insecure_channel(f"127.0.0.1:{wport}"))
        messages = [{"role": "user", "content": "Say something short."}]
        grpc_req = pb.GenerateRequest(chat=pb.ChatPrompt(messages=[pb.ChatMessage(**m) for m in messages],
                                                         add_generation_prompt=True),
                                      max_new_tokens=a.max_tokens, ignore_eos=True,
                                      sampling=pb.SamplingParams(temperature=0))
        body = {"model": MODEL_ID, "messages": messages, "max_tokens": a.max_tokens, "temperature": 0, "stream": True}
        http = SseClient(hport)
        direct_ttft, direct_total, gw_ttft, gw_total = [], [], [], []
        for i in range(a.requests + 10):
            t0 = time.perf_counter()
            first = None
            for r in stub.Generate(grpc_req):
                if first is None:
                    first = time.perf_counter() - t0
            total = time.perf_counter() - t0
            g_first, g_total = http.run(body)
            if i >= 10:  # warm-up
                direct_ttft.append(first)
                direct_total.append(total)
                gw_ttft.append(g_first)
                gw_total.append(g_total)
        ms = lambda x: x * 1000
        print(f"{a.requests} streamed chat requests each way, {a.max_tokens} tokens, interleaved")
        print(f"{'metric':<26}{'worker gRPC':>13}{'via gateway':>13}{'added':>9}{'target':>9}")
        for name, d, g in [("time to first token p50", direct_ttft, gw_ttft), ("time to first token p99", direct_ttft, gw_ttft)]:
            p = 50 if "p50" in name else 99
            print(f"{name:<26}{ms(pct(d, p)):>11.2f}ms{ms(pct(g, p)):>11.2f}ms{ms(pct(g, p) - pct(d, p)):>7.2f}ms"
                  f"{'<=1ms' if p == 50 else '':>9}")
        for name, d, g in [("total latency p50", direct_total, gw_total), ("total latency p99", direct_total, gw_total)]:
            p = 50 if "p50" in name else 99
            print(f"{name:<26}{ms(pct(d, p)):>11.2f}ms{ms(pct(g, p)):>11.2f}ms{ms(pct(g, p) - pct(d, p)):>7.2f}ms"
                  f"{'<=1ms' if p == 50 else '':>9}")
    finally:
        gateway.terminate()
        worker.terminate()
        gateway.wait(10)
        worker.wait(10)


if __name__ == "__main__":
    main()

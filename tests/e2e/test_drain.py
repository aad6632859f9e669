"""Graceful drain: SIGTERM to the worker, then to the gateway, while 20
streaming requests run; none of them is lost, both exit 0. And the drain
timeout: streams still running at the deadline end with an in-band error."""
import json
import os
import signal
import subprocess
import threading
import time

import requests

from conftest import BIN, MODEL_ID, free_port, wait_ready
from test_failover import Procs, wait_worker

STREAMS = 20


def stream_chat(url, max_tokens, results, index, started):
    body = {"model": MODEL_ID, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Count to {index + 5}."}]}
    outcome, tokens, chunks = "truncated", None, 0
    try:
        with requests.post(f"{url}/v1/chat/completions", json=body, timeout=120, stream=True) as r:
            if r.status_code != 200:
                results[index] = (f"http_{r.status_code}", 0)
                started.release()
                return
            first = True
            for line in r.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data: "):
                    continue
                if first:
                    started.release()
                    first = False
                data = line[6:]
                if data == "[DONE]":
                    outcome = "ok" if outcome == "truncated" else outcome
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    outcome = "error_event"
                elif chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    chunks += 1
    except requests.RequestException as e:
        outcome = f"exception {e}"
    results[index] = (outcome, tokens if tokens is not None else chunks)


def run_streams(url, max_tokens):
    results = [None] * STREAMS
    started = threading.Semaphore(0)
    threads = [threading.Thread(target=stream_chat, args=(url, max_tokens, results, i, started))
               for i in range(STREAMS)]
    for t in threads:
        t.start()
    for _ in range(STREAMS):  # every stream has its first chunk
        assert started.acquire(timeout=120)
    return threads, results


def start_stack(procs, drain_timeout_s, extra_worker=()):
    worker = f"127.0.0.1:{free_port()}"
    procs.start("worker", [f"{BIN}/tessera-worker", "--listen", worker, "--max-num-seqs", str(STREAMS),
                           "--drain-timeout-s", str(drain_timeout_s), *extra_worker])
    wait_worker(worker)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    procs.start("gateway", [f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{http}", "--worker", worker,
                            "--drain-timeout-s", str(drain_timeout_s), "--health-check-interval-ms", "200"])
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
    return url


def test_sigterm_to_worker_then_gateway_loses_no_stream():
    procs = Procs()
    try:
        url = start_stack(procs, drain_timeout_s=60)
        threads, results = run_streams(url, max_tokens=48)
        procs.procs["worker"].send_signal(signal.SIGTERM)
        # The worker stops taking work at once: the gateway sees it not
        # serving and is no longer ready (its only worker is draining).
        deadline = time.time() + 10
        while requests.get(f"{url}/ready", timeout=5).status_code == 200 and time.time() < deadline:
            time.sleep(0.05)
        assert requests.get(f"{url}/ready", timeout=5).status_code == 503
        for t in threads:
            t.join(120)
        assert results == [("ok", 48)] * STREAMS, results
        assert procs.procs["worker"].wait(30) == 0
        assert "draining" in procs.log("worker")
    finally:
        procs.stop()

    procs = Procs()
    try:
        url = start_stack(procs, drain_timeout_s=60)
        threads, results = run_streams(url, max_tokens=48)
        procs.procs["gateway"].send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Draining: not ready, and new requests are refused, while the 20
        # streams go on to the end.
        r = requests.get(f"{url}/ready", timeout=5)
        assert r.status_code == 503 and r.json()["status"] == "draining"
        r = requests.post(f"{url}/v1/completions", json={"model": MODEL_ID, "prompt": "hi", "max_tokens": 2},
                          timeout=10)
        assert r.status_code == 503
        for t in threads:
            t.join(120)
        assert results == [("ok", 48)] * STREAMS, results
        assert procs.procs["gateway"].wait(30) == 0
    finally:
        procs.stop()


def test_streams_running_at_the_drain_deadline_end_with_an_error_event():
    procs = Procs()
    try:
        url = start_stack(procs, drain_timeout_s=1)
        threads, results = run_streams(url, max_tokens=400)
        t0 = time.time()
        procs.procs["worker"].send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert procs.procs["worker"].wait(30) == 0
        assert time.time() - t0 < 15
        # Each stream got part of its tokens, then an error event and [DONE].
        assert all(o == "error_event" and 0 < n < 400 for o, n in results), results
        assert "drain timeout" in procs.log("worker")
    finally:
        procs.stop()

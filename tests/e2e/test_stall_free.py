"""Stall-free batching through the real gateway: a 2,000-token prompt that
arrives while 8 streams are generating is prefilled in chunks that share
steps with their decodes, so no running stream waits for it longer than the
worker's step target plus 50%.

The worker measures its step cost at start (per step, per row and per
attended key) and prints it; the test reads the target from that line, so it
holds whatever this machine's speed. The attention term is what makes it
hold: counting rows only, a budget measured at short context let the
prompt's late chunks (positions near 2,000) take 1.2 s against a 150 ms
target. Timing-sensitive: it must run alone (CTest: e2e_stall_free, RUN_SERIAL
as every e2e test). On the 2-core VM the worst gap measured 159-180 ms
against the 225 ms limit (150 ms target); the largest gaps are steps every
stream saw alike, not client scheduling. By hand:
    cd tests/e2e && GOMP_SPINCOUNT=10000 ../../.venv/bin/python -m pytest -q -s test_stall_free.py"""
import re
import threading
import time

import pytest

from conftest import MODEL_ID, Stack
from sse_timing import stream

TARGET_MS = 150
STREAMS = 8


@pytest.fixture(scope="module")
def stack():
    s = Stack(extra_worker_args=["--step-target-ms", str(TARGET_MS)])
    yield s
    s.stop()


def worker_budget(stack):
    stack.logs[0].flush()
    with open(stack.logs[0].name) as f:
        log = f.read()
    m = re.search(r"max_num_batched_tokens (\d+) at short context \(measured step cost ([\d.]+) ms \+ "
                  r"([\d.]+) ms per row \+ ([\d.]+) us per attended key; step target ([\d.]+) ms", log)
    assert m, log
    return int(m.group(1)), float(m.group(5))


def test_a_long_prompt_never_stalls_running_streams(stack):
    budget, target_ms = worker_budget(stack)
    assert target_ms == TARGET_MS
    port = stack.http_port
    times = [[] for _ in range(STREAMS)]
    threads = []
    for k in range(STREAMS):
        # logprobs: every token is an event, also one whose text waits for the
        # rest of its character, so gaps are the steps this stream saw.
        body = {"model": MODEL_ID, "prompt": f"Story number {k}:", "max_tokens": 400, "temperature": 0.8,
                "ignore_eos": True, "stream": True, "seed": k, "logprobs": 1}
        t = threading.Thread(target=stream, args=(port, body), kwargs={"on_token": times[k].append, "per_token": True})
        t.start()
        threads.append(t)
    deadline = time.time() + 60
    while min(len(t) for t in times) < 5:
        assert time.time() < deadline, "the streams did not start"
        time.sleep(0.05)

    long_prompt = " ".join(f"w{i}" for i in range(520))  # ~2,000 tokens
    t_send = time.perf_counter()
    usage = stream(port, {"model": MODEL_ID, "prompt": long_prompt, "max_tokens": 1, "stream": True,
                          "stream_options": {"include_usage": True}}).usage
    t_done = time.perf_counter()
    for t in threads:
        t.join(timeout=120)
    assert usage and usage["prompt_tokens"] >= 1900, usage
    prefill_s = t_done - t_send
    # The prompt was chunked over many steps, each shared with the 8 decodes.
    assert prefill_s > 3 * target_ms / 1000, (prefill_s, budget)

    worst = 0.0
    for k, ts in enumerate(times):
        during = [b - a for a, b in zip(ts, ts[1:]) if b >= t_send and a <= t_done]
        assert during, f"stream {k} produced nothing while the prompt was prefilled"
        worst = max(worst, max(during))
    print(f"budget {budget} tokens/step, target {target_ms} ms, prefill of {usage['prompt_tokens']} tokens "
          f"took {prefill_s:.2f} s, worst gap of a running stream {worst * 1000:.0f} ms")
    assert worst * 1000 <= 1.5 * target_ms, f"a running stream waited {worst * 1000:.0f} ms (target {target_ms} ms)"

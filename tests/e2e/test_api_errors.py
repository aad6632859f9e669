"""Errors as OpenAI sends them and its SDKs read them: context overflow with
code "context_length_exceeded" and the parameter at fault, out-of-vocabulary
logit_bias naming "logit_bias", and 429/503 telling clients that a retry can
help (x-should-retry, Retry-After)."""
import concurrent.futures
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, MODEL_ID, Stack, free_port


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_context_overflow_has_openais_code_and_param(stack):
    code, _, body = post(stack.url, "/v1/completions", {"model": MODEL_ID, "prompt": "hi", "max_tokens": 1_000_000})
    assert code == 400, body
    assert body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "prompt", body
    code, _, body = post(stack.url, "/v1/chat/completions", {"model": MODEL_ID, "max_tokens": 1_000_000,
                                                             "messages": [{"role": "user", "content": "hi"}]})
    assert code == 400, body
    assert body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "messages", body


def test_context_overflow_through_the_openai_sdk(client):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="hi", max_tokens=1_000_000)
    assert e.value.code == "context_length_exceeded"


def test_out_of_vocabulary_logit_bias_names_the_parameter(stack):
    code, _, body = post(stack.url, "/v1/completions", {"model": MODEL_ID, "prompt": "hi", "max_tokens": 2,
                                                        "logit_bias": {"99999999": 5}})
    assert code == 400 and body["error"]["param"] == "logit_bias", body


def test_unavailable_says_a_retry_can_help():
    dead = free_port()
    port = free_port()
    g = subprocess.Popen([os.path.join(BIN, "tessera-gateway"), "--listen", f"127.0.0.1:{port}", "--worker",
                          f"127.0.0.1:{dead}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except Exception:
                assert time.time() < deadline
                time.sleep(0.1)
        code, headers, body = post(f"http://127.0.0.1:{port}", "/v1/completions", {"model": "m", "prompt": "x"})
        headers = {k.lower(): v for k, v in headers.items()}
        assert code == 503, body
        assert headers.get("x-should-retry") == "true" and headers.get("retry-after") == "1", headers
    finally:
        g.terminate()
        g.wait(15)


def test_full_queue_says_when_to_retry():
    s = Stack(extra_worker_args=["--engine", "sim", "--max-num-seqs", "1", "--max-waiting", "1",
                                 "--sim-decode-us-per-seq", "20000"])
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: post(s.url, "/v1/completions", {"model": "sim", "prompt": "x",
                                                                               "max_tokens": 8}), range(12)))
        refused = [h for code, h, _ in results if code == 429]
        assert refused, [r[0] for r in results]
        for h in refused:
            h = {k.lower(): v for k, v in h.items()}
            assert h.get("x-should-retry") == "true" and h.get("retry-after") == "1", h
    finally:
        s.stop()

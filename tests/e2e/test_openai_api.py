"""End to end: the official openai SDK against a real gateway and worker."""
import http.client
import json
import time

import openai
import pytest

from conftest import MODEL_ID, Stack


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_content_parts_and_system(client):
    r = client.chat.completions.create(
        model=MODEL_ID, max_tokens=8, temperature=0,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}])
    assert r.choices[0].message.content


def test_text_completion_and_echo(client):
    r = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text.startswith(" Paris")
    e = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=5, temperature=0,
                                  echo=True)
    assert e.choices[0].text == "The capital of France is" + r.choices[0].text
    many = client.completions.create(model=MODEL_ID, prompt=["1, 2, 3,", "a, b, c,"], max_tokens=4, temperature=0)
    assert [c.index for c in many.choices] == [0, 1]


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Count to five."}],
                                            max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage, roles = "", None, None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert roles == ["assistant"]
    assert finish in ("stop", "length")
    assert usage.completion_tokens > 0
    whole = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Count to five."}],
                                           max_tokens=20, temperature=0)
    assert text == whole.choices[0].message.content


def test_n_greater_than_one_and_seed(client):
    kw = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=12, temperature=1.0)
    a = client.chat.completions.create(n=3, seed=1234, **kw)
    b = client.chat.completions.create(n=3, seed=1234, **kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1
    c = client.chat.completions.create(n=1, seed=99, **kw)
    assert c.choices[0].message.content != a.choices[0].message.content


def test_stop_strings(client):
    r = client.completions.create(model=MODEL_ID, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    assert r.choices[0].finish_reason == "stop"
    assert " 7" not in r.choices[0].text
    assert r.choices[0].text.strip().endswith("6,")


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                       temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5  # greedy picks the best
    c = client.completions.create(model=MODEL_ID, prompt="The sky is", max_tokens=3, temperature=0, logprobs=2)
    assert len(c.choices[0].logprobs.tokens) == 3
    assert all(len(alt) == 2 for alt in c.choices[0].logprobs.top_logprobs)


def test_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}], temperature=7)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}], max_tokens=100000)
    assert "context" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=[], max_tokens=4)
    assert e.value.body["param"] == "messages"


def test_api_keys_guard_every_route_but_health():
    from openai import OpenAI

    s = Stack(api_keys=["sekret"])
    try:
        bad = OpenAI(base_url=f"{s.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}])
        good = OpenAI(base_url=f"{s.url}/v1", api_key="sekret", max_retries=0)
        assert good.models.list().data[0].id == MODEL_ID
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
        for path in ("/health", "/ready"):
            conn.request("GET", path)
            assert conn.getresponse().read() and True
        conn.request("GET", "/v1/models")
        r = conn.getresponse()
        assert r.status == 401 and json.loads(r.read())["error"]["type"] == "authentication_error"
    finally:
        s.stop()


def test_no_healthy_worker_is_503():
    import subprocess
    from conftest import BIN, free_port, wait_ready

    port = free_port()
    g = subprocess.Popen([f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{port}", "--worker",
                          f"127.0.0.1:{free_port()}"], stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ready")
        assert conn.getresponse().status == 503
        t0 = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/chat/completions",
                     json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}]}))
        r = conn.getresponse()
        assert r.status == 503
        assert json.loads(r.read())["error"]["type"] == "service_unavailable_error"
        assert time.time() - t0 < 5
    finally:
        g.terminate()
        g.wait(10)


def test_request_id_and_log_line(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    conn.request("POST", "/v1/completions",
                 json.dumps({"model": MODEL_ID, "prompt": "Hello", "max_tokens": 2, "temperature": 0}),
                 {"X-Request-Id": "test-req-42"})
    r = conn.getresponse()
    r.read()
    assert r.getheader("x-request-id") == "test-req-42"
    time.sleep(0.2)
    line = [l for l in stack.gateway_log().splitlines() if "id=test-req-42" in l]
    assert line and "prompt_tokens=" in line[0] and "ttft_ms=" in line[0] and "status=200" in line[0]

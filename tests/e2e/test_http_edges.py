"""Raw HTTP against the gateway: SSE framing byte for byte, client
disconnects cancelling generation, keep-alive, and a malformed-request suite
(every broken request gets a 4xx OpenAI error and the gateway keeps serving)."""
import json
import socket
import time

import pytest

from conftest import MODEL_ID


def raw_request(port, data, timeout=10, read=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    if not read:
        return s
    chunks = []
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
            joined = b"".join(chunks)
            if b"\r\n\r\n" in joined:
                head, _, body = joined.partition(b"\r\n\r\n")
                if b"content-length" in head.lower():
                    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
                    if len(body) >= length:
                        break
                if head.lower().find(b"chunked") >= 0 and joined.endswith(b"0\r\n\r\n"):
                    break
    except socket.timeout:
        pass
    finally:
        s.close()
    return b"".join(chunks)


def post(path, body, extra_headers=b""):
    if isinstance(body, str):
        body = body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            .encode() + extra_headers + b"Connection: close\r\n\r\n" + body)


def status_of(resp):
    return int(resp.split(b" ", 2)[1])


def dechunk(body):
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        n = int(size_line, 16)
        if n == 0:
            break
        out += rest[:n]
        rest = rest[n + 2:]
    return out


def test_sse_framing(stack):
    body = json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                       "temperature": 0, "stream": True})
    resp = raw_request(stack.http_port, post("/v1/chat/completions", body))
    head, _, payload = resp.partition(b"\r\n\r\n")
    assert status_of(resp) == 200
    assert b"content-type: text/event-stream" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    events = dechunk(payload).decode()
    assert events.endswith("data: [DONE]\n\n")
    frames = events.split("\n\n")[:-1]
    assert all(f.startswith("data: ") for f in frames)
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[0]  # only with stream_options.include_usage


def test_keep_alive_serves_several_requests_on_one_connection(stack):
    s = socket.create_connection(("127.0.0.1", stack.http_port), timeout=10)
    try:
        for _ in range(3):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b'{"status":"ok"}' not in data:
                data += s.recv(4096)
            assert data.startswith(b"HTTP/1.1 200")
    finally:
        s.close()


def test_client_disconnect_cancels_generation(stack):
    body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0.8,
                       "stream": True})
    s = raw_request(stack.http_port, post("/v1/completions", body), read=False)
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(4096)
    s.close()
    # With the stream cancelled the worker is free: a short request finishes
    # quickly instead of queueing behind 3000 tokens.
    time.sleep(0.2)
    t0 = time.time()
    resp = raw_request(stack.http_port, post("/v1/completions", json.dumps(
        {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2, "temperature": 0})), timeout=60)
    assert status_of(resp) == 200
    assert time.time() - t0 < 5


def chat(**overrides):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    body.update(overrides)
    return json.dumps(body)


def drop(key):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    del body[key]
    return json.dumps(body)


MALFORMED = [
    # (description, raw request bytes)
    ("empty body", post("/v1/chat/completions", "")),
    ("not json", post("/v1/chat/completions", "hello")),
    ("truncated json", post("/v1/chat/completions", '{"model": "x", "messages": [')),
    ("json array", post("/v1/chat/completions", "[1, 2]")),
    ("json string", post("/v1/chat/completions", '"x"')),
    ("invalid utf-8", post("/v1/chat/completions", b'{"model": "\xff\xfe", "messages": []}')),
    ("lone surrogate", post("/v1/chat/completions", '{"model": "\\ud800", "messages": []}')),
    ("NaN literal", post("/v1/chat/completions", chat().replace('"max_tokens": 2', '"temperature": NaN'))),
    ("Infinity literal", post("/v1/chat/completions", chat().replace('"max_tokens": 2', '"top_p": Infinity'))),
    ("deep nesting", post("/v1/chat/completions", '{"a":' * 200 + "1" + "}" * 200)),
    ("missing model", post("/v1/chat/completions", drop("model"))),
    ("missing messages", post("/v1/chat/completions", drop("messages"))),
    ("model not string", post("/v1/chat/completions", chat(model=5))),
    ("empty model", post("/v1/chat/completions", chat(model=""))),
    ("messages not array", post("/v1/chat/completions", chat(messages="hi"))),
    ("messages empty", post("/v1/chat/completions", chat(messages=[]))),
    ("message not object", post("/v1/chat/completions", chat(messages=["hi"]))),
    ("message without role", post("/v1/chat/completions", chat(messages=[{"content": "x"}]))),
    ("unknown role", post("/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]))),
    ("role not string", post("/v1/chat/completions", chat(messages=[{"role": 1, "content": "x"}]))),
    ("content number", post("/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]))),
    ("empty user content", post("/v1/chat/completions", chat(messages=[{"role": "user", "content": ""}]))),
    ("image part", post("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]))),
    ("part without text", post("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "text"}]}]))),
    ("temperature string", post("/v1/chat/completions", chat(temperature="hot"))),
    ("temperature negative", post("/v1/chat/completions", chat(temperature=-1))),
    ("temperature too high", post("/v1/chat/completions", chat(temperature=2.5))),
    ("top_p zero", post("/v1/chat/completions", chat(top_p=0))),
    ("top_p above one", post("/v1/chat/completions", chat(top_p=1.7))),
    ("huge number", post("/v1/chat/completions", chat().replace('"max_tokens": 2', '"temperature": 1e999'))),
    ("max_tokens zero", post("/v1/chat/completions", chat(max_tokens=0))),
    ("max_tokens negative", post("/v1/chat/completions", chat(max_tokens=-5))),
    ("max_tokens float", post("/v1/chat/completions", chat(max_tokens=2.5))),
    ("max_tokens string", post("/v1/chat/completions", chat(max_tokens="10"))),
    ("max_tokens huge", post("/v1/chat/completions", chat(max_tokens=10 ** 30))),
    ("max_tokens beyond context", post("/v1/chat/completions", chat(max_tokens=9000))),
    ("n zero", post("/v1/chat/completions", chat(n=0))),
    ("n too large", post("/v1/chat/completions", chat(n=1000))),
    ("n string", post("/v1/chat/completions", chat(n="2"))),
    ("stop number", post("/v1/chat/completions", chat(stop=5))),
    ("stop too many", post("/v1/chat/completions", chat(stop=["a", "b", "c", "d", "e"]))),
    ("stop list of numbers", post("/v1/chat/completions", chat(stop=[1]))),
    ("stop empty string", post("/v1/chat/completions", chat(stop=""))),
    ("seed string", post("/v1/chat/completions", chat(seed="1"))),
    ("seed float", post("/v1/chat/completions", chat(seed=1.5))),
    ("presence penalty", post("/v1/chat/completions", chat(presence_penalty=3))),
    ("frequency penalty", post("/v1/chat/completions", chat(frequency_penalty=-2.5))),
    ("logit_bias array", post("/v1/chat/completions", chat(logit_bias=[1]))),
    ("logit_bias bad key", post("/v1/chat/completions", chat(logit_bias={"abc": 1}))),
    ("logit_bias bad value", post("/v1/chat/completions", chat(logit_bias={"5": 500}))),
    ("logit_bias unknown token", post("/v1/chat/completions", chat(logit_bias={"999999": 1}))),
    ("logprobs string", post("/v1/chat/completions", chat(logprobs="yes"))),
    ("top_logprobs without logprobs", post("/v1/chat/completions", chat(top_logprobs=2))),
    ("top_logprobs too many", post("/v1/chat/completions", chat(logprobs=True, top_logprobs=50))),
    ("stream string", post("/v1/chat/completions", chat(stream="true"))),
    ("stream_options without stream", post("/v1/chat/completions", chat(stream_options={"include_usage": True}))),
    ("stream_options not object", post("/v1/chat/completions", chat(stream=True, stream_options=1))),
    ("user not string", post("/v1/chat/completions", chat(user=5))),
    ("unknown model", post("/v1/chat/completions", chat(model="gpt-17"))),
    ("completions missing prompt", post("/v1/completions", json.dumps({"model": MODEL_ID}))),
    ("completions prompt number", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": 5}))),
    ("completions empty prompt", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": ""}))),
    ("completions empty list", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": []}))),
    ("completions mixed list", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": ["a", [1]]}))),
    ("completions negative ids", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": [-1, 2]}))),
    ("completions ids beyond vocab", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": [10 ** 8]}))),
    ("completions logprobs too large", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": "a", "logprobs": 9}))),
    ("completions suffix", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": "a", "suffix": "b"}))),
    ("completions best_of", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": "a", "best_of": 3}))),
    ("completions echo type", post("/v1/completions", json.dumps({"model": MODEL_ID, "prompt": "a", "echo": "no"}))),
    ("wrong method GET", b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("wrong method DELETE", b"DELETE /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("wrong method on health", b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    ("unknown path", b"GET /v2/everything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("root path", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("body too large", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n" + b"x" * 1000),
    ("huge header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"),
    ("too many headers", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n"),
    ("garbage request line", b"HELLO THERE\r\n\r\n"),
    ("bad content-length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
    ("bad chunked encoding", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
]


@pytest.mark.parametrize("name,data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_openai_errors(stack, name, data):
    resp = raw_request(stack.http_port, data)
    assert resp, "no response"
    code = status_of(resp)
    assert 400 <= code < 500, (name, resp[:300])
    body = resp.partition(b"\r\n\r\n")[2]
    err = json.loads(body)["error"]
    assert err["message"] and err["type"], err
    assert set(err) == {"message", "type", "param", "code"}


def test_malformed_suite_is_large_and_gateway_survives(stack):
    assert len(MALFORMED) >= 50
    conn = socket.create_connection(("127.0.0.1", stack.http_port), timeout=10)
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert conn.recv(100).startswith(b"HTTP/1.1 200")
    conn.close()

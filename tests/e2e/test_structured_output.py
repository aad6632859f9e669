"""Structured output end to end (issue 17): real worker and gateway, the
openai SDK as the client, Python's jsonschema and re.fullmatch as oracles.

- a suite of JSON Schemas and regexes sampled at temperature 1.0: every
  output parses and validates (N samples each: STRUCTURED_SAMPLES, default 3
  for CI; the issue's 20 with STRUCTURED_SAMPLES=20);
- json_object, guided_choice, streaming with logprobs, n, stop;
- a mixed batch: free rows give exactly the text they give alone;
- with a LoRA adapter;
- bad specs get a 400 naming the problem within a bounded time, and the
  worker keeps serving.
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time

import jsonschema
import pytest
import requests

from conftest import MODEL_ID, SOURCE, Stack

SAMPLES = int(os.environ.get("STRUCTURED_SAMPLES", "3"))
MAX_TOKENS = 400
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                             "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}

SCHEMAS = [
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "string", "maxLength": 30},
    {"type": "string", "minLength": 3, "maxLength": 8},
    {"enum": ["red", "green", "blue", 7, None]},
    {"const": {"ok": True}},
    {"type": "integer", "minimum": -50, "maximum": 50},
    {"type": "integer", "exclusiveMinimum": 100, "exclusiveMaximum": 1000},
    {"type": "number", "minimum": 0, "maximum": 1},
    {"type": "number", "minimum": -2.5, "maximum": 10},
    {"type": "integer", "minimum": 1000},
    PERSON,
    {"type": "object", "properties": {"title": {"type": "string", "maxLength": 30},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                               "minItems": 1, "maxItems": 3}},
     "required": ["title", "tags"]},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 5},
    {"type": "array", "items": {"type": "boolean"}, "maxItems": 4},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 10},
                                      "c": {"type": "boolean"}}, "required": ["b"], "additionalProperties": False},
    {"type": "object", "properties": {"invoice": {"type": "object", "properties": {
        "number": {"type": "string", "pattern": "^INV-[0-9]{4}$"},
        "total": {"type": "number", "minimum": 0, "maximum": 100000},
        "currency": {"enum": ["EUR", "USD", "GBP"]}}, "required": ["number", "total", "currency"]}},
     "required": ["invoice"]},
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10}, {"type": "string", "maxLength": 5}]},
    {"oneOf": [{"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}},
                "required": ["kind", "lives"]},
               {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}},
                "required": ["kind", "good"]}]},
    {"type": ["string", "null"], "maxLength": 10},
    {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9},
                                                          "y": {"type": "integer", "minimum": -9, "maximum": 9}},
                         "required": ["x", "y"]}},
     "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
     "required": ["from", "to"]},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 99},
                                                         "children": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                                                      "maxItems": 2}},
                        "required": ["v"]}},
     "$ref": "#/$defs/node"},
    {"type": "string", "pattern": "^[a-z]{2,6}-[0-9]{2}$"},
    {"type": "string", "pattern": "^(ab){1,3}c[0-9]{0,2}$"},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "format": "email"},
    {"type": "string", "format": "ipv4"},
    {"type": "object", "properties": {"label": {"enum": ["spam", "ham", "unsure"]},
                                      "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
     "required": ["label", "confidence"], "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 5}},
    {"type": "object", "properties": {"matrix": {"type": "array", "maxItems": 2, "items": {
        "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 2}}},
     "required": ["matrix"]},
]

REGEXES = [
    r"\d{3}-\d{4}",
    r"(yes|no|maybe)",
    r"[A-Z][a-z]{2,9}( [A-Z][a-z]{2,9})?",
    r"0x[0-9a-f]{1,8}",
    r"(\+|-)?\d{1,4}(\.\d{1,3})?",
    r"[a-z]{1,10}@[a-z]{1,10}\.(com|org|net)",
    r"\((\d,){2}\d\)",
    r"(ab|cd)*e",
    r"[^\n]{1,20}",
    r"(?:https?://)?(www\.)?[a-z]{3,10}\.(io|dev)(/[a-z]{1,8}){0,2}",
    r"[α-ω]{2,5}",
]


def chat(client, model, prompt, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                          max_tokens=kw.pop("max_tokens", MAX_TOKENS), **kw)


def check_schema_choices(resp, schema):
    for c in resp.choices:
        text = c.message.content
        assert c.finish_reason == "stop", (schema, text)
        value = json.loads(text)
        jsonschema.validate(value, schema, format_checker=FORMATS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # A body limit above 10 MB, so that a 10 MB schema reaches the request
    # parser (with the default 4 MiB the HTTP layer refuses it with a 413).
    cfg = tmp_path_factory.mktemp("structured-gateway") / "gateway.yaml"
    cfg.write_text("max_body_bytes: 33554432\n")
    s = Stack(extra_gateway_args=["--config", str(cfg)])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def session():
    return requests.Session()


def run_all(jobs):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return [f.result() for f in [pool.submit(j) for j in jobs]]


def test_schema_suite_always_validates(client):
    assert len(SCHEMAS) >= 30
    def one(i, schema):
        def job():
            resp = chat(client, MODEL_ID, f"Reply with JSON for this schema: {json.dumps(schema)}", n=SAMPLES,
                        temperature=1.0, seed=1000 + i,
                        response_format={"type": "json_schema",
                                         "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}})
            check_schema_choices(resp, schema)
            return len(resp.choices)
        return job
    assert sum(run_all([one(i, s) for i, s in enumerate(SCHEMAS)])) == SAMPLES * len(SCHEMAS)


def test_regex_suite_always_fullmatches(client):
    assert len(REGEXES) >= 10
    def one(i, pattern):
        def job():
            resp = client.completions.create(model=MODEL_ID, prompt="Answer: ", n=SAMPLES, temperature=1.0,
                                             seed=2000 + i, max_tokens=MAX_TOKENS,
                                             extra_body={"guided_regex": pattern})
            for c in resp.choices:
                assert c.finish_reason == "stop", (pattern, c.text)
                assert re.fullmatch(pattern, c.text), (pattern, c.text)
        return job
    run_all([one(i, p) for i, p in enumerate(REGEXES)])


def test_guided_json_choice_and_json_object(client):
    schema = PERSON
    resp = chat(client, MODEL_ID, "A person as JSON", temperature=1.0, seed=5, n=2, extra_body={"guided_json": schema})
    check_schema_choices(resp, schema)
    resp = chat(client, MODEL_ID, "Is the sky blue?", temperature=1.0, seed=6, n=4,
                extra_body={"guided_choice": ["yes", "no", "it depends"]})
    assert all(c.message.content in ("yes", "no", "it depends") for c in resp.choices)
    resp = chat(client, MODEL_ID, "Describe a cat as JSON", temperature=1.0, seed=7, n=2,
                response_format={"type": "json_object"})
    for c in resp.choices:
        assert c.finish_reason == "stop", c.message.content
        assert isinstance(json.loads(c.message.content), dict)


def test_streaming_logprobs_stop_and_length(client):
    schema = SCHEMAS[14]
    stream = chat(client, MODEL_ID, "A post as JSON", temperature=1.0, seed=9, stream=True, logprobs=True, top_logprobs=2,
                  response_format={"type": "json_schema", "json_schema": {"name": "post", "schema": schema}})
    text, tokens, finish = "", 0, None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                tokens += len(c.logprobs.content)
            finish = c.finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), schema)
    assert tokens > 0
    # max_tokens cutting a value: finish_reason length, the text a prefix.
    resp = chat(client, MODEL_ID, "A person", temperature=1.0, seed=3, max_tokens=3,
                response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content.startswith("{")


def test_mixed_batch_free_rows_unchanged(client):
    free = [("The capital of France is", 0.0, None), ("Once upon a time", 1.0, 42), ("def fibonacci(n):", 0.8, 7)]
    def free_job(p, t, seed):
        return lambda: client.completions.create(model=MODEL_ID, prompt=p, temperature=t, seed=seed,
                                                 max_tokens=24).choices[0].text
    alone = [free_job(*f)() for f in free]
    jobs = [free_job(*f) for f in free]
    for i in range(5):
        jobs.append(lambda i=i: check_schema_choices(
            chat(client, MODEL_ID, "JSON please", temperature=1.0, seed=i, n=2,
                 response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMAS[14 + i]}}),
            SCHEMAS[14 + i]))
    out = run_all(jobs)
    assert out[:3] == alone


BAD = [
    ("depth", lambda: {"response_format": {"type": "json_schema", "json_schema": {"name": "d", "schema": "__DEEP__"}}},
     "nested deeper"),
    ("too large", lambda: {"response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": {
        "type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 200} for i in range(6000)}}}}},
     "the limit is"),
    ("ref cycle", lambda: {"guided_json": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                                           "$ref": "#/$defs/a"}}, "cycle"),
    ("unbounded recursion", lambda: {"guided_json": {"$defs": {"n": {"type": "object", "properties": {
        "next": {"$ref": "#/$defs/n"}}, "required": ["next"]}}, "$ref": "#/$defs/n"}}, "never ends"),
    ("unsupported keyword", lambda: {"guided_json": {"type": "object", "patternProperties": {"^a": {}}}},
     "patternProperties"),
    ("unknown format", lambda: {"guided_json": {"type": "string", "format": "hostname"}}, "hostname"),
    ("backreference", lambda: {"guided_regex": r"(a)\1"}, "backreference"),
    ("lookahead", lambda: {"guided_regex": r"a(?=b)"}, "lookahead"),
    ("automaton too large", lambda: {"guided_regex": "(a|b)*a(a|b){20}"}, "too large"),
    ("two constraints", lambda: {"guided_regex": "a", "guided_choice": ["a"]}, "only one"),
    ("bad type", lambda: {"response_format": {"type": "xml"}}, "response_format.type"),
]


def deep(n):
    # As text: Python's json module cannot encode 1,000 levels.
    return '{"type":"array","items":' * n + '{"type":"integer"}' + "}" * n


@pytest.mark.parametrize("name,body,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_specs_get_400_naming_the_problem(stack, session, name, body, needle):
    payload = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **body()}
    data = json.dumps(payload).replace('"__DEEP__"', deep(1000))
    t0 = time.time()
    r = session.post(f"{stack.url}/v1/chat/completions", data=data, timeout=60,
                     headers={"Content-Type": "application/json"})
    elapsed = time.time() - t0
    assert r.status_code == 400, (name, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert needle in err["message"] or needle == err.get("param"), (name, err)
    assert err["type"] == "invalid_request_error"
    assert elapsed < 10, (name, elapsed)


def test_ten_megabyte_schema_gets_400(stack, session):
    schema = {"type": "string", "description": "x" * (10 << 20)}
    t0 = time.time()
    r = session.post(f"{stack.url}/v1/chat/completions", timeout=60, json={
        "model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "huge", "schema": schema}}})
    assert r.status_code == 400, r.status_code
    err = r.json()["error"]
    assert err["param"] == "response_format.json_schema.schema" and "the limit is" in err["message"], err
    assert time.time() - t0 < 10


def test_worker_still_serves_after_bad_specs(client):
    resp = chat(client, MODEL_ID, "A person", temperature=0.0, max_tokens=64,
                response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    check_schema_choices(resp, PERSON)


@pytest.fixture(scope="module")
def lora_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("structured-lora")
    model = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", model, "--out",
                    str(root / "acct"), "--rank", "8", "--targets", "q_proj,v_proj", "--seed", "17", "--scale", "0.08"],
                   check=True, capture_output=True)
    s = Stack(extra_worker_args=["--adapter-dir", str(root)])
    yield s
    s.stop()


def test_schemas_with_a_lora_adapter(lora_stack):
    from openai import OpenAI

    client = OpenAI(base_url=f"{lora_stack.url}/v1", api_key="unused", max_retries=0, timeout=120)
    def one(i, schema):
        def job():
            resp = chat(client, "acct", f"JSON for {json.dumps(schema)}", n=SAMPLES, temperature=1.0, seed=300 + i,
                        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
            check_schema_choices(resp, schema)
        return job
    run_all([one(i, s) for i, s in enumerate(SCHEMAS[13:24])])

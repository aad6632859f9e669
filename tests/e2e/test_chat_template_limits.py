"""A chat template is code from the model file: its failures reach the client
as an OpenAI-shaped 400 carrying the interpreter's message (never an empty
501), its memory is bounded, and a template that cannot render a small sample
conversation keeps the worker from ever serving (reliability case 34)."""
import os
import subprocess

import pytest
import requests

from conftest import BIN, MODEL_ID, Stack, free_port

# ChatML, plus two traps keyed on a message's content: 'boom' doubles a
# string 64 times (2^67 bytes if nothing stops it), 'raise' calls
# raise_exception as HF templates do for conversations they refuse.
TRAPPED = """{%- for m in messages -%}
{%- if m.content == 'boom' -%}{%- set ns = namespace(s='xxxxxxxx') -%}
{%- for i in range(64) -%}{%- set ns.s = ns.s ~ ns.s -%}{%- endfor -%}{{ ns.s|length }}{%- endif -%}
{%- if m.content == 'raise' -%}{{ raise_exception('this template refuses the word raise') }}{%- endif -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
"""

# Doubles a string on every render: no conversation can be served with it.
HOSTILE = """{%- set ns = namespace(s='xxxxxxxx') -%}
{%- for i in range(64) -%}{%- set ns.s = ns.s ~ ns.s -%}{%- endfor -%}{{ ns.s }}"""

# replace() that quadruples: the pre-check refuses before building the result.
HOSTILE_REPLACE = """{%- set ns = namespace(s='abcd') -%}
{%- for i in range(40) -%}{%- set ns.s = ns.s.replace('a', 'aaaa').replace('b', 'bbbb') -%}{%- endfor -%}{{ ns.s }}"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture(scope="module")
def trapped(tmp_path_factory):
    path = write(tmp_path_factory.mktemp("tpl"), "trapped.jinja", TRAPPED)
    s = Stack(extra_worker_args=["--chat-template", path])
    yield s
    s.stop()


def chat(stack, content):
    body = {"model": MODEL_ID, "max_tokens": 2, "temperature": 0,
            "messages": [{"role": "user", "content": content}]}
    return requests.post(f"{stack.url}/v1/chat/completions", json=body, timeout=120)


def test_a_template_that_outgrows_its_memory_is_a_400_with_the_reason(trapped):
    r = chat(trapped, "boom")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "memory limit" in err["message"] and "chat template line" in err["message"], err


def test_raise_exception_reaches_the_client(trapped):
    r = chat(trapped, "raise")
    assert r.status_code == 400, r.text
    assert "this template refuses the word raise" in r.json()["error"]["message"]


def test_the_same_worker_still_serves(trapped):
    r = chat(trapped, "hello")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("template", [HOSTILE, HOSTILE_REPLACE], ids=["doubling", "replace"])
def test_a_hostile_template_keeps_the_worker_from_serving(tmp_path, template):
    path = write(tmp_path, "hostile.jinja", template)
    p = subprocess.run([os.path.join(BIN, "tessera-worker"), "--listen", f"127.0.0.1:{free_port()}",
                        "--chat-template", path], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    last = [l for l in p.stderr.splitlines() if l.strip()][-1]
    assert "cannot render a sample conversation" in last and "memory limit" in last, p.stderr
    assert path in last
    assert "serving" not in p.stderr

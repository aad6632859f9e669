"""Chat templates: Tessera's Jinja interpreter renders each model family's
template exactly as Python's jinja2 does when configured the way Hugging
Face's apply_chat_template configures it."""
import json

import gguf
import jinja2
import jinja2.ext
import jinja2.sandbox
import pytest

from conftest import JsonLinesTool, tool

TEMPLATES = {
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
        "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
    ),
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
        "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    ),
    "qwen2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
    ),
    "phi3": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
        "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
        "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    # A multi-line template with whitespace control, namespace, macros,
    # tojson and filters, in the style of recent tool-calling templates.
    "tools_style": """{%- macro render(m) -%}
    {%- if m.content is string -%}
        {{- m.content | trim -}}
    {%- else -%}
        {%- for part in m.content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system=none, count=0) -%}
{%- for message in messages %}
    {%- if message.role == 'system' %}{% set ns.system = message.content %}{% endif %}
{%- endfor %}
{{- bos_token }}
{%- if ns.system is not none %}
<|system|>{{ ns.system }}
{%- endif %}
{%- if tools is defined and tools %}
<|tools|>{{ tools | tojson }}
{%- endif %}
{%- for message in messages | rejectattr('role', 'equalto', 'system') %}
    {%- set ns.count = ns.count + 1 %}
<|{{ message.role }}|>
{{ render(message) }}
    {%- if not loop.last %}
---
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<|assistant|>
{% endif %}""",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Hello, how can I help?  "},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "system", "content": "Sys"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
    [{"role": "user", "content": "unicode: 日本語 😀 «ß» {{ not a tag }} {% neither %}\n\nnew para"}],
    [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}],  # breaks alternation
    [{"role": "assistant", "content": "I start"}],
    [{"role": "user", "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "part two"}]}],
]


def hf_render(template, messages, add_generation_prompt, extra=None):
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    t = env.from_string(template)
    return t.render(messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<s>", eos_token="</s>",
                    **(extra or {}))


@pytest.fixture(scope="module")
def renderer():
    r = JsonLinesTool([tool("tessera-render-template")])
    yield r
    r.close()


def check(renderer, template, messages, agp, extra=None):
    try:
        want = hf_render(template, messages, agp, extra)
    except Exception as e:  # jinja2 refuses: Tessera must refuse too
        want = None
        reason = str(e)
    got = renderer.ask({"template": template, "messages": messages, "add_generation_prompt": agp,
                        "bos_token": "<s>", "eos_token": "</s>", "extra": extra})
    if want is None:
        assert "error" in got, (reason, got)
    else:
        assert got.get("text") == want, (got, want)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_match_jinja2(renderer, name):
    for messages in CONVERSATIONS:
        for agp in (True, False):
            check(renderer, TEMPLATES[name], messages, agp)


def test_tools_and_extra_variables(renderer):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
              "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    check(renderer, TEMPLATES["tools_style"], CONVERSATIONS[1], True, {"tools": tools})


def test_bundled_model_template(renderer, model_path):
    r = gguf.GGUFReader(model_path)
    f = r.fields["tokenizer.chat_template"]
    template = bytes(f.parts[f.data[0]]).decode()
    for messages in CONVERSATIONS:
        for agp in (True, False):
            check(renderer, template, messages, agp)


def test_unsupported_construct_is_named(renderer):
    got = renderer.ask({"template": "{% include 'other.j2' %}", "messages": []})
    assert "unsupported construct" in got["error"] and "include" in got["error"]

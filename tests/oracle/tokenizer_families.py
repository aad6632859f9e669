"""Hugging Face tokenizer directories (tokenizer.json + tokenizer_config.json)
for the oracle tests, one per tokenizer family that models ship, trained by
the `tokenizers` library's own BpeTrainer on real text and saved with
`Tokenizer.save()`.

The families differ in what Tessera's tokenizer.json reader must get right:

  bpe-gpt2                 byte-level BPE, ByteLevel(use_regex=true) pre-tokenizer
                           (GPT-2 regex), merges in the legacy "a b" string form,
                           <|endoftext|> added after the vocabulary, no template.
  bpe-llama3               Split(Llama 3 regex, Isolated) + ByteLevel(use_regex=false),
                           ignore_merges=true (with whole-word vocabulary entries that no
                           merge builds, so that it matters), merges as [a, b] pairs,
                           Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)],
                           no add_bos_token in tokenizer_config.json.
  bpe-qwen2                NFC normalizer, Split(Qwen2 regex) + ByteLevel, specials
                           <|endoftext|> <|im_start|> <|im_end|>, non-special added
                           tokens (plain, lstrip, rstrip, normalized=true), bos_token null.
  bpe-smollm               Sequence[Digits(individual_digits), ByteLevel(use_regex)],
                           specials trained first (ids 0..), chat_template as a LIST of
                           named templates whose first entry is not "default".
  spm-bpe-legacy           Llama 2 / Mistral v0.1 layout: normalizer Sequence[Prepend("▁"),
                           Replace(" ", "▁")], pre_tokenizer null, BPE byte_fallback +
                           fuse_unk, <0xXX> byte tokens, decoder Replace/ByteFallback/Fuse/
                           Strip, TemplateProcessing(<s> $A), bos/eos in tokenizer_config
                           as {"__type": "AddedToken", ...} objects.
  spm-bpe-metaspace        normalizer null, Metaspace(prepend_scheme "first", split=false)
                           as transformers' LlamaConverter writes it for legacy=false.
  spm-bpe-metaspace-split  Metaspace(prepend_scheme "first", split=true), Metaspace decoder
                           in the decoder chain, TemplateProcessing(<s> $A </s>)
                           (add_eos_token true).
  spm-bpe-unk              the legacy layout without byte fallback (no <0xXX> tokens):
                           unknown characters become <unk>, consecutive ones fused.

The three SentencePiece-style families share one trained vocabulary: they differ
only in their pipelines, so the same text may tokenize differently between them.

Training text: data/tokenizer_train.txt, ~190 KB taken from the exllamav2 0.3.2
wheel (PyPI, MIT License, Copyright turboderp; see data/tokenizer_train.LICENSE),
exllamav2/conversion/standard_cal_data/: the start of c4.utf8 (lines cut at 1500
bytes), code.utf8, tiny.utf8, and the non-empty lines of multilingual.utf8 cut at
330 bytes (Arabic, CJK, kana, Cyrillic, Greek, European languages). Nothing is
downloaded at run time.

Building every family takes about two seconds; the result is deterministic
(the same bytes on every run and thread count).

Run as a script to write the directories: python tokenizer_families.py OUTDIR
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "tokenizer_train.txt")

SPIECE = "\u2581"  # ▁

# The pre-tokenizer patterns exactly as the models' tokenizer.json files carry them.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

FAMILIES = [
    "bpe-gpt2",
    "bpe-llama3",
    "bpe-qwen2",
    "bpe-smollm",
    "spm-bpe-legacy",
    "spm-bpe-metaspace",
    "spm-bpe-metaspace-split",
    "spm-bpe-unk",
]

# --- chat templates -----------------------------------------------------------

# Llama 2 chat, as meta-llama/Llama-2-*-chat-hf ship it.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# Llama 3.1/3.2 style: bos in the template, strftime_now for the date, a system
# header always, tool calls and tool results (whose string content goes through
# tojson, since a string "is iterable" in Jinja), tools | tojson(indent=4).
LLAMA3_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {{- "You have access to the following functions. To call a function, respond with JSON of the form " }}
    {{- '{"name": function name, "parameters": dictionary of argument name and its value}.\\n\\n' }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# ChatML with tools, in the style of Qwen2.5-Instruct.
QWEN2_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# SmolLM2-Instruct's ChatML template.
SMOLLM_DEFAULT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A tool-use variant relying on trim_blocks / lstrip_blocks for its layout.
SMOLLM_TOOL_TEMPLATE = """{% if tools %}
<|im_start|>system
You are a function calling AI model. Here are the available tools: <tools>
  {% for tool in tools %}
{{ tool | tojson }}
  {% endfor %}
</tools><|im_end|>
{% endif %}
{% for message in messages %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

# Mistral-7B-Instruct v0.3 style: the system message goes into the last user turn.
MISTRAL_TEMPLATE = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}
        {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant...") }}
    {%- endif %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""


# --- building blocks -----------------------------------------------------------

def _lines():
    with open(CORPUS, encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line.strip()]


def _bytelevel_trained(pre_tokenizer, normalizer=None, vocab_size=3000, special_tokens=(), ignore_merges=False):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_lines(), trainer)
    return tok


def _added_tokens_decoder(tokenizer_json):
    return {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in tokenizer_json["added_tokens"]}


def _write(outdir, tok, config, rewrite=None):
    """Saves tok with Tokenizer.save(), optionally rewriting the JSON (as a
    model's files are sometimes edited by hand), then the config as
    transformers writes it (indent 2, sorted keys, UTF-8)."""
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "tokenizer.json")
    tok.save(path)
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    if rewrite is not None:
        rewrite(tj)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False, indent=2)
    config = dict(config)
    config.setdefault("added_tokens_decoder", _added_tokens_decoder(tj))
    config.setdefault("clean_up_tokenization_spaces", False)
    config.setdefault("model_max_length", 8192)
    with open(os.path.join(outdir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return outdir


# --- byte-level BPE families ---------------------------------------------------

def build_gpt2(outdir):
    from tokenizers import AddedToken, decoders, pre_tokenizers, processors

    tok = _bytelevel_trained(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True))
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])

    def legacy_merges(tj):
        # GPT-2's tokenizer.json (and every file written before tokenizers 0.20)
        # keeps each merge as one string "left right".
        tj["model"]["merges"] = [f"{a} {b}" for a, b in tj["model"]["merges"]]

    return _write(outdir, tok, {
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "model_max_length": 1024, "errors": "replace", "tokenizer_class": "GPT2Tokenizer",
    }, rewrite=legacy_merges)


# Whole words given their own vocabulary entry with no merge that builds them,
# as in vocabularies converted from tiktoken ranks: with ignore_merges=true a
# pre-token that is exactly such an entry becomes that one token; BPE merges
# alone would split it. (On the trained vocabulary alone ignore_merges changes
# nothing: every trained token is what the merges make of its own text.)
LLAMA3_WHOLE_WORDS = [" tokenizer", " Tessera", "Hello", " naïve", " 日本語", " emoji", "ing", " über"]


def _add_whole_words(tok, words):
    from tokenizers import models, pre_tokenizers

    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    to_bytes = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for word in words:
        (piece, _), = to_bytes.pre_tokenize_str(word)
        if piece not in vocab:
            vocab[piece] = len(vocab)
    tok.model = models.BPE(vocab=vocab, merges=[tuple(m) for m in model["merges"]], ignore_merges=True)


def build_llama3(outdir):
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors

    tok = _bytelevel_trained(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ]), ignore_merges=True)
    _add_whole_words(tok, LLAMA3_WHOLE_WORDS)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return _write(outdir, tok, {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": LLAMA3_TEMPLATE,
    })


# Qwen2's non-special added tokens: plain, and the flags' corner cases.
QWEN2_ADDED = [
    # (content, special, lstrip, rstrip, normalized)
    ("<tool_call>", False, False, False, False),
    ("</tool_call>", False, False, False, False),
    ("<|fim_prefix|>", False, False, False, False),
    ("<mask>", False, True, False, False),     # lstrip: swallows the whitespace before it
    ("<think>", False, False, True, False),    # rstrip: swallows the whitespace after it
    ("café", False, False, False, True),       # normalized: matched after NFC, so "cafe\u0301" matches too
]


def build_qwen2(outdir):
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors

    tok = _bytelevel_trained(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ]), normalizer=normalizers.NFC())
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.add_tokens([AddedToken(c, special=s, lstrip=l, rstrip=r, normalized=n) for c, s, l, r, n in QWEN2_ADDED])
    return _write(outdir, tok, {
        "add_bos_token": False, "add_prefix_space": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "errors": "replace", "model_max_length": 32768, "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "chat_template": QWEN2_TEMPLATE,
    })


SMOLLM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                   "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
                   "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
                   "<jupyter_script>", "<empty_output>"]


def build_smollm(outdir):
    from tokenizers import decoders, pre_tokenizers, processors

    tok = _bytelevel_trained(pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ]), special_tokens=SMOLLM_SPECIALS)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    return _write(outdir, tok, {
        "add_prefix_space": False, "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>", "model_max_length": 8192, "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": 3000,
        # Deliberately not first: transformers picks the entry named "default".
        "chat_template": [{"name": "tool_use", "template": SMOLLM_TOOL_TEMPLATE},
                          {"name": "default", "template": SMOLLM_DEFAULT_TEMPLATE}],
    })


# --- SentencePiece-style BPE families ------------------------------------------

_SPM_CACHE = {}


def _spm_vocab_merges():
    """One SentencePiece-like BPE vocabulary: "▁" marks a space, a run of
    spaces belongs to the word after it ("▁▁▁▁return"), rare characters are
    left out of the alphabet (limit_alphabet) so that they exercise byte
    fallback. Returns (trained tokens in id order, merges as pairs)."""
    if "vm" in _SPM_CACHE:
        return _SPM_CACHE["vm"]
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(f"{SPIECE}*[^{SPIECE}]+|{SPIECE}+"), behavior="isolated")
    trainer = trainers.BpeTrainer(vocab_size=2600, min_frequency=2, show_progress=False, limit_alphabet=260,
                                  special_tokens=["<unk>", "<s>", "</s>"], max_token_length=16)
    tok.train_from_iterator(_lines(), trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [tuple(m) for m in model["merges"]]
    _SPM_CACHE["vm"] = (tokens, merges)
    return tokens, merges


def _spm_tokenizer(byte_fallback=True):
    from tokenizers import AddedToken, Tokenizer, models

    tokens, merges = _spm_vocab_merges()
    assert tokens[:3] == ["<unk>", "<s>", "</s>"], tokens[:3]
    ordered = tokens[:3] + ([f"<0x{b:02X}>" for b in range(256)] if byte_fallback else []) + tokens[3:]
    vocab = {t: i for i, t in enumerate(ordered)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=byte_fallback))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ["<unk>", "<s>", "</s>"]])
    return tok


def _added_token_object(content):
    # How older transformers versions wrote bos/eos/unk into tokenizer_config.json.
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}


def _spm_config(**extra):
    config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": None, "legacy": False, "sp_model_kwargs": {},
        "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False,
    }
    config.update(extra)
    return config


def _legacy_pipeline(tok, byte_fallback=True):
    from tokenizers import decoders, normalizers, processors

    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    tok.pre_tokenizer = None
    steps = [decoders.Replace(SPIECE, " ")]
    if byte_fallback:
        steps.append(decoders.ByteFallback())
    steps += [decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)]
    tok.decoder = decoders.Sequence(steps)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])


def build_spm_legacy(outdir):
    tok = _spm_tokenizer()
    _legacy_pipeline(tok)
    return _write(outdir, tok, _spm_config(
        legacy=True, bos_token=_added_token_object("<s>"), eos_token=_added_token_object("</s>"),
        unk_token=_added_token_object("<unk>"), chat_template=LLAMA2_TEMPLATE, model_max_length=4096))


def build_spm_unk(outdir):
    tok = _spm_tokenizer(byte_fallback=False)
    _legacy_pipeline(tok, byte_fallback=False)
    return _write(outdir, tok, _spm_config(legacy=True, model_max_length=4096))


def build_spm_metaspace(outdir):
    from tokenizers import decoders, pre_tokenizers, processors

    tok = _spm_tokenizer()
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    return _write(outdir, tok, _spm_config(chat_template=MISTRAL_TEMPLATE))


def build_spm_metaspace_split(outdir):
    from tokenizers import decoders, pre_tokenizers, processors

    tok = _spm_tokenizer()
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="first", split=True)
    # The Metaspace decoder drops every "▁" of the first token and turns the
    # others into spaces; it leaves <0xXX> tokens for ByteFallback after it.
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement=SPIECE, prepend_scheme="first", split=True),
                                     decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> <s>:1 $B:1 </s>:1",
                                                       special_tokens=[("<s>", 1), ("</s>", 2)])
    return _write(outdir, tok, _spm_config(add_eos_token=True))


BUILDERS = {
    "bpe-gpt2": build_gpt2,
    "bpe-llama3": build_llama3,
    "bpe-qwen2": build_qwen2,
    "bpe-smollm": build_smollm,
    "spm-bpe-legacy": build_spm_legacy,
    "spm-bpe-metaspace": build_spm_metaspace,
    "spm-bpe-metaspace-split": build_spm_metaspace_split,
    "spm-bpe-unk": build_spm_unk,
}
assert list(BUILDERS) == FAMILIES


def build_family(name, root):
    return BUILDERS[name](os.path.join(root, name))


def build_all(root, names=None):
    return {name: build_family(name, root) for name in (names or FAMILIES)}


# --- reading a directory back the way transformers does ---------------------------

def load_config(directory):
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def token_text(value):
    """bos_token & co. are a string, null, or an {"__type": "AddedToken", "content": ...} object."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def special_tokens_map(config):
    """The template variables transformers passes from the tokenizer's special
    tokens (only those that are set)."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        text = token_text(config.get(key))
        if text is not None:
            out[key] = text
    return out


def select_chat_template(config, name=None, tools=None):
    """transformers' PreTrainedTokenizerBase.get_chat_template: a list of
    {"name", "template"} entries becomes a dict; with no name asked for, it is
    "tool_use" when tools are given and that entry exists, else "default"
    (an error when there is none). A single string is the template."""
    template = config.get("chat_template")
    if template is None:
        return None
    if isinstance(template, list):
        templates = {t["name"]: t["template"] for t in template}
        if name is not None:
            return templates.get(name, name)
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ValueError(f"multiple chat templates and none named 'default': {sorted(templates)}")
    return template


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tokenizer_families.py OUTDIR")
    for name, path in build_all(sys.argv[1]).items():
        print(name, path)

"""OpenAI legacy completions: `echo` with `logprobs` returns the prompt's
tokens too (issue 14, item 8), as OpenAI and vLLM do.

The choice's text starts with the prompt; tokens, token_logprobs,
top_logprobs and text_offset cover the prompt's tokens first (the first has a
null logprob and null alternatives: nothing precedes it), then the generated
ones; text_offset counts characters of the choice's text. max_tokens 0 with
echo scores a prompt: the prompt alone, finish_reason "length" (vLLM allows
it too). Streamed, the echoed prompt (and its logprobs) is a choice's first
chunk. A prompt given as token ids is echoed as the worker decodes it.

The oracle is llama.cpp (llama-cpp-python, logits_all=True) on the bundled
GGUF: prompt token t's logprob is the log-softmax, at token t, of the logits
llama.cpp computes after tokens [0, t).

Tolerance: TOL = 0.05 nats on every prompt logprob and on the top
alternatives. Both sides run the same Q4_1 weights with int8-quantized
activations, so their logits can differ only by the order of float sums:
Tessera's CPU kernels follow llama.cpp's (kernels/cpu/ggml_numerics.h), and
on this project's hosts the largest difference measured over these prompts
was 0.00000 nats (the test prints it); where llama.cpp's own kernels sum in
other orders (tests/oracle/near_tie.py) logits move by hundredths, and a
logprob by at most twice that. 0.05 nats is a factor of ~1.05 in
probability, while scoring the wrong position or the wrong token, or
forgetting the adapter, moves logprobs by whole nats: the test checks that a
one-position shift of the reference is outside this tolerance (median over
the prompt above 0.5 nats), so it is tight enough to mean something. The
top-1 token must be llama.cpp's argmax unless llama.cpp's own top two are
within TOL of each other (then either is a fair answer).

A LoRA adapter's prompt logprobs are held to tessera-logits --lora (the
single-sequence path test_lora.py holds serving to), since llama.cpp does
not load PEFT adapters, and must differ from the base model's."""
import json
import os
import subprocess
import sys
import tempfile
import types
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from conftest import BIN, MODEL_ID, SOURCE, Stack

MODEL_PATH = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# 46 tokens: more than one prefill chunk of a prompt-logprob request (the
# worker gives such a prompt 1 + 32 logit rows a step) and several 16-token
# KV blocks, so a prefix-cache hit would show as prompt rows left unscored.
PROMPT = ("The history of the Roman Empire spans many centuries, from the founding of the city to the fall "
          "of Constantinople. Its roads, laws and language shaped Europe, and its engineers built aqueducts "
          "that still stand today. Historians still debate why")
N = 3
TOL = 0.05


@pytest.fixture(scope="module")
def llama():
    from llama_cpp import Llama

    return Llama(MODEL_PATH, n_ctx=512, n_batch=512, n_threads=2, logits_all=True, verbose=False)


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def llama_logprobs(llama, ids):
    """Row t: llama.cpp's log-softmax after ids[:t + 1]."""
    llama.reset()
    llama.eval(ids)
    return np.stack([log_softmax(llama.scores[t]) for t in range(len(ids))])


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def check_prompt_logprobs(lp, ids, ref, n, llama):
    """lp: served logprobs whose first len(ids) entries are the prompt's,
    asked with logprobs=n; ref[t]: the reference log-softmax after
    ids[:t + 1]."""
    k = len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    served = np.array(lp.token_logprobs[1:k], dtype=np.float64)
    expected = np.array([ref[t - 1][ids[t]] for t in range(1, k)])
    err = np.abs(served - expected)
    print(f"{k - 1} prompt logprobs: max |served - reference| {err.max():.5f} nats (tolerance {TOL})")
    assert err.max() <= TOL, [(t + 1, lp.tokens[t + 1], served[t], expected[t]) for t in np.flatnonzero(err > TOL)]
    # The tolerance discriminates: the same tokens scored one row off are
    # far outside it.
    shifted = np.array([ref[t - 2][ids[t]] for t in range(2, k)])
    assert np.median(np.abs(served[1:] - shifted)) > 10 * TOL
    for t in range(1, k):
        top, row = lp.top_logprobs[t], ref[t - 1]
        # The n most likely tokens, plus the prompt's own when it is not
        # among them ("up to logprobs+1 elements").
        assert top[lp.tokens[t]] == lp.token_logprobs[t]
        assert max(n, 1) <= len(top) <= n + 1, (t, top)
        best = np.argsort(-row, kind="stable")
        values = sorted(top.values(), reverse=True)[:n]
        np.testing.assert_allclose(values, row[best[:n]], atol=TOL, err_msg=f"prompt token {t}")
        if n > 0 and row[best[0]] - row[best[1]] >= TOL:
            served_best = max(top, key=top.get)
            assert served_best == llama.detokenize([int(best[0])]).decode("utf-8", "replace"), (t, served_best, top)


def test_echo_with_logprobs_leads_with_the_prompt(client, llama):
    ids = llama.tokenize(PROMPT.encode(), add_bos=False, special=False)
    # First without echo: the prompt's blocks are then in the prefix cache,
    # which a prompt-logprob request must not use (cached blocks hold no
    # logits). It is also the non-echo baseline.
    plain = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=N)
    g = plain.choices[0].logprobs
    assert not plain.choices[0].text.startswith(PROMPT[:10])
    assert len(g.tokens) == plain.usage.completion_tokens == 4
    assert g.text_offset[0] == 0 and all(x is not None for x in g.token_logprobs)

    r = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=N)
    c = r.choices[0]
    lp = c.logprobs
    assert c.text == PROMPT + plain.choices[0].text
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == plain.usage.completion_tokens
    assert len(lp.tokens) == len(ids) + r.usage.completion_tokens
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(lp.tokens)
    # The same tokenization as llama.cpp's.
    assert lp.tokens[:len(ids)] == [llama.detokenize([i]).decode() for i in ids]
    assert "".join(lp.tokens[:len(ids)]) == PROMPT
    # Offsets count characters of the echoed text (all ASCII here).
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    # The generated part is what the same request without echo reports.
    assert lp.tokens[len(ids):] == g.tokens
    assert lp.token_logprobs[len(ids):] == g.token_logprobs
    assert lp.top_logprobs[len(ids):] == g.top_logprobs
    assert [o - len(PROMPT) for o in lp.text_offset[len(ids):]] == g.text_offset
    check_prompt_logprobs(lp, ids, llama_logprobs(llama, ids), N, llama)


def test_max_tokens_zero_scores_the_prompt(client, llama):
    ids = llama.tokenize(PROMPT.encode(), add_bos=False, special=False)
    ref = llama_logprobs(llama, ids)
    for _ in range(2):  # the second with the prompt's blocks cached
        s = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=0, echo=True, logprobs=N)
        c = s.choices[0]
        assert c.text == PROMPT
        assert c.finish_reason == "length"
        assert s.usage.prompt_tokens == len(ids) and s.usage.completion_tokens == 0
        assert len(c.logprobs.tokens) == len(ids)
        check_prompt_logprobs(c.logprobs, ids, ref, N, llama)
    # logprobs 0: each position still reports the prompt's own token.
    z = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0).choices[0]
    assert z.logprobs.top_logprobs[0] is None
    assert all(top == {tok: lp} for tok, lp, top in
               zip(z.logprobs.tokens[1:], z.logprobs.token_logprobs[1:], z.logprobs.top_logprobs[1:]))
    check_prompt_logprobs(z.logprobs, ids, ref, 0, llama)
    # Echo alone: the prompt, nothing computed.
    e = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=0, echo=True).choices[0]
    assert e.text == PROMPT and e.logprobs is None and e.finish_reason == "length"


def test_echo_without_logprobs_and_token_id_prompts(client, llama):
    plain = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=5, temperature=0)
    e = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=5, temperature=0,
                                  echo=True)
    assert e.choices[0].text == "The capital of France is" + plain.choices[0].text
    assert e.choices[0].logprobs is None
    assert e.usage.completion_tokens == plain.usage.completion_tokens
    # A token-id prompt is echoed as text (the worker decodes it), and its
    # tokens lead the logprobs.
    ids = llama.tokenize(b"The capital of France is", add_bos=False, special=False)
    t = client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=5, temperature=0, echo=True, logprobs=1)
    c = t.choices[0]
    assert c.text == e.choices[0].text
    assert "".join(c.logprobs.tokens[:len(ids)]) == "The capital of France is"
    assert c.logprobs.token_logprobs[0] is None
    assert c.logprobs.text_offset[len(ids)] == len("The capital of France is")
    check_prompt_logprobs(c.logprobs, ids, llama_logprobs(llama, ids), 1, llama)


def test_streamed_echo_sends_the_prompt_first(client):
    whole = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=N)
    chunks = list(client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=4, temperature=0, echo=True,
                                            logprobs=N, stream=True))
    first = chunks[0].choices[0]
    assert first.text == PROMPT and first.finish_reason is None
    assert first.logprobs.token_logprobs[0] is None and first.logprobs.top_logprobs[0] is None
    assert "".join(first.logprobs.tokens) == PROMPT
    text, tokens, lps, tops, offsets, finish = "", [], [], [], [], None
    for ch in chunks:
        for c in ch.choices:
            text += c.text
            finish = c.finish_reason or finish
            if c.logprobs:
                tokens += c.logprobs.tokens
                lps += c.logprobs.token_logprobs
                tops += c.logprobs.top_logprobs
                offsets += c.logprobs.text_offset
    w = whole.choices[0]
    assert text == w.text and finish == w.finish_reason
    assert tokens == w.logprobs.tokens and lps == w.logprobs.token_logprobs
    assert tops == w.logprobs.top_logprobs and offsets == w.logprobs.text_offset
    # Echo without logprobs streams the prompt first too; max_tokens 0 only it.
    plain = list(client.completions.create(model=MODEL_ID, prompt="1, 2, 3,", max_tokens=3, temperature=0, echo=True,
                                           stream=True))
    assert plain[0].choices[0].text == "1, 2, 3," and plain[0].choices[0].logprobs is None
    only = list(client.completions.create(model=MODEL_ID, prompt="1, 2, 3,", max_tokens=0, echo=True, logprobs=1,
                                          stream=True))
    assert "".join(c.text for ch in only for c in ch.choices) == "1, 2, 3,"
    assert [c.finish_reason for ch in only for c in ch.choices][-1] == "length"


def test_text_offset_counts_characters(client, llama):
    # Multi-byte characters, some split over byte tokens: each offset is the
    # character (of the echoed text) where the token's bytes begin.
    prompt = "Café, naïve, Zürich: 東京 €5"
    ids = llama.tokenize(prompt.encode(), add_bos=False, special=False)
    r = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=2, temperature=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith(prompt)
    expected, begun = [], 0
    for i in ids:
        b = llama.detokenize([i])
        expected.append(begun - (1 if b and (b[0] & 0xC0) == 0x80 else 0))
        begun += sum(1 for x in b if (x & 0xC0) != 0x80)
    assert lp.text_offset[:len(ids)] == expected
    assert begun == len(prompt)
    assert lp.text_offset[len(ids)] == len(prompt)  # the first generated token
    # The prompt really does split characters over tokens.
    assert any(len(llama.detokenize([i])) != len(llama.detokenize([i]).decode("utf-8", "replace")) for i in ids)


def test_n_choices_and_errors(stack, client):
    r = client.completions.create(model=MODEL_ID, prompt=["1, 2,", "a, b,"], n=2, max_tokens=2, temperature=0,
                                  echo=True, logprobs=2)
    assert [c.text[:5] for c in r.choices] == ["1, 2,", "1, 2,", "a, b,", "a, b,"]
    assert all(c.logprobs.token_logprobs[0] is None for c in r.choices)
    assert [c.logprobs.tokens[0] for c in r.choices] == ["1", "1", "a", "a"]
    # Bad combinations: OpenAI-shaped 400s naming the parameter.
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=0)  # nothing to return without echo
    assert err.value.body["param"] == "max_tokens" and err.value.body["type"] == "invalid_request_error"
    code, body = post(stack.url, "/v1/completions", {"model": MODEL_ID, "prompt": "a", "echo": True, "logprobs": 6})
    assert code == 400 and body["error"]["param"] == "logprobs" and body["error"]["type"] == "invalid_request_error"
    code, body = post(stack.url, "/v1/completions", {"model": MODEL_ID, "prompt": "a", "echo": True, "max_tokens": -1})
    assert code == 400 and body["error"]["param"] == "max_tokens", body


def tessera_rows(ids, lora):
    """Tessera's single-sequence logits (tessera-logits, the oracle
    test_lora.py uses) after each prefix of ids, with a LoRA adapter."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.f32")
        r = subprocess.run([os.path.join(BIN, "tessera-logits"), "--model", MODEL_PATH, "--ids", " ".join(map(str, ids)),
                            "--prompt-length", "1", "--rows-out", out, "--lora", lora],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


def test_prompt_logprobs_use_the_selected_adapter(tmp_path, llama):
    adapter = tmp_path / "adapters" / "tuned"
    subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", MODEL_PATH, "--out",
                    str(adapter), "--rank", "8", "--targets", "q_proj,v_proj,down_proj", "--seed", "7", "--scale", "0.08"],
                   check=True, capture_output=True)
    s = Stack(extra_worker_args=["--adapter-dir", str(tmp_path / "adapters")])
    try:
        code, body = post(s.url, "/v1/completions", {"model": "tuned", "prompt": PROMPT, "max_tokens": 0, "echo": True,
                                                     "logprobs": 2})
        assert code == 200, body
        code, base = post(s.url, "/v1/completions", {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 0, "echo": True,
                                                     "logprobs": 2})
        assert code == 200, base
    finally:
        s.stop()
    ids = llama.tokenize(PROMPT.encode(), add_bos=False, special=False)
    lp = types.SimpleNamespace(**body["choices"][0]["logprobs"])
    ref = np.stack([log_softmax(row) for row in tessera_rows(ids, str(adapter))])
    check_prompt_logprobs(lp, ids, ref, 2, llama)
    # The adapter changes the scores: the base model's are not these.
    delta = np.abs(np.array(lp.token_logprobs[1:]) - np.array(base["choices"][0]["logprobs"]["token_logprobs"][1:]))
    assert delta.max() > 10 * TOL

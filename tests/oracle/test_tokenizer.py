"""Tokenizer oracle: Tessera's token ids equal llama.cpp's on the same GGUF
vocabulary, for the bundled model's byte-level BPE (SmolLM pre-tokenizer),
for the Llama 3, Qwen2 and GPT-2 pre-tokenizers over the same vocabulary,
and for a SentencePiece-style vocabulary."""
import os
import random

import gguf
import numpy as np
import pytest
from llama_cpp import Llama

from conftest import JsonLinesTool, run_tool, tool

FIXED = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "\t\tindented", "Hello world", "Hello, World!", "hello   world",
    "It's", "I'M READY", "they'll've", "don't", "'s'S'", "12345", "3.14159", "1,000,000", "x=1+2", "  leading",
    "trailing  ", "multiple\n\nparagraphs\n\nhere", "CamelCaseIdentifier", "snake_case_identifier",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "<html><body>hi</body></html>",
    "naïve café résumé", "Ελληνικά", "русский текст", "日本語のテキスト", "中文文本测试", "한국어", "עברית", "العربية",
    "emoji 😀😃😄 🚀", "👩‍👩‍👧‍👦 family", "flags 🇫🇷🇩🇪", "math ∑∫√∞≈≠", "ｆｕｌｌｗｉｄｔｈ", "ℌ𝔢𝔩𝔩𝔬",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>", "<s>", "</s>", "[INST]",
    "<|eot_id|>", "text<|im_end|>more", "\u00a0nbsp\u2003em space", "zero\u200bwidth", "\r\nwindows\r\n",
    "tabs\tand\tspaces", "ALLCAPS WORDS HERE", "mIxEd CaSe", "a" * 300, " " * 50, "ab" * 100, "!!!???...",
    "email@example.com", "https://example.com/path?q=1&r=2#frag", "$100.00 €50 £20 ¥1000", "100%", "C++ C# F#",
    "e.g. i.e. etc.", "«quotes» „German“ “curly”", "—dashes– and - hyphens", "…ellipsis", "©®™", "°C",
]

FRAGMENTS = [
    " ", "  ", "\n", "\t", "the", "The", "quick", " brown", "fox", "'s", "'ll", "123", "4567", "3.5", "!", "?!",
    "(", ")", "{", "}", "->", "==", "日本", "中文", "한국", "😀", "🚀", "é", "ß", "Ω", "<|im_end|>", "<s>", "[/INST]",
    "def", "return", "\r\n", "\u00a0", "---", "***", "`code`", "#", "@user", "0x1F", "1e-5",
]


def corpus():
    rng = random.Random(1234)
    out = list(FIXED)
    while len(out) < 320:
        out.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))))
    return out


def tessera_ids(tk, text, special=False):
    r = tk.ask({"text": text, "parse_special": special})
    assert "ids" in r, r
    return r["ids"]


@pytest.fixture(scope="module")
def tessera_tok(model_path):
    t = JsonLinesTool([tool("tessera-tokenize"), "--model", model_path])
    yield t
    t.close()


def test_bundled_model_matches_llama_cpp(tessera_tok, llama_vocab):
    texts = corpus()
    assert len(texts) >= 300
    mismatches = []
    for text in texts:
        want = llama_vocab.tokenize(text.encode(), add_bos=False, special=False)
        got = tessera_ids(tessera_tok, text)
        if got != want:
            mismatches.append((text, got, want))
    assert not mismatches, mismatches[:5]


def test_special_tokens_are_parsed_only_when_asked(tessera_tok, llama_vocab):
    for text in ["<|im_start|>user\nhi<|im_end|>", "a<|endoftext|>b", "<|im_start|><|im_start|>", "x <|im_end|>\n"]:
        assert tessera_ids(tessera_tok, text, special=True) == llama_vocab.tokenize(text.encode(), add_bos=False, special=True)
        assert tessera_ids(tessera_tok, text) == llama_vocab.tokenize(text.encode(), add_bos=False, special=False)


def test_detokenize_round_trips(tessera_tok):
    for text in corpus():
        ids = tessera_ids(tessera_tok, text)
        assert tessera_tok.ask({"detokenize": ids})["text"] == text


def test_incremental_detokenizer_emits_whole_characters(tessera_tok):
    for text in ["emoji 😀😃😄 🚀", "日本語のテキスト", "👩‍👩‍👧‍👦 family", "ℌ𝔢𝔩𝔩𝔬 naïve", "mixed 中文 and 한국어 😀"]:
        ids = tessera_ids(tessera_tok, text)
        raw = tessera_tok.ask({"detokenize_stream": ids})
        pieces = raw["pieces"]
        assert "".join(pieces) == text
        assert any(p == "" for p in pieces[:-1]), "expected some tokens to hold back partial characters"
        for p in pieces:
            p.encode("utf-8")  # every piece is whole characters (json would have replaced halves)
            assert "\ufffd" not in p
    # Bytes that can never complete a character become U+FFFD, not garbage.
    pieces = tessera_tok.ask({"detokenize_stream": [tessera_ids(tessera_tok, "\u00e9")[0]]})["pieces"]
    assert "".join(pieces) in ("\u00e9", "\ufffd")


def test_cli_tokenize(model_path, llama_vocab):
    for text in ["Hello world, this is a test 12345 <|im_end|>", "日本語 😀", "  spaces\n\nnewlines"]:
        r = run_tool("tessera-generate", "--model", model_path, "--tokenize", text)
        assert r.returncode == 0, r.stderr
        assert [int(x) for x in r.stdout.split()] == llama_vocab.tokenize(text.encode(), add_bos=False, special=False)


def _copy_vocab(src_path, dst_path, pre):
    """A vocab-only GGUF with the bundled model's BPE vocabulary and another
    pre-tokenizer name."""
    r = gguf.GGUFReader(src_path)
    w = gguf.GGUFWriter(dst_path, arch="llama")
    tokens = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
              for i in r.fields["tokenizer.ggml.tokens"].data]
    merges = [bytes(r.fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
              for i in r.fields["tokenizer.ggml.merges"].data]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    _minimal_llama(w)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _minimal_llama(w):
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(2)


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt-2"])
def test_other_pre_tokenizers_match_llama_cpp(tmp_path, model_path, pre):
    path = str(tmp_path / f"vocab-{pre}.gguf")
    _copy_vocab(model_path, path, pre)
    ref = Llama(path, vocab_only=True, verbose=False)
    tk = JsonLinesTool([tool("tessera-tokenize"), "--model", path])
    try:
        bad = []
        for text in corpus():
            want = ref.tokenize(text.encode(), add_bos=False, special=False)
            got = tessera_ids(tk, text)
            if got != want:
                bad.append((text, got, want))
        assert not bad, bad[:5]
    finally:
        tk.close()


def _spm_vocab(path):
    """A SentencePiece-style vocabulary: control tokens, byte fallback tokens,
    every character of a corpus and its frequent substrings, scored by
    frequency."""
    text = " ".join(corpus()[:150]).replace(" ", "\u2581")
    counts = {}
    for n in (1, 2, 3, 4, 5):
        for i in range(len(text) - n + 1):
            s = text[i:i + n]
            counts[s] = counts.get(s, 0) + 1
    pieces = [s for s, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 3 or len(s) == 1][:4000]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    seen = set(tokens)
    for rank, p in enumerate(pieces):
        if p in seen:
            continue
        seen.add(p)
        tokens.append(p)
        types.append(1)
        scores.append(-float(rank) - (0.5 if len(p) == 1 else 0.0))
    w = gguf.GGUFWriter(path, arch="llama")
    _minimal_llama(w)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_sentencepiece_vocabulary_matches_llama_cpp(tmp_path):
    path = str(tmp_path / "spm.gguf")
    _spm_vocab(path)
    ref = Llama(path, vocab_only=True, verbose=False)
    tk = JsonLinesTool([tool("tessera-tokenize"), "--model", path])
    try:
        bad = []
        for text in corpus():
            want = ref.tokenize(text.encode(), add_bos=True, special=False)
            got = tk.ask({"text": text, "add_special": True})["ids"]
            if got != want:
                bad.append((text, got, want))
        assert not bad, bad[:3]
        # Decoding restores the text (less the space prefix SentencePiece adds).
        for text in ["Hello world", "日本語 😀 x"]:
            ids = tk.ask({"text": text})["ids"]
            assert tk.ask({"detokenize": ids})["text"].lstrip(" ") == text
    finally:
        tk.close()

"""Tokenizer oracle for Hugging Face tokenizer directories: Tessera's reader of
tokenizer.json (+ tokenizer_config.json) gives the same token ids as the
Hugging Face `tokenizers` library, and decodes ids to the same text, for every
family in tokenizer_families.py (byte-level BPE as GPT-2, Llama 3, Qwen2 and
SmolLM ship it; SentencePiece-style BPE as Llama 2 / Mistral ship it, with
Prepend+Replace normalizers, Metaspace with and without split, byte fallback
and unk fusing).

Tessera's side is build/bin/tessera-tokenize --model DIR, one JSON line per
request:
  {"text", "add_special", "parse_special"} -> {"ids"} | {"error"}
  {"detokenize": ids}                      -> {"text"} | {"error"}
and the contract checked here is
  parse_special=true,  add_special=false == tok.encode(text, add_special_tokens=False)
  parse_special=true,  add_special=true  == tok.encode(text, add_special_tokens=True)
  parse_special=false, add_special=false == the same with tok.encode_special_tokens = True
      (the text of special=true added tokens is plain text; special=false added
      tokens are still recognised, as llama.cpp's parse_special=false does)
  detokenize(ids)                        == tok.decode(ids, skip_special_tokens=True)

Every mismatch is reported with the text, both id lists and the tokens'
strings; all of them are also written to a JSON file named in the failure.
"""
import json
import os
import random

import pytest

from conftest import JsonLinesTool, tool

tokenizers = pytest.importorskip("tokenizers", reason="the Hugging Face `tokenizers` package is not installed "
                                 "in this Python (pip install tokenizers==0.23.3)")
from tokenizers import Tokenizer  # noqa: E402

import tokenizer_families as tf  # noqa: E402

TOKENIZE = tool("tessera-tokenize")

# --- the strings -----------------------------------------------------------------

FIXED = [
    "", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", " \n ", "\r\n", "\r\nwindows\r\nline\r\n", "\r", "\t", "\t\tindented",
    "Hello world", "Hello, World!", "hello   world", "Hello", " Hello", "  Hello", "Hello ", "Hello  ",
    "It's", "I'M READY", "they'll've", "don't", "'s'S'", "WE'RE HERE", "you'D", "'",
    "12345", "3.14159", "1,000,000", "x=1+2", "2024-11-30", "0x1F 0b1010", "1e-5", "١٢٣ ٤٥٦", "½ ⅓ Ⅻ ²",
    "  leading", "trailing  ", " both ", "multiple\n\nparagraphs\n\nhere", "line\n  indented\n\tTabbed",
    "CamelCaseIdentifier", "snake_case_identifier", "kebab-case-identifier", "SCREAMING_SNAKE",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "<html><body>hi</body></html>",
    "    if (x) {\n        y();\n    }\n", "#include <stdio.h>\nint main(void) { return 0; }",
    "SELECT * FROM t WHERE a = 'b';", "{\"key\": [1, 2, {\"n\": null}]}", "a && b || !c", "x->y::z", "$$\\frac{a}{b}$$",
    "naïve café résumé", "naïve café résumé".upper(), "Ελληνικά", "русский текст", "日本語のテキスト", "中文文本测试",
    "한국어", "עברית", "العربية", "हिन्दी", "ไทย", "Tiếng Việt", "Ærøskøbing", "straße STRASSE",
    "emoji 😀😃😄 🚀", "👩‍👩‍👧‍👦 family", "👍🏽 thumbs", "flags 🇫🇷🇩🇪", "❤️ ☺️", "🧑‍💻", "math ∑∫√∞≈≠",
    "ｆｕｌｌｗｉｄｔｈ", "ℌ𝔢𝔩𝔩𝔬", "zero\u200bwidth", "\u00a0nbsp\u2003em space", "a\u00a0b", "\u3000ideographic space",
    "\ufeffBOM", "soft\u00adhyphen", "ligature ﬁ ﬂ", "Å Å Å",
    # NFC vs NFD (and NFKC-only) forms: only the NFC normalizer may merge them.
    "caf\u00e9", "cafe\u0301", "e\u0301le\u0300ve", "\u00e9l\u00e8ve", "\u1e9b\u0323", "A\u030a", "\u212b",
    "ｶﾀｶﾅ", "가", "\u1100\u1161",
    "tabs\tand\tspaces", "ALLCAPS WORDS HERE", "mIxEd CaSe", "a" * 300, " " * 50, "\n" * 20, "ab" * 100, "!!!???...",
    "email@example.com", "https://example.com/path?q=1&r=2#frag", "$100.00 €50 £20 ¥1000", "100%", "C++ C# F#",
    "e.g. i.e. etc.", "«quotes» „German“ “curly”", "—dashes– and - hyphens", "…ellipsis", "©®™", "°C",
    "end with space ", "end with newline\n", "\n start with newline", " \t \n mixed whitespace \n\t ",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<|eot_id|>",
    "<|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", "<|im_start|>user\nhi<|im_end|>",
    "text<|im_end|>more", "<0x41>", "<0xE6><0x97>", "<tool_call>", "<think>", "<mask>", "<|fim_prefix|>",
    "\u2581leading metaspace", "a\u2581b", "\u2581", "Ġhello Ċ",
    "Hello tokenizer Tessera naïve 日本語 emoji über", "The tokenizer Tessera loads: naïve, über, 日本語!",
    "Hello\nHello Hello  Hello", " tokenizer tokenizers tokenized",
]

FRAGMENTS = [
    " ", "  ", "\n", "\n\n", "\t", "\r\n", "the", "The", "quick", " brown", "fox", "'s", "'ll", "123", "4567", "3.5",
    "!", "?!", "(", ")", "{", "}", "->", "==", "日本", "中文", "한국", "😀", "🚀", "👩‍💻", "é", "e\u0301", "ß", "Ω",
    "def", "return", "\u00a0", "---", "***", "`code`", "#", "@user", "0x1F", "1e-5", " tokenizer", "Hello", " naïve",
    "\u2581", "  indented", "über",
]


def _corpus_extract():
    """Real text: every 40th line of the training corpus (cut at 400
    characters) and a few multi-line code blocks."""
    with open(tf.CORPUS, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = [line[:400] for line in lines[::40] if line.strip()]
    for start in range(0, len(lines), 400):
        block = "\n".join(lines[start:start + 8])
        if block.strip():
            out.append(block[:600])
    return out


def _added_strings(added):
    """Strings built around a family's added tokens: alone, glued, spaced,
    doubled, cut short, and next to newlines and tabs."""
    out = []
    for t in added:
        c = t["content"]
        out += [c, "x" + c + "y", " " + c + " ", "  " + c + "  ", c + "\n", "\n" + c, c + c, c + " " + c,
                "text " + c + " more", "text" + c + "more", "\t" + c + "\t", c[:-1], c[1:], c + "\n\n" + c + "\n",
                "Hello" + c, c + "Hello", c + " Hello", "日本" + c + "語", "😀" + c]
    if len(added) >= 2:
        a, b = added[0]["content"], added[-1]["content"]
        out += [a + b, a + " x " + b, b + "\n" + a + "\nuser\nhi" + b]
    return out


def family_strings(name, tokenizer_json):
    added = tokenizer_json["added_tokens"]
    texts = list(FIXED) + _corpus_extract() + _added_strings(added)
    if name == "bpe-qwen2":
        texts += [
            "a <mask> b", "a   <mask>", "a\n\t<mask>x", "<mask><mask>", " <mask>", "<mask> ", "x\u00a0<mask>",
            "<think>  \n x", "x<think>\ty", "  <think>  ", "<think>\n\nplan</think>", "<think>",
            "a <mask> <think> b", "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
            "caf\u00e9", "cafe\u0301", "caf\u00e9s", "xcafe\u0301y", "CAF\u00c9", "caf\u00e9 cafe\u0301 caf\u00e9",
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        ]
    if name == "bpe-llama3":
        words = tf.LLAMA3_WHOLE_WORDS
        texts += ["".join(words), " ".join(w.strip() for w in words), "\n".join(words)] + list(words)
        texts += ["<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHello tokenizer<|eot_id|>"]
    if name.startswith("spm-"):
        texts += ["hello<s>world", "hello <s> world", "<s>hello", " <s>hello", "<s> hello", "a</s>", "a </s>",
                  "</s><s>", "<unk>x", "x<unk>", "\u2581\u2581x", "\u2581 \u2581", "  \u2581", "<0x0A>"]
    rng = random.Random(20241130)
    frags = FRAGMENTS + [t["content"] for t in added]
    while len(texts) < 420:
        texts.append("".join(rng.choice(frags) for _ in range(rng.randint(1, 12))))
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


# --- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    return tf.build_all(str(tmp_path_factory.mktemp("hf-tokenizers")))


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf-tokenizer-mismatches"))


class Family:
    def __init__(self, name, directory):
        self.name = name
        self.dir = directory
        self.hf = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
            self.json = json.load(f)
        self.config = tf.load_config(directory)
        self.texts = family_strings(name, self.json)
        self.special_ids = {t["id"] for t in self.json["added_tokens"] if t["special"]}
        self.added_ids = {t["id"] for t in self.json["added_tokens"]}

    def piece(self, i):
        if not isinstance(i, int):
            return f"<not an int: {i!r}>"
        p = self.hf.id_to_token(i)
        return p if p is not None else f"<id {i} out of range>"

    def hf_ids(self, text, add_special=False, parse_special=True):
        self.hf.encode_special_tokens = not parse_special
        try:
            return self.hf.encode(text, add_special_tokens=add_special).ids
        finally:
            self.hf.encode_special_tokens = False


@pytest.fixture(scope="session", params=tf.FAMILIES)
def family(request, family_dirs):
    return Family(request.param, family_dirs[request.param])


def require_tool():
    if not os.path.exists(TOKENIZE):
        pytest.skip(f"{TOKENIZE} is not built (Tessera's tokenizer tool): nothing to compare the tokenizers library with")


@pytest.fixture
def tessera(family):
    require_tool()
    t = JsonLinesTool([TOKENIZE, "--model", family.dir])
    yield t
    t.close()


def report(fam, report_dir, what, rows):
    """Fails with every mismatch: the text, Tessera's ids and tokens, the
    tokenizers library's ids and tokens (all of them in a JSON file too)."""
    if not rows:
        return
    path = os.path.join(report_dir, f"{fam.name}-{what}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
    lines = [f"{fam.name}: {len(rows)} of {len(fam.texts)} strings differ ({what}); all are in {path}"]
    for r in rows[:40]:
        lines.append(f"- text {r['text']!r}")
        for side in ("tessera", "hf"):
            v = r[side]
            if isinstance(v, list):
                lines.append(f"    {side:8} ids    {v}")
                lines.append(f"    {side:8} tokens {[fam.piece(i) for i in v]}")
            else:
                lines.append(f"    {side:8} {v!r}")
    if len(rows) > 40:
        lines.append(f"... and {len(rows) - 40} more in {path}")
    pytest.fail("\n".join(lines), pytrace=False)


def compare_encoding(fam, tessera, report_dir, add_special, parse_special, what):
    bad = []
    for text in fam.texts:
        want = fam.hf_ids(text, add_special=add_special, parse_special=parse_special)
        got = tessera.ask({"text": text, "add_special": add_special, "parse_special": parse_special})
        got = got["ids"] if "ids" in got else f"error: {got.get('error', got)}"
        if got != want:
            bad.append({"text": text, "tessera": got, "hf": want})
    report(fam, report_dir, what, bad)


# --- the tokenizers library alone (the fixtures are what they claim to be) ----------

def test_family_loads_encodes_and_decodes(family):
    fam = family
    assert len(fam.texts) >= 300
    size = fam.hf.get_vocab_size()
    assert 2000 <= size <= 4000, size
    assert os.path.exists(os.path.join(fam.dir, "tokenizer_config.json"))
    unk = fam.hf.token_to_id("<unk>")
    for text in ["Hello world", "def f(x):\n    return x ** 2\n", "naïve résumé 12345", " 日本語 😀"]:
        ids = fam.hf_ids(text)
        assert ids and all(0 <= i < size for i in ids)
        if unk not in ids:  # spm-bpe-unk has no byte fallback: "\n" is <unk>
            assert fam.hf.decode(ids, skip_special_tokens=True).strip(" ") == text.strip(" ")
    for text in fam.texts:
        fam.hf_ids(text)
        fam.hf_ids(text, add_special=True)
        fam.hf_ids(text, parse_special=False)


def test_family_json_has_the_features_under_test(family_dirs):
    def load(name):
        with open(os.path.join(family_dirs[name], "tokenizer.json"), encoding="utf-8") as f:
            return json.load(f)

    gpt2 = load("bpe-gpt2")
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in gpt2["model"]["merges"])
    assert gpt2["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                     "use_regex": True}
    llama3 = load("bpe-llama3")
    assert llama3["model"]["ignore_merges"] is True
    assert all(isinstance(m, list) and len(m) == 2 for m in llama3["model"]["merges"])
    split, bytelevel = llama3["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and split["pattern"] == {"Regex": tf.LLAMA3_PATTERN}
    assert split["behavior"] == "Isolated" and bytelevel["use_regex"] is False
    assert [p["type"] for p in llama3["post_processor"]["processors"]] == ["ByteLevel", "TemplateProcessing"]
    qwen2 = load("bpe-qwen2")
    assert qwen2["normalizer"] == {"type": "NFC"}
    flags = {t["content"]: t for t in qwen2["added_tokens"]}
    assert flags["<mask>"]["lstrip"] and flags["<think>"]["rstrip"] and flags["café"]["normalized"]
    assert not flags["<tool_call>"]["special"] and flags["<|im_end|>"]["special"]
    smollm = load("bpe-smollm")
    assert [p["type"] for p in smollm["pre_tokenizer"]["pretokenizers"]] == ["Digits", "ByteLevel"]
    assert smollm["pre_tokenizer"]["pretokenizers"][0]["individual_digits"] is True
    legacy = load("spm-bpe-legacy")
    assert legacy["pre_tokenizer"] is None
    assert [n["type"] for n in legacy["normalizer"]["normalizers"]] == ["Prepend", "Replace"]
    assert legacy["model"]["byte_fallback"] and legacy["model"]["fuse_unk"] and legacy["model"]["unk_token"] == "<unk>"
    assert all(f"<0x{b:02X}>" in legacy["model"]["vocab"] for b in range(256))
    assert [d["type"] for d in legacy["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"]
    for name, split in (("spm-bpe-metaspace", False), ("spm-bpe-metaspace-split", True)):
        j = load(name)
        assert j["normalizer"] is None
        assert j["pre_tokenizer"] == {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                                      "split": split}
    unk = load("spm-bpe-unk")
    assert not unk["model"]["byte_fallback"] and not any(t.startswith("<0x") for t in unk["model"]["vocab"])


def test_families_are_deterministic(tmp_path, family_dirs):
    again = tf.build_all(str(tmp_path))
    for name in tf.FAMILIES:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(again[name], f), "rb") as a, open(os.path.join(family_dirs[name], f), "rb") as b:
                assert a.read() == b.read(), (name, f)


def test_subtle_behaviours_of_the_reference(family_dirs):
    """Pins the tokenizers library's behaviour that the C++ reader must
    reproduce, so that a change of library version shows up here first."""
    def tok(name):
        return Tokenizer.from_file(os.path.join(family_dirs[name], "tokenizer.json"))

    def pieces(t, text, **kw):
        return t.encode(text, add_special_tokens=kw.get("add", False)).tokens

    # ignore_merges: a pre-token that is a vocabulary entry is one token, even
    # when no merge builds it.
    llama3 = tok("bpe-llama3")
    assert pieces(llama3, "Hello tokenizer") == ["Hello", "Ġtokenizer"]
    j = json.loads(llama3.to_str())
    j["model"]["ignore_merges"] = False
    assert len(Tokenizer.from_str(json.dumps(j)).encode("Hello tokenizer", add_special_tokens=False).ids) > 2
    assert pieces(llama3, "hi", add=True)[0] == "<|begin_of_text|>"

    # Added tokens: lstrip swallows all whitespace before, rstrip all after;
    # the whitespace belongs to the added token (it is not encoded and does
    # not come back on decoding).
    qwen2 = tok("bpe-qwen2")
    mask, think = qwen2.token_to_id("<mask>"), qwen2.token_to_id("<think>")
    assert qwen2.encode("a \n\t<mask>x", add_special_tokens=False).ids == [qwen2.token_to_id("a"), mask,
                                                                           qwen2.token_to_id("x")]
    assert qwen2.encode("<think>  \n x", add_special_tokens=False).ids == [think, qwen2.token_to_id("x")]
    assert qwen2.decode(qwen2.encode("a <mask> b").ids) == "a<mask> b"
    # normalized=true: matched in the NFC-normalized text, so NFD input matches.
    assert pieces(qwen2, "xcafe\u0301y") == ["x", "café", "y"]
    # Special tokens are not stripped of neighbouring spaces.
    assert pieces(qwen2, " <|im_end|> ") == ["Ġ", "<|im_end|>", "Ġ"]
    # encode_special_tokens: special tokens become text, non-special added tokens stay.
    qwen2.encode_special_tokens = True
    assert "<|im_end|>" not in pieces(qwen2, "<tool_call><|im_end|>")
    assert pieces(qwen2, "<tool_call><|im_end|>")[0] == "<tool_call>"
    qwen2.encode_special_tokens = False

    # SentencePiece legacy: the normalizer runs on each piece of text between
    # added tokens, so each piece gets its own "▁" prefix.
    legacy = tok("spm-bpe-legacy")
    assert pieces(legacy, "hello<s>world")[-1] == "▁world"
    assert pieces(legacy, "") == [] and pieces(legacy, "", add=True) == ["<s>"]
    # Metaspace prepend_scheme "first": only the text at offset 0 gets "▁".
    meta = tok("spm-bpe-metaspace")
    assert pieces(meta, "hello<s>world")[-3:] == ["w", "or", "ld"]
    assert pieces(meta, "<s>hello")[1] == "he"
    # split=false keeps runs of spaces together, split=true cuts before each "▁".
    assert pieces(meta, "a  b")[1] == "▁▁"
    assert pieces(tok("spm-bpe-metaspace-split"), "a  b") == ["▁a", "▁", "▁b"]
    # byte fallback: characters outside the vocabulary become <0xXX> tokens.
    assert "<0xF0>" in pieces(legacy, "😀")
    # fuse_unk without byte fallback: a run of unknown characters is one <unk>.
    unk = tok("spm-bpe-unk")
    assert pieces(unk, "x😀😀😀y").count("<unk>") == 1
    # ByteFallback decoding: a run of byte tokens that is not valid UTF-8 as a
    # whole becomes one U+FFFD per byte, even where part of it was valid.
    assert pieces(legacy, "😀") == ["▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    ids = legacy.encode("😀 日本語", add_special_tokens=False).ids
    # "本" is E6 9C AC, complete, but its run E6 9C AC E8 AA is not valid UTF-8.
    assert legacy.decode(ids[:-1]) == "😀 日" + "\ufffd" * 5
    # ByteLevel decoding replaces invalid UTF-8 like String::from_utf8_lossy.
    gpt2 = tok("bpe-gpt2")
    ids = gpt2.encode("😀", add_special_tokens=False).ids
    assert gpt2.decode(ids[1:]) == "\ufffd" * 3 and gpt2.decode(ids[:-1]) == "\ufffd"


# --- Tessera against the tokenizers library -------------------------------------------

def test_encode_matches_hf(family, tessera, report_dir):
    """parse_special=true, add_special=false == encode(text, add_special_tokens=False)."""
    compare_encoding(family, tessera, report_dir, add_special=False, parse_special=True, what="encode")


def test_encode_with_special_tokens_matches_hf(family, tessera, report_dir):
    """parse_special=true, add_special=true == encode(text, add_special_tokens=True):
    the post-processor's template (BOS, and EOS where it adds one)."""
    compare_encoding(family, tessera, report_dir, add_special=True, parse_special=True, what="encode-add-special")


def test_encode_special_text_as_text_matches_hf(family, tessera, report_dir):
    """parse_special=false == encode with encode_special_tokens=True: the text of
    special tokens is ordinary text, non-special added tokens are still found."""
    compare_encoding(family, tessera, report_dir, add_special=False, parse_special=False, what="encode-no-parse")


def _decodable(fam, ids):
    """Ids of normal text: no special tokens, and no added token whose text is
    not ASCII (the library runs added tokens' text through the ByteLevel
    decoder, which turns "café" into "caf\ufffd"; that is not held against
    Tessera)."""
    for i in ids:
        if i in fam.special_ids:
            return False
        if i in fam.added_ids and not fam.hf.id_to_token(i).isascii():
            return False
    return True


def compare_decoding(fam, tessera, report_dir, id_lists, what):
    bad = []
    for text, ids in id_lists:
        want = fam.hf.decode(ids, skip_special_tokens=True)
        got = tessera.ask({"detokenize": ids})
        got = got["text"] if "text" in got else {"error": got.get("error", got)}
        if got != want:
            bad.append({"text": text, "ids": ids, "tokens": [fam.piece(i) for i in ids], "tessera": got, "hf": want})
    if bad:
        path = os.path.join(report_dir, f"{fam.name}-{what}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(bad, f, ensure_ascii=False, indent=1)
        lines = [f"{fam.name}: {len(bad)} of {len(id_lists)} id lists decode differently ({what}); all are in {path}"]
        for r in bad[:40]:
            lines += [f"- text {r['text']!r}", f"    ids     {r['ids']}", f"    tokens  {r['tokens']}",
                      f"    tessera {r['tessera']!r}", f"    hf      {r['hf']!r}"]
        pytest.fail("\n".join(lines), pytrace=False)


def test_decode_matches_hf(family, tessera, report_dir):
    """detokenize(ids) == decode(ids, skip_special_tokens=True) for the ids of
    normal text (the library's own ids, so this does not depend on Tessera's
    encoder)."""
    lists = []
    for text in family.texts:
        # The text of special tokens encoded as text: no special token ids.
        ids = family.hf_ids(text, parse_special=False)
        if _decodable(family, ids):
            lists.append((text, ids))
    # spm-bpe-unk: <unk> is a special token, and every text with a character
    # outside its alphabet has one.
    assert len(lists) >= (150 if family.name == "spm-bpe-unk" else 300), len(lists)
    compare_decoding(family, tessera, report_dir, lists, "decode")


def test_decode_of_partial_sequences_matches_hf(family, tessera, report_dir):
    """Id runs cut in the middle of characters and words: invalid UTF-8 is
    replaced as the library replaces it (ByteLevel: like from_utf8_lossy;
    ByteFallback: one U+FFFD per byte of an invalid run), and decoders that
    look at the first token (Strip, Metaspace) see the run's first token."""
    lists = []
    for text in ["emoji 😀😃😄 🚀", "日本語のテキスト", "👩‍👩‍👧‍👦 family", "ℌ𝔢𝔩𝔩𝔬 naïve", "mixed 中文 and 한국어 😀",
                 "  two leading spaces", "Hello world, again", "العربية و 日本"]:
        ids = family.hf_ids(text)
        if not _decodable(family, ids):
            continue
        for a, b in [(1, None), (2, None), (0, -1), (0, -2), (1, -1), (3, -3)]:
            part = ids[a:b]
            if part:
                lists.append((f"{text!r}[{a}:{b}]", part))
    compare_decoding(family, tessera, report_dir, lists, "decode-partial")


def test_tessera_reports_errors_as_json(family, tessera):
    """A request the tool cannot serve gets an {"error"} line, and the tool
    keeps answering."""
    r = tessera.ask({"detokenize": [family.hf.get_vocab_size() + 1000]})
    assert "error" in r or "text" in r
    assert tessera.ask({"text": "still here", "add_special": False, "parse_special": True})["ids"] == \
        family.hf_ids("still here")

"""tools/checkpoints/gguf_to_hf.py and hf_to_gguf.py, checked on the bundled
model (SmolLM2-135M, llama architecture, tied embeddings, "smollm" BPE):

  * tokenizer.json, loaded by the Hugging Face `tokenizers` library, gives the
    ids llama.cpp gives for the GGUF on 320+ strings, and special tokens are
    single ids; so do the Llama 3 ("llama-bpe", BOS template, ignore_merges),
    Qwen2 and GPT-2 pipelines over the same vocabulary;
  * the safetensors hold exactly the dequantized GGUF tensors, with q/k rows in
    HF's half-split order (permuting them again as llama.cpp's converter does
    gives back the GGUF's rows);
  * an independent numpy forward pass of the HF checkpoint (transformers'
    Llama math, rotate_half rope) gives llama.cpp's logits for the dequantized
    GGUF: the q/k un-permutation and config.json are right, not only
    self-consistent;
  * hf_to_gguf(gguf_to_hf(m, f32)) is the same F32 GGUF as dequantizing m
    directly, and llama.cpp's logits and greedy tokens on both are identical;
  * sharded output has a correct model.safetensors.index.json; BF16 output
    decodes to the round-to-nearest-even bfloat16 of the dequantized values;
    --weights overrides tensors; what the tools must refuse, they refuse.

Outputs go to pytest's tmp_path, or under $TESSERA_CHECKPOINT_CACHE when set.
"""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import SOURCE

tokenizers = pytest.importorskip("tokenizers", reason="pip install tokenizers==0.23.3 safetensors==0.8.0")
pytest.importorskip("safetensors")
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE, "tools", "checkpoints"))
import gguf_to_hf  # noqa: E402
import hf_to_gguf  # noqa: E402
import hfio  # noqa: E402

TOOLS = os.path.join(SOURCE, "tools", "checkpoints")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = os.environ.get("TESSERA_CHECKPOINT_CACHE")
    if base:
        d = os.path.join(base, "test_hf_convert")
        os.makedirs(d, exist_ok=True)
        yield d
        return
    d = str(tmp_path_factory.mktemp("hf_convert"))
    yield d
    shutil.rmtree(d, ignore_errors=True)  # ~3 GB of checkpoints; pytest keeps its last three tmp dirs


@pytest.fixture(scope="module")
def gmodel(model_path):
    return hfio.GGUFModel(model_path, cache=True)


@pytest.fixture(scope="module")
def hf_f32(gmodel, workdir):
    out = os.path.join(workdir, "smollm2-f32")
    gguf_to_hf.convert_gguf_to_hf(gmodel, out, dtype="f32")
    return out


@pytest.fixture(scope="module")
def direct_gguf(gmodel, workdir):
    out = os.path.join(workdir, "direct-f32.gguf")
    hfio.write_dequantized_gguf(gmodel, out)
    return out


@pytest.fixture(scope="module")
def roundtrip_gguf(hf_f32, gmodel, workdir):
    out = os.path.join(workdir, "roundtrip-f32.gguf")
    r = hf_to_gguf.write_f32_gguf(hf_f32, gmodel, out)
    assert r == {"tensors": 272, "from_weights": 0, "from_hf": 272}
    return out


def llama_f32(path):
    from llama_cpp import Llama
    # F32 KV cache: the default F16 cache rounds K and V, which the numpy reference does not
    return Llama(path, n_ctx=256, n_batch=256, n_threads=2, logits_all=True, type_k=0, type_v=0, verbose=False)


def llama_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


# --- the tokenizer ------------------------------------------------------------------

FIXED = [
    "", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", " \n ", "\r\n", "\r", "\t", "\t\tindented", "\r\nwindows\r\nline\r\n",
    "Hello world", "Hello, World!", "hello   world", " Hello", "  Hello", "Hello ", "Hello  ", "HELLO",
    "It's", "I'M READY", "they'll've", "don't", "'s'S'", "WE'RE HERE", "you'D", "'", "''", "'''",
    "12345", "3.14159", "1,000,000", "x=1+2", "2024-11-30", "0x1F 0b1010", "1e-5", "007", " 42", "a1b2c3",
    "١٢٣ ٤٥٦", "½ ⅓ Ⅻ ²", "٣.١٤", "１２３",
    "  leading", "trailing  ", " both ", "multiple\n\nparagraphs\n\nhere", "line\n  indented\n\tTabbed",
    "CamelCaseIdentifier", "snake_case_identifier", "kebab-case-identifier", "SCREAMING_SNAKE",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "<html><body>hi</body></html>",
    "    if (x) {\n        y();\n    }\n", "#include <stdio.h>\nint main(void) { return 0; }",
    "SELECT * FROM t WHERE a = 'b';", "{\"key\": [1, 2, {\"n\": null}]}", "a && b || !c", "x->y::z", "$$\\frac{a}{b}$$",
    "import numpy as np\nnp.zeros((3, 4), dtype=np.float32)", "fn main() -> Result<(), Box<dyn Error>> {}",
    "naïve café résumé", "NAÏVE CAFÉ RÉSUMÉ", "Ελληνικά", "русский текст", "日本語のテキスト", "中文文本测试",
    "한국어", "עברית", "العربية", "हिन्दी", "ไทย", "Tiếng Việt", "Ærøskøbing", "straße STRASSE",
    "cafe\u0301", "e\u0301le\u0300ve", "A\u030a", "\u212b",
    "emoji 😀😃😄 🚀", "👩‍👩‍👧‍👦 family", "👍🏽 thumbs", "flags 🇫🇷🇩🇪", "❤️ ☺️", "🧑‍💻", "math ∑∫√∞≈≠",
    "ｆｕｌｌｗｉｄｔｈ", "ℌ𝔢𝔩𝔩𝔬", "zero\u200bwidth", "\u00a0nbsp\u2003em space", "a\u00a0b", "\u3000ideographic",
    "\ufeffBOM", "soft\u00adhyphen", "ligature ﬁ ﬂ",
    "tabs\tand\tspaces", "ALLCAPS WORDS HERE", "mIxEd CaSe", "a" * 300, " " * 50, "\n" * 20, "ab" * 100, "!!!???...",
    "email@example.com", "https://example.com/path?q=1&r=2#frag", "$100.00 €50 £20 ¥1000", "100%", "C++ C# F#",
    "e.g. i.e. etc.", "«quotes» „German“ “curly”", "—dashes– and - hyphens", "…ellipsis", "©®™", "°C",
    "end with space ", "end with newline\n", "\n start with newline", " \t \n mixed whitespace \n\t ",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more", "<|im_start|><|im_end|>", "< |im_start| >", "<|im_start", "im_start|>", "<|IM_START|>",
    "<repo_name>tessera<file_sep>main.cc", "<filename>a.py\n<gh_stars>10", "<jupyter_code>print(1)<jupyter_output>",
    "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<|eot_id|>", "<tool_call>", "<think>", "<mask>", "<|fim_prefix|>",
    "<0x41>", "\u2581leading metaspace", "Ġhello Ċ", "ĠĠĠ",
]

FRAGMENTS = [
    " ", "  ", "\n", "\n\n", "\t", "\r\n", "the", "The", "quick", " brown", "fox", "'s", "'ll", "'VE", "123", "4567",
    "3.5", "0", "!", "?!", "(", ")", "{", "}", "->", "==", "日本", "中文", "한국", "😀", "🚀", "👩‍💻", "é", "ß", "Ω",
    "def", "return", "\u00a0", "---", "***", "`code`", "#", "@user", "0x1F", "1e-5", " tokenizer", "Hello", " naïve",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", "über", "    ", "¿", "«", "∑",
]


def corpus():
    rng = random.Random(20241130)
    out = list(FIXED)
    while len(out) < 330:
        out.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 14))))
    return out


@pytest.fixture(scope="module")
def tokenizer_dir(gmodel, workdir):
    """tokenizer.json / tokenizer_config.json alone (the weights are not needed for them)."""
    out = os.path.join(workdir, "tokenizer-only")
    os.makedirs(out, exist_ok=True)
    tj, tc = gguf_to_hf.tokenizer_files(gmodel)
    for name, obj in (("tokenizer.json", tj), ("tokenizer_config.json", tc)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
    return out


@pytest.mark.parametrize("merges_format", ["pairs", "strings"])
def test_tokenizer_json_matches_llama_cpp(gmodel, llama_vocab, tokenizer_dir, workdir, merges_format):
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    if merges_format == "strings":
        tj, _ = gguf_to_hf.tokenizer_files(gmodel, merges_format="strings")
        assert isinstance(tj["model"]["merges"][0], str) and " " in tj["model"]["merges"][0]
        path = os.path.join(tokenizer_dir, "tokenizer-strings.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)
    texts = corpus()
    assert len(texts) >= 300
    specials = [a["content"] for a in json.load(open(os.path.join(tokenizer_dir, "tokenizer.json")))["added_tokens"]
                if a["special"]]
    bad = []
    for text in texts:
        hf = tok.encode(text, add_special_tokens=False).ids
        # HF always recognises added tokens; llama.cpp does so for control tokens with special=True.
        ref = llama_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if hf != ref:
            bad.append((text, hf, ref))
        if not any(s in text for s in specials):
            plain = llama_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            if hf != plain:
                bad.append((text, hf, plain))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]}"


class _Repre:
    """The bundled model's metadata with another tokenizer.ggml.pre (and no add_bos_token key)."""

    def __init__(self, model, pre):
        self.model, self.pre, self.path = model, pre, f"{model.path} as {pre}"

    def get(self, key, default=None):
        if key == "tokenizer.ggml.pre":
            return self.pre
        if key == "tokenizer.ggml.add_bos_token":
            return default
        return self.model.get(key, default)

    def arch_get(self, key, default=None):
        return self.model.arch_get(key, default)


def _vocab_gguf(model, path, pre):
    import gguf
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(model.get("tokenizer.ggml.tokens"))
    w.add_token_types(model.get("tokenizer.ggml.token_type"))
    w.add_token_merges(model.get("tokenizer.ggml.merges"))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt-2"])
def test_other_families_match_llama_cpp(gmodel, workdir, pre):
    """The Llama 3, Qwen2 and GPT-2 pipelines, over the bundled vocabulary: llama.cpp with that
    tokenizer.ggml.pre and the written tokenizer.json agree (llama-bpe adds BOS by default in both)."""
    from llama_cpp import Llama
    import unicodedata
    path = os.path.join(workdir, f"vocab-{pre}.gguf")
    _vocab_gguf(gmodel, path, pre)
    ref = Llama(path, vocab_only=True, verbose=False)
    tj, tc = gguf_to_hf.tokenizer_files(_Repre(gmodel, pre))
    tok = Tokenizer.from_str(json.dumps(tj))
    assert tj["model"]["ignore_merges"] is (pre == "llama-bpe")
    assert tc["add_bos_token"] is (pre == "llama-bpe")
    bad = []
    for text in corpus():
        if pre == "qwen2" and unicodedata.normalize("NFC", text) != text:
            continue  # HF's Qwen2 tokenizer NFC-normalizes; llama.cpp does not
        for add in (False, True):
            hf = tok.encode(text, add_special_tokens=add).ids
            want = ref.tokenize(text.encode(), add_bos=add, special=True)
            if hf != want:
                bad.append((text, add, hf, want))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:3]}"


def test_tokenizer_specials_and_structure(tokenizer_dir, gmodel):
    tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    for text, want in [("<|im_start|>", [1]), ("<|im_end|>", [2]), ("<|endoftext|>", [0]),
                       ("<|im_start|>user", [1, tok.token_to_id("user")])]:
        assert tok.encode(text, add_special_tokens=False).ids == want, text
    # add_bos_token is false in the GGUF: nothing is added with add_special_tokens=True either.
    assert tok.encode("Hi", add_special_tokens=True).ids == tok.encode("Hi", add_special_tokens=False).ids
    assert tok.get_vocab_size(with_added_tokens=True) == 49152
    tj = json.load(open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8"))
    assert tj["version"] == "1.0"
    assert tj["normalizer"] is None
    assert tj["pre_tokenizer"] == {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    m = tj["model"]
    assert m["type"] == "BPE" and m["byte_fallback"] is False and m["ignore_merges"] is False
    assert len(m["vocab"]) == 49152 and len(m["merges"]) == 48900 and m["merges"][0] == ["Ġ", "t"]
    added = tj["added_tokens"]
    assert [a["id"] for a in added] == list(range(17))
    assert added[1] == {"id": 1, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False,
                        "normalized": False, "special": True}
    tc = json.load(open(os.path.join(tokenizer_dir, "tokenizer_config.json"), encoding="utf-8"))
    assert tc["bos_token"] == "<|im_start|>" and tc["eos_token"] == "<|im_end|>" and tc["pad_token"] == "<|im_end|>"
    assert tc["unk_token"] == "<|endoftext|>" and tc["add_bos_token"] is False and tc["model_max_length"] == 8192
    assert tc["chat_template"] == gmodel.get("tokenizer.chat_template")
    assert tc["added_tokens_decoder"]["2"]["content"] == "<|im_end|>"


# --- the weights ----------------------------------------------------------------------

def test_config(hf_f32):
    cfg = json.load(open(os.path.join(hf_f32, "config.json")))
    want = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192, "rms_norm_eps": 1e-05,
            "rope_theta": 100000.0, "rope_scaling": None, "tie_word_embeddings": True, "bos_token_id": 1,
            "eos_token_id": 2, "torch_dtype": "float32", "hidden_act": "silu", "attention_bias": False}
    assert {k: cfg.get(k) for k in want} == want
    gen = json.load(open(os.path.join(hf_f32, "generation_config.json")))
    assert gen["bos_token_id"] == 1 and gen["eos_token_id"] == 2
    assert sorted(os.listdir(hf_f32)) == ["config.json", "generation_config.json", "model.safetensors",
                                          "tokenizer.json", "tokenizer_config.json"]


def test_weights_are_the_dequantized_gguf(hf_f32, gmodel):
    from safetensors.numpy import load_file
    st = load_file(os.path.join(hf_f32, "model.safetensors"))
    assert "lm_head.weight" not in st  # tied embeddings
    assert len(st) == len(gmodel.tensor_names()) == 272
    n_q = n_k = 0
    for g in gmodel.tensor_names():
        h = hfio.hf_name(g)
        a = st[h]
        ref = gmodel.float32(g)
        assert a.dtype == np.float32 and a.shape == ref.shape, h
        if h.endswith("q_proj.weight"):
            assert np.array_equal(hfio.permute_qk(a, 9), ref), h
            assert not np.array_equal(a, ref)
            n_q += 1
        elif h.endswith("k_proj.weight"):
            assert np.array_equal(hfio.permute_qk(a, 3), ref), h
            assert not np.array_equal(a, ref)
            n_k += 1
        else:
            assert np.array_equal(a, ref), h
    assert n_q == n_k == 30
    # the explicit row formula: GGUF row h*hd + 2i + s == HF row h*hd + s*hd/2 + i
    q_hf, q_gguf = st["model.layers.3.self_attn.q_proj.weight"], gmodel.float32("blk.3.attn_q.weight")
    for h, i, s in [(0, 0, 1), (4, 17, 0), (8, 31, 1)]:
        assert np.array_equal(q_gguf[h * 64 + 2 * i + s], q_hf[h * 64 + s * 32 + i])


class HFForward:
    """transformers' LlamaForCausalLM / Qwen2ForCausalLM forward in numpy (float32), from the HF files only."""

    def __init__(self, hf_dir):
        self.cfg = json.load(open(os.path.join(hf_dir, "config.json")))
        ck = hfio.HFCheckpoint(hf_dir)
        self.w = {n: ck.float32(n) for n in ck.names()}

    def __call__(self, ids, permute_back=False):
        cfg, w = self.cfg, self.w
        nh, nkv, hd, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
        T = len(ids)

        def rms(x, g):
            return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

        inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        ang = np.arange(T)[:, None] * inv_freq[None, :]
        cos = np.cos(np.concatenate([ang, ang], -1)).astype(np.float32)[:, None, :]
        sin = np.sin(np.concatenate([ang, ang], -1)).astype(np.float32)[:, None, :]

        def rope(x):  # x [T, heads, hd]; HF's rotate_half
            return x * cos + np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1) * sin

        x = w["model.embed_tokens.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
        for layer in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = rms(x, w[p + "input_layernorm.weight"])
            wq, wk = w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"]
            bq, bk, bv = (w.get(p + f"self_attn.{x}_proj.bias", np.float32(0)) for x in "qkv")  # qwen2
            if permute_back:  # the negative control: llama.cpp's row order with HF's rope
                wq, wk = hfio.permute_qk(wq, nh), hfio.permute_qk(wk, nkv)
                bq, bk = (b if b.ndim == 0 else hfio.permute_qk(b, n) for b, n in ((bq, nh), (bk, nkv)))
            q = rope((h @ wq.T + bq).reshape(T, nh, hd))
            k = rope((h @ wk.T + bk).reshape(T, nkv, hd))
            v = (h @ w[p + "self_attn.v_proj.weight"].T + bv).reshape(T, nkv, hd)
            k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
            s = np.einsum("thd,uhd->htu", q, k) / np.float32(np.sqrt(hd)) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("htu,uhd->thd", s, v).reshape(T, nh * hd)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
            h = rms(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = rms(x, w["model.norm.weight"])
        return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


PROMPT = "<|im_start|>user\nWhat is the capital of France? Answer briefly.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def llama_direct(direct_gguf):
    return llama_f32(direct_gguf)


def test_hf_forward_matches_llama_cpp(hf_f32, llama_direct, llama_vocab):
    """The HF checkpoint run with HF's half-split rope reproduces llama.cpp on the GGUF."""
    ids = llama_vocab.tokenize(PROMPT.encode(), add_bos=False, special=True)
    ref = llama_logits(llama_direct, ids)
    fwd = HFForward(hf_f32)
    got = fwd(ids)
    err = np.abs(got - ref).max()
    assert err < 5e-3, err  # float32 both sides, different summation orders
    assert (got.argmax(-1) == ref.argmax(-1)).all()
    wrong = fwd(ids[:8], permute_back=True)
    assert np.abs(wrong - ref[:8]).max() > 50 * err  # the check can tell the two row orders apart


def test_f32_roundtrip_is_the_dequantized_gguf(roundtrip_gguf, direct_gguf, llama_direct, gmodel, llama_vocab):
    # hf_to_gguf(gguf_to_hf(m, f32)) and the direct dequantization are the same file ...
    with open(roundtrip_gguf, "rb") as a, open(direct_gguf, "rb") as b:
        while True:
            x, y = a.read(1 << 24), b.read(1 << 24)
            assert x == y
            if not x:
                break
    # ... holding the original's tensors, in its order, all F32 ...
    table = hfio.gguf_tensor_table(roundtrip_gguf)
    assert list(table) == gmodel.tensor_names()
    for name, entry in table.items():
        assert entry[0] == 0 and entry[1] == gmodel.shape(name), name
    for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.attn_k.weight", "output_norm.weight"]:
        assert np.array_equal(hfio.gguf_f32_tensor(roundtrip_gguf, table[name]), gmodel.float32(name)), name
    a = llama_f32(roundtrip_gguf)
    meta, orig = a.metadata, llama_vocab.metadata
    assert meta["general.file_type"] == "0"
    assert {k: v for k, v in meta.items() if k != "general.file_type"} == \
        {k: v for k, v in orig.items() if k != "general.file_type"}
    for text in ["Hello, world! 123", "<|im_start|>user\n日本語<|im_end|>"]:  # the vocabulary came along
        assert a.tokenize(text.encode(), add_bos=False, special=True) == \
            llama_vocab.tokenize(text.encode(), add_bos=False, special=True)
    # ... on which llama.cpp computes the same logits and greedy tokens.
    for prompt in [PROMPT, "def fibonacci(n):"]:
        ids = llama_vocab.tokenize(prompt.encode(), add_bos=False, special=True)
        assert np.array_equal(llama_logits(a, ids), llama_logits(llama_direct, ids))
        ga = [t for _, t in zip(range(6), a.generate(ids, temp=0.0, top_k=1))]
        gb = [t for _, t in zip(range(6), llama_direct.generate(ids, temp=0.0, top_k=1))]
        assert ga == gb, prompt


def test_bf16_sharded(gmodel, workdir, model_path):
    out = os.path.join(workdir, "smollm2-bf16-3")
    gguf_to_hf.convert_gguf_to_hf(gmodel, out, dtype="bf16", shards=3)
    files = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert sorted(f for f in os.listdir(out) if f.endswith(".safetensors")) == files
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    wm = index["weight_map"]
    assert len(wm) == 272 and set(wm.values()) == set(files) and list(wm) == sorted(wm)
    total = 0
    from safetensors import safe_open
    for f in files:
        header, _ = hfio.read_safetensors_header(os.path.join(out, f))
        assert header["__metadata__"] == {"format": "pt"}
        names = [n for n in header if n != "__metadata__"]
        assert all(wm[n] == f for n in names)
        for n in names:
            assert header[n]["dtype"] == "BF16"
            a, b = header[n]["data_offsets"]
            total += b - a
        with safe_open(os.path.join(out, f), framework="numpy") as sf:  # the safetensors package reads the file
            assert sorted(sf.keys()) == sorted(names)
    assert index["metadata"]["total_size"] == total == 2 * sum(
        int(np.prod(gmodel.shape(n))) for n in gmodel.tensor_names())
    assert json.load(open(os.path.join(out, "config.json")))["torch_dtype"] == "bfloat16"
    ck = hfio.HFCheckpoint(out)
    for g in ["token_embd.weight", "blk.0.attn_q.weight", "blk.7.ffn_down.weight", "blk.29.attn_norm.weight",
              "output_norm.weight"]:
        h = hfio.hf_name(g)
        ref = gmodel.float32(g)
        if h.endswith("q_proj.weight"):
            ref = hfio.unpermute_qk(ref, 9)
        raw = ck.file_of(h).raw(h)
        assert np.array_equal(raw, hfio.f32_to_bf16_bits(ref)), h
        got = ck.float32(h)
        assert np.all(np.abs(got - ref) <= np.abs(ref) * 2.0 ** -8), h  # within half a bf16 ulp
    # bf16 rounding itself: ties go to even, NaN stays NaN
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.0 - 2 ** -7, np.nan], np.float32)
    assert hfio.f32_to_bf16_bits(x)[:4].tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC000]
    assert np.isnan(hfio.bf16_bits_to_f32(hfio.f32_to_bf16_bits(x))[4])


def test_f16_default_and_weights_override(gmodel, workdir, model_path, hf_f32):
    out = os.path.join(workdir, "smollm2-f16")
    s = gguf_to_hf.convert_gguf_to_hf(gmodel, out, shards=2, merges_format="strings", name="smollm2-test")
    assert s["dtype"] == "F16" and len(s["files"]) == 2
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["torch_dtype"] == "float16" and cfg["_name_or_path"] == "smollm2-test"
    ck = hfio.HFCheckpoint(out)
    h = "model.layers.5.mlp.up_proj.weight"
    assert ck.file_of(h).dtype(h) == "F16"
    assert np.array_equal(ck.float32(h), gmodel.float32("blk.5.ffn_up.weight").astype(np.float16).astype(np.float32))

    # --weights: float32 tensors named like HF modules replace the directory's
    rng = np.random.default_rng(0)
    q = rng.standard_normal((576, 576)).astype(np.float32) * 0.02
    wfile = os.path.join(workdir, "override.safetensors")
    from safetensors.numpy import save_file
    save_file({"model.layers.2.self_attn.q_proj.weight": q}, wfile)
    outg = os.path.join(workdir, "override.gguf")
    r = hf_to_gguf.write_f32_gguf(out, gmodel, outg, weights=wfile)
    assert r["from_weights"] == 1 and r["from_hf"] == 271
    table = hfio.gguf_tensor_table(outg)
    assert np.array_equal(hfio.gguf_f32_tensor(outg, table["blk.2.attn_q.weight"]), hfio.permute_qk(q, 9))
    assert np.array_equal(hfio.gguf_f32_tensor(outg, table["blk.5.ffn_up.weight"]), ck.float32(h))
    assert "output.weight" not in table
    # an lm_head.weight in --weights becomes output.weight (untied), right after token_embd
    head = rng.standard_normal((49152, 576)).astype(np.float32)
    save_file({"lm_head.weight": head}, wfile)
    r = hf_to_gguf.write_f32_gguf(out, gmodel, outg, weights=wfile)
    table = hfio.gguf_tensor_table(outg)
    assert list(table)[:2] == ["token_embd.weight", "output.weight"] and r["tensors"] == 273
    assert np.array_equal(hfio.gguf_f32_tensor(outg, table["output.weight"]), head)


def test_refusals(tmp_path, gmodel, hf_f32, model_path):
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "gguf_to_hf.py"), "--gguf", model_path, "--out",
                        str(tmp_path / "x"), "--shards", "0"], capture_output=True, text=True)
    assert r.returncode == 1 and "--shards must be >= 1" in r.stderr
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "hf_to_gguf.py"), "--hf", str(tmp_path / "missing"),
                        "--like", model_path, "--out", str(tmp_path / "x.gguf")], capture_output=True, text=True)
    assert r.returncode == 1 and "neither model.safetensors nor" in r.stderr
    with pytest.raises(hfio.ConversionError, match="--shards"):
        gguf_to_hf.shard_groups([("a", 1), ("b", 1)], 3)
    groups = gguf_to_hf.shard_groups([("e", 100)] + [(str(i), 1) for i in range(9)], 4)
    assert len(groups) == 4 and all(groups) and sum(map(len, groups)) == 10
    bad = str(tmp_path / "bad.safetensors")
    from safetensors.numpy import save_file
    save_file({"model.layers.0.self_attn.k_proj.weight": np.zeros((5, 5), np.float32)}, bad)
    with pytest.raises(hfio.ConversionError, match="shape"):
        hf_to_gguf.write_f32_gguf(hf_f32, gmodel, str(tmp_path / "x.gguf"), weights=bad)
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    os.symlink(os.path.join(hf_f32, "model.safetensors"), cfg_dir / "model.safetensors")
    cfg = json.load(open(os.path.join(hf_f32, "config.json")))
    cfg["num_key_value_heads"] = 9
    json.dump(cfg, open(cfg_dir / "config.json", "w"))
    with pytest.raises(hfio.ConversionError, match="num_key_value_heads is 9"):
        hf_to_gguf.write_f32_gguf(str(cfg_dir), gmodel, str(tmp_path / "x.gguf"))
    with pytest.raises(hfio.ConversionError, match="only byte-level BPE"):
        gguf_to_hf.tokenizer_files(_Other(gmodel, {"tokenizer.ggml.model": "llama"}))
    with pytest.raises(hfio.ConversionError, match="tokenizer.ggml.pre 'bloom' is not supported"):
        gguf_to_hf.tokenizer_files(_Other(gmodel, {"tokenizer.ggml.pre": "bloom"}))


class _Other(_Repre):
    def __init__(self, model, over):
        super().__init__(model, model.get("tokenizer.ggml.pre"))
        self.over = over

    def get(self, key, default=None):
        return self.over.get(key, self.model.get(key, default))

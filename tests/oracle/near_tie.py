"""Greedy decoding held to llama.cpp where the two may legitimately round
differently.

Tessera's CPU numerics follow llama.cpp's CPU backend as it runs on AVX-512
machines (kernels/cpu/ggml_numerics.h), so there every greedy token equals
llama.cpp's argmax over the same prefix. Elsewhere llama.cpp itself sums in
other orders (8-lane AVX2 reductions in its f16 attention and tinyBLAS
kernels), and quantized checkpoints are compared with an F32 GGUF of their
dequantized weights, which llama.cpp multiplies without quantizing the
activations as Tessera's int8 kernels do. The rule then, per generated
position t:

  D_t = max |tessera_logit - llama_logit| over the tokens either side ranks
        in its top 20, over the same prefix (Tessera's logits come from the
        same prefill-then-decode path generation takes);
  D_t <= cap            (the stated noise bound for the comparison: a wrong
                         weight, rope or kernel moves logits by whole units);
  llama_max - llama[token] <= 2 * D_t
                        (Tessera picked its own argmax; two logit vectors
                         within D of each other cannot disagree about it by
                         more than 2D, so a larger gap is a real bug).

Each check reports how many tokens were llama.cpp's exact argmax and the
largest D and gap seen."""
import os
import subprocess
import tempfile

import numpy as np

# The tools' directory, as conftest.py has it; spelt here so that test
# folders with their own conftest (tests/gpu) can import this module.
BIN = os.environ.get("TESSERA_BIN", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin"))


def tool(name):
    return os.path.join(BIN, name)

# The contenders: a greedy choice is always in both sides' top 20 when the
# two agree within D, and the far tail of the vocabulary says nothing about it.
TOP = 20


def host_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512f" in f.read()
    except OSError:
        return False


def tessera_rows(model, ids, prompt_len, extra=()):
    """Tessera's logits after each prefix ids[:prompt_len + j], j = 0..len(ids) - prompt_len."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.f32")
        r = subprocess.run([tool("tessera-logits"), "--model", model, "--ids", " ".join(map(str, ids)),
                            "--prompt-length", str(prompt_len), "--rows-out", out, *extra],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        rows = np.fromfile(out, dtype=np.float32)
    n = len(ids) - prompt_len + 1
    return rows.reshape(n, -1)


def llama_rows(llama, ids, prompt_len):
    llama.reset()
    llama.eval(ids)
    return np.stack([np.asarray(llama.scores[prompt_len - 1 + j], dtype=np.float32)
                     for j in range(len(ids) - prompt_len + 1)])


def check_greedy(tessera, llama, tokens, cap, what=""):
    """tokens[j] was chosen after row j; both row sets cover the same prefixes."""
    assert len(tokens) <= len(tessera) and len(tessera) == len(llama)
    exact, worst_d, worst_gap = 0, 0.0, 0.0
    for j, tok in enumerate(tokens):
        t, l = tessera[j], llama[j]
        assert int(np.argmax(t)) == tok, f"{what} token {j}: Tessera's logits do not pick its own token"
        top = np.union1d(np.argsort(-t)[:TOP], np.argsort(-l)[:TOP])
        d = float(np.max(np.abs(t[top] - l[top])))
        gap = float(l.max() - l[tok])
        worst_d, worst_gap = max(worst_d, d), max(worst_gap, gap)
        exact += gap == 0.0
        assert d <= cap, f"{what} token {j}: logits differ from llama.cpp's by {d:.3f} (> {cap})"
        assert gap <= 2 * d, f"{what} token {j}: llama.cpp prefers another token by {gap:.3f} (> 2 x {d:.3f})"
    return {"tokens": len(tokens), "exact_argmax": exact, "max_logit_diff": worst_d, "max_gap": worst_gap}

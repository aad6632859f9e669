"""Bad input reaches the user as one clear line on stderr and a non-zero
exit, never a crash: corrupt, truncated and hostile model files, unknown
architectures and tensor types, prompts longer than the context. Also the
memory bound of tessera-generate on the bundled model."""
import os
import random
import re
import shutil
import subprocess

import gguf
import numpy as np
import pytest

from conftest import run_tool, tool
from test_quant_formats import write_model


def expect_clean_error(result, pattern):
    assert result.returncode > 0, f"exit {result.returncode} (negative means a signal): {result.stderr}"
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_missing_file():
    expect_clean_error(run_tool("tessera-generate", "--model", "/nonexistent.gguf", "--prompt", "x"),
                       r"cannot open '/nonexistent.gguf'")


def test_not_a_gguf(tmp_path):
    p = tmp_path / "junk.gguf"
    p.write_bytes(b"this is not a model" * 100)
    expect_clean_error(run_tool("tessera-generate", "--model", str(p), "--prompt", "x"), "not a GGUF file")


def test_truncated_copies_of_the_bundled_model(tmp_path, model_path):
    size = os.path.getsize(model_path)
    with open(model_path, "rb") as f:
        head = f.read(2 << 20)
    for cut in [10, 100, 5000, 1 << 20, (2 << 20)]:
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(head[:cut])
        expect_clean_error(run_tool("tessera-generate", "--model", str(p), "--prompt", "x"), "truncated")
    p = tmp_path / "almost.gguf"
    with open(model_path, "rb") as f, open(p, "wb") as out:
        out.write(f.read(size - 1000))
    expect_clean_error(run_tool("tessera-generate", "--model", str(p), "--prompt", "x"), "truncated file: tensor")


def test_random_corruption_never_crashes(tmp_path, model_path):
    with open(model_path, "rb") as f:
        head = bytearray(f.read(1 << 20))
    rng = random.Random(7)
    for i in range(25):
        data = bytearray(head)
        for _ in range(rng.randint(1, 20)):
            pos = rng.randrange(0, 4096)
            data[pos] = rng.randrange(256)
        p = tmp_path / f"corrupt{i}.gguf"
        p.write_bytes(bytes(data))
        r = subprocess.run([tool("tessera-generate"), "--model", str(p), "--prompt", "x", "--max-tokens", "1"],
                           capture_output=True, timeout=120)
        assert r.returncode > 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        r.stderr.decode("utf-8")  # messages are valid UTF-8 whatever the file holds


def _patched(tmp_path, name, find, replace_at):
    """A copy of a small valid model with bytes replaced right after `find`."""
    path = str(tmp_path / "src.gguf")
    write_model(path, gguf.GGMLQuantizationType.Q8_0)
    data = bytearray(open(path, "rb").read())
    pos = data.index(find) + len(find)
    offset, new = replace_at(data, pos)
    data[offset:offset + len(new)] = new
    out = str(tmp_path / name)
    open(out, "wb").write(bytes(data))
    return out


def test_unknown_architecture(tmp_path):
    # general.architecture: type u32 (8 = string), length u64 (5), "llama"
    out = _patched(tmp_path, "arch.gguf", b"general.architecture", lambda d, p: (p + 4 + 8, b"zzzzz"))
    expect_clean_error(run_tool("tessera-generate", "--model", out, "--prompt", "x"),
                       "unsupported model architecture 'zzzzz'")


def test_unknown_tensor_type(tmp_path):
    # tensor info: name, n_dims u32 (2), dims 2 x u64, type u32
    out = _patched(tmp_path, "type.gguf", b"blk.0.attn_q.weight",
                   lambda d, p: (p + 4 + 16, np.uint32(16).tobytes()))
    expect_clean_error(run_tool("tessera-generate", "--model", out, "--prompt", "x"), "unsupported type id 16")


def test_prompt_longer_than_context(tmp_path):
    path = str(tmp_path / "small-ctx.gguf")
    write_model(path, gguf.GGMLQuantizationType.Q8_0)  # context_length 256
    expect_clean_error(run_tool("tessera-generate", "--model", path, "--prompt", "x" * 300, "--max-tokens", "4"),
                       r"exceeds the model's context of 256 tokens")


def test_bad_flags():
    expect_clean_error(run_tool("tessera-generate", "--prompt", "a", "--chat", "b"), "exactly one of")
    r = run_tool("tessera-generate", "--prompt", "a", "--top-p", "1.5")
    expect_clean_error(r, r"top_p must be in \(0, 1\]; got 1.5")


def test_peak_rss_below_file_size_plus_100mb(model_path):
    r = subprocess.run(["/usr/bin/time", "-f", "%M", tool("tessera-generate"), "--model", model_path,
                        "--prompt", "The quick brown fox", "--max-tokens", "32"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    limit_kb = os.path.getsize(model_path) // 1024 + 100 * 1024
    print(f"peak RSS {peak_kb / 1024:.1f} MiB, limit {limit_kb / 1024:.1f} MiB")
    assert peak_kb < limit_kb


BINARIES_WITH_FLAGS = ["tessera-worker", "tessera-gateway", "tessera-generate", "tessera-logits", "tessera-tokenize",
                       "tessera-bench", "tessera-lora", "tessera-weights"]


@pytest.mark.parametrize("binary", BINARIES_WITH_FLAGS + ["tessera-render-template", "tessera-gguf"])
def test_help_prints_usage_and_own_flags_and_exits_0(binary):
    r = subprocess.run([tool(binary), "--help"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert binary in out.splitlines()[0], out[:300]
    assert "No flags matched" not in out and "never called" not in out, out[:300]
    if binary in BINARIES_WITH_FLAGS:
        assert "default:" in out and "--model" in out or "--listen" in out, out[:600]
        assert "--flagfile" not in out, "--help lists only the binary's own flags"


@pytest.mark.parametrize("binary", BINARIES_WITH_FLAGS)
def test_helpfull_lists_every_flag(binary):
    r = subprocess.run([tool(binary), "--helpfull"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "--flagfile" in r.stdout + r.stderr

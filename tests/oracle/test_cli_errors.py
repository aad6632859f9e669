"""Bad input reaches the user as one clear line on stderr and a non-zero
exit, never a crash: corrupt, truncated and hostile model files, unknown
architectures and tensor types, prompts longer than the context. Also the
memory bound of tessera-generate on the bundled model."""
import os
import random
import re
import shutil
import struct
import subprocess

import gguf
import numpy as np
import pytest

from conftest import run_tool, tool
from gguf_bytes import raw_gguf as hostile_gguf
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


U32 = 4
HOSTILE_GGUF = {
    # file bytes, the one stderr line tessera-gguf must print (a regex)
    "nul_key": (hostile_gguf(kv=[(b"gen\0\x1b[2Jeral", U32, struct.pack("<I", 1))]),
                r"metadata key 0 'gen\\x00\\x1B\[2Jeral' contains a NUL byte"),
    "invalid_utf8_key": (hostile_gguf(kv=[(b"k\xff\xfe", U32, struct.pack("<I", 1))]),
                         r"metadata key 0 'k\\xFF\\xFE' is not valid UTF-8"),
    "empty_key": (hostile_gguf(kv=[(b"", U32, struct.pack("<I", 1))]), r"metadata key 0 is empty"),
    "long_tensor_name": (hostile_gguf(tensors=[(b"n" * 64, [8], 0, 0)], data=b"\0" * 32),
                         r"tensor 0 name is 64 bytes; llama.cpp's limit is 63"),
    "nul_tensor_name": (hostile_gguf(tensors=[(b"a\0\x1b]0;x\x07", [8], 0, 0)], data=b"\0" * 32),
                        r"tensor 0 name 'a\\x00\\x1B\]0;x\\x07' contains a NUL byte"),
    # 2^64 - 32 + 128 wraps to 96: the message must name the overflow
    "wrapping_tensor_offset": (hostile_gguf(tensors=[(b"t", [32], 0, 2**64 - 32)], data=b"\0" * 128),
                               r"tensor 't' at offset 18446744073709551584 with 128 bytes: "
                               r"offset \+ size overflows 64 bits"),
    # 2^61 uint64 elements: 2^61 * 8 wraps to 0 ("needs 0 bytes")
    "wrapping_array_size": (hostile_gguf(kv=[(b"a", 9, struct.pack("<IQ", 10, 2**61))]),
                            r"array of 2305843009213693952 uint64 at byte 49 needs 2305843009213693952 x 8 bytes, "
                            r"which overflows 64 bits"),
    "wrapping_tensor_bytes": (hostile_gguf(tensors=[(b"t", [2**31, 2**31], 0, 0)], data=b"\0" * 32),
                              r"4611686018427387904 blocks x 4 bytes overflows 64 bits"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_GGUF))
def test_gguf_tool_refuses_hostile_names_and_sizes_escaped(tmp_path, case):
    data, pattern = HOSTILE_GGUF[case]
    p = tmp_path / f"{case}.gguf"
    p.write_bytes(data)
    r = subprocess.run([tool("tessera-gguf"), "info", str(p)], capture_output=True, timeout=30)
    assert r.returncode == 1, r
    assert r.stdout == b"", r.stdout
    # Nothing from the file reaches the terminal raw: no control bytes but
    # the newline, and valid UTF-8.
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", r.stderr), r.stderr
    expect_clean_error(subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode("utf-8")),
                       pattern)
    assert "needs 0 bytes" not in r.stderr.decode() and "18446744073709551584, 96)" not in r.stderr.decode()
    # The same file as a model: the same refusal, one line.
    expect_clean_error(run_tool("tessera-generate", "--model", str(p), "--prompt", "x"), pattern)


def test_gguf_tool_prints_file_strings_escaped(tmp_path):
    """Keys, tensor names and string values that are valid but hold control
    characters are listed escaped, never sent to the terminal raw."""
    p = tmp_path / "controls.gguf"
    value = b"v\x1b]0;pwned\x07\\"
    p.write_bytes(hostile_gguf(kv=[(b"x\x1b[31m", 8, struct.pack("<Q", len(value)) + value)],
                               tensors=[(b"t\x1b[1m", [8], 0, 0)], data=b"\0" * 32))
    r = subprocess.run([tool("tessera-gguf"), "info", str(p)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", r.stdout), r.stdout
    out = r.stdout.decode("utf-8")
    assert '  x\\x1B[31m = "v\\x1B]0;pwned\\x07\\x5C"' in out, out
    assert "  t\\x1B[1m " in out, out


def test_malformed_byte_token_is_refused_at_load(tmp_path):
    # tokenizer.ggml.token_type: array type u32, element type u32, count u64,
    # then one i32 per token; token 2 ("\u0100", GPT-2's spelling of byte 0)
    # is made BYTE (6), which only a <0xNN> token may be.
    out = _patched(tmp_path, "bytetok.gguf", b"tokenizer.ggml.token_type",
                   lambda d, p: (p + 4 + 4 + 8 + 2 * 4, np.int32(6).tobytes()))
    expect_clean_error(run_tool("tessera-generate", "--model", out, "--prompt", "x"),
                       "token 2 '\u0100' has type BYTE but is not <0xNN>")


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

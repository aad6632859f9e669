"""The independent EXL2 reference (tools/checkpoints/exl2_format.py, issue 20):
its packer and dequantizer, the hostile layers it refuses, and the EXL2
fixture checkpoint tools/checkpoints/make_exl2_checkpoint.py writes.

Independence: the bit positions and the scale arithmetic are also checked
against known answers worked out by hand from exllamav2's published sources
(pack_tensor.cu, qdq_*.cuh, dq_scale, ext.py), and against a slow element-by-
element decoder written here with Python integers and float64 (one rounding
to float16 per step, which is how the CUDA half arithmetic rounds).

exllamav2 itself: its wheel (exllamav2==0.3.2, the one `make setup` already
fetches for its calibration text) is pure Python over a CUDA extension that it
compiles at import, and every module imports torch, which this project does
not install. Nothing of it can be imported here. Two pure-Python pieces are
used without importing the package: conversion/qparams.py (imports only
math) is loaded from the wheel file, and its bit-per-weight accounting
(QParams.total_bits) over exllamav2's own qparams tables is compared with this
packer's layouts; ext.py's make_group_map_py (how exllamav2 turns q_groups
into per-row group indices) is taken out of the source with ast and run with a
two-line stand-in for torch.tensor. Those tests skip when the wheel cannot be
had (pip download from the cache or PyPI).
"""
import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SOURCE, "tools", "checkpoints"))
import exl2_format as E  # noqa: E402
import make_exl2_checkpoint  # noqa: E402
import quant_formats  # noqa: E402

ALL_WIDTHS = [(8, 0.125), (6, 0.125), (5, 0.125), (4, 0.125), (3, 0.25), (2, 0.25)]
MIXED4 = [(8, 0.25), (4, 0.25), (3, 0.25), (2, 0.25)]


# --------------------------------------------------------------------------
# an independent slow decoder: Python ints for the bits, float64 + one
# float16 rounding per operation for the arithmetic
# --------------------------------------------------------------------------

def f16(x):
    return float(np.float16(x))  # float64 -> float16 rounds once, to nearest even


def slow_dequantize(t):
    qw = np.asarray(t["q_weight"]).view(np.uint32)
    qs = np.asarray(t["q_scale"]).view(np.uint32)
    qm = np.asarray(t["q_scale_max"])
    groups = np.asarray(t["q_groups"]).view(np.uint16).tolist()
    inv = np.asarray(t["q_invperm"]).tolist()
    height, width = len(inv), qw.shape[1]
    starts = groups[1::2] + [qw.shape[0]]
    packed = [[0.0] * width for _ in range(height)]
    row = 0
    for g in range(len(groups) // 2):
        bits = groups[2 * g]
        nq = starts[g + 1] - starts[g]
        rows = nq * 32 // bits
        m = f16(float(qm[g]) / 256.0)
        for c in range(width):
            stream = 0
            for k in range(nq):
                stream |= int(qw[starts[g] + k, c]) << (32 * k)
            nib = (int(qs[g, c // 8]) >> (4 * (c % 8))) & 15
            s = f16((nib + 1) ** 2 * m)
            for i in range(rows):
                code = (stream >> (i * bits)) & ((1 << bits) - 1)
                packed[row + i][c] = f16((code - (1 << (bits - 1))) * s)
        row += rows
    assert row == height
    w_t = np.array([packed[inv[j]] for j in range(height)])
    return w_t.T


def element_steps(t):
    """The float16 scale of every element, [width, in] in the original input order."""
    lay, _, srow, _ = E.unpack(t)
    return srow[lay.invperm].T.astype(np.float64)


def assert_within_step(t, w):
    deq = E.dequantize(t, w.shape[0]).astype(np.float64)
    step = element_steps(t)[: w.shape[0]]
    err = np.abs(deq - w)
    # rounding to the nearest code: half a step; then the product rounds to float16
    bound = step / 2 + np.abs(deq) * 2.0 ** -11 + 1e-12
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"
    return deq, step


# --------------------------------------------------------------------------
# known answers from exllamav2's sources
# --------------------------------------------------------------------------

def words(t):
    return [int(x) for x in np.asarray(t).view(np.uint32).reshape(-1)]


@pytest.mark.parametrize("bits,codes,expect", [
    # 4-bit: 8 codes per word, code i at bits 4i (pack_columns, dequant_4bit_8's unshuffled order)
    (4, list(range(8)), [0x76543210]),
    # 8-bit: 4 codes per word, byte i
    (8, [1, 2, 3, 4], [0x04030201]),
    # 2-bit: 16 codes per word, code i at bits 2i
    (2, [0, 1, 2, 3] * 4, [0xE4E4E4E4]),
    # 3-bit: 32 codes in 3 words; code 10 straddles word 0 bits 30-31 and word 1 bit 0
    (3, [7] * 10 + [0] + [7] * 21, [0x3FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]),
    (3, [0] * 10 + [5] + [0] * 21, [0x40000000, 0x00000001, 0]),
    # 5-bit: 32 codes in 5 words; code 6 straddles word 0 bits 30-31 and word 1 bits 0-2
    (5, [31] * 6 + [0] + [31] * 25, [0x3FFFFFFF, 0xFFFFFFF8, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF]),
    # 6-bit: 16 codes in 3 words; code 5 straddles word 0 bits 30-31 and word 1 bits 0-3
    (6, [63] * 5 + [0] + [63] * 10, [0x3FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF]),
    (6, [0] * 10 + [0x21] + [0] * 5, [0, 0x10000000, 0x00000002]),
])
def test_bit_order_known_answers(bits, codes, expect):
    col = np.array(codes, dtype=np.uint32)[:, None]
    packed = E.pack_group(col, bits)
    assert [hex(x) for x in words(packed)] == [hex(x) for x in expect]
    assert E.unpack_group(packed.view(np.int32), bits)[:, 0].tolist() == codes


def test_bit_order_against_python_bitstream():
    rng = np.random.default_rng(7)
    for bits in E.WIDTHS:
        rows = 96
        codes = rng.integers(0, 1 << bits, size=(rows, 3))
        packed = E.pack_group(codes, bits)
        for c in range(3):
            stream = sum(int(v) << (i * bits) for i, v in enumerate(codes[:, c]))
            expect = [(stream >> (32 * k)) & 0xFFFFFFFF for k in range(rows * bits // 32)]
            assert words(packed[:, c]) == expect, bits


def test_scale_nibbles_and_formula_known_answers():
    # MatrixView_q4_row: column c is nibble c % 8 of word c // 8, stored as qscale - 1
    q = E.pack_scales(np.array([[1, 2, 3, 4, 5, 6, 7, 8, 16, 16, 16, 16, 16, 16, 16, 16]]))
    assert words(q) == [0x76543210, 0xFFFFFFFF]
    assert E.unpack_scales(q).tolist() == [[1, 2, 3, 4, 5, 6, 7, 8] + [16] * 8]
    # dq_scale: (qs + 1)^2 * (q_scale_max / 256), in float16
    s = E.group_scales(np.array([[16, 1, 4]]), np.array([1.0], dtype=np.float16))
    assert s.tolist() == [[1.0, 1.0 / 256, 16.0 / 256]]
    # q_scale_max / 256 lands in float16's subnormals for usual weights: rounded there
    qm = np.float16(0.01)
    m = f16(float(qm) / 256)
    assert m != float(qm) / 256  # the subnormal rounding is real
    got = E.group_scales(np.array([[16, 9, 3]]), np.array([qm]))[0].tolist()
    assert got == [f16(256 * m), f16(81 * m), f16(9 * m)]


def test_zero_point_and_one_element():
    # one 4-bit group of 32 rows x 8 columns: code 15 -> +7 steps, code 0 -> -8 steps
    codes = np.full((32, 8), 8, dtype=np.uint32)
    codes[0, 0], codes[1, 0] = 15, 0
    t = {
        "q_weight": E.pack_group(codes, 4).view(np.int32),
        "q_scale": E.pack_scales(np.full((1, 8), 16)),
        "q_scale_max": np.array([0.5], dtype=np.float16),
        "q_groups": np.array([4, 0], dtype=np.int16),
        "q_invperm": np.arange(32, dtype=np.int32),
    }
    w = E.dequantize(t)
    assert w.shape == (8, 32) and w.dtype == np.float32
    assert w[0, 0] == 3.5 and w[0, 1] == -4.0 and np.count_nonzero(w) == 2


def test_permutation_direction():
    # original input row j is packed row q_invperm[j] (exllamav2: q_perm = argsort(q_invperm),
    # packed row k is written to output row q_perm[k])
    codes = np.tile(np.arange(32, dtype=np.uint32)[:, None] % 16, (1, 8))  # packed row k holds k % 16
    inv = np.roll(np.arange(32), 5).astype(np.int32)  # input row j <- packed row (j - 5) % 32
    t = {
        "q_weight": E.pack_group(codes, 4).view(np.int32),
        "q_scale": E.pack_scales(np.full((1, 8), 16)),
        "q_scale_max": np.array([1.0], dtype=np.float16),
        "q_groups": np.array([4, 0], dtype=np.int16),
        "q_invperm": inv,
    }
    w = E.dequantize(t)
    assert [int(x) for x in w[0]] == [(int(inv[j]) % 16) - 8 for j in range(32)]
    t["q_perm"] = np.argsort(inv).astype(np.int32)
    assert np.array_equal(E.dequantize(t), w)


# --------------------------------------------------------------------------
# the packer and the dequantizer together
# --------------------------------------------------------------------------

def test_packed_tensors_as_exllamav2_stores_them():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((100, 576)) * 0.02
    t = E.quantize_rtn(w, ALL_WIDTHS, 32, perm=E.act_order_perm(w), bias=np.ones(100))
    assert {k: (v.dtype.str, v.shape) for k, v in t.items()} == {
        "q_weight": ("<i4", ((96 * 8 + 96 * 6 + 96 * 5 + 96 * 4 + 160 * 3 + 32 * 2) // 32, 128)),
        "q_scale": ("<i4", (18, 16)),
        "q_scale_max": ("<f2", (18,)),
        "q_groups": ("<i2", (36,)),
        "q_invperm": ("<i4", (576,)),
        "bias": ("<f2", (100,)),
    }
    g = t["q_groups"].tolist()
    assert g[0::2] == [8] * 3 + [6] * 3 + [5] * 3 + [4] * 3 + [3] * 5 + [2]
    assert g[1::2][:4] == [0, 8, 16, 24]  # 32 rows of 8-bit = 8 words each
    assert E.dequantize(t, 100).shape == (100, 576)
    assert E.dequantize(t).shape == (128, 576)  # exllamav2 pads columns to 32: zeros
    assert not E.dequantize(t)[100:].any()


@pytest.mark.parametrize("bits", E.WIDTHS)
def test_round_trip_each_width(bits):
    rng = np.random.default_rng(bits)
    w = rng.standard_normal((64, 256)) * 0.03
    w[3, 17] = 0.4  # an outlier
    w[:, 5] = 0.0
    perm = rng.permutation(256)
    t = E.quantize_rtn(w, [(bits, 1.0)], 64 if bits != 8 else 128, perm=perm)
    deq, step = assert_within_step(t, w)
    _, codes, _, _ = E.unpack(t)
    assert codes.max() <= (1 << bits) - 1
    assert codes.min() == 0 or bits == 2  # the range is used (2-bit: the negative side may not reach -2)
    assert np.array_equal(deq, slow_dequantize(t)[:64]) if bits in (3, 5, 6) else True
    # storage accounting, as exllamav2's QParams.total_bits counts it
    groups = 256 // (64 if bits != 8 else 128)
    expect = (256 * 64 * bits + groups * 48 + groups * 64 * 4 + 256 * 32) / (256 * 64)
    assert E.bits_per_weight(t, 64) == pytest.approx(expect)


def test_mixed_widths_match_the_slow_decoder():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 576)) * 0.05
    t = E.quantize_rtn(w, ALL_WIDTHS, 32, perm=rng.permutation(576))
    assert sorted(set(t["q_groups"][0::2].tolist())) == list(E.WIDTHS)
    deq, _ = assert_within_step(t, w)
    slow = slow_dequantize(t)
    assert np.array_equal(E.dequantize(t), slow.astype(np.float32))
    assert np.array_equal(deq, slow[:40])


def test_layout_rules_match_exllamav2_configure():
    # AdaptiveGPTQ.configure: ceil(min(rows * p, remaining) / group) groups per width, last cut
    plan = E.group_plan(576, [(4, 0.1), (3, 0.9)], 128)
    assert [(b, n) for b, _, n in plan] == [(4, 128), (3, 128), (3, 128), (3, 128), (3, 64)]
    plan = E.group_plan(1536, [(8, 0.15), (6, 0.85)], {8: 128, 6: 128})
    assert [(b, n) for b, _, n in plan] == [(8, 128), (8, 128)] + [(6, 128)] * 10
    # a width the earlier ones leave no rows for gets no group (exllamav2: 0 groups)
    assert [(b, n) for b, _, n in E.group_plan(128, [(8, 0.15), (6, 0.85)], 128)] == [(8, 128)]
    for bad in ([(4, 0.5), (8, 0.5)], [(7, 1.0)], [(4, 0.5), (3, 0.4)], [(4, 1.0), (3, 0.0)]):
        with pytest.raises(ValueError):
            E.group_plan(256, bad, 32)
    with pytest.raises(ValueError):
        E.group_plan(256, [(4, 1.0)], 48)  # groups must be whole 32-row blocks
    with pytest.raises(ValueError):
        E.quantize_rtn(np.zeros((8, 64)), [(4, 1.0)], 32, perm=np.zeros(64, dtype=int))


# --------------------------------------------------------------------------
# hostile layers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((16, 256)) * 0.02
    t = E.quantize_rtn(w, MIXED4, 64, perm=rng.permutation(256))
    E.dequantize(t, 16)
    return t


def _mut(t, **changes):
    out = {k: np.array(v, copy=True) for k, v in t.items()}
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _groups(t, **at):
    g = np.array(t["q_groups"], copy=True)
    for i, v in at.items():
        g[int(i[1:])] = v
    return g


def _hostile_cases(t):
    inv = t["q_invperm"]
    nq = t["q_weight"].shape[0]
    dup = inv.copy()
    dup[1] = dup[0]
    big = inv.copy()
    big[0] = 256
    neg = inv.copy()
    neg[3] = -1
    wrong_perm = np.argsort(inv).astype(np.int32)
    wrong_perm[[0, 1]] = wrong_perm[[1, 0]]
    g = t["q_groups"]
    return [
        ("duplicate in q_invperm", _mut(t, q_invperm=dup), "not a permutation"),
        ("q_invperm out of range", _mut(t, q_invperm=big), "outside 0..255"),
        ("negative q_invperm", _mut(t, q_invperm=neg), "outside 0..255"),
        ("q_invperm too short", _mut(t, q_invperm=inv[:-1]), "covers 256 rows but q_invperm has 255"),
        ("q_perm disagrees", _mut(t, q_perm=wrong_perm), "q_perm is not the inverse"),
        ("q_perm without q_invperm", _mut(t, q_perm=np.argsort(inv).astype(np.int32), q_invperm=None),
         "missing tensor.*q_invperm"),
        ("no q_scale", _mut(t, q_scale=None), "missing tensor.*q_scale"),
        ("7-bit group", _mut(t, q_groups=_groups(t, g0=7)), "bit width 7"),
        ("1-bit group", _mut(t, q_groups=_groups(t, g2=1)), "bit width 1"),
        ("16-bit group", _mut(t, q_groups=_groups(t, g0=16)), "bit width 16"),
        ("negative width", _mut(t, q_groups=_groups(t, g0=-8)), "bit width"),
        ("widths increase", _mut(t, q_groups=_groups(t, g0=2)), "must not increase"),
        ("first group not at row 0", _mut(t, q_groups=_groups(t, g1=1)), "starts at q_weight row 1"),
        ("group starts repeat", _mut(t, q_groups=_groups(t, g3=int(g[5]))), "spans 0 q_weight rows"),
        ("group past q_weight", _mut(t, q_groups=_groups(t, g7=nq + 2)), "spans -2 q_weight rows"),
        ("q_weight rows beyond the table", _mut(t, q_weight=np.concatenate([t["q_weight"], t["q_weight"][:1]])),
         "covers 272 rows but q_invperm has 256"),
        ("q_weight rows missing", _mut(t, q_weight=t["q_weight"][:-2]), "covers 224 rows but q_invperm has 256"),
        ("3-bit group of partial words", _mut(t, q_groups=_groups(t, g7=int(g[7]) + 1)),
         "not a whole number of codes"),
        ("8-bit group of 60 rows", _mut(t, q_groups=_groups(t, g3=int(g[3]) - 1)),
         "group 0 \\(8-bit\\) has 60 rows, not a multiple of 32"),
        ("q_scale too narrow", _mut(t, q_scale=t["q_scale"][:, :1]), "q_scale has 1 words per group"),
        ("q_scale group count", _mut(t, q_scale=t["q_scale"][:-1]), "lists 4 groups but q_scale has 3"),
        ("q_scale_max group count", _mut(t, q_scale_max=t["q_scale_max"][:-1]), "q_scale_max 3"),
        ("odd q_groups", _mut(t, q_groups=t["q_groups"][:-1]), "pairs"),
        ("empty q_groups", _mut(t, q_groups=t["q_groups"][:0]), "pairs"),
        ("q_scale_max float32", _mut(t, q_scale_max=t["q_scale_max"].astype(np.float32)), "must be float16"),
        ("q_scale_max NaN", _mut(t, q_scale_max=np.array([np.nan, 1, 1, 1], dtype=np.float16)), "non-finite"),
        ("q_scale_max inf", _mut(t, q_scale_max=np.array([1, np.inf, 1, 1], dtype=np.float16)), "non-finite"),
        ("weights overflow float16", _mut(t, q_scale_max=np.array([60000, 1, 1, 1], dtype=np.float16)), "overflow"),
        ("q_weight int16", _mut(t, q_weight=t["q_weight"].astype(np.int16)), "32-bit words"),
        ("q_weight float", _mut(t, q_weight=t["q_weight"].astype(np.float32)), "integer tensor"),
        ("q_invperm float", _mut(t, q_invperm=inv.astype(np.float32)), "integer tensor"),
        ("q_groups int32", _mut(t, q_groups=g.astype(np.int32)), "must be int16"),
        ("q_weight 1-D", _mut(t, q_weight=t["q_weight"].reshape(-1)), "shapes must be"),
        ("empty q_weight", _mut(t, q_weight=t["q_weight"][:0]), "empty q_weight"),
        ("bias of the wrong size", _mut(t, bias=np.zeros(17, dtype=np.float16)), "bias must be"),
    ]


CASES = [c[0] for c in _hostile_cases(E.quantize_rtn(np.zeros((16, 256)), MIXED4, 64))]


@pytest.mark.parametrize("case", CASES)
def test_hostile_layer_refused(good, case):
    _, t, pattern = next(c for c in _hostile_cases(good) if c[0] == case)
    with pytest.raises(ValueError, match=pattern):
        E.dequantize(t, 16)


def test_hostile_sizes():
    good_t = E.quantize_rtn(np.zeros((16, 64)), [(4, 1.0)], 32)
    E.dequantize(good_t, 16)
    E.dequantize(good_t, 17)  # 17 output features pad to the same 32 columns
    with pytest.raises(ValueError, match="32 columns for 40 output features"):
        E.dequantize(good_t, 40)
    with pytest.raises(ValueError, match="32 columns for 64 output features"):
        E.dequantize(good_t, 64)
    # more input rows than exllamav2's 16-bit permutation indices hold
    n = 65536 + 16
    t = {
        "q_weight": np.zeros((n // 16, 8), dtype=np.int32),
        "q_scale": np.zeros((1, 1), dtype=np.int32),
        "q_scale_max": np.ones(1, dtype=np.float16),
        "q_groups": np.array([2, 0], dtype=np.int16),
        "q_invperm": np.arange(n, dtype=np.int32),
    }
    with pytest.raises(ValueError, match="16-bit permutation"):
        E.dequantize(t)


def test_hostile_dequantize_fuzz(good):
    """Random corruptions of a good layer: each either dequantizes to finite values of the right
    shape or raises ValueError (never another exception)."""
    rng = np.random.default_rng(5)
    names = ["q_weight", "q_scale", "q_scale_max", "q_groups", "q_invperm"]
    for _ in range(300):
        t = {k: np.array(v, copy=True) for k, v in good.items()}
        k = names[rng.integers(len(names))]
        raw = t[k].reshape(-1).view(np.uint8)
        for _ in range(rng.integers(1, 4)):
            raw[rng.integers(raw.size)] = rng.integers(256)
        if rng.random() < 0.2:
            t[k] = t[k].reshape(-1)[: max(0, t[k].size - rng.integers(1, 8))]
        try:
            w = E.dequantize(t, 16)
        except ValueError:
            continue
        assert w.shape == (16, 256) and w.dtype == np.float32


# --------------------------------------------------------------------------
# exllamav2's own pure-Python pieces, from its wheel (not imported: torch)
# --------------------------------------------------------------------------

def _corpus_wheel_sha():
    with open(os.path.join(SOURCE, "tools", "setup", "model.env"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("CORPUS_WHEEL_SHA256="):
                return line.split("=", 1)[1].strip().strip('"')
    return None


@pytest.fixture(scope="module")
def exl2_wheel(tmp_path_factory):
    d = tmp_path_factory.mktemp("exllamav2-wheel")
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(d), "exllamav2==0.3.2"]
    try:
        r = subprocess.run(pip, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"exllamav2's wheel could not be fetched: {e}")
    wheels = [f for f in os.listdir(d) if f.endswith(".whl")]
    if r.returncode != 0 or not wheels:
        pytest.skip(f"exllamav2's wheel could not be fetched: {r.stderr.strip()[-300:]}")
    path = os.path.join(d, wheels[0])
    sha = _corpus_wheel_sha()
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert sha is None or digest == sha, "exllamav2 wheel digest differs from tools/setup/model.env"
    z = zipfile.ZipFile(path)
    out = d / "src"
    for name in ("exllamav2/ext.py", "exllamav2/conversion/qparams.py"):
        z.extract(name, out)
    return out


@pytest.fixture(scope="module")
def qparams(exl2_wheel):
    spec = importlib.util.spec_from_file_location("exl2_qparams", exl2_wheel / "exllamav2/conversion/qparams.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # imports only math
    return mod


def _all_qparams(mod):
    out = []
    for table in (mod.qparams_attn, mod.qparams_mlp):
        for options in table:
            out.extend(options)
    out.extend(mod.qparams_headoptions.values())
    return out


def test_bits_per_weight_matches_exllamav2_qparams(qparams):
    shapes = [(576, 576), (576, 192), (576, 1536), (1536, 576), (4096, 14336), (14336, 4096)]
    checked = 0
    for qp in _all_qparams(qparams):
        layout = list(zip(qp.bits, qp.bits_prop))
        assert qp.bits == sorted(qp.bits, reverse=True)  # exllamav2's tables list widths decreasing
        for rows, cols in shapes:
            plan = E.group_plan(rows, layout, qp.group_size)
            mine = sum(n * cols * b for b, _, n in plan) + len(plan) * (48 + cols * 4) + rows * 32
            assert mine == qp.total_bits((rows, cols)), (qp, rows, cols)
            checked += 1
    assert checked > 100
    # and on packed tensors, for one small matrix per table entry
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 576)).astype(np.float32)
    for qp in _all_qparams(qparams)[::7]:
        t = E.quantize_rtn(w, list(zip(qp.bits, qp.bits_prop)), qp.group_size)
        assert E.bits_per_weight(t, 32) == pytest.approx(qp.bpw((576, 32)))


def _make_group_map_py(exl2_wheel):
    tree = ast.parse(open(exl2_wheel / "exllamav2/ext.py", encoding="utf-8").read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_group_map_py")

    class Torch:  # the only torch use in that function: torch.tensor(list, dtype, device) and torch.short
        short = "short"
        Tensor = object

        @staticmethod
        def tensor(data, dtype=None, device=None):
            return list(data)

    ns = {"torch": Torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "exllamav2/ext.py", "exec"), ns)
    return ns["make_group_map_py"]


class _Groups:
    def __init__(self, a):
        self.a = a
        self.device = None

    def tolist(self):
        return self.a.tolist()


def test_group_table_reading_matches_exllamav2(exl2_wheel):
    make_group_map_py = _make_group_map_py(exl2_wheel)
    rng = np.random.default_rng(2)
    layouts = [(ALL_WIDTHS, 32), ([(4, 0.1), (3, 0.9)], 128), ([(8, 0.15), (6, 0.85)], 128),
               ([(6, 0.1), (5, 0.9)], {6: 64, 5: 32}), ([(3, 0.1), (2, 0.9)], 64)]
    for layout, gs in layouts:
        for rows in (576, 1536):
            t = E.quantize_rtn(rng.standard_normal((8, rows)), layout, gs)
            lay = E.validate(t)
            gm = make_group_map_py(_Groups(t["q_groups"].astype(np.int64)), t["q_weight"].shape[0])
            mine = []
            for g in range(lay.groups):
                for j in range(lay.rows[g]):
                    mine += [g, lay.rows[g] - j]
            assert gm == mine, (layout, rows)


# --------------------------------------------------------------------------
# the fixture checkpoint
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir():
    import checkpoints
    if not os.path.exists(checkpoints.MODEL):
        pytest.skip("run `make setup` first (the bundled model)")
    return checkpoints.tiny_hf()


def test_make_exl2_checkpoint(tiny_dir, tmp_path):
    out, ref = tmp_path / "exl2", tmp_path / "ref.safetensors"
    info = make_exl2_checkpoint.convert(tiny_dir, str(out), reference_out=str(ref))
    assert info["widths"] == list(E.WIDTHS) and info["linears"] == 14
    cfg = json.load(open(out / "config.json"))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "exl2" and set(qc) == {"quant_method", "version", "bits", "head_bits", "calibration"}
    assert set(qc["calibration"]) == {"rows", "length", "dataset"}
    assert qc["bits"] == pytest.approx(info["bits_per_weight"], abs=1e-4)
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "output.safetensors",
                                       "tokenizer.json", "tokenizer_config.json"]
    _, src = quant_formats.load_checkpoint(tiny_dir)
    got = quant_formats.read_safetensors(str(out / "output.safetensors"))
    refw = quant_formats.read_safetensors(str(ref))
    linears = make_exl2_checkpoint.ordered_linears(src)
    assert len(linears) == 14
    bits_seen = set()
    for name in linears:
        t = {k: np.asarray(got[f"{name}.{k}"].data) for k in E.REQUIRED}
        w = src[name + ".weight"].to_f32().astype(np.float64)
        deq = E.dequantize(t, w.shape[0], key=name)
        assert np.array_equal(deq, np.asarray(refw[name + ".weight"].data))
        assert_within_step(t, w)
        assert not np.array_equal(t["q_invperm"], np.arange(w.shape[1]))  # act order is exercised
        bits_seen |= set(t["q_groups"][0::2].tolist())
        assert name + ".weight" not in got
    assert bits_seen == set(E.WIDTHS)
    first = {k: np.asarray(got[f"{linears[0]}.{k}"].data) for k in ("q_groups",)}
    assert set(first["q_groups"][0::2].tolist()) == set(E.WIDTHS)  # all widths in one matrix
    for k, v in src.items():
        if not any(k.startswith(n + ".") for n in linears):
            assert got[k].dtype == v.dtype and np.array_equal(np.asarray(got[k].data), np.asarray(v.data))
    # deterministic
    out2 = tmp_path / "exl2-again"
    make_exl2_checkpoint.convert(tiny_dir, str(out2))
    assert (out / "output.safetensors").read_bytes() == (out2 / "output.safetensors").read_bytes()
    assert (out / "config.json").read_bytes() == (out2 / "config.json").read_bytes()


def test_make_exl2_checkpoint_cli_errors(tiny_dir, tmp_path):
    script = os.path.join(SOURCE, "tools", "checkpoints", "make_exl2_checkpoint.py")
    for args, msg in ([["--layouts", "4:0.5,8:0.5@32"], "decreasing"],
                      [["--layouts", "7:1.0@32"], "bit width 7"],
                      [["--layouts", "4:1.0"], "group_size"],
                      [["--head-bits", "6"], "tied embeddings"]):
        r = subprocess.run([sys.executable, script, tiny_dir, str(tmp_path / "x"), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr)


def test_make_exl2_checkpoint_bias_and_head(tmp_path):
    """An untied head (--head-bits, exllamav2's head layouts) and linears with a bias, on a small
    synthetic Qwen2-like checkpoint."""
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "qwen2", "tie_word_embeddings": False}))
    (src / "tokenizer.json").write_text("{}")
    tensors = {
        "model.layers.0.self_attn.q_proj.weight": (rng.standard_normal((64, 256)) * 0.05).astype(np.float16),
        "model.layers.0.self_attn.q_proj.bias": rng.standard_normal(64).astype(np.float16),
        "model.layers.0.mlp.down_proj.weight": (rng.standard_normal((256, 96)) * 0.05).astype(np.float16),
        "model.norm.weight": np.ones(256, dtype=np.float16),
        "lm_head.weight": (rng.standard_normal((100, 256)) * 0.05).astype(np.float16),
    }
    quant_formats.write_safetensors(str(src / "model.safetensors"), tensors)
    out = tmp_path / "out"
    info = make_exl2_checkpoint.convert(str(src), str(out), layouts=["4:1.0@32"], head_bits=6)
    assert info["linears"] == 3
    got = {k: np.asarray(v.data) for k, v in quant_formats.read_safetensors(str(out / "output.safetensors")).items()}
    assert np.array_equal(got["model.layers.0.self_attn.q_proj.bias"], tensors["model.layers.0.self_attn.q_proj.bias"])
    assert "lm_head.weight" not in got and got["lm_head.q_groups"][0::2].tolist() == [8, 6]
    for name, out_f in (("model.layers.0.self_attn.q_proj", 64), ("model.layers.0.mlp.down_proj", 256),
                        ("lm_head", 100)):
        t = {k[len(name) + 1:]: v for k, v in got.items() if k.startswith(name + ".")}
        assert_within_step(t, tensors[name + ".weight"].astype(np.float64))
        assert E.dequantize(t, out_f).shape == tensors[name + ".weight"].shape
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["head_bits"] == 6 and cfg["tie_word_embeddings"] is False

"""An independent reference for ExLlamaV2's EXL2 linear-layer format (issue
20): a dequantizer that the C++ loader is held to bit for bit, its hostile-
input checks, and a round-to-nearest packer that writes the same layout with
chosen per-group bit widths (so tests have EXL2 fixtures without exllamav2).

Written from reading exllamav2's published source (v0.3.2 era, the
turboderp/exllamav2 repository); no code was copied. The files read:
  exllamav2/conversion/adaptivegptq.py   AdaptiveQuantizer.find_params (scale
      formula), AdaptiveGPTQ.configure (bit-width groups), .pack (tensors).
  exllamav2/conversion/qparams.py        QParams (group size per width, bit
      proportions), total_bits (bits-per-weight accounting), the tables.
  exllamav2/conversion/compile.py        output files and quantization_config.
  exllamav2/exllamav2_ext/cuda/pack_tensor.cu  pack_rows_4 (q_scale),
      pack_columns (q_weight bit order per width).
  exllamav2/exllamav2_ext/cuda/quantize.cu     quantize kernels (rint, zero).
  exllamav2/exllamav2_ext/cuda/q_matrix.cu     QMatrix (group table walk,
      width segments), reconstruct_kernel (the dequantized matrix).
  exllamav2/exllamav2_ext/cuda/quant/qdq_{2,3,4,5,6,8,util}.cuh  dq_scale,
      the unshuffled dequant paths (bit positions, zero points).
  exllamav2/exllamav2_ext/cuda/matrix_view.cuh MatrixView_q4_row (q_scale).
  exllamav2/exllamav2_ext/ext_qmatrix.cpp, exllamav2/ext.py (make_q_matrix,
      make_group_map_py), exllamav2/module.py (load_weight: q_perm).

The format, as established from those files
-------------------------------------------
A linear y = x W^T + b with W of shape [out, in] (HF layout). exllamav2 works
on the transpose: "rows" are input features (K = in), "columns" are output
features (N = out). Tensors under the module name (e.g.
model.layers.0.mlp.down_proj.q_weight):

  q_invperm   int32 [in]       a permutation of 0..in-1 (act order). exllamav2
              loads q_perm = argsort(q_invperm) (module.py; a stored q_perm is
              ignored). Packed row k holds original input row q_perm[k];
              equivalently original input row j is packed row q_invperm[j]:
              W^T[j, :] = P[q_invperm[j], :] with P the unpacked matrix.
  q_groups    int16 [2 * G]    pairs (bits, first_qrow) per group, in row
              order; first_qrow = the group's first 32-bit row in q_weight
              (the first is 0). A group's rows = qrows * 32 / bits with qrows
              = next first_qrow (or q_weight's row count for the last) minus
              this one. Widths are non-increasing along the rows (8, 6, 5, 4,
              3, 2): the kernels walk width segments in that order.
  q_weight    int32 [sum qrows, out (padded to a multiple of 32)]: per group
              and per column, the group's codes form one little-endian
              bitstream: code of group row i sits at bit i*bits of the
              column's 32-bit words (word i*bits // 32, shift i*bits % 32;
              a 3-, 5- or 6-bit code may straddle two words, its low bits in
              the earlier word). So 2-bit: 16 rows per word; 3-bit: 32 rows
              per 3 words; 4-bit: 8 per word; 5-bit: 32 per 5 words; 6-bit:
              16 per 3 words; 8-bit: 4 per word.
  q_scale     int32 [G, out / 8]  4-bit per-(group, column) scale codes:
              column c in word c // 8 at shift 4 * (c % 8), stored as
              qscale - 1 (qscale in 1..16).
  q_scale_max float16 [G]      per-group maximum scale.
  bias        float16 [out]    optional, not part of the weight.

Dequantization (reconstruct_kernel + dq_scale, all in float16 arithmetic,
each product rounded to nearest even; every product here is exact in float32,
so numpy's float32 product then astype(float16) rounds exactly once):
  m     = f16(q_scale_max * 2^-8)                 (ext.py make_q_matrix)
  scale = f16(f16((qs + 1)^2) * m)                (qs = stored nibble)
  w     = f16(f16(code - 2^(bits-1)) * scale)     (zero point 2^(bits-1))
The float16 results are what the dequantizer returns (as float32, exactly).

Checks done here beyond exllamav2's own (which mostly trusts its files): see
validate(). The dequantizer returns float32 [out, in] (HF layout).
"""
from __future__ import annotations

import math

import numpy as np

WIDTHS = (2, 3, 4, 5, 6, 8)
MAX_HEIGHT = 65536  # exllamav2 holds q_perm / q_invperm as uint16 on the GPU
REQUIRED = ("q_weight", "q_scale", "q_scale_max", "q_groups", "q_invperm")


class Exl2FormatError(ValueError):
    """A set of EXL2 tensors that is not a valid linear layer."""


def _fail(key, msg):
    raise Exl2FormatError(f"EXL2 {key}: {msg}" if key else f"EXL2: {msg}")


def _words_for(bits, rows):
    return rows * bits // 32


# --------------------------------------------------------------------------
# bitstream (un)packing, one group at a time
# --------------------------------------------------------------------------

def _u32(a):
    """An int32 / uint32 array as uint32 words (same bits)."""
    a = np.asarray(a)
    return a.view(np.uint32) if a.dtype == np.int32 else a.astype(np.uint32)


def _chunk(bits):
    """(rows per chunk, words per chunk): the smallest row count whose codes fill whole 32-bit words."""
    rows = 32 // math.gcd(bits, 32)
    return rows, rows * bits // 32


def pack_group(codes, bits):
    """codes uint [rows, cols] (each < 2^bits) -> uint32 [rows * bits / 32, cols]: per column a
    little-endian bitstream, code i at bit offset i * bits."""
    codes = np.asarray(codes, dtype=np.uint64)
    rows, cols = codes.shape
    crow, cword = _chunk(bits)
    if rows % crow:
        raise ValueError(f"{bits}-bit rows must come in multiples of {crow}, got {rows}")
    c = codes.reshape(rows // crow, crow, cols)
    out = np.zeros((rows // crow, cword, cols), dtype=np.uint64)
    for p in range(crow):
        off = p * bits
        w, s = off // 32, off % 32
        v = c[:, p, :] << np.uint64(s)  # may reach past bit 31: the rest goes to word w + 1
        out[:, w, :] |= v & np.uint64(0xFFFFFFFF)
        if s + bits > 32:
            out[:, w + 1, :] |= v >> np.uint64(32)
    return out.reshape(rows // crow * cword, cols).astype(np.uint32)


def unpack_group(words, bits):
    """uint32 [qrows, cols] -> codes uint16 [qrows * 32 / bits, cols] (inverse of pack_group)."""
    words = _u32(words)
    qrows, cols = words.shape
    crow, cword = _chunk(bits)
    if qrows % cword:
        raise ValueError(f"{bits}-bit groups span multiples of {cword} words, got {qrows}")
    wv = words.astype(np.uint64).reshape(qrows // cword, cword, cols)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((qrows // cword, crow, cols), dtype=np.uint16)
    for p in range(crow):
        off = p * bits
        w, s = off // 32, off % 32
        v = wv[:, w, :] >> np.uint64(s)
        if s + bits > 32:
            v |= wv[:, w + 1, :] << np.uint64(32 - s)
        out[:, p, :] = (v & mask).astype(np.uint16)
    return out.reshape(qrows // cword * crow, cols)


def pack_scales(qscale):
    """qscale int [G, cols] in 1..16 -> int32 [G, cols / 8] (nibble c % 8 of word c // 8 = qscale - 1)."""
    q = np.asarray(qscale, dtype=np.int64)
    if q.size and (q.min() < 1 or q.max() > 16):
        raise ValueError("qscale values must be in 1..16")
    g, cols = q.shape
    if cols % 8:
        raise ValueError("q_scale columns must be a multiple of 8")
    n = (q - 1).astype(np.uint32).reshape(g, cols // 8, 8)
    out = np.zeros((g, cols // 8), dtype=np.uint32)
    for i in range(8):
        out |= n[:, :, i] << np.uint32(4 * i)
    return out.view(np.int32)


def unpack_scales(q_scale):
    """int32 [G, cols / 8] -> qscale int32 [G, cols] in 1..16."""
    u = _u32(q_scale)
    g, w = u.shape
    out = np.empty((g, w, 8), dtype=np.int32)
    for i in range(8):
        out[:, :, i] = ((u >> np.uint32(4 * i)) & np.uint32(0xF)).astype(np.int32) + 1
    return out.reshape(g, w * 8)


# --------------------------------------------------------------------------
# float16 arithmetic as the CUDA kernels do it
# --------------------------------------------------------------------------

def group_scales(qscale, q_scale_max):
    """float16 [G, cols]: f16(f16((qs+1)^2) * f16(q_scale_max * 2^-8)); qscale here is 1..16."""
    m = (np.asarray(q_scale_max, dtype=np.float16).astype(np.float32) * np.float32(1.0 / 256)).astype(np.float16)
    sq = (np.asarray(qscale, dtype=np.int64) ** 2).astype(np.float32)  # <= 256: exact in float16
    return (sq * m.astype(np.float32)[:, None]).astype(np.float16)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

class Layout:
    """The validated structure of one EXL2 linear."""

    def __init__(self, height, width, bits, first_row, rows, first_qrow, qrows, perm, invperm):
        self.height = height          # in_features
        self.width = width            # q_weight columns (out_features, maybe padded to 32)
        self.bits = bits              # per group
        self.first_row = first_row    # per group, in packed (permuted) row order
        self.rows = rows              # per group
        self.first_qrow = first_qrow  # per group, in q_weight
        self.qrows = qrows            # per group
        self.perm = perm              # packed row k <- original input row perm[k]
        self.invperm = invperm        # original input row j -> packed row invperm[j]

    @property
    def groups(self):
        return len(self.bits)


def _int_array(t, key, name, kinds=("i", "u")):
    a = np.asarray(t)
    if a.dtype.kind not in kinds:
        _fail(key, f"{name} must be an integer tensor, got {a.dtype}")
    return a


def validate(tensors, out_features=None, key=""):
    """Check a dict of one linear's EXL2 tensors (numpy arrays, names without the module prefix)
    and return its Layout; raises Exl2FormatError (a ValueError) with a clear message otherwise."""
    missing = [n for n in REQUIRED if n not in tensors]
    if missing:
        hint = ""
        if "q_invperm" in missing and "q_perm" in tensors:
            hint = " (exllamav2 reads q_invperm; q_perm alone is not enough)"
        _fail(key, "missing tensor(s) " + ", ".join(missing) + hint)

    qw = _int_array(tensors["q_weight"], key, "q_weight")
    qs = _int_array(tensors["q_scale"], key, "q_scale")
    qg = _int_array(tensors["q_groups"], key, "q_groups")
    qi = _int_array(tensors["q_invperm"], key, "q_invperm")
    qm = np.asarray(tensors["q_scale_max"])
    if qw.dtype.itemsize != 4:
        _fail(key, f"q_weight must be 32-bit words (int32), got {qw.dtype}")
    if qs.dtype.itemsize != 4:
        _fail(key, f"q_scale must be 32-bit words (int32), got {qs.dtype}")
    if qg.dtype.itemsize != 2:
        _fail(key, f"q_groups must be int16, got {qg.dtype}")
    if qm.dtype != np.float16:
        _fail(key, f"q_scale_max must be float16, got {qm.dtype}")
    if qw.ndim != 2 or qs.ndim != 2 or qg.ndim != 1 or qm.ndim != 1 or qi.ndim != 1:
        _fail(key, "shapes must be q_weight [qrows, out], q_scale [groups, out/8], q_scale_max [groups], "
              f"q_groups [2*groups], q_invperm [in]; got {qw.shape}, {qs.shape}, {qm.shape}, {qg.shape}, {qi.shape}")

    total_qrows, width = qw.shape
    if width == 0 or total_qrows == 0:
        _fail(key, f"empty q_weight {qw.shape}")
    if width % 8:
        _fail(key, f"q_weight has {width} columns, not a multiple of 8")
    if qs.shape[1] * 8 != width:
        _fail(key, f"q_scale has {qs.shape[1]} words per group, q_weight's {width} columns need {width // 8}")
    if out_features is not None and width not in (out_features, -(-out_features // 32) * 32):
        _fail(key, f"q_weight has {width} columns for {out_features} output features")
    if qg.shape[0] == 0 or qg.shape[0] % 2:
        _fail(key, f"q_groups must hold (bits, first row) pairs, got {qg.shape[0]} values")
    ngroups = qg.shape[0] // 2
    if qs.shape[0] != ngroups or qm.shape[0] != ngroups:
        _fail(key, f"q_groups lists {ngroups} groups but q_scale has {qs.shape[0]} and q_scale_max {qm.shape[0]}")
    if not np.all(np.isfinite(qm)):
        _fail(key, "q_scale_max holds a non-finite value")

    pairs = qg.astype(np.int64).reshape(ngroups, 2) & 0xFFFF  # read as uint16, like the kernels
    bits = [int(b) for b in pairs[:, 0]]
    first_qrow = [int(r) for r in pairs[:, 1]]
    for i, b in enumerate(bits):
        if b not in WIDTHS:
            _fail(key, f"group {i} has bit width {b}; EXL2 widths are {WIDTHS}")
    for i in range(1, ngroups):
        if bits[i] > bits[i - 1]:
            _fail(key, f"group {i} is {bits[i]}-bit after a {bits[i - 1]}-bit group: widths must not "
                  "increase along the rows (exllamav2 walks 8, 6, 5, 4, 3, 2-bit segments in order)")
    if first_qrow[0] != 0:
        _fail(key, f"the first group starts at q_weight row {first_qrow[0]}, not 0")
    ends = first_qrow[1:] + [total_qrows]
    qrows, rows, first_row = [], [], []
    row = 0
    for i in range(ngroups):
        n = ends[i] - first_qrow[i]
        if n <= 0:
            _fail(key, f"group {i} spans {n} q_weight rows ({first_qrow[i]} to {ends[i]} of {total_qrows}): "
                  "group starts must increase and stay inside q_weight")
        if (n * 32) % bits[i]:
            _fail(key, f"group {i} ({bits[i]}-bit) spans {n} words per column, not a whole number of codes")
        r = n * 32 // bits[i]
        unit = 16 if bits[i] == 2 else 32
        if r % unit:
            _fail(key, f"group {i} ({bits[i]}-bit) has {r} rows, not a multiple of {unit} "
                  "(exllamav2's kernels step through rows in blocks of that size)")
        qrows.append(n)
        rows.append(r)
        first_row.append(row)
        row += r
    height = row

    if qi.shape[0] != height:
        _fail(key, f"the group table covers {height} rows but q_invperm has {qi.shape[0]}")
    if height > MAX_HEIGHT:
        _fail(key, f"{height} input features exceed exllamav2's 16-bit permutation indices")
    inv = qi.astype(np.int64)
    if qi.dtype.itemsize == 2:
        inv &= 0xFFFF  # exllamav2 holds the permutation as int16 and reads it as uint16
    if inv.min() < 0 or inv.max() >= height:
        _fail(key, f"q_invperm has values outside 0..{height - 1}")
    seen = np.zeros(height, dtype=bool)
    seen[inv] = True
    if not seen.all():
        dup = int(np.argmax(np.bincount(inv, minlength=height) > 1))
        _fail(key, f"q_invperm is not a permutation (row {dup} appears more than once)")
    perm = np.argsort(inv, kind="stable")
    if "q_perm" in tensors:
        qp = _int_array(tensors["q_perm"], key, "q_perm").astype(np.int64)
        if qp.dtype.itemsize == 2:
            qp &= 0xFFFF  # int16 as exllamav2 holds it: read as uint16
        if qp.shape != perm.shape or not np.array_equal(qp, perm):
            _fail(key, "q_perm is not the inverse of q_invperm")

    if "bias" in tensors and tensors["bias"] is not None:
        b = np.asarray(tensors["bias"])
        n = b.shape[0] if b.ndim == 1 else -1
        ok = n == out_features if out_features is not None else (n == width or (n > 0 and -(-n // 32) * 32 == width))
        if b.dtype != np.float16 or not ok:
            _fail(key, f"bias must be a float16 vector of the {out_features or width} output features "
                  f"(unpadded), got {b.dtype} {b.shape}")

    return Layout(height, width, bits, first_row, rows, first_qrow, qrows, perm, inv)


# --------------------------------------------------------------------------
# the reference dequantizer
# --------------------------------------------------------------------------

def unpack(tensors, out_features=None, key=""):
    """(layout, codes uint16 [in, width], scales float16 [in, width], zero points int [in]), all in
    packed (permuted) row order: packed row k is input row layout.perm[k]."""
    lay = validate(tensors, out_features, key)
    qw = _u32(tensors["q_weight"])
    scales = group_scales(unpack_scales(tensors["q_scale"]), tensors["q_scale_max"])
    codes = np.empty((lay.height, lay.width), dtype=np.uint16)
    srow = np.empty((lay.height, lay.width), dtype=np.float16)
    zero = np.empty(lay.height, dtype=np.int64)
    for g in range(lay.groups):
        a, r = lay.first_row[g], lay.rows[g]
        codes[a:a + r] = unpack_group(qw[lay.first_qrow[g]:lay.first_qrow[g] + lay.qrows[g]], lay.bits[g])
        srow[a:a + r] = scales[g]
        zero[a:a + r] = 1 << (lay.bits[g] - 1)
    return lay, codes, srow, zero


def dequantize(tensors, out_features=None, key=""):
    """The weight of one EXL2 linear as float32 [out, in] (HF layout; exllamav2 itself works on
    the [in, out] transpose). Every value is the float16 that exllamav2's reconstruct kernel
    produces, converted exactly. `out_features` (optional) crops exllamav2's column padding and
    is checked against q_weight's width. Raises Exl2FormatError (ValueError) on a bad layer."""
    lay, codes, srow, zero = unpack(tensors, out_features, key)
    centered = codes.astype(np.float32) - zero[:, None].astype(np.float32)
    with np.errstate(over="ignore"):
        packed = (centered * srow.astype(np.float32)).astype(np.float16)
    if not np.all(np.isfinite(packed)):
        _fail(key, "weights overflow float16 (q_scale_max too large)")
    w_t = packed[lay.invperm]  # original input row j = packed row invperm[j]
    n = out_features if out_features is not None else lay.width
    return np.ascontiguousarray(w_t[:, :n].T.astype(np.float32))


def bits_per_weight(tensors, out_features=None):
    """Storage bits per weight, counted as exllamav2's QParams.total_bits does: q_weight bits,
    16 per group (q_scale_max), 32 per group (q_groups), 4 per group and column (q_scale), 32
    per input row (q_invperm); divided by in * out (bias not counted)."""
    lay = validate(tensors, out_features)
    cols = out_features if out_features is not None else lay.width
    total = sum(r * cols * b for r, b in zip(lay.rows, lay.bits))
    total += lay.groups * (16 + 32) + lay.groups * cols * 4 + lay.height * 32
    return total / (lay.height * cols)


# --------------------------------------------------------------------------
# the packer
# --------------------------------------------------------------------------

def parse_layout(spec):
    """'8:0.1,6:0.9' -> [(8, 0.1), (6, 0.9)]."""
    out = []
    for part in spec.split(","):
        b, _, p = part.partition(":")
        out.append((int(b), float(p)))
    return out


def group_plan(rows, bit_layout, group_size):
    """[(bits, first_row, n_rows)] per group, following exllamav2's AdaptiveGPTQ.configure rule:
    for each (bits, proportion) in order, ceil(min(rows * p, remaining) / group_size[bits]) groups
    of group_size rows (none once the rows are covered); the last group is cut at `rows`."""
    if isinstance(group_size, int):
        gs = {b: group_size for b, _ in bit_layout}
    else:
        gs = {int(b): int(g) for b, g in dict(group_size).items()}
    widths = [b for b, _ in bit_layout]
    for b in widths:
        if b not in WIDTHS:
            raise ValueError(f"bit width {b} is not one of {WIDTHS}")
        if b not in gs or gs[b] <= 0:
            raise ValueError(f"no positive group size for {b}-bit")
        if gs[b] % (16 if b == 2 else 32):
            raise ValueError(f"group size {gs[b]} for {b}-bit is not a multiple of {16 if b == 2 else 32}")
    if any(widths[i] <= widths[i + 1] for i in range(len(widths) - 1)):
        raise ValueError(f"widths must be listed in decreasing order (as exllamav2 stores them), got {widths}")
    props = [p for _, p in bit_layout]
    if any(p <= 0 for p in props) or abs(sum(props) - 1.0) > 1e-6:
        raise ValueError(f"proportions must be positive and sum to 1, got {props}")
    plan = []
    remaining = rows
    row = 0
    for b, p in bit_layout:
        g = math.ceil(min(rows * p, remaining) / gs[b])
        if g <= 0:
            continue  # earlier widths already cover the rows: exllamav2 gives this width no group
        for _ in range(g):
            n = min(gs[b], rows - row)
            if n <= 0:
                raise ValueError(f"the layout overshoots {rows} rows (an empty {b}-bit group)")
            plan.append((b, row, n))
            row += n
        remaining -= g * gs[b]
    if row != rows:
        raise ValueError(f"the layout covers {row} of {rows} rows")
    return plan


def _choose_scales(x, bits):
    """For a group x [rows, cols] (float64): (qscale int [cols] in 1..16, q_scale_max float16)
    such that the float16 scale the dequantizer computes never clips: codes span
    -2^(b-1) .. 2^(b-1)-1 around the zero point, so the scale must reach max(x+ / (2^(b-1)-1),
    x- / 2^(b-1)). The smallest such qscale per column is taken (RTN; exllamav2 instead searches
    a scale multiplier on calibration error, which changes values, not the layout)."""
    half = 1 << (bits - 1)
    need = np.maximum(np.maximum(x, 0).max(axis=0) / (half - 1), np.maximum(-x, 0).max(axis=0) / half)
    top = float(need.max()) if need.size else 0.0
    # q_scale_max: a float16 whose qs=16 scale reaches `top` (float16 and the 2^-8 step can round
    # down; step up until it does), and at least 2^-16 so that f16(qsm / 256) is never 0.
    qsm = np.float16(max(top, 2.0 ** -16))
    while float(group_scales(np.array([[16]]), np.array([qsm]))[0, 0]) < top:
        qsm = np.nextafter(qsm, np.float16(np.inf))
        if not np.isfinite(qsm):
            raise ValueError("weights too large for a float16 scale")
    cand = group_scales(np.arange(1, 17)[None, :], np.array([qsm]))[0].astype(np.float64)  # [16], increasing
    qscale = np.searchsorted(cand, need, side="left") + 1
    return np.clip(qscale, 1, 16).astype(np.int64), qsm


def quantize_rtn(w, bit_layout, group_size, perm=None, bias=None):
    """Pack w float [out, in] (HF layout) as one EXL2 linear.

    bit_layout: [(bits, proportion)] in decreasing width (exllamav2's QParams bits/bits_prop), or
    a string '8:0.1,6:0.9'; group_size: int or {bits: size}. perm: optional act-order
    permutation of the input rows (packed row k = input row perm[k]); default identity.
    Returns {q_weight, q_scale, q_scale_max, q_groups, q_invperm[, bias]} as exllamav2 stores
    them (output columns padded to a multiple of 32 like its packer; dequantize(..., out) crops).
    Codes are round-to-nearest (half to even, as rintf) against the float16 scale the
    dequantizer computes, so |dequantized - w| <= scale / 2 elementwise (up to float16 rounding)."""
    if isinstance(bit_layout, str):
        bit_layout = parse_layout(bit_layout)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError("w must be [out, in]")
    if not np.all(np.isfinite(w)):
        raise ValueError("w holds non-finite values")
    out_f, in_f = w.shape
    if in_f > MAX_HEIGHT:
        raise ValueError(f"{in_f} input features exceed exllamav2's limit of {MAX_HEIGHT}")
    if perm is None:
        perm = np.arange(in_f)
    perm = np.asarray(perm, dtype=np.int64)
    if perm.shape != (in_f,) or not np.array_equal(np.sort(perm), np.arange(in_f)):
        raise ValueError("perm must be a permutation of the input rows")
    plan = group_plan(in_f, bit_layout, group_size)
    pad = -out_f % 32
    wt = w.T[perm]  # [in, out], packed row order
    if pad:
        wt = np.concatenate([wt, np.zeros((in_f, pad))], axis=1)
    width = out_f + pad

    words, qscales, qsms, groups = [], [], [], []
    qrow = 0
    for b, a, n in plan:
        x = wt[a:a + n]
        qscale, qsm = _choose_scales(x, b)
        s = group_scales(qscale[None, :], np.array([qsm]))[0].astype(np.float64)
        codes = np.clip(np.rint(x / s[None, :]) + (1 << (b - 1)), 0, (1 << b) - 1).astype(np.uint32)
        packed = pack_group(codes, b)
        words.append(packed)
        qscales.append(qscale)
        qsms.append(qsm)
        groups += [b, qrow]
        qrow += packed.shape[0]
    if qrow > 0xFFFF:
        raise ValueError("too many q_weight rows for int16 q_groups")

    out = {
        "q_weight": np.concatenate(words, axis=0).view(np.int32),
        "q_scale": pack_scales(np.stack(qscales)),
        "q_scale_max": np.array(qsms, dtype=np.float16),
        "q_groups": np.array(groups, dtype=np.uint16).view(np.int16),
        "q_invperm": np.argsort(perm, kind="stable").astype(np.int32),
    }
    if bias is not None:
        out["bias"] = np.asarray(bias, dtype=np.float16)
    return out


def act_order_perm(w):
    """A deterministic stand-in for exllamav2's act order without calibration data: input rows by
    decreasing squared column norm of w [out, in] (stable)."""
    w = np.asarray(w, dtype=np.float64)
    return np.argsort(-(w * w).sum(axis=0), kind="stable")

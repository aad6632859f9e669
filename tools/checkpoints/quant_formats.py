#!/usr/bin/env python3
"""Independent numpy reference for three quantized HF checkpoint formats:
AutoAWQ GEMM, GPTQ (AutoGPTQ / GPTQModel, checkpoint_format gptq = v1 and
gptq_v2) and compressed-tensors "pack-quantized" (llm-compressor W4A16/W8A16).

It writes such checkpoints from a dense HF directory with round-to-nearest
(RTN) min/max quantization (not the AWQ scale search nor the GPTQ Hessian
update), records the float32 weights the integer codes stand for, and
dequantizes such checkpoints back.  Tessera's C++ loader is checked against it;
nothing here was derived from Tessera's C++.  Only numpy is needed (the
safetensors files are read and written by the small codec below, so BF16 works
without torch); the `safetensors` package is used by the tests to check that
the files are ordinary safetensors.

Published code this follows (read from the released sources: autoawq 0.2.9,
gptqmodel 7.7.0, compressed-tensors 0.20.0; torch code, re-written in numpy):

AWQ, GEMM version (awq/modules/linear/gemm.py WQLinear_GEMM.__init__ and
.from_linear; awq/quantize/quantizer.py AwqQuantizer.pseudo_quantize_tensor;
awq/utils/packing_utils.py AWQ_ORDER, AWQ_REVERSE_ORDER, unpack_awq,
reverse_awq_order, dequantize_gemm; awq/models/_config.py to_transformers_dict)
  * qweight int32 [in, out/8]; qzeros int32 [in/G, out/8]; scales f16
    [in/G, out]; (bias f16 [out] if present - copied unchanged here).
    4-bit only; G divides in (WQLinear asserts it); out % 8 == 0.
  * Packing is along the OUTPUT dimension: word c of a row holds output
    columns 8c..8c+7, and nibble i (bits 4i..4i+3, i = 0 least significant)
    holds output column 8c + AWQ_ORDER[i], AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7].
    So a word holding column values v0..v7 is, from the top nibble down,
    v7 v5 v3 v1 v6 v4 v2 v0.  qzeros uses the same interleave.
    Unpacking: nibble j = (word >> 4j) & 15, then output column k is nibble
    AWQ_REVERSE_ORDER[k], AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7].
  * Zero point: the zero itself (no offset), 0..15; w = (q - z) * s with s, z
    of group in_index // G.
  * RTN (pseudo_quantize_tensor, zero_point=True): per row and group of G
    input columns, s = max(max - min, 1e-5) / 15, z = clamp(-round(min / s),
    0, 15); from_linear stores s as f16 and q = round(w / s_f16 + z) (clamped
    to 0..15 here so it fits a nibble).
  * config.json quantization_config: {"quant_method": "awq", "zero_point":
    true, "group_size": G, "bits": 4, "version": "gemm",
    "modules_to_not_convert": null | [names]}.

GPTQ (gptqmodel/nn_modules/qlinear/__init__.py GPTQQuantLinear.
_register_gptq_buffers, PackableQuantLinear.pack_original and
.dequantize_weight/_dequantize_from_codes; gptqmodel/utils/model.py
convert_gptq_v2_to_v1_format_module / convert_gptq_v1_to_v2_format_module;
gptqmodel/quantization/quantizer.py Quantizer.find_params; gptq.py act order)
  * qweight int32 [ceil(in*bits/32), out]; qzeros int32 [ngroups,
    ceil(out*bits/32)]; scales f16 [ngroups, out]; g_idx int32 [in];
    (bias copied).  ngroups = ceil(in / G) (G = in for group_size -1);
    GPTQModel allows a partial last group (its buffers use math.ceil), which
    this reference also writes when G does not divide in.
  * qweight packs along the INPUT dimension: word row r holds input rows
    r*pf .. r*pf+pf-1 (pf = 32/bits), field j at bits [bits*j, bits*j+bits),
    j = 0 least significant - plain order, no interleave, for 4 and 8 bits.
    qzeros packs along the OUTPUT dimension with the same field order.
  * Zero convention: in memory (and in checkpoint_format "gptq_v2") the zero
    itself.  checkpoint_format "gptq" (v1) stores zero - 1, and GPTQModel makes
    it by subtracting 0x11111111 (4-bit) / 0x01010101 (8-bit) from every packed
    int32 word, wrapping mod 2^32 (so a zero of 0 borrows from the next field),
    and reads it back by adding the same constant to the word.  This reference
    does the same.  When no zero is 0 that equals adding 1 to each unpacked
    field, which is what the exllama-derived kernels do (vLLM
    csrc/quantization/gptq/q_gemm.cu: zeros[k] + 1, unmasked); with a zero of
    0 (a group with no negative weight, asym only) the per-field reading is
    wrong and only the word-level addition inverts GPTQModel's writer.
  * w[o, i] = scales[g_idx[i], o] * (q[i, o] - zero[g_idx[i], o]).
  * RTN (find_params, per row over a group): xmin = min(min, 0), xmax =
    max(max, 0); sym: xmax = max(|xmin|, xmax), xmin = -xmax if xmin < 0;
    an all-zero range becomes [-1, 1]; s = (xmax - xmin) / maxq; zero =
    (maxq + 1) / 2 for sym (8 or 128), round(-xmin / s) for asym; q =
    clamp(round(w / s_f16) + zero, 0, maxq).  (pack_original divides by the
    scale before its f16 cast; dividing by the stored f16 scale, as here,
    gives the nearest code for the scale actually stored.)
  * desc_act: GPTQ permutes the input columns (by descending Hessian
    diagonal), forms groups of G consecutive permuted columns and stores
    g_idx[c] = (position of column c in the permutation) // G; qweight stays in
    the original column order.  Here the permutation is the columns sorted by
    descending L2 norm (stable), a deterministic stand-in.  Without desc_act
    g_idx[c] = c // G.
  * config.json quantization_config: bits, group_size, desc_act, sym,
    lm_head, damp_percent, damp_auto_increment, static_groups,
    true_sequential, mse, quant_method "gptq", checkpoint_format (and the
    same value under "format", as GPTQModel 7 writes), pack_dtype "int32",
    model_name_or_path, model_file_base_name, meta.

compressed-tensors pack-quantized (compressed_tensors/compressors/
pack_quantized/base.py PackedQuantizationCompressor.compress/decompress;
pack_quantized/helpers.py pack_to_int32 / unpack_from_int32;
quantization/utils/helpers.py calculate_qparams, _calculate_range;
quantization/lifecycle/forward_helpers.py _quantize/_dequantize;
compressors/model_compressors/model_compressor.py update_config;
quantization/quant_args.py QuantizationArgs serialisation)
  * Signed codes: q in [-2^(b-1), 2^(b-1)-1]; stored unsigned as q + 2^(b-1)
    (the offset is added by pack_to_int32, for symmetric AND asymmetric).
  * weight_packed int32 [out, ceil(in*bits/32)]: along the INPUT dimension,
    element e of a row at global bit position e*bits (dense, little-endian
    within the row; for 4 and 8 bits simply field j = bits [bits*j, ...) of
    word e // (32/bits)).
  * weight_scale [out, in/G] (group) or [out, 1] (channel), in the scale dtype
    (the model's dtype unless scale_dtype is set: f16, bf16 or f32).
  * weight_zero_point (asymmetric only; absent when symmetric): signed zero
    points [out, ngroups] + 2^(b-1), packed with packed_dim=0, i.e. along the
    OUTPUT dimension: int32 [ceil(out*bits/32), ngroups].
  * weight_shape int64 [2] = [out, in].
  * w = (q - zp) * scale (zp = 0 when symmetric).
  * RTN (calculate_qparams): min = min(min, 0), max = max(max, 0); sym: s =
    max(|min|, |max|) / ((2^b - 1) / 2); asym: s = (max - min) / (2^b - 1),
    zp = round(clamp(-2^(b-1) - min / s, qmin, qmax)); s rounded to the scale
    dtype, a zero s replaced by that dtype's eps; q = round(clamp(w / s + zp,
    qmin, qmax)).  Group strategy requires G | in (the published code raises).
  * config.json quantization_config: {"config_groups": {"group_0":
    {"format": "pack-quantized", "input_activations": null,
    "output_activations": null, "targets": ["Linear"], "weights": {"num_bits",
    "type": "int", "symmetric", "group_size", "strategy": "group"|"channel",
    "dynamic": false}}}, "format": "pack-quantized",
    "global_compression_ratio": null, "ignore": ["lm_head", ...],
    "kv_cache_scheme": null, "moe_sparsity_config": null, "quant_method":
    "compressed-tensors", "quantization_status": "compressed",
    "sparsity_config": {}, "transform_config": {}, "version": "0.20.0"}.

Reference weights: for every quantized module, float32 [out, in] named
"<module>.weight", computed from the integer codes, scales and zeros before
packing as  float32(scale) * float32(q - zero)  (one rounding: the scale is
f16/bf16/f32 and converts exactly, q - zero is a small integer).  The
dequantizer below computes the same expression from the unpacked files, so a
correct round trip is bit-exact.

Modules quantized: model.layers.N.self_attn.{q,k,v,o}_proj and
model.layers.N.mlp.{gate,up,down}_proj.  Everything else (embeddings, norms,
lm_head, biases) is copied unchanged; non-weight files are copied; config.json
gets "quantization_config".  Modules whose shape the format cannot hold (AWQ
or compressed-tensors group size not dividing in_features, AWQ out_features
not a multiple of 8) raise, or with skip_indivisible stay dense and are named
in modules_to_not_convert (AWQ) or the ignore list (compressed-tensors).  GPTQ
needs no skipping: a group size that does not divide in_features gives a
partial last group, as GPTQModel writes it.

CLI:
  quant_formats.py quantize --in HFDIR --out DIR --method awq|gptq|compressed-tensors
      [--bits 4|8] [--group-size G (-1 = per channel)] [--sym] [--desc-act]
      [--checkpoint-format gptq|gptq_v2] [--scale-dtype f16|bf16|f32]
      [--skip-indivisible] [--reference-out FILE.safetensors]
  quant_formats.py dequantize --in QDIR --out FILE.safetensors
  quant_formats.py make-test-set --in HFDIR --out ROOT
"""
import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np

# --------------------------------------------------------------------------
# safetensors codec (numpy has no bfloat16: BF16 is kept as raw uint16 bits)
# --------------------------------------------------------------------------

_ST_NP = {
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": np.uint16,
    "I8": np.int8, "U8": np.uint8, "I16": np.int16, "U16": np.uint16,
    "I32": np.int32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "BOOL": np.bool_,
}
_NP_ST = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
          np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.int16): "I16",
          np.dtype(np.uint16): "U16", np.dtype(np.int32): "I32", np.dtype(np.uint32): "U32",
          np.dtype(np.int64): "I64", np.dtype(np.uint64): "U64", np.dtype(np.bool_): "BOOL"}


class StTensor:
    """A tensor as stored: safetensors dtype string + numpy array (BF16 as uint16 bits)."""

    __slots__ = ("dtype", "data")

    def __init__(self, dtype, data):
        self.dtype = dtype
        self.data = data

    @property
    def shape(self):
        return tuple(self.data.shape)

    def to_f32(self):
        if self.dtype == "BF16":
            return bf16_bits_to_f32(self.data)
        if self.dtype in ("F16", "F32", "F64"):
            return self.data.astype(np.float32)
        raise ValueError(f"not a float tensor: {self.dtype}")


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (NaN kept quiet)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if np.any(nan):
        out[nan] = 0x7FC0
    return out


def to_st(value):
    if isinstance(value, StTensor):
        return value
    arr = np.asarray(value)
    return StTensor(_NP_ST[arr.dtype], arr)


def read_safetensors(path):
    """{name: StTensor} backed by a read-only memory map; metadata in the '__metadata__' of the header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        buf = raw[base + begin:base + end]
        arr = np.frombuffer(buf, dtype=np.dtype(_ST_NP[dt]).newbyteorder("<")).reshape(shape)
        out[name] = StTensor(dt, arr)
    return out


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: StTensor | numpy array}.  Header keys sorted, data in the same order, 8-byte aligned."""
    items = [(k, to_st(v)) for k, v in sorted(tensors.items())]
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, t in items:
        nbytes = int(t.data.size) * t.data.dtype.itemsize
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for _, t in items:
            a = np.ascontiguousarray(t.data)
            if a.dtype.byteorder == ">":
                a = a.byteswap().view(a.dtype.newbyteorder("<"))
            f.write(memoryview(a.reshape(-1).view(np.uint8)))
    os.replace(tmp, path)


WEIGHT_FILE_RE = re.compile(r"(\.safetensors|\.bin|\.pt|\.pth|\.ckpt|\.h5|\.msgpack|\.gguf)$|"
                            r"^(model\.safetensors\.index\.json|pytorch_model\.bin\.index\.json)$")


def load_checkpoint(hf_dir):
    """(config dict, {name: StTensor}) from config.json + model.safetensors or a sharded index."""
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for shard in shards:
            tensors.update(read_safetensors(os.path.join(hf_dir, shard)))
    else:
        tensors.update(read_safetensors(os.path.join(hf_dir, "model.safetensors")))
    return config, tensors


LINEAR_RE = re.compile(r"^(model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj))\.weight$")


def decoder_linears(tensors):
    """Module names (without .weight) of the decoder linears, in name order."""
    return sorted(m.group(1) for m in (LINEAR_RE.match(n) for n in tensors) if m)


# --------------------------------------------------------------------------
# helpers shared by the quantizers (not by the dequantizer)
# --------------------------------------------------------------------------

_F16_TINY = np.float16(2.0 ** -24)


def _f16_scales(scale):
    """Scales as the AWQ/GPTQ tools store them (float16); an underflow to 0 becomes the smallest subnormal."""
    h = np.asarray(scale, dtype=np.float32).astype(np.float16)
    h = np.where(h == 0, _F16_TINY, h)
    if not np.all(np.isfinite(h)):
        raise ValueError("a scale does not fit float16")
    return h


def _group_reduce(W, G):
    """Row-wise min and max over consecutive groups of G columns (last group may be partial)."""
    starts = np.arange(0, W.shape[1], G)
    return np.minimum.reduceat(W, starts, axis=1), np.maximum.reduceat(W, starts, axis=1)


class SkipModule(Exception):
    """The format cannot hold this module's shape (left dense with skip_indivisible)."""


# --------------------------------------------------------------------------
# AWQ (GEMM): quantize + pack
# --------------------------------------------------------------------------

AWQ_PACK_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # WQLinear_GEMM.from_linear order_map


def awq_pack(intweight):
    """[R, C] codes 0..15 -> int32 [R, C/8]: nibble i of word c = column 8c + AWQ_PACK_ORDER[i]."""
    R, C = intweight.shape
    v = np.ascontiguousarray(intweight, dtype=np.uint32).reshape(R, C // 8, 8)
    word = np.zeros((R, C // 8), dtype=np.uint32)
    for i in range(8):
        word |= v[:, :, AWQ_PACK_ORDER[i]] << np.uint32(4 * i)
    return word.view(np.int32)


def quantize_awq_module(W, bits, group_size):
    if bits != 4:
        raise ValueError("AWQ GEMM is 4-bit only")
    out_f, in_f = W.shape
    G = in_f if group_size == -1 else group_size
    if in_f % G or out_f % 8:
        raise SkipModule(f"AWQ needs in_features % group_size == 0 and out_features % 8 == 0 (shape {W.shape}, G {G})")
    ng = in_f // G
    Wg = W.reshape(out_f, ng, G)
    mx, mn = Wg.max(axis=2), Wg.min(axis=2)
    scale = np.maximum(mx - mn, np.float32(1e-5)) / np.float32(15)
    zero = np.clip(-np.round(mn / scale), 0, 15).astype(np.int32)
    scale_h = _f16_scales(scale)                                   # [out, ng]
    s = scale_h.astype(np.float32)[:, :, None]
    q = np.clip(np.round(Wg / s) + zero[:, :, None].astype(np.float32), 0, 15).astype(np.int32)
    d = (q - zero[:, :, None]).astype(np.float32)
    ref = (s * d).reshape(out_f, in_f)
    err = float(np.max(np.abs(W.reshape(out_f, ng, G) - s * d) / s))
    tensors = {
        "qweight": awq_pack(q.reshape(out_f, in_f).T),            # [in, out/8]
        "qzeros": awq_pack(np.ascontiguousarray(zero.T)),          # [ng, out/8]
        "scales": np.ascontiguousarray(scale_h.T),                 # [ng, out] f16
    }
    return tensors, ref, {"max_err_over_scale": err, "groups": ng}


# --------------------------------------------------------------------------
# GPTQ: quantize + pack
# --------------------------------------------------------------------------

GPTQ_V1_OFFSET = {4: 0x11111111, 8: 0x01010101}  # convert_gptq_v2_to_v1_format_module


def gptq_pack_rows(q, bits):
    """[in, out] codes -> int32 [ceil(in*bits/32), out]: field j of row r = input row r*pf + j."""
    pf = 32 // bits
    n, c = q.shape
    rows = math.ceil(n * bits / 32)
    v = np.zeros((rows * pf, c), dtype=np.uint32)
    v[:n] = q
    v = v.reshape(rows, pf, c)
    word = np.zeros((rows, c), dtype=np.uint32)
    for j in range(pf):
        word |= v[:, j, :] << np.uint32(bits * j)
    return word


def gptq_pack_cols(z, bits):
    """[g, out] zeros -> uint32 words [g, ceil(out*bits/32)]: field j of word c = column c*pf + j."""
    pf = 32 // bits
    g, n = z.shape
    cols = math.ceil(n * bits / 32)
    v = np.zeros((g, cols * pf), dtype=np.uint32)
    v[:, :n] = z
    v = v.reshape(g, cols, pf)
    word = np.zeros((g, cols), dtype=np.uint32)
    for j in range(pf):
        word |= v[:, :, j] << np.uint32(bits * j)
    return word


def act_order_permutation(W):
    """Deterministic stand-in for GPTQ's argsort(diag(H), descending): columns by descending L2 norm."""
    norms = np.sqrt(np.sum(W.astype(np.float64) ** 2, axis=0))
    return np.argsort(-norms, kind="stable")


def quantize_gptq_module(W, bits, group_size, sym, desc_act, checkpoint_format):
    if bits not in (4, 8):
        raise ValueError("GPTQ bits must be 4 or 8 here")
    out_f, in_f = W.shape
    maxq = 2 ** bits - 1
    G = in_f if group_size == -1 else group_size
    ng = math.ceil(in_f / G)
    perm = act_order_permutation(W) if desc_act else np.arange(in_f)
    mn, mx = _group_reduce(W[:, perm], G)                           # [out, ng]
    xmin = np.minimum(mn, 0)
    xmax = np.maximum(mx, 0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
        both_zero = xmax == 0
    else:
        both_zero = (xmin == 0) & (xmax == 0)
    xmin = np.where(both_zero, xmin - 1, xmin).astype(np.float32)
    xmax = np.where(both_zero, xmax + 1, xmax).astype(np.float32)
    scale = (xmax - xmin) / np.float32(maxq)
    if sym:
        zero = np.full(scale.shape, (maxq + 1) // 2, dtype=np.int32)
    else:
        zero = np.round(-xmin / scale).astype(np.int32)
    scale_h = _f16_scales(scale)                                    # [out, ng]
    pos = np.empty(in_f, dtype=np.int64)
    pos[perm] = np.arange(in_f)
    g_idx = (pos // G).astype(np.int32)                             # [in]
    S = np.take(scale_h.astype(np.float32), g_idx, axis=1)          # [out, in]
    Z = np.take(zero, g_idx, axis=1)
    q = np.clip(np.round(W / S) + Z.astype(np.float32), 0, maxq).astype(np.int32)
    ref = S * (q - Z).astype(np.float32)
    err = float(np.max(np.abs(W - ref) / S))
    qzeros = gptq_pack_cols(zero.T, bits)
    if checkpoint_format == "gptq":
        qzeros = qzeros - np.uint32(GPTQ_V1_OFFSET[bits])          # wraps mod 2^32, as torch int32 does
    elif checkpoint_format != "gptq_v2":
        raise ValueError(f"checkpoint_format {checkpoint_format!r}")
    tensors = {
        "qweight": gptq_pack_rows(q.T, bits).view(np.int32),
        "qzeros": qzeros.view(np.int32),
        "scales": np.ascontiguousarray(scale_h.T),                  # [ng, out] f16
        "g_idx": g_idx,
    }
    return tensors, ref, {"max_err_over_scale": err, "groups": ng,
                          "zero_points_equal_0": int(np.count_nonzero(zero == 0))}


# --------------------------------------------------------------------------
# compressed-tensors pack-quantized: quantize + pack
# --------------------------------------------------------------------------

def ct_pack_to_int32(value, num_bits, packed_dim=1):
    """pack_to_int32: signed int codes [rows, cols] -> int32, element e of a row at bit e*num_bits
    of the row's word sequence, stored as value + 2^(num_bits-1); packed_dim 0 packs down the columns."""
    v = np.asarray(value, dtype=np.int64) + (1 << (num_bits - 1))
    if packed_dim == 0:
        v = v.T
    rows, cols = v.shape
    packed_cols = math.ceil(cols * num_bits / 32)
    padded = math.ceil(cols / 32) * 32
    u = np.zeros((rows, padded), dtype=np.uint32)
    u[:, :cols] = v
    u = u.reshape(rows, padded // 32, 32)
    words = np.zeros((rows, padded // 32, num_bits), dtype=np.uint32)
    for e in range(32):
        start = e * num_bits
        w, off = start // 32, start % 32
        words[:, :, w] += u[:, :, e] << np.uint32(off)
        over = off + num_bits - 32
        if over > 0:
            words[:, :, w + 1] += u[:, :, e] >> np.uint32(num_bits - over)
    out = words.reshape(rows, -1)[:, :packed_cols]
    if packed_dim == 0:
        out = out.T
    return np.ascontiguousarray(out).view(np.int32)


_SCALE_DTYPES = {"f16": "F16", "float16": "F16", "F16": "F16", "bf16": "BF16", "bfloat16": "BF16", "BF16": "BF16",
                 "f32": "F32", "float32": "F32", "F32": "F32"}


def _cast_scale(scale, st_dtype):
    """(stored StTensor, exact float32 value) of scales rounded to the scale dtype; 0 -> that dtype's eps."""
    if st_dtype == "F16":
        h = scale.astype(np.float16)
        h = np.where(h == 0, np.finfo(np.float16).eps, h).astype(np.float16)
        if not np.all(np.isfinite(h)):
            raise ValueError("a scale does not fit float16")
        return StTensor("F16", h), h.astype(np.float32)
    if st_dtype == "BF16":
        b = f32_to_bf16_bits(scale)
        b = np.where(b == 0, np.uint16(0x3C00), b).astype(np.uint16)  # bf16 eps = 2^-7
        return StTensor("BF16", b), bf16_bits_to_f32(b)
    f = scale.astype(np.float32)
    f = np.where(f == 0, np.finfo(np.float32).eps, f).astype(np.float32)
    return StTensor("F32", f), f


def quantize_ct_module(W, bits, group_size, sym, scale_dtype):
    if bits not in (4, 8):
        raise ValueError("compressed-tensors W4A16/W8A16 only")
    out_f, in_f = W.shape
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bit_range = np.float32(qmax - qmin)
    if group_size == -1:
        G = in_f
    else:
        G = group_size
        if in_f % G:
            raise SkipModule(f"compressed-tensors group strategy needs in_features % group_size == 0 (shape {W.shape}, G {G})")
    ng = in_f // G
    Wg = W.reshape(out_f, ng, G)
    mn = np.minimum(Wg.min(axis=2), 0)
    mx = np.maximum(Wg.max(axis=2), 0)
    if sym:
        scale = np.maximum(np.abs(mn), np.abs(mx)) / (bit_range / np.float32(2))
        zp = np.zeros(scale.shape, dtype=np.int32)
    else:
        scale = (mx - mn) / bit_range
        with np.errstate(divide="ignore", invalid="ignore"):
            zpf = np.clip(np.float32(qmin) - mn / scale, qmin, qmax)
        zp = np.where(scale == 0, 0, np.round(np.nan_to_num(zpf))).astype(np.int32)
    scale_st, s = _cast_scale(scale.astype(np.float32), scale_dtype)
    s3 = s[:, :, None]
    q = np.round(np.clip(Wg / s3 + zp[:, :, None].astype(np.float32), qmin, qmax)).astype(np.int32)
    d = (q - zp[:, :, None]).astype(np.float32)
    ref = (s3 * d).reshape(out_f, in_f)
    err = float(np.max(np.abs(Wg - s3 * d) / s3))
    tensors = {
        "weight_packed": ct_pack_to_int32(q.reshape(out_f, in_f), bits),
        "weight_scale": scale_st,
        "weight_shape": np.array([out_f, in_f], dtype=np.int64),
    }
    if not sym:
        tensors["weight_zero_point"] = ct_pack_to_int32(zp, bits, packed_dim=0)
    return tensors, ref, {"max_err_over_scale": err, "groups": ng}


# --------------------------------------------------------------------------
# quantization_config blocks
# --------------------------------------------------------------------------

CT_VERSION = "0.20.0"


def awq_config(group_size, skipped):
    return {"quant_method": "awq", "zero_point": True, "group_size": group_size, "bits": 4,
            "version": "gemm", "modules_to_not_convert": list(skipped) or None}


def gptq_config(bits, group_size, sym, desc_act, checkpoint_format):
    return {
        "bits": bits, "group_size": group_size, "desc_act": desc_act, "sym": sym, "lm_head": False,
        "damp_percent": 0.01, "damp_auto_increment": 0.0025, "static_groups": False,
        "true_sequential": True, "mse": 0.0, "quant_method": "gptq",
        "checkpoint_format": checkpoint_format, "format": checkpoint_format, "pack_dtype": "int32",
        "model_name_or_path": None, "model_file_base_name": None,
        "meta": {"quantizer": ["tessera-quant-reference:rtn"], "damp_percent": 0.01,
                 "damp_auto_increment": 0.0025, "static_groups": False, "true_sequential": True, "mse": 0.0},
    }


def ct_config(bits, group_size, sym, skipped):
    weights = {"num_bits": bits, "type": "int", "symmetric": sym,
               "group_size": None if group_size == -1 else group_size,
               "strategy": "channel" if group_size == -1 else "group", "dynamic": False}
    return {
        "config_groups": {"group_0": {"format": "pack-quantized", "input_activations": None,
                                      "output_activations": None, "targets": ["Linear"], "weights": weights}},
        "format": "pack-quantized", "global_compression_ratio": None,
        "ignore": ["lm_head"] + list(skipped), "kv_cache_scheme": None, "moe_sparsity_config": None,
        "quant_method": "compressed-tensors", "quantization_status": "compressed",
        "sparsity_config": {}, "transform_config": {}, "version": CT_VERSION,
    }


# --------------------------------------------------------------------------
# quantize a checkpoint
# --------------------------------------------------------------------------

METHODS = ("awq", "gptq", "compressed-tensors")


def _copy_side_files(hf_dir, out_dir):
    for entry in sorted(os.listdir(hf_dir)):
        src = os.path.join(hf_dir, entry)
        if entry == "config.json" or WEIGHT_FILE_RE.search(entry):
            continue
        dst = os.path.join(out_dir, entry)
        if os.path.isdir(src):
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif os.path.isfile(src):
            shutil.copyfile(src, dst)


def _quantize_loaded(hf_dir, config, tensors, out_dir, method, bits=4, group_size=128, sym=False,
                     desc_act=False, checkpoint_format="gptq", reference_out=None, scale_dtype=None,
                     skip_indivisible=False):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if group_size != -1 and group_size <= 0:
        raise ValueError("group_size must be positive or -1")
    if method == "awq" and (bits != 4 or sym):
        raise ValueError("AWQ GEMM: 4-bit with zero point only (no --sym)")
    if method == "gptq" and checkpoint_format not in ("gptq", "gptq_v2"):
        raise ValueError("checkpoint_format must be gptq or gptq_v2")
    if method != "gptq" and desc_act:
        raise ValueError("--desc-act is GPTQ only")
    os.makedirs(out_dir, exist_ok=True)
    modules = set(decoder_linears(tensors))
    out_tensors, refs, stats, skipped = {}, {}, {}, []
    for name in sorted(tensors):
        t = tensors[name]
        mod = name[:-len(".weight")] if name.endswith(".weight") else None
        if mod not in modules:
            out_tensors[name] = t
            continue
        W = np.ascontiguousarray(t.to_f32())
        try:
            if method == "awq":
                q_t, ref, st = quantize_awq_module(W, bits, group_size)
            elif method == "gptq":
                q_t, ref, st = quantize_gptq_module(W, bits, group_size, sym, desc_act, checkpoint_format)
            else:
                sd = _SCALE_DTYPES[scale_dtype] if scale_dtype else (t.dtype if t.dtype in ("F16", "BF16", "F32") else "F16")
                q_t, ref, st = quantize_ct_module(W, bits, group_size, sym, sd)
        except SkipModule as e:
            if not skip_indivisible:
                raise ValueError(f"{mod}: {e}") from None
            skipped.append(mod)
            out_tensors[name] = t
            continue
        for suffix, v in q_t.items():
            out_tensors[f"{mod}.{suffix}"] = v
        refs[f"{mod}.weight"] = ref
        stats[mod] = st
    if not refs:
        raise ValueError("no decoder linear was quantized")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), out_tensors)
    if method == "awq":
        qc = awq_config(group_size, skipped)
    elif method == "gptq":
        qc = gptq_config(bits, group_size, sym, desc_act, checkpoint_format)
    else:
        qc = ct_config(bits, group_size, sym, skipped)
    cfg = dict(config)
    cfg["quantization_config"] = qc
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    _copy_side_files(hf_dir, out_dir)
    if reference_out:
        write_safetensors(reference_out, refs, metadata={"format": "pt", "producer": "tessera quant_formats reference"})
    errs = [s["max_err_over_scale"] for s in stats.values()]
    summary = {"method": method, "bits": bits, "group_size": group_size, "sym": sym, "desc_act": desc_act,
               "checkpoint_format": checkpoint_format if method == "gptq" else None,
               "quantized": len(stats), "skipped": skipped, "max_err_over_scale": max(errs),
               "modules": stats}
    if method == "gptq":
        summary["zero_points_equal_0"] = sum(s["zero_points_equal_0"] for s in stats.values())
    return summary, refs


def quantize(hf_dir, out_dir, method, bits=4, group_size=128, sym=False, desc_act=False,
             checkpoint_format="gptq", seed=0, reference_out=None, scale_dtype=None, skip_indivisible=False):
    """Quantize every decoder linear of the dense HF checkpoint in hf_dir (RTN) and write it to out_dir
    in the on-disk layout of `method`.  seed is accepted for interface stability; RTN and the act-order
    permutation are deterministic and do not use it.  Returns a summary dict (per-module max |w - w_q| / scale)."""
    del seed
    config, tensors = load_checkpoint(hf_dir)
    summary, _ = _quantize_loaded(hf_dir, config, tensors, out_dir, method, bits, group_size, sym, desc_act,
                                  checkpoint_format, reference_out, scale_dtype, skip_indivisible)
    return summary


# --------------------------------------------------------------------------
# dequantizer (from the published unpack / dequant code; shares nothing with the packers above)
# --------------------------------------------------------------------------

AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]  # awq/utils/packing_utils.py


def awq_unpack_reorder(packed, bits=4):
    """unpack_awq + reverse_awq_order: int32 [R, C/8] -> codes [R, C] in natural column order."""
    u = np.asarray(packed).view(np.uint32)
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    fields = (u[:, :, None] >> shifts[None, None, :]) & np.uint32((1 << bits) - 1)
    fields = fields.reshape(u.shape[0], -1).astype(np.int32)
    order = np.arange(fields.shape[1]).reshape(-1, 32 // bits)[:, AWQ_REVERSE_ORDER].reshape(-1)
    return fields[:, order]


def dequant_awq(t, qc):
    bits = int(qc.get("bits", qc.get("w_bit", 4)))
    if bits != 4:
        raise ValueError("AWQ GEMM is 4-bit only")
    if not qc.get("zero_point", True):
        raise ValueError("AWQ without zero point is not a GEMM checkpoint")
    iweight = awq_unpack_reorder(t["qweight"].data, bits)       # [in, out]
    izeros = awq_unpack_reorder(t["qzeros"].data, bits)          # [ng, out]
    scales = t["scales"].to_f32()                                 # [ng, out]
    in_f = iweight.shape[0]
    gs = int(qc.get("group_size", qc.get("q_group_size", 128)))
    gs = in_f if gs == -1 else gs
    g = np.arange(in_f) // gs
    w = scales[g, :] * (iweight - izeros[g, :]).astype(np.float32)
    return np.ascontiguousarray(w.T)


def dequant_gptq(t, qc):
    bits = int(qc["bits"])
    if bits not in (2, 4, 8):
        raise ValueError("GPTQ bits 2, 4 or 8")
    fmt = qc.get("checkpoint_format") or qc.get("format") or "gptq"
    pf = 32 // bits
    mask = np.uint32((1 << bits) - 1)
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    qweight = np.asarray(t["qweight"].data).view(np.uint32)      # [in/pf, out]
    qzeros = np.asarray(t["qzeros"].data).view(np.uint32)        # [ng, out/pf]
    scales = t["scales"].to_f32()                                 # [ng, out]
    out_f = scales.shape[1]
    if fmt == "gptq":
        # v1 stores zero - 1; GPTQModel's convert_gptq_v1_to_v2_format_module adds 1 to every field
        # with one addition on the whole word (0x11..., 0x0101...), mod 2^32.
        qzeros = qzeros + np.uint32(sum(1 << (bits * j) for j in range(pf)))
    elif fmt != "gptq_v2":
        raise ValueError(f"unknown GPTQ checkpoint_format {fmt!r}")
    iweight = ((qweight[:, None, :] >> shifts[None, :, None]) & mask).reshape(-1, qweight.shape[1])
    izeros = ((qzeros[:, :, None] >> shifts[None, None, :]) & mask).reshape(qzeros.shape[0], -1)[:, :out_f]
    if "g_idx" in t:
        g_idx = np.asarray(t["g_idx"].data).astype(np.int64)
        in_f = g_idx.shape[0]
    else:
        in_f = iweight.shape[0]
        gs = int(qc.get("group_size", 128))
        g_idx = np.arange(in_f) // (in_f if gs == -1 else gs)
    iweight = iweight[:in_f].astype(np.int32)
    izeros = izeros.astype(np.int32)
    w = scales[g_idx, :] * (iweight - izeros[g_idx, :]).astype(np.float32)
    return np.ascontiguousarray(w.T)


def ct_unpack_from_int32(packed, num_bits, shape, packed_dim=1):
    """unpack_from_int32: element e of a row from global bit e*num_bits (words may be split across two
    int32 for odd widths), minus 2^(num_bits-1) -> signed codes of `shape`."""
    u = np.asarray(packed).view(np.uint32)
    if packed_dim == 0:
        u = u.T
    cols = int(shape[packed_dim])
    e = np.arange(cols)
    start = e * num_bits
    word = start // 32
    off = (start % 32).astype(np.uint32)
    lo_bits = np.minimum(32 - off.astype(np.int64), num_bits)
    lo_mask = ((np.int64(1) << lo_bits) - 1).astype(np.uint32)
    val = (u[:, word] >> off[None, :]) & lo_mask[None, :]
    spill = lo_bits < num_bits
    if np.any(spill):
        hi = (num_bits - lo_bits[spill]).astype(np.int64)
        part = (u[:, word[spill] + 1] & ((np.int64(1) << hi) - 1).astype(np.uint32)[None, :])
        val[:, spill] |= part << lo_bits[spill].astype(np.uint32)[None, :]
    q = val.astype(np.int32) - (1 << (num_bits - 1))
    return q.T if packed_dim == 0 else q


def _ct_scheme_for(module, qc):
    """The weights args of the config group whose targets match `module` (names, 're:' patterns, 'Linear')."""
    groups = qc.get("config_groups") or {}
    fallback = None
    for scheme in groups.values():
        targets = scheme.get("targets") or []
        for tgt in targets:
            if tgt.startswith("re:") and re.match(tgt[3:], module):
                return scheme["weights"]
            if tgt == module:
                return scheme["weights"]
            if tgt == "Linear" and fallback is None:
                fallback = scheme["weights"]
    if fallback is None:
        raise ValueError(f"no config group targets {module}")
    return fallback


def dequant_ct(t, qc, module):
    fmt = qc.get("format")
    args = _ct_scheme_for(module, qc)
    if args.get("type", "int") != "int":
        raise ValueError("only integer pack-quantized weights")
    if fmt not in ("pack-quantized", "mixed-precision", None):
        raise ValueError(f"compressed-tensors format {fmt!r} is not pack-quantized")
    bits = int(args["num_bits"])
    shape = [int(x) for x in np.asarray(t["weight_shape"].data).reshape(-1)]
    out_f, in_f = shape
    q = ct_unpack_from_int32(t["weight_packed"].data, bits, shape, packed_dim=1)   # [out, in]
    scale = t["weight_scale"].to_f32().reshape(out_f, -1)                          # [out, ng]
    ng = scale.shape[1]
    if args.get("symmetric", True):
        zp = np.zeros((out_f, ng), dtype=np.int32)
    else:
        zp = ct_unpack_from_int32(t["weight_zero_point"].data, bits, (out_f, ng), packed_dim=0)
    strategy = args.get("strategy")
    if strategy == "channel" or ng == 1:
        g = np.zeros(in_f, dtype=np.int64)
    elif strategy == "group":
        g = np.arange(in_f) // int(args["group_size"])
    else:
        raise ValueError(f"strategy {strategy!r} not handled")
    return scale[:, g] * (q - zp[:, g]).astype(np.float32)


def dequantize(q_dir):
    """{"<module>.weight": float32 [out, in]} for every quantized module of the checkpoint in q_dir."""
    config, tensors = load_checkpoint(q_dir)
    qc = config.get("quantization_config")
    if not qc:
        raise ValueError("config.json has no quantization_config")
    method = qc.get("quant_method")
    out = {}
    if method in ("awq", "gptq"):
        marker = ".qweight"
    elif method == "compressed-tensors":
        marker = ".weight_packed"
    else:
        raise ValueError(f"quant_method {method!r} not handled")
    for name in sorted(tensors):
        if not name.endswith(marker):
            continue
        mod = name[:-len(marker)]
        sub = {k[len(mod) + 1:]: v for k, v in tensors.items() if k.startswith(mod + ".") and "." not in k[len(mod) + 1:]}
        if method == "awq":
            w = dequant_awq(sub, qc)
        elif method == "gptq":
            w = dequant_gptq(sub, qc)
        else:
            w = dequant_ct(sub, qc, mod)
        out[f"{mod}.weight"] = w.astype(np.float32, copy=False)
    return out


# --------------------------------------------------------------------------
# the named test set
# --------------------------------------------------------------------------

TEST_SET = {
    "awq-g128": dict(method="awq", bits=4, group_size=128),
    "awq-g32": dict(method="awq", bits=4, group_size=32),
    "gptq-b4-g128-sym": dict(method="gptq", bits=4, group_size=128, sym=True),
    "gptq-b4-g128-asym": dict(method="gptq", bits=4, group_size=128, sym=False),
    "gptq-b4-g32-actorder-asym": dict(method="gptq", bits=4, group_size=32, sym=False, desc_act=True),
    "gptq-b4-gm1-sym": dict(method="gptq", bits=4, group_size=-1, sym=True),
    "gptq-b8-g128-sym": dict(method="gptq", bits=8, group_size=128, sym=True),
    "gptq-b8-g64-asym-actorder": dict(method="gptq", bits=8, group_size=64, sym=False, desc_act=True),
    "gptq-v2-b4-g128-asym": dict(method="gptq", bits=4, group_size=128, sym=False, checkpoint_format="gptq_v2"),
    "ct-w4a16-g128-sym": dict(method="compressed-tensors", bits=4, group_size=128, sym=True),
    "ct-w4a16-g128-asym": dict(method="compressed-tensors", bits=4, group_size=128, sym=False),
    "ct-w8a16-channel-sym": dict(method="compressed-tensors", bits=8, group_size=-1, sym=True),
}


def make_test_set(hf_dir, out_root, names=None):
    """Write ROOT/<name>/ and ROOT/<name>.reference.safetensors for every TEST_SET variant, plus
    ROOT/manifest.json (parameters, modules left dense, max |w - w_q| / scale).  Modules an AWQ or
    compressed-tensors group size cannot hold (in_features not a multiple of it) stay dense and are
    listed in the checkpoint's config (modules_to_not_convert / ignore); GPTQ writes a partial last group."""
    config, tensors = load_checkpoint(hf_dir)
    os.makedirs(out_root, exist_ok=True)
    manifest = {}
    for name in (names or TEST_SET):
        params = dict(TEST_SET[name])
        summary, _ = _quantize_loaded(hf_dir, config, tensors, os.path.join(out_root, name),
                                      reference_out=os.path.join(out_root, f"{name}.reference.safetensors"),
                                      skip_indivisible=True, **params)
        summary.pop("modules")
        manifest[name] = summary
    with open(os.path.join(out_root, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return manifest


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize", help="dense HF checkpoint -> AWQ / GPTQ / compressed-tensors (RTN)")
    q.add_argument("--in", dest="inp", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--method", required=True, choices=METHODS)
    q.add_argument("--bits", type=int, default=4, choices=(4, 8))
    q.add_argument("--group-size", type=int, default=128)
    q.add_argument("--sym", action="store_true")
    q.add_argument("--desc-act", action="store_true")
    q.add_argument("--checkpoint-format", default="gptq", choices=("gptq", "gptq_v2"))
    q.add_argument("--scale-dtype", choices=("f16", "bf16", "f32"), default=None,
                   help="compressed-tensors weight_scale dtype (default: the weight's dtype)")
    q.add_argument("--skip-indivisible", action="store_true",
                   help="leave modules the format cannot hold dense instead of failing")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--reference-out")
    d = sub.add_parser("dequantize", help="quantized checkpoint -> float32 weights [out, in]")
    d.add_argument("--in", dest="inp", required=True)
    d.add_argument("--out", required=True)
    m = sub.add_parser("make-test-set", help="write the named variants the C++ tests load")
    m.add_argument("--in", dest="inp", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--only", nargs="*", choices=sorted(TEST_SET))
    a = ap.parse_args(argv)
    try:
        if a.cmd == "quantize":
            s = quantize(a.inp, a.out, a.method, bits=a.bits, group_size=a.group_size, sym=a.sym,
                         desc_act=a.desc_act, checkpoint_format=a.checkpoint_format, seed=a.seed,
                         reference_out=a.reference_out, scale_dtype=a.scale_dtype,
                         skip_indivisible=a.skip_indivisible)
            s.pop("modules")
            print(json.dumps(s, sort_keys=True))
        elif a.cmd == "dequantize":
            w = dequantize(a.inp)
            write_safetensors(a.out, w)
            print(json.dumps({"modules": len(w)}))
        else:
            print(json.dumps(make_test_set(a.inp, a.out, a.only), sort_keys=True))
    except (ValueError, OSError, KeyError) as e:
        print(f"quant_formats: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the GGUF <-> Hugging Face checkpoint converters
(gguf_to_hf.py, hf_to_gguf.py): reading a GGUF with gguf-py and dequantizing
its tensors to float32, the tensor-name map between llama.cpp's GGUF names and
transformers' Llama/Qwen2 module names, llama.cpp's q/k row permutation and its
inverse, float32 -> bfloat16 rounding, a safetensors reader/writer (numpy only;
BF16 included) and an all-F32 GGUF writer that copies a model's metadata.

Written after the published code, not copied from it: llama.cpp's
convert_hf_to_gguf.py (LlamaModel.permute; the tensor names of
gguf-py/gguf/tensor_mapping.py and constants.py), gguf-py's GGUFReader /
GGUFWriter / quants.dequantize, the safetensors file format (8-byte
little-endian header length, JSON header, raw data) and transformers'
save_pretrained layout (model.safetensors or model-0000K-of-0000N.safetensors
+ model.safetensors.index.json).
"""
from __future__ import annotations

import json
import os
import re
import struct
import sys
from typing import Callable, Iterable

import numpy as np

import gguf

SUPPORTED_ARCHS = ("llama", "qwen2")
# Architectures whose GGUF q/k rows llama.cpp's converter permutes (LlamaModel.permute):
# llama.cpp applies its "normal" (interleaved-pair) rope to them, HF the half-split one.
PERMUTED_ARCHS = ("llama",)

HF_ARCH = {"llama": ("LlamaForCausalLM", "llama"), "qwen2": ("Qwen2ForCausalLM", "qwen2")}

# GGUF block-tensor stem -> HF module path inside model.layers.{i}
_BLOCK_MAP = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_MAP_INV = {v: k for k, v in _BLOCK_MAP.items()}
_GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GLOBAL_MAP_INV = {v: k for k, v in _GLOBAL_MAP.items()}

# HF state-dict order within a decoder layer (the order of the modules in
# LlamaDecoderLayer / Qwen2DecoderLayer's named_parameters()).
HF_LAYER_ORDER = [
    "self_attn.q_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.weight", "self_attn.k_proj.bias",
    "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.o_proj.weight", "self_attn.o_proj.bias",
    "mlp.gate_proj.weight", "mlp.gate_proj.bias",
    "mlp.up_proj.weight", "mlp.up_proj.bias",
    "mlp.down_proj.weight", "mlp.down_proj.bias",
    "input_layernorm.weight", "post_attention_layernorm.weight",
]


class ConversionError(Exception):
    """A model the converters refuse, with a message for the user."""


def hf_name(gguf_tensor: str) -> str | None:
    """llama.cpp tensor name -> transformers parameter name (None: no HF counterpart)."""
    if gguf_tensor in _GLOBAL_MAP:
        return _GLOBAL_MAP[gguf_tensor]
    m = re.fullmatch(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)", gguf_tensor)
    if m and m.group(2) in _BLOCK_MAP:
        return f"model.layers.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}.{m.group(3)}"
    return None


def gguf_name(hf_tensor: str) -> str | None:
    """transformers parameter name -> llama.cpp tensor name (None: unknown)."""
    if hf_tensor in _GLOBAL_MAP_INV:
        return _GLOBAL_MAP_INV[hf_tensor]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf_tensor)
    if m and m.group(2) in _BLOCK_MAP_INV:
        return f"blk.{m.group(1)}.{_BLOCK_MAP_INV[m.group(2)]}.{m.group(3)}"
    return None


# --- llama.cpp's q/k row permutation ------------------------------------------------
#
# convert_hf_to_gguf.py (LlamaModel.permute) reorders the rows of q_proj / k_proj
# (weights and biases) of every head so that the two rotary halves interleave:
#     GGUF row  h*hd + 2*i + s   ==   HF row  h*hd + s*(hd/2) + i
# for head h, i in [0, hd/2), s in {0, 1} (hd = rows / n_head; n_head is the
# query head count for q and the kv head count for k).

def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF half-split row order -> llama.cpp interleaved order (what the converter does)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"cannot permute {rows} rows over {n_head} heads")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp interleaved row order -> HF half-split order (the exact inverse of permute_qk)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"cannot permute {rows} rows over {n_head} heads")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qk_heads(hf_tensor: str, n_head: int, n_head_kv: int) -> int | None:
    """The head count the permutation of this tensor uses, or None if it is not permuted."""
    if re.search(r"\.self_attn\.q_proj\.(weight|bias)$", hf_tensor):
        return n_head
    if re.search(r"\.self_attn\.k_proj\.(weight|bias)$", hf_tensor):
        return n_head_kv
    return None


# --- bfloat16 -------------------------------------------------------------------------

def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays a quiet NaN."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


# --- safetensors -----------------------------------------------------------------------

_ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "F64": (np.float64, 8)}


def encode_tensor(a: np.ndarray, dtype: str) -> tuple[str, np.ndarray]:
    """float array -> (safetensors dtype, array whose bytes are the stored data)."""
    a = np.asarray(a)
    if dtype == "F32":
        return "F32", np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F16":
        return "F16", np.ascontiguousarray(a.astype(np.float32, copy=False).astype(np.float16))
    if dtype == "BF16":
        return "BF16", f32_to_bf16_bits(a.astype(np.float32, copy=False))
    raise ValueError(dtype)


def write_safetensors(path: str, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None = None):
    """tensors: name -> (safetensors dtype, data array). F16/F32 go through the safetensors
    package; a file with BF16 is written by hand in the same layout (header padded with
    spaces to a multiple of 8, data in order of name)."""
    metadata = {"format": "pt"} if metadata is None else metadata
    if all(dt in ("F32", "F16") for dt, _ in tensors.values()):
        from safetensors.numpy import save_file
        save_file({n: a for n, (_, a) in tensors.items()}, path, metadata=metadata)
        _normal_mode(path)
        return
    header: dict = {"__metadata__": metadata}
    offset = 0
    names = sorted(tensors)
    for n in names:
        dt, a = tensors[n]
        nbytes = a.nbytes
        header[n] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for n in names:
            f.write(np.ascontiguousarray(tensors[n][1]).tobytes())
    _normal_mode(path)


def _normal_mode(path: str) -> None:
    """safetensors creates its files 0600; give them the mode any other file gets."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_safetensors_header(path: str) -> tuple[dict, int]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return header, 8 + n


class SafetensorsFile:
    """A memory-mapped safetensors file; tensors come back as float32 (F16 / BF16 widened exactly)."""

    def __init__(self, path: str):
        self.path = path
        self.header, self.data_start = read_safetensors_header(path)
        self.header.pop("__metadata__", None)
        self._mm = np.memmap(path, dtype=np.uint8, mode="r")

    def names(self) -> list[str]:
        return list(self.header)

    def dtype(self, name: str) -> str:
        return self.header[name]["dtype"]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def raw(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in _ST_DTYPES:
            raise ConversionError(f"{self.path}: tensor {name} has dtype {info['dtype']}; only F32/F16/BF16 are read")
        np_dtype, _ = _ST_DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        return self._mm[self.data_start + a:self.data_start + b].view(np_dtype).reshape(info["shape"])

    def float32(self, name: str) -> np.ndarray:
        raw = self.raw(name)
        if self.dtype(name) == "BF16":
            return bf16_bits_to_f32(raw)
        return raw.astype(np.float32)


class HFCheckpoint:
    """The weights of an HF directory: model.safetensors, or the shards listed in
    model.safetensors.index.json."""

    def __init__(self, hf_dir: str):
        self.dir = hf_dir
        index = os.path.join(hf_dir, "model.safetensors.index.json")
        single = os.path.join(hf_dir, "model.safetensors")
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if os.path.exists(index):
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            for name, fname in weight_map.items():
                if fname not in self.files:
                    self.files[fname] = SafetensorsFile(os.path.join(hf_dir, fname))
                if name not in self.files[fname].header:
                    raise ConversionError(f"{index} maps {name} to {fname}, which lacks it")
                self.where[name] = fname
        elif os.path.exists(single):
            self.files["model.safetensors"] = SafetensorsFile(single)
            self.where = {n: "model.safetensors" for n in self.files["model.safetensors"].names()}
        else:
            raise ConversionError(f"{hf_dir}: neither model.safetensors nor model.safetensors.index.json")

    def names(self) -> list[str]:
        return list(self.where)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def file_of(self, name: str) -> SafetensorsFile:
        return self.files[self.where[name]]

    def float32(self, name: str) -> np.ndarray:
        return self.file_of(name).float32(name)


# --- GGUF ------------------------------------------------------------------------------

class GGUFModel:
    """A GGUF file read with gguf-py: metadata as Python values, tensors dequantized
    to float32 in numpy order (the GGUF ne reversed: [out_features, in_features]).
    cache=True keeps dequantized tensors for repeated conversions of one model."""

    def __init__(self, path: str, cache: bool = False):
        self.path = path
        self.reader = gguf.GGUFReader(path)
        self.arch = self.get("general.architecture")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def get(self, key: str, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            return default
        return f.contents()

    def arch_get(self, key: str, default=None):
        return self.get(f"{self.arch}.{key}", default)

    def tensor_names(self) -> list[str]:
        return [t.name for t in self.reader.tensors]

    def shape(self, name: str) -> tuple[int, ...]:
        """numpy order: reversed GGUF ne."""
        return tuple(int(x) for x in reversed(self.tensors[name].shape))

    def float32(self, name: str) -> np.ndarray:
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        t = self.tensors[name]
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        a = np.ascontiguousarray(a, dtype=np.float32).reshape(self.shape(name))
        if self._cache is not None:
            self._cache[name] = a
        return a

    def hparams(self) -> dict:
        """The transformer shape the converters need."""
        if self.arch not in SUPPORTED_ARCHS:
            raise ConversionError(f"{self.path}: architecture {self.arch!r} is not supported "
                                  f"(supported: {', '.join(SUPPORTED_ARCHS)})")
        need = ["embedding_length", "block_count", "feed_forward_length", "attention.head_count",
                "attention.layer_norm_rms_epsilon", "context_length"]
        for k in need:
            if not self.has(f"{self.arch}.{k}"):
                raise ConversionError(f"{self.path}: metadata key {self.arch}.{k} is missing")
        n_embd = int(self.arch_get("embedding_length"))
        n_head = int(self.arch_get("attention.head_count"))
        n_head_kv = int(self.arch_get("attention.head_count_kv", n_head))
        head_dim = int(self.arch_get("attention.key_length", n_embd // n_head))
        rot = int(self.arch_get("rope.dimension_count", head_dim))
        if rot != head_dim:
            raise ConversionError(f"{self.path}: partial rotary embedding (rope.dimension_count {rot} != head "
                                  f"dim {head_dim}) has no Llama/Qwen2 config equivalent")
        if "rope_freqs.weight" in self.tensors:
            raise ConversionError(f"{self.path}: has rope_freqs.weight (Llama 3.1-style rope scaling factors); "
                                  "its HF rope_scaling parameters cannot be recovered")
        return {
            "n_embd": n_embd,
            "n_layer": int(self.arch_get("block_count")),
            "n_ff": int(self.arch_get("feed_forward_length")),
            "n_head": n_head,
            "n_head_kv": n_head_kv,
            "head_dim": head_dim,
            "eps": float(self.arch_get("attention.layer_norm_rms_epsilon")),
            "n_ctx": int(self.arch_get("context_length")),
            "rope_theta": float(self.arch_get("rope.freq_base", 10000.0)),
            "vocab_size": self.shape("token_embd.weight")[0],
        }


# --- writing an all-F32 GGUF ---------------------------------------------------------------

_SKIP_KEYS = ("general.architecture", "general.alignment", "general.file_type")


def copy_metadata(writer: "gguf.GGUFWriter", model: GGUFModel) -> None:
    """Every key/value of `model` except the GGUF.* header pseudo-fields, the architecture
    (the writer adds it) and the alignment; general.file_type is set to ALL_F32."""
    VT = gguf.GGUFValueType
    wrote_file_type = False
    for key, field in model.reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key == "general.file_type":
            writer.add_uint32(key, int(gguf.LlamaFileType.ALL_F32))
            wrote_file_type = True
            continue
        if key in _SKIP_KEYS:
            continue
        vtype = field.types[0]
        if vtype == VT.ARRAY:
            if len(field.types) != 2:
                raise ConversionError(f"{model.path}: nested array metadata {key} is not supported")
            val = field.contents()
            if len(val) == 0:
                print(f"warning: dropping empty array metadata {key}", file=sys.stderr)
                continue
            writer.add_key_value(key, val, vtype, sub_type=field.types[1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    if not wrote_file_type:
        writer.add_uint32("general.file_type", int(gguf.LlamaFileType.ALL_F32))


def write_f32_gguf_from(model: GGUFModel, out_path: str,
                        tensors: Iterable[tuple[str, Callable[[], np.ndarray]]]) -> None:
    """Writes `out_path`: the metadata of `model` (file type ALL_F32) and the given
    (GGUF name, float32 array in numpy order) tensors, in that order, all F32."""
    writer = gguf.GGUFWriter(out_path, model.arch)
    copy_metadata(writer, model)
    for name, load in tensors:
        a = np.ascontiguousarray(load(), dtype=np.float32)
        writer.add_tensor(name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_dequantized_gguf(gguf_path: str | GGUFModel, out_path: str) -> None:
    """The direct path, no HF in between: every tensor of a GGUF dequantized to F32,
    same names, order and metadata. hf_to_gguf(gguf_to_hf(m, dtype=f32)) must equal it."""
    model = gguf_path if isinstance(gguf_path, GGUFModel) else GGUFModel(gguf_path)
    write_f32_gguf_from(model, out_path, [(n, (lambda n=n: model.float32(n))) for n in model.tensor_names()])


_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_tensor_table(path: str) -> dict[str, tuple[int, tuple[int, ...], int]]:
    """A quick look at a GGUF's tensor table without gguf-py's full metadata parse (which
    is slow on 50k-token vocabularies): name -> (ggml type, shape in numpy order, absolute
    data offset). For tests and checks."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(mm)
    if bytes(buf[:4]) != b"GGUF":
        raise ConversionError(f"{path}: not a GGUF file")
    _, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24
    alignment = 32

    def read_str(p):
        (n,) = struct.unpack_from("<Q", buf, p)
        return bytes(buf[p + 8:p + 8 + n]).decode("utf-8"), p + 8 + n

    def skip_value(p, vtype):
        if vtype in _GGUF_SCALAR:
            return p + struct.calcsize("<" + _GGUF_SCALAR[vtype])
        if vtype == 8:
            (n,) = struct.unpack_from("<Q", buf, p)
            return p + 8 + n
        if vtype == 9:
            sub, count = struct.unpack_from("<IQ", buf, p)
            p += 12
            if sub in _GGUF_SCALAR:
                return p + count * struct.calcsize("<" + _GGUF_SCALAR[sub])
            for _ in range(count):
                p = skip_value(p, sub)
            return p
        raise ConversionError(f"{path}: unknown metadata type {vtype}")

    for _ in range(n_kv):
        key, pos = read_str(pos)
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", buf, pos)
        pos = skip_value(pos, vtype)
    infos = []
    for _ in range(n_tensors):
        name, pos = read_str(pos)
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        ne = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        ttype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        infos.append((name, ttype, tuple(int(x) for x in reversed(ne)), offset))
    start = (pos + alignment - 1) // alignment * alignment
    return {name: (ttype, shape, start + off) for name, ttype, shape, off in infos}


def gguf_f32_tensor(path: str, entry: tuple[int, tuple[int, ...], int]) -> np.ndarray:
    """An F32 tensor located by gguf_tensor_table, memory-mapped."""
    ttype, shape, offset = entry
    if ttype != int(gguf.GGMLQuantizationType.F32):
        raise ConversionError(f"{path}: tensor type {ttype} is not F32")
    return np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=shape)


def float_repr32(x: float) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(x)))

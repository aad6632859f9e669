"""Writes the GGUF fuzzing seed corpus: small, valid files of several shapes,
and hostile ones written field by field (names and sizes the parser must
refuse with a message, never wrap or print raw).

Run from the repository root with the project's virtualenv:
    .venv/bin/python tests/fuzz/make_corpus.py
"""
import os
import sys
import struct

import numpy as np
import gguf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from gguf_bytes import raw_gguf  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "corpus", "gguf")


def write(name, build):
    path = os.path.join(OUT, name)
    w = gguf.GGUFWriter(path, arch="llama")
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def metadata(w):
    w.add_uint8("t.u8", 1)
    w.add_int8("t.i8", -1)
    w.add_uint16("t.u16", 2)
    w.add_int16("t.i16", -2)
    w.add_uint32("t.u32", 3)
    w.add_int32("t.i32", -3)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 4)
    w.add_int64("t.i64", -4)
    w.add_float64("t.f64", 2.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.arr_str", ["a", "bc", ""])
    w.add_array("t.arr_int", [1, 2, 3])
    w.add_array("t.nested", [[1, 2], [3]])


def tensors(w):
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((2, 32)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 32)).astype(np.float16))
    q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q8", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    q = gguf.quants.quantize(rng.standard_normal((1, 32)).astype(np.float32), gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("q4", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)


ONE = struct.pack("<I", 1)
HOSTILE = {
    "hostile_empty_key.gguf": raw_gguf(kv=[(b"", 4, ONE)]),
    "hostile_nul_key.gguf": raw_gguf(kv=[(b"gen\0\x1b[2Jeral", 4, ONE)]),
    "hostile_invalid_utf8_key.gguf": raw_gguf(kv=[(b"k\xff\xc0\xaf\xed\xa0\x80", 4, ONE)]),
    "hostile_long_tensor_name.gguf": raw_gguf(tensors=[(b"n" * 64, [8], 0, 0)], data=bytes(32)),
    "hostile_nul_tensor_name.gguf": raw_gguf(tensors=[(b"a\0\x1b]0;x\x07", [8], 0, 0)], data=bytes(32)),
    "hostile_wrapping_offset.gguf": raw_gguf(tensors=[(b"t", [32], 0, 2**64 - 32)], data=bytes(128)),
    "hostile_wrapping_array.gguf": raw_gguf(kv=[(b"a", 9, struct.pack("<IQ", 10, 2**61))]),
    "hostile_wrapping_tensor_bytes.gguf": raw_gguf(tensors=[(b"t", [2**31, 2**31], 0, 0)], data=bytes(32)),
    "hostile_wrapping_elements.gguf": raw_gguf(tensors=[(b"t", [2**40, 2**40], 0, 0)], data=bytes(32)),
}


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write("metadata_only.gguf", metadata)
    write("tensors_only.gguf", tensors)
    write("both.gguf", lambda w: (metadata(w), tensors(w)))
    with open(os.path.join(OUT, "both.gguf"), "rb") as f:
        data = f.read()
    with open(os.path.join(OUT, "truncated.gguf"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(OUT, "header_only.gguf"), "wb") as f:
        f.write(data[:24])
    for name, data in HOSTILE.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote", sorted(os.listdir(OUT)))

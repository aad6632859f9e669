"""GGUF v3 bytes written field by field, so that a test can build what no
writer library would produce (empty or NUL keys, long names, offsets and
counts that overflow). Used by the CLI error tests and the fuzz corpus."""
import struct


def raw_gguf(kv=(), tensors=(), data=b"", n_tensors=None):
    """kv: (key bytes, type id, value bytes); tensors: (name bytes, dims, ggml
    type, offset); n_tensors overrides the header's tensor count."""
    def string(b):
        return struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors, len(kv))
    for key, type_id, value in kv:
        out += string(key) + struct.pack("<I", type_id) + value
    for name, dims, ggml_type, offset in tensors:
        out += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
    out += b"\0" * (-len(out) % 32)
    return out + data

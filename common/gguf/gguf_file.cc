#include "common/gguf/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"
#include "common/utf8.h"

namespace tessera {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian

// Bounds-checked little-endian reader over the file image. Every read checks
// the remaining length first; errors carry the byte offset.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> b) : b_(b) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> ReadString(std::string_view what, uint64_t max_len) {
    TESSERA_ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    if (len > max_len) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: ", std::string(what), " at byte ", pos_ - 8,
                                                     " has length ", len, ", above the limit ",
                                                     max_len));
    }
    if (len > remaining()) return Truncated(what, len);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), len);
    pos_ += len;
    return s;
  }

  absl::Status Truncated(std::string_view what, uint64_t need) const {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: truncated file: ", std::string(what), " at byte ",
                                                   pos_, " needs ", need, " bytes, ",
                                                   remaining(), " left"));
  }

  // `count` items of at least `item_bytes` each do not fit in what is left.
  // The product is computed checked: a hostile count can make it wrap (2^61
  // x 8 is 0 in 64 bits), and the message then names the operands instead.
  absl::Status TruncatedItems(std::string_view what, uint64_t count, uint64_t item_bytes, bool at_least) const {
    uint64_t need = 0;
    if (__builtin_mul_overflow(count, item_bytes, &need)) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: truncated file: ", std::string(what), " at byte ", pos_,
                                                     " needs ", at_least ? "at least " : "", count, " x ", item_bytes,
                                                     " bytes, which overflows 64 bits"));
    }
    return absl::InvalidArgumentError(absl::StrCat("GGUF: truncated file: ", std::string(what), " at byte ", pos_,
                                                   " needs ", at_least ? "at least " : "", need, " bytes, ",
                                                   remaining(), " left"));
  }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

size_t ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    case GgufType::kString: return 8;   // at least the length prefix
    case GgufType::kArray: return 12;   // at least type + count
  }
  return 0;
}

bool KnownType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

class Parser {
 public:
  Parser(std::span<const uint8_t> b, const GgufLimits& limits) : c_(b), limits_(limits) {}
  Cursor& cursor() { return c_; }

  absl::StatusOr<GgufValue> ReadValue(GgufType type, int depth, uint64_t* budget) {
    switch (type) {
      case GgufType::kUint8: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<uint8_t>("u8 value")); return GgufValue::Unsigned(type, v); }
      case GgufType::kInt8: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<int8_t>("i8 value")); return GgufValue::Signed(type, v); }
      case GgufType::kUint16: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<uint16_t>("u16 value")); return GgufValue::Unsigned(type, v); }
      case GgufType::kInt16: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<int16_t>("i16 value")); return GgufValue::Signed(type, v); }
      case GgufType::kUint32: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<uint32_t>("u32 value")); return GgufValue::Unsigned(type, v); }
      case GgufType::kInt32: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<int32_t>("i32 value")); return GgufValue::Signed(type, v); }
      case GgufType::kUint64: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<uint64_t>("u64 value")); return GgufValue::Unsigned(type, v); }
      case GgufType::kInt64: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<int64_t>("i64 value")); return GgufValue::Signed(type, v); }
      case GgufType::kFloat32: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<float>("f32 value")); return GgufValue::Float(type, v); }
      case GgufType::kFloat64: { TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<double>("f64 value")); return GgufValue::Float(type, v); }
      case GgufType::kBool: {
        TESSERA_ASSIGN_OR_RETURN(auto v, c_.Read<uint8_t>("bool value"));
        if (v > 1) {
          return absl::InvalidArgumentError(absl::StrCat("GGUF: bool value at byte ", c_.pos() - 1, " is ", v));
        }
        return GgufValue::Bool(v != 0);
      }
      case GgufType::kString: {
        TESSERA_ASSIGN_OR_RETURN(auto s, c_.ReadString("string value", limits_.max_string_bytes));
        return GgufValue::String(std::move(s));
      }
      case GgufType::kArray: return ReadArray(depth, budget);
    }
    return absl::InvalidArgumentError("GGUF: unknown value type");
  }

 private:
  absl::StatusOr<GgufValue> ReadArray(int depth, uint64_t* budget) {
    if (depth >= limits_.max_array_depth) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: arrays nested deeper than ",
                                                     limits_.max_array_depth, " at byte ", c_.pos()));
    }
    TESSERA_ASSIGN_OR_RETURN(uint32_t elem_type, c_.Read<uint32_t>("array element type"));
    if (!KnownType(elem_type)) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: unknown array element type ", elem_type,
                                                     " at byte ", c_.pos() - 4));
    }
    TESSERA_ASSIGN_OR_RETURN(uint64_t count, c_.Read<uint64_t>("array length"));
    const GgufType et = static_cast<GgufType>(elem_type);
    // Every element occupies at least ScalarSize bytes, so a count that
    // cannot fit in what is left is rejected before anything is allocated.
    if (count > c_.remaining() / ScalarSize(et)) {
      return c_.TruncatedItems(absl::StrCat("array of ", count, " ", std::string(GgufTypeName(et))), count,
                               ScalarSize(et), /*at_least=*/et == GgufType::kString || et == GgufType::kArray);
    }
    if (count > *budget) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: array of ", count,
                                                     " elements exceeds the element limit ",
                                                     limits_.max_array_elements));
    }
    *budget -= count;
    auto arr = std::make_shared<GgufArray>();
    arr->element_type = et;
    arr->items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      TESSERA_ASSIGN_OR_RETURN(auto v, ReadValue(et, depth + 1, budget));
      arr->items.push_back(std::move(v));
    }
    return GgufValue::Array(std::move(arr));
  }

  Cursor c_;
  const GgufLimits& limits_;
};

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

// llama.cpp's gguf reader (ggml/src/gguf.cpp) refuses a tensor name of
// GGML_MAX_NAME (64) bytes or more: ggml_tensor::name holds 63 bytes and the
// terminator. A file it cannot load is refused here too.
constexpr size_t kGgufMaxTensorNameBytes = 63;

// Keys and tensor names. llama.cpp refuses empty keys and duplicate keys and
// tensor names (the callers check duplicates). Stricter than llama.cpp:
// empty tensor names, NULs and invalid UTF-8 are refused too. llama.cpp
// copies tensor names as C strings and compares keys with strcmp, so after
// a NUL the name it sees differs from the bytes in the file; and the GGUF
// spec makes strings UTF-8. `what` names the entry ("metadata key 3",
// "tensor 0 name"); the offending bytes appear escaped.
absl::Status CheckName(const std::string& what, const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat("GGUF: ", what, " is empty"));
  if (name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: ", what, " '", EscapeForMessage(name), "' contains a NUL byte"));
  }
  for (size_t i = 0; i < name.size();) {
    const int n = Utf8SequenceLength(name, i);
    if (n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF: ", what, " '", EscapeForMessage(name), "' is not valid UTF-8 (byte ", i, ")"));
    }
    i += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string JoinDims(const std::array<int64_t, kGgufMaxDims>& ne, uint32_t n, uint64_t last) {
  std::string out = "[";
  for (uint32_t d = 0; d < n; ++d) absl::StrAppend(&out, ne[d], ", ");
  absl::StrAppend(&out, last, "]");
  return out;
}

}  // namespace

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kUint8: return "uint8";
    case GgufType::kInt8: return "int8";
    case GgufType::kUint16: return "uint16";
    case GgufType::kInt16: return "int16";
    case GgufType::kUint32: return "uint32";
    case GgufType::kInt32: return "int32";
    case GgufType::kFloat32: return "float32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kUint64: return "uint64";
    case GgufType::kInt64: return "int64";
    case GgufType::kFloat64: return "float64";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path,
                                                         const GgufLimits& limits) {
  TESSERA_ASSIGN_OR_RETURN(auto mapping, MappedFile::Open(path));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->bytes_ = mapping->bytes();
  f->mapping_ = std::move(mapping);
  absl::Status s = f->Parse(limits);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(std::span<const uint8_t> bytes,
                                                               const GgufLimits& limits) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->bytes_ = bytes;
  TESSERA_RETURN_IF_ERROR(f->Parse(limits));
  return f;
}

absl::Status GgufFile::Parse(const GgufLimits& limits) {
  Parser p(bytes_, limits);
  Cursor& c = p.cursor();
  TESSERA_ASSIGN_OR_RETURN(uint32_t magic, c.Read<uint32_t>("magic"));
  if (magic != kGgufMagic) {
    return absl::InvalidArgumentError("not a GGUF file (bad magic)");
  }
  TESSERA_ASSIGN_OR_RETURN(version_, c.Read<uint32_t>("version"));
  if (version_ == 1) {
    return absl::InvalidArgumentError("GGUF version 1 is not supported (only 2 and 3)");
  }
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xFFFF) == 0 && ((version_ >> 24) == 2 || (version_ >> 24) == 3)) {
      return absl::InvalidArgumentError("big-endian GGUF files are not supported");
    }
    return absl::InvalidArgumentError(absl::StrCat("unsupported GGUF version ", version_));
  }
  TESSERA_ASSIGN_OR_RETURN(uint64_t n_tensors, c.Read<uint64_t>("tensor count"));
  TESSERA_ASSIGN_OR_RETURN(uint64_t n_kv, c.Read<uint64_t>("metadata count"));
  if (n_tensors > limits.max_tensors) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor count ", n_tensors,
                                                   " exceeds the limit ", limits.max_tensors));
  }
  if (n_kv > limits.max_kv) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata count ", n_kv,
                                                   " exceeds the limit ", limits.max_kv));
  }

  uint64_t element_budget = limits.max_array_elements;
  for (uint64_t i = 0; i < n_kv; ++i) {
    TESSERA_ASSIGN_OR_RETURN(std::string key, c.ReadString("metadata key", limits.max_key_bytes));
    TESSERA_RETURN_IF_ERROR(CheckName(absl::StrCat("metadata key ", i), key));
    TESSERA_ASSIGN_OR_RETURN(uint32_t type, c.Read<uint32_t>("metadata type"));
    if (!KnownType(type)) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: metadata key '", EscapeForMessage(key),
                                                     "' has unknown type ", type));
    }
    TESSERA_ASSIGN_OR_RETURN(GgufValue v, p.ReadValue(static_cast<GgufType>(type), 0, &element_budget));
    if (!metadata_.emplace(key, std::move(v)).second) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: duplicate metadata key '", EscapeForMessage(key), "'"));
    }
    key_order_.push_back(key);
  }

  if (const GgufValue* a = Find("general.alignment")) {
    if (a->type() != GgufType::kUint32) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: general.alignment must be uint32, got ",
                                                     std::string(GgufTypeName(a->type()))));
    }
    uint64_t al = a->as_unsigned();
    if (al == 0 || al % 8 != 0 || (al & (al - 1)) != 0 || al > (1u << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: general.alignment must be a power of two, a multiple of 8 and at most 1 MiB; got ", al));
    }
    alignment_ = static_cast<uint32_t>(al);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    TESSERA_ASSIGN_OR_RETURN(t.name, c.ReadString("tensor name", limits.max_key_bytes));
    if (t.name.size() > kGgufMaxTensorNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor ", i, " name is ", t.name.size(),
                                                     " bytes; llama.cpp's limit is ", kGgufMaxTensorNameBytes, ": '",
                                                     EscapeForMessage(t.name), "'"));
    }
    TESSERA_RETURN_IF_ERROR(CheckName(absl::StrCat("tensor ", i, " name"), t.name));
    TESSERA_ASSIGN_OR_RETURN(uint32_t n_dims, c.Read<uint32_t>("tensor dimension count"));
    if (n_dims < 1 || n_dims > kGgufMaxDims) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' has ", n_dims,
                                                     " dimensions; expected 1 to ", kGgufMaxDims));
    }
    t.n_dims = static_cast<int>(n_dims);
    // Dimensions and their product stay within int64 (GgufTensor's ne and
    // elements()); each failure says which bound, with the values read.
    constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      TESSERA_ASSIGN_OR_RETURN(uint64_t ne, c.Read<uint64_t>("tensor dimension"));
      if (ne == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' dimension ", d, " is zero"));
      }
      if (ne > kInt64Max) {
        return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' dimension ", d,
                                                       " is ", ne, ", above the int64 maximum ", kInt64Max));
      }
      if (MulOverflows(elements, ne, &elements) || elements > kInt64Max) {
        return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name),
                                                       "' has dimensions ", JoinDims(t.ne, d, ne),
                                                       ": their product overflows int64"));
      }
      t.ne[d] = static_cast<int64_t>(ne);
    }
    TESSERA_ASSIGN_OR_RETURN(uint32_t type, c.Read<uint32_t>("tensor type"));
    auto traits = IsFileType(type) ? TraitsOf(type) : std::nullopt;
    if (!traits) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name),
                                                     "' has unsupported type id ", type));
    }
    t.type = static_cast<GgmlType>(type);
    if (t.ne[0] % traits->block_elems != 0) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' of type ", std::string(traits->name),
                                                     " has row length ", t.ne[0],
                                                     ", not a multiple of its block size ",
                                                     traits->block_elems));
    }
    // Whole blocks (ne[0] is a multiple of block_elems, so elements is too).
    static_assert(sizeof(size_t) >= sizeof(uint64_t), "tensor sizes are 64-bit");
    const uint64_t blocks = elements / traits->block_elems;
    uint64_t nbytes = 0;
    if (MulOverflows(blocks, traits->block_bytes, &nbytes)) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' of type ",
                                                     std::string(traits->name), " has ", elements, " elements: ",
                                                     blocks, " blocks x ", traits->block_bytes,
                                                     " bytes overflows 64 bits"));
    }
    t.nbytes = nbytes;
    TESSERA_ASSIGN_OR_RETURN(t.offset, c.Read<uint64_t>("tensor offset"));
    if (t.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' offset ", t.offset,
                                                     " is not a multiple of the alignment ", alignment_));
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: duplicate tensor '", EscapeForMessage(t.name), "'"));
    }
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment. pos() is
  // within the image and the alignment at most 1 MiB, so this cannot wrap
  // for any image that fits in memory; it is checked all the same.
  uint64_t padded = 0;
  if (__builtin_add_overflow(static_cast<uint64_t>(c.pos()), alignment_ - 1, &padded)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: data section start: byte ", c.pos(),
                                                   " rounded up to the alignment ", alignment_,
                                                   " overflows 64 bits"));
  }
  const uint64_t data_start = padded / alignment_ * alignment_;
  if (data_start > bytes_.size() && !tensors_.empty()) {
    return absl::InvalidArgumentError("GGUF: truncated file: no tensor data section");
  }
  const uint64_t data_bytes = data_start <= bytes_.size() ? bytes_.size() - data_start : 0;

  // Bounds and overlap: sort a view by offset and check each against the next.
  std::vector<GgufTensor*> by_offset;
  by_offset.reserve(tensors_.size());
  for (auto& t : tensors_) {
    // offset + nbytes is computed checked: a hostile offset near 2^64 would
    // otherwise wrap to a small end and a message naming a nonsense range.
    uint64_t end = 0;
    if (__builtin_add_overflow(t.offset, static_cast<uint64_t>(t.nbytes), &end)) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: tensor '", EscapeForMessage(t.name), "' at offset ",
                                                     t.offset, " with ", t.nbytes,
                                                     " bytes: offset + size overflows 64 bits"));
    }
    if (end > data_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: truncated file: tensor '", EscapeForMessage(t.name), "' needs bytes [", t.offset, ", ",
          end, ") of a data section of ", data_bytes, " bytes"));
    }
    t.data = bytes_.data() + data_start + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor* prev = by_offset[i - 1];
    const GgufTensor* next = by_offset[i];
    // Both ends are within data_bytes (checked above), so neither sum wraps.
    if (prev->offset + prev->nbytes > next->offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF: tensors '", EscapeForMessage(prev->name), "' (bytes [", prev->offset, ", ",
          prev->offset + prev->nbytes, ")) and '", EscapeForMessage(next->name), "' (bytes [", next->offset, ", ",
          next->offset + next->nbytes, ")) overlap"));
    }
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
absl::Status WrongType(const std::string& key, std::string_view want, GgufType got) {
  return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", EscapeForMessage(key), "' must be ", std::string(want),
                                                 ", got ", std::string(GgufTypeName(got))));
}
absl::Status Missing(const std::string& key) {
  return absl::NotFoundError(absl::StrCat("GGUF metadata '", EscapeForMessage(key), "' is missing"));
}
}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (!v->is_string()) return WrongType(key, "a string", v->type());
  return v->as_string();
}

absl::StatusOr<uint64_t> GgufFile::GetUint(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (!v->is_integer()) return WrongType(key, "an integer", v->type());
  if (v->type() == GgufType::kInt8 || v->type() == GgufType::kInt16 ||
      v->type() == GgufType::kInt32 || v->type() == GgufType::kInt64) {
    if (v->as_signed() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", EscapeForMessage(key),
                                                     "' must be non-negative, got ", v->as_signed()));
    }
    return static_cast<uint64_t>(v->as_signed());
  }
  return v->as_unsigned();
}

absl::StatusOr<double> GgufFile::GetFloat(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (v->is_float()) return v->as_double();
  if (v->is_integer()) {
    return v->type() == GgufType::kInt8 || v->type() == GgufType::kInt16 ||
                   v->type() == GgufType::kInt32 || v->type() == GgufType::kInt64
               ? static_cast<double>(v->as_signed())
               : static_cast<double>(v->as_unsigned());
  }
  return WrongType(key, "a number", v->type());
}

absl::StatusOr<bool> GgufFile::GetBool(const std::string& key) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (!v->is_bool()) return WrongType(key, "a bool", v->type());
  return v->as_bool();
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(const std::string& key,
                                                    GgufType element_type) const {
  const GgufValue* v = Find(key);
  if (!v) return Missing(key);
  if (!v->is_array()) return WrongType(key, "an array", v->type());
  const GgufArray& a = v->as_array();
  if (a.element_type != element_type) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF metadata '", EscapeForMessage(key), "' must be an array of ",
                                                   std::string(GgufTypeName(element_type)), ", got an array of ",
                                                   std::string(GgufTypeName(a.element_type))));
  }
  return &a;
}

}  // namespace tessera

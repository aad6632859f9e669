#include "common/gguf/gguf_writer.h"

#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr size_t kAlignment = 32;
enum : uint32_t { kI32 = 5, kU32 = 4, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

void PutString(std::vector<uint8_t>& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

template <typename T>
void GgufWriter::AddScalar(const std::string& key, uint32_t type, T value) {
  PutString(kv_, key);
  Put<uint32_t>(kv_, type);
  if constexpr (std::is_same_v<T, std::string>) {
    PutString(kv_, value);
  } else {
    Put(kv_, value);
  }
  ++kv_count_;
}

template <typename T>
void GgufWriter::AddArray(const std::string& key, uint32_t type, const std::vector<T>& values) {
  PutString(kv_, key);
  Put<uint32_t>(kv_, kArray);
  Put<uint32_t>(kv_, type);
  Put<uint64_t>(kv_, values.size());
  for (const T& v : values) {
    if constexpr (std::is_same_v<T, std::string>) {
      PutString(kv_, v);
    } else {
      Put(kv_, v);
    }
  }
  ++kv_count_;
}

void GgufWriter::AddString(const std::string& key, const std::string& value) { AddScalar(key, kString, value); }
void GgufWriter::AddU32(const std::string& key, uint32_t value) { AddScalar(key, kU32, value); }
void GgufWriter::AddI32(const std::string& key, int32_t value) { AddScalar(key, kI32, value); }
void GgufWriter::AddF32(const std::string& key, float value) { AddScalar(key, kF32, value); }
void GgufWriter::AddBool(const std::string& key, bool value) { AddScalar<uint8_t>(key, kBool, value ? 1 : 0); }
void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& values) {
  AddArray(key, kString, values);
}
void GgufWriter::AddF32Array(const std::string& key, const std::vector<float>& values) { AddArray(key, kF32, values); }
void GgufWriter::AddI32Array(const std::string& key, const std::vector<int32_t>& values) {
  AddArray(key, kI32, values);
}

absl::Status GgufWriter::AddTensor(const std::string& name, std::vector<int64_t> dims, GgmlType type, Fill fill) {
  const auto traits = TraitsOf(type);
  if (!traits || !IsFileType(static_cast<uint32_t>(type)) || dims.empty() || dims[0] % traits->block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": rows of ", dims.empty() ? 0 : dims[0],
                                                   " elements are not whole blocks of ", std::string(TypeName(type))));
  }
  // Sizes are computed checked, so a shape too large for memory is an error
  // naming its operands rather than a wrapped (small) size and a short fill.
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": dimension ", i, " is ", dims[i]));
    }
  }
  uint64_t bytes = 0;
  const uint64_t blocks = static_cast<uint64_t>(dims[0] / traits->block_elems);
  if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(traits->block_bytes), &bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", blocks, " blocks x ", traits->block_bytes,
                                                   " bytes overflows 64 bits"));
  }
  for (size_t i = 1; i < dims.size(); ++i) {
    const uint64_t row_bytes = bytes;
    if (__builtin_mul_overflow(row_bytes, static_cast<uint64_t>(dims[i]), &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", row_bytes, " bytes x dimension ", i, " (",
                                                     dims[i], ") overflows 64 bits"));
    }
  }
  tensors_.push_back({name, std::move(dims), type, static_cast<size_t>(bytes), std::move(fill)});
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> GgufWriter::Build() const {
  std::vector<uint8_t> out;
  Put<uint32_t>(out, kMagic);
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, kv_count_);
  out.insert(out.end(), kv_.begin(), kv_.end());
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(out, static_cast<uint64_t>(d));
    Put<uint32_t>(out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(out, offset);
    offsets.push_back(offset);
    // Each tensor starts aligned: its size rounded up, then added, checked.
    uint64_t padded = 0;
    if (__builtin_add_overflow(static_cast<uint64_t>(t.bytes), kAlignment - 1, &padded) ||
        __builtin_add_overflow(offset, padded / kAlignment * kAlignment, &offset)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": its ", t.bytes, " bytes at data offset ",
                                                     offsets.back(), " overflow 64 bits"));
    }
  }
  const size_t data_start = (out.size() + kAlignment - 1) / kAlignment * kAlignment;
  out.resize(data_start + offset, 0);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].fill(std::span<uint8_t>(out.data() + data_start + offsets[i], tensors_[i].bytes));
  }
  return out;
}

}  // namespace tessera

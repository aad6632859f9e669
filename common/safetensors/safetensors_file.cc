#include "common/safetensors/safetensors_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using Json = nlohmann::json;

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors: ", std::string(what)));
}

bool ParseDtype(const std::string& s, SafetensorsDtype* d) {
  static const std::pair<const char*, SafetensorsDtype> kNames[] = {
      {"F64", SafetensorsDtype::kF64},  {"F32", SafetensorsDtype::kF32},    {"F16", SafetensorsDtype::kF16},
      {"BF16", SafetensorsDtype::kBF16}, {"I64", SafetensorsDtype::kI64},   {"I32", SafetensorsDtype::kI32},
      {"I16", SafetensorsDtype::kI16},  {"I8", SafetensorsDtype::kI8},      {"U8", SafetensorsDtype::kU8},
      {"BOOL", SafetensorsDtype::kBool}, {"F8_E4M3", SafetensorsDtype::kF8E4M3},
      {"F8_E5M2", SafetensorsDtype::kF8E5M2}};
  for (const auto& [name, dt] : kNames) {
    if (s == name) {
      *d = dt;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string_view DtypeName(SafetensorsDtype d) {
  switch (d) {
    case SafetensorsDtype::kF64: return "F64";
    case SafetensorsDtype::kF32: return "F32";
    case SafetensorsDtype::kF16: return "F16";
    case SafetensorsDtype::kBF16: return "BF16";
    case SafetensorsDtype::kI64: return "I64";
    case SafetensorsDtype::kI32: return "I32";
    case SafetensorsDtype::kI16: return "I16";
    case SafetensorsDtype::kI8: return "I8";
    case SafetensorsDtype::kU8: return "U8";
    case SafetensorsDtype::kBool: return "BOOL";
    case SafetensorsDtype::kF8E4M3: return "F8_E4M3";
    case SafetensorsDtype::kF8E5M2: return "F8_E5M2";
  }
  return "?";
}

size_t DtypeSize(SafetensorsDtype d) {
  switch (d) {
    case SafetensorsDtype::kF64: case SafetensorsDtype::kI64: return 8;
    case SafetensorsDtype::kF32: case SafetensorsDtype::kI32: return 4;
    case SafetensorsDtype::kF16: case SafetensorsDtype::kBF16: case SafetensorsDtype::kI16: return 2;
    default: return 1;
  }
}

int64_t SafetensorsTensor::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status SafetensorsTensor::ToFloat(std::span<float> out) const {
  const int64_t n = elements();
  if (static_cast<int64_t>(out.size()) != n) return Bad("ToFloat: output size mismatch");
  const uint8_t* p = bytes.data();
  switch (dtype) {
    case SafetensorsDtype::kF32:
      std::memcpy(out.data(), p, n * 4);  // memcpy: the data may be unaligned
      return absl::OkStatus();
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = dtype == SafetensorsDtype::kF16 ? Fp16ToFp32(h) : Bf16ToFp32(h);
      }
      return absl::OkStatus();
    default:
      return absl::UnimplementedError(absl::StrCat("tensor '", EscapeForMessage(name), "' has dtype ",
                                                   std::string(DtypeName(dtype)), "; expected F32, F16 or BF16"));
  }
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path,
                                                                       const SafetensorsLimits& limits) {
  TESSERA_ASSIGN_OR_RETURN(auto mapping, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->bytes_ = mapping->bytes();
  f->mapping_ = std::move(mapping);
  absl::Status s = f->Parse(limits);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(std::span<const uint8_t> bytes,
                                                                             const SafetensorsLimits& limits) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->bytes_ = bytes;
  TESSERA_RETURN_IF_ERROR(f->Parse(limits));
  return f;
}

absl::Status SafetensorsFile::Parse(const SafetensorsLimits& limits) {
  if (bytes_.size() < 8) return Bad("truncated file: no 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, bytes_.data(), 8);
  if (n > limits.max_header_bytes) {
    return Bad(absl::StrCat("header length ", n, " exceeds the limit of ", limits.max_header_bytes, " bytes"));
  }
  if (n > bytes_.size() - 8) return Bad(absl::StrCat("truncated file: header of ", n, " bytes, ", bytes_.size() - 8, " left"));
  if (n < 2 || bytes_[8] != '{') return Bad("the header must be a JSON object starting with '{'");
  const char* hb = reinterpret_cast<const char*>(bytes_.data() + 8);
  // nlohmann keeps the last of duplicate keys silently; the callback sees
  // every key, so duplicates (at any depth) are caught here.
  std::vector<absl::flat_hash_set<std::string>> keys_at_depth;
  std::string duplicate;
  Json::parser_callback_t check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      if (static_cast<int>(keys_at_depth.size()) <= depth) keys_at_depth.resize(depth + 1);
      keys_at_depth[depth].clear();
    } else if (event == Json::parse_event_t::key && depth >= 1 && depth - 1 < static_cast<int>(keys_at_depth.size())) {
      if (!keys_at_depth[depth - 1].insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return depth <= 4;  // tensor entries are shallow; deeper values are dropped
  };
  Json header = Json::parse(hb, hb + n, check, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return Bad("the header is not a valid JSON object");
  if (!duplicate.empty()) return Bad(absl::StrCat("duplicate key '", EscapeForMessage(duplicate), "' in the header"));
  const uint64_t data_size = bytes_.size() - 8 - n;
  const uint8_t* data = bytes_.data() + 8 + n;

  struct Span { uint64_t begin, end; size_t index; };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad("__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad(absl::StrCat("__metadata__ value '", EscapeForMessage(m.key()), "' is not a string"));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string shown = EscapeForMessage(name);
    if (tensors_.size() >= limits.max_tensors) return Bad(absl::StrCat("more than ", limits.max_tensors, " tensors"));
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      return Bad(absl::StrCat("tensor '", shown, "' needs dtype, shape and data_offsets"));
    }
    SafetensorsTensor t;
    t.name = name;
    if (!v["dtype"].is_string() || !ParseDtype(v["dtype"].get<std::string>(), &t.dtype)) {
      return Bad(absl::StrCat("tensor '", shown, "' has an unknown dtype"));
    }
    const Json& shape = v["shape"];
    if (!shape.is_array() || static_cast<int>(shape.size()) > limits.max_rank) {
      return Bad(absl::StrCat("tensor '", shown, "' shape must be an array of at most ", limits.max_rank, " sizes"));
    }
    uint64_t elements = 1;
    for (const Json& d : shape) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return Bad(absl::StrCat("tensor '", shown, "' has a negative or non-integer dimension"));
      }
      const uint64_t x = d.get<uint64_t>();
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(elements, x, &elements)) {
        return Bad(absl::StrCat("tensor '", shown, "' size overflows"));
      }
      t.shape.push_back(static_cast<int64_t>(x));
    }
    const Json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return Bad(absl::StrCat("tensor '", shown, "' data_offsets must be two non-negative integers"));
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(elements, DtypeSize(t.dtype), &nbytes) || end < begin || end - begin != nbytes) {
      return Bad(absl::StrCat("tensor '", shown, "' data_offsets [", begin, ", ", end, ") do not match its ",
                              std::string(DtypeName(t.dtype)), " shape (", nbytes, " bytes)"));
    }
    if (end > data_size) return Bad(absl::StrCat("truncated file: tensor '", shown, "' ends at byte ", end, " of ", data_size));
    t.bytes = std::span<const uint8_t>(data + begin, nbytes);
    if (!index_.emplace(name, tensors_.size()).second) return Bad(absl::StrCat("duplicate tensor '", shown, "'"));
    spans.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(t));
  }
  // The tensors must tile the data section exactly.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const Span& s : spans) {
    if (s.begin != expected) {
      return Bad(absl::StrCat("tensor '", EscapeForMessage(tensors_[s.index].name), "' starts at byte ", s.begin,
                              s.begin < expected ? ", overlapping the previous tensor" : ", leaving a gap",
                              " (expected ", expected, ")"));
    }
    expected = s.end;
  }
  if (expected != data_size) {
    return Bad(absl::StrCat("the data section has ", data_size - expected, " trailing bytes after the last tensor"));
  }
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace tessera

// GgufValue: one metadata value of a GGUF file (scalar, string or array,
// arrays possibly nested). Immutable after parsing; safe to share.
#ifndef TESSERA_COMMON_GGUF_GGUF_VALUE_H_
#define TESSERA_COMMON_GGUF_GGUF_VALUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tessera {

// On-disk metadata value type ids; never renumber.
enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5,
  kFloat32 = 6, kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11,
  kFloat64 = 12,
};
std::string_view GgufTypeName(GgufType t);

class GgufValue;

struct GgufArray {
  GgufType element_type;
  std::vector<GgufValue> items;
};

class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue Unsigned(GgufType t, uint64_t v) { return GgufValue(t, v); }
  static GgufValue Signed(GgufType t, int64_t v) { return GgufValue(t, v); }
  static GgufValue Float(GgufType t, double v) { return GgufValue(t, v); }
  static GgufValue Bool(bool v) { return GgufValue(GgufType::kBool, v); }
  static GgufValue String(std::string v) { return GgufValue(GgufType::kString, std::move(v)); }
  static GgufValue Array(std::shared_ptr<const GgufArray> a) { return GgufValue(GgufType::kArray, std::move(a)); }

  GgufType type() const { return type_; }
  bool is_integer() const {
    return std::holds_alternative<uint64_t>(v_) || std::holds_alternative<int64_t>(v_);
  }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_string() const { return type_ == GgufType::kString; }
  bool is_array() const { return type_ == GgufType::kArray; }
  bool is_bool() const { return type_ == GgufType::kBool; }

  // REQUIRES: the matching is_*() is true.
  uint64_t as_unsigned() const { return std::get<uint64_t>(v_); }
  int64_t as_signed() const { return std::get<int64_t>(v_); }
  double as_double() const { return std::get<double>(v_); }
  bool as_bool() const { return std::get<bool>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const GgufArray& as_array() const { return *std::get<std::shared_ptr<const GgufArray>>(v_); }

 private:
  using Storage = std::variant<std::monostate, uint64_t, int64_t, double, bool, std::string,
                               std::shared_ptr<const GgufArray>>;
  template <typename T>
  GgufValue(GgufType t, T v) : type_(t), v_(std::move(v)) {}

  GgufType type_ = GgufType::kUint8;
  Storage v_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_GGUF_GGUF_VALUE_H_

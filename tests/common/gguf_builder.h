// GgufBuilder: writes GGUF images in memory for tests, including malformed
// ones (every field can be set to any value).
#ifndef TESSERA_TESTS_COMMON_GGUF_BUILDER_H_
#define TESSERA_TESTS_COMMON_GGUF_BUILDER_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace tessera::testing {

class GgufBuilder {
 public:
  std::vector<uint8_t> bytes;

  template <typename T>
  GgufBuilder& Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBuilder& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  GgufBuilder& Header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    Put<uint32_t>(0x46554747);
    Put<uint32_t>(version);
    Put<uint64_t>(n_tensors);
    Put<uint64_t>(n_kv);
    return *this;
  }
  // key, type id, then the caller writes the value.
  GgufBuilder& Key(const std::string& key, uint32_t type) {
    Str(key);
    Put<uint32_t>(type);
    return *this;
  }
  GgufBuilder& TensorInfo(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name);
    Put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) Put<uint64_t>(d);
    Put<uint32_t>(type);
    Put<uint64_t>(offset);
    return *this;
  }
  GgufBuilder& Align(size_t a) {
    while (bytes.size() % a != 0) bytes.push_back(0);
    return *this;
  }
  GgufBuilder& Zeros(size_t n) {
    bytes.insert(bytes.end(), n, 0);
    return *this;
  }
};

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_COMMON_GGUF_BUILDER_H_

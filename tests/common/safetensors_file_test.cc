#include "common/safetensors/safetensors_file.h"

#include <gtest/gtest.h>

#include <cstring>

namespace tessera {
namespace {

std::vector<uint8_t> File(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> Floats(std::initializer_list<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), std::data(v), b.size());
  return b;
}

std::string Error(const std::vector<uint8_t>& f) {
  auto r = SafetensorsFile::FromBuffer(f);
  return r.ok() ? "OK" : std::string(r.status().message());
}

TEST(SafetensorsTest, ParsesTensorsAndMetadata) {
  auto data = Floats({1, 2, 3, 4, 5, 6});
  data.push_back(0x80);  // one BF16 value 1.0 = 0x3F80 little-endian
  data.push_back(0x3F);
  // An odd-length header makes the tensor data unaligned on purpose.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[],"data_offsets":[24,26]}} )";
  auto f = SafetensorsFile::FromBuffer(File(header, data));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  const SafetensorsTensor* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> out(6);
  ASSERT_TRUE(a->ToFloat(out).ok());
  EXPECT_EQ(out[5], 6.f);
  std::vector<float> one(1);
  ASSERT_TRUE((*f)->Find("b")->ToFloat(one).ok());
  EXPECT_EQ(one[0], 1.f);
}

TEST(SafetensorsTest, RejectsEveryKindOfBadFile) {
  auto d8 = Floats({1, 2});
  EXPECT_NE(Error({1, 2, 3}).find("truncated"), std::string::npos);
  EXPECT_NE(Error(File(R"([1])", {})).find("starting with '{'"), std::string::npos);
  EXPECT_NE(Error(File(R"({"a":)", {})).find("not a valid JSON"), std::string::npos);
  auto huge = File("{}", {});
  const uint64_t big = 1ull << 40;
  std::memcpy(huge.data(), &big, 8);
  EXPECT_NE(Error(huge).find("exceeds the limit"), std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8))
                .find("duplicate key 'a'"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", d8)).find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8)).find("do not match"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8)).find("negative"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8)).find("gap"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", d8)).find("trailing bytes"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8))
                .find("overlapping"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8)).find("truncated"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", d8))
                .find("overflows"),
            std::string::npos);
  EXPECT_NE(Error(File(R"({"a":{"dtype":"F32","shape":[2]}})", d8)).find("needs dtype"), std::string::npos);
}

TEST(SafetensorsTest, EveryTruncationIsAnError) {
  auto full = File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Floats({1, 2}));
  ASSERT_EQ(Error(full), "OK");
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    EXPECT_NE(Error(cut), "OK") << n;
  }
}

}  // namespace
}  // namespace tessera

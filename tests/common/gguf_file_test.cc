#include "common/gguf/gguf_file.h"

#include <gtest/gtest.h>

#include "tests/common/gguf_builder.h"

namespace tessera {
namespace {

using testing::GgufBuilder;

// A valid file with one of every metadata type, a nested array and two
// F32 tensors.
std::vector<uint8_t> ValidFile(uint32_t version = 3) {
  GgufBuilder b;
  b.Header(version, 2, 14);
  b.Key("u8", 0).Put<uint8_t>(7);
  b.Key("i8", 1).Put<int8_t>(-7);
  b.Key("u16", 2).Put<uint16_t>(700);
  b.Key("i16", 3).Put<int16_t>(-700);
  b.Key("u32", 4).Put<uint32_t>(70000);
  b.Key("i32", 5).Put<int32_t>(-70000);
  b.Key("f32", 6).Put<float>(1.5f);
  b.Key("bool", 7).Put<uint8_t>(1);
  b.Key("str", 8).Str("hello");
  b.Key("u64", 10).Put<uint64_t>(1ull << 40);
  b.Key("i64", 11).Put<int64_t>(-(1ll << 40));
  b.Key("f64", 12).Put<double>(2.25);
  b.Key("arr", 9).Put<uint32_t>(8).Put<uint64_t>(2).Str("a").Str("bc");
  b.Key("nested", 9).Put<uint32_t>(9).Put<uint64_t>(2);
  b.Put<uint32_t>(4).Put<uint64_t>(1).Put<uint32_t>(1);
  b.Put<uint32_t>(4).Put<uint64_t>(2).Put<uint32_t>(2).Put<uint32_t>(3);
  b.TensorInfo("t0", {4, 2}, 0, 0);
  b.TensorInfo("t1", {8}, 0, 32);
  b.Align(32);
  for (int i = 0; i < 8; ++i) b.Put<float>(static_cast<float>(i));
  for (int i = 0; i < 8; ++i) b.Put<float>(static_cast<float>(100 + i));
  return b.bytes;
}

TEST(GgufFileTest, ParsesEveryMetadataTypeAndTensors) {
  for (uint32_t version : {2u, 3u}) {
    auto bytes = ValidFile(version);
    auto f = GgufFile::FromBuffer(bytes);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->version(), version);
    EXPECT_EQ(*(*f)->GetUint("u8"), 7u);
    EXPECT_EQ(*(*f)->GetUint("u32"), 70000u);
    EXPECT_EQ(*(*f)->GetUint("u64"), 1ull << 40);
    EXPECT_FALSE((*f)->GetUint("i8").ok());  // negative
    EXPECT_EQ((*f)->Find("i64")->as_signed(), -(1ll << 40));
    EXPECT_EQ(*(*f)->GetFloat("f32"), 1.5);
    EXPECT_EQ(*(*f)->GetFloat("f64"), 2.25);
    EXPECT_TRUE(*(*f)->GetBool("bool"));
    EXPECT_EQ(*(*f)->GetString("str"), "hello");
    auto arr = (*f)->GetArray("arr", GgufType::kString);
    ASSERT_TRUE(arr.ok());
    EXPECT_EQ((*arr)->items[1].as_string(), "bc");
    const GgufValue* nested = (*f)->Find("nested");
    ASSERT_NE(nested, nullptr);
    EXPECT_EQ(nested->as_array().items[1].as_array().items[1].as_unsigned(), 3u);
    const GgufTensor* t0 = (*f)->FindTensor("t0");
    ASSERT_NE(t0, nullptr);
    EXPECT_EQ(t0->ne[0], 4);
    EXPECT_EQ(t0->ne[1], 2);
    EXPECT_EQ(t0->nbytes, 32u);
    EXPECT_EQ(reinterpret_cast<const float*>(t0->data)[5], 5.f);
    EXPECT_EQ(reinterpret_cast<const float*>((*f)->FindTensor("t1")->data)[0], 100.f);
  }
}

TEST(GgufFileTest, TypedAccessorsNameKeyAndTypes) {
  auto bytes = ValidFile();
  auto f = GgufFile::FromBuffer(bytes);
  ASSERT_TRUE(f.ok());
  auto s = (*f)->GetString("u8");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("'u8' must be a string, got uint8"), std::string::npos) << s.status();
  EXPECT_EQ((*f)->GetString("missing").status().code(), absl::StatusCode::kNotFound);
}

// Every truncation of a valid file is an error, never a crash or overread
// (run under ASan in the fuzz build).
TEST(GgufFileTest, EveryTruncationIsAnError) {
  auto bytes = ValidFile();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    auto f = GgufFile::FromBuffer(cut);
    EXPECT_FALSE(f.ok()) << "accepted a file truncated to " << n << " bytes";
  }
}

TEST(GgufFileTest, RejectsBadHeaders) {
  auto bytes = ValidFile();
  auto bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_NE(GgufFile::FromBuffer(bad_magic).status().message().find("bad magic"), std::string::npos);
  auto v1 = bytes;
  v1[4] = 1;
  EXPECT_NE(GgufFile::FromBuffer(v1).status().message().find("version 1"), std::string::npos);
  auto big_endian = bytes;
  big_endian[4] = 0; big_endian[7] = 3;
  EXPECT_NE(GgufFile::FromBuffer(big_endian).status().message().find("big-endian"), std::string::npos);
}

TEST(GgufFileTest, RejectsHostileCountsAndSizes) {
  {
    GgufBuilder b;
    b.Header(3, 0, 1ull << 62);
    EXPECT_NE(GgufFile::FromBuffer(b.bytes).status().message().find("metadata count"), std::string::npos);
  }
  {
    GgufBuilder b;
    b.Header(3, 1ull << 40, 0);
    EXPECT_NE(GgufFile::FromBuffer(b.bytes).status().message().find("tensor count"), std::string::npos);
  }
  {  // string length far beyond the file
    GgufBuilder b;
    b.Header(3, 0, 1).Put<uint64_t>(1ull << 60);
    EXPECT_FALSE(GgufFile::FromBuffer(b.bytes).ok());
  }
  {  // array claiming 2^60 elements
    GgufBuilder b;
    b.Header(3, 0, 1).Key("a", 9).Put<uint32_t>(0).Put<uint64_t>(1ull << 60);
    auto s = GgufFile::FromBuffer(b.bytes).status();
    EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  }
  {  // arrays nested past the depth limit
    GgufBuilder b;
    b.Header(3, 0, 1).Key("a", 9);
    for (int i = 0; i < 20; ++i) b.Put<uint32_t>(9).Put<uint64_t>(1);
    b.Put<uint32_t>(0).Put<uint64_t>(0);
    auto s = GgufFile::FromBuffer(b.bytes).status();
    EXPECT_NE(s.message().find("nested deeper"), std::string::npos) << s;
  }
  {  // unknown value type
    GgufBuilder b;
    b.Header(3, 0, 1).Key("a", 99).Put<uint32_t>(0);
    EXPECT_NE(GgufFile::FromBuffer(b.bytes).status().message().find("unknown type 99"), std::string::npos);
  }
  {  // bool byte other than 0/1
    GgufBuilder b;
    b.Header(3, 0, 1).Key("a", 7).Put<uint8_t>(2);
    EXPECT_FALSE(GgufFile::FromBuffer(b.bytes).ok());
  }
  {  // duplicate key
    GgufBuilder b;
    b.Header(3, 0, 2).Key("a", 4).Put<uint32_t>(1).Key("a", 4).Put<uint32_t>(2);
    EXPECT_NE(GgufFile::FromBuffer(b.bytes).status().message().find("duplicate"), std::string::npos);
  }
}

std::vector<uint8_t> OneTensor(std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data_bytes,
                               int alignment = 0) {
  GgufBuilder b;
  b.Header(3, 1, alignment ? 1 : 0);
  if (alignment) b.Key("general.alignment", 4).Put<uint32_t>(alignment);
  b.TensorInfo("t", dims, type, offset);
  b.Align(alignment ? alignment : 32);
  b.Zeros(data_bytes);
  return b.bytes;
}

TEST(GgufFileTest, RejectsBadTensors) {
  EXPECT_TRUE(GgufFile::FromBuffer(OneTensor({32, 2}, 2, 0, 36)).ok());  // Q4_0: 2 blocks of 18
  auto status = [](std::vector<uint8_t> b) { return std::string(GgufFile::FromBuffer(b).status().message()); };
  EXPECT_NE(status(OneTensor({32, 2}, 2, 0, 35)).find("truncated"), std::string::npos);
  EXPECT_NE(status(OneTensor({31, 2}, 2, 0, 64)).find("not a multiple of its block size"), std::string::npos);
  EXPECT_NE(status(OneTensor({4}, 77, 0, 64)).find("unsupported type id 77"), std::string::npos);
  EXPECT_NE(status(OneTensor({4}, 0, 3, 64)).find("alignment"), std::string::npos);
  EXPECT_NE(status(OneTensor({0}, 0, 0, 64)).find("zero or overflows"), std::string::npos);
  EXPECT_NE(status(OneTensor({1ull << 40, 1ull << 40}, 0, 0, 64)).find("overflows"), std::string::npos);
  EXPECT_NE(status(OneTensor({4}, 0, 1ull << 62, 64)).find("truncated"), std::string::npos);
  EXPECT_NE(status(OneTensor({4}, 0, 0, 64, 3)).find("power of two"), std::string::npos);
  {
    GgufBuilder b;
    b.Header(3, 1, 0).Str("t").Put<uint32_t>(5);
    EXPECT_NE(status(b.bytes).find("dimensions"), std::string::npos);
  }
  {  // overlapping tensors
    GgufBuilder b;
    b.Header(3, 2, 0);
    b.TensorInfo("a", {16}, 0, 0).TensorInfo("b", {16}, 0, 32);
    b.Align(32).Zeros(128);
    EXPECT_NE(status(b.bytes).find("overlap"), std::string::npos);
  }
  {  // duplicate tensor names
    GgufBuilder b;
    b.Header(3, 2, 0);
    b.TensorInfo("a", {8}, 0, 0).TensorInfo("a", {8}, 0, 32);
    b.Align(32).Zeros(64);
    EXPECT_NE(status(b.bytes).find("duplicate tensor"), std::string::npos);
  }
}

TEST(GgufFileTest, OpenReportsMissingFile) {
  auto f = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace tessera

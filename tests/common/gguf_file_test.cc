#include "common/gguf/gguf_file.h"

#include <gtest/gtest.h>

#include "common/gguf/gguf_writer.h"
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
  EXPECT_NE(status(OneTensor({0}, 0, 0, 64)).find("dimension 0 is zero"), std::string::npos);
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

std::string StatusOf(const std::vector<uint8_t>& b) {
  auto f = GgufFile::FromBuffer(b);
  return f.ok() ? "OK" : std::string(f.status().message());
}

// One metadata key (uint32 value 1) with the given bytes.
std::vector<uint8_t> OneKey(const std::string& key) {
  GgufBuilder b;
  b.Header(3, 0, 1).Key(key, 4).Put<uint32_t>(1);
  return b.bytes;
}

// Keys follow llama.cpp's reader (non-empty, unique) and the GGUF spec
// (UTF-8): a NUL or invalid UTF-8 is refused, and the message shows the
// offending bytes escaped, never raw.
TEST(GgufFileTest, RejectsEmptyNulAndInvalidUtf8Keys) {
  EXPECT_EQ(StatusOf(OneKey("general.name")), "OK");
  EXPECT_EQ(StatusOf(OneKey("caf\xC3\xA9")), "OK");  // valid UTF-8 passes
  std::string s = StatusOf(OneKey(""));
  EXPECT_NE(s.find("metadata key 0 is empty"), std::string::npos) << s;
  s = StatusOf(OneKey(std::string("gen\0eral", 8)));
  EXPECT_NE(s.find("metadata key 0 'gen\\x00eral' contains a NUL byte"), std::string::npos) << s;
  s = StatusOf(OneKey("a\xFF" "b"));
  EXPECT_NE(s.find("metadata key 0 'a\\xFFb' is not valid UTF-8"), std::string::npos) << s;
  s = StatusOf(OneKey("over\xC0\xAFlong"));  // overlong encoding of '/'
  EXPECT_NE(s.find("'over\\xC0\\xAFlong' is not valid UTF-8"), std::string::npos) << s;
  s = StatusOf(OneKey("\x1B[2J\xED\xA0\x80"));  // terminal escape + a surrogate
  EXPECT_NE(s.find("'\\x1B[2J\\xED\\xA0\\x80' is not valid UTF-8"), std::string::npos) << s;
  EXPECT_EQ(s.find('\x1B'), std::string::npos) << "raw escape byte in the message";
  {  // the key index counts from 0 across the file
    GgufBuilder b;
    b.Header(3, 0, 2).Key("ok", 4).Put<uint32_t>(1).Key(std::string("\0", 1), 4).Put<uint32_t>(1);
    s = StatusOf(b.bytes);
    EXPECT_NE(s.find("metadata key 1 '\\x00' contains a NUL byte"), std::string::npos) << s;
  }
  {  // duplicates stay refused, escaped
    GgufBuilder b;
    b.Header(3, 0, 2).Key("k\xC3\xA9", 4).Put<uint32_t>(1).Key("k\xC3\xA9", 4).Put<uint32_t>(2);
    s = StatusOf(b.bytes);
    EXPECT_NE(s.find("duplicate metadata key 'k\xC3\xA9'"), std::string::npos) << s;
  }
}

std::vector<uint8_t> OneNamedTensor(const std::string& name) {
  GgufBuilder b;
  b.Header(3, 1, 0).TensorInfo(name, {8}, 0, 0).Align(32).Zeros(32);
  return b.bytes;
}

// Tensor names: llama.cpp refuses a name of GGML_MAX_NAME (64) bytes or
// more (its buffer holds 63 and the terminator); a NUL would cut the name
// llama.cpp sees, so it and invalid UTF-8 are refused as for keys.
TEST(GgufFileTest, RejectsLongEmptyNulAndInvalidUtf8TensorNames) {
  EXPECT_EQ(StatusOf(OneNamedTensor(std::string(63, 'n'))), "OK");
  std::string s = StatusOf(OneNamedTensor(std::string(64, 'n')));
  EXPECT_NE(s.find("tensor 0 name is 64 bytes; llama.cpp's limit is 63"), std::string::npos) << s;
  s = StatusOf(OneNamedTensor(std::string(1000, 'n')));
  EXPECT_NE(s.find("tensor 0 name is 1000 bytes"), std::string::npos) << s;
  s = StatusOf(OneNamedTensor(""));
  EXPECT_NE(s.find("tensor 0 name is empty"), std::string::npos) << s;
  s = StatusOf(OneNamedTensor(std::string("blk.0\0evil", 10)));
  EXPECT_NE(s.find("tensor 0 name 'blk.0\\x00evil' contains a NUL byte"), std::string::npos) << s;
  s = StatusOf(OneNamedTensor("t\xFE\x1B]0;x\x07"));
  EXPECT_NE(s.find("tensor 0 name 't\\xFE\\x1B]0;x\\x07' is not valid UTF-8"), std::string::npos) << s;
  {  // the long-name check comes before the name is used anywhere (escaped, cut)
    std::string longname(70, 'x');
    longname[0] = '\x1B';
    s = StatusOf(OneNamedTensor(longname));
    EXPECT_NE(s.find("tensor 0 name is 70 bytes"), std::string::npos) << s;
    EXPECT_EQ(s.find('\x1B'), std::string::npos) << s;
  }
}

// Arithmetic on hostile sizes is checked: a message names what overflowed
// with its real operands, never a wrapped result.
TEST(GgufFileTest, OverflowingSizesAreNamedNotWrapped) {
  {  // 2^61 uint64 elements: 2^61 * 8 wraps to 0 ("needs 0 bytes")
    GgufBuilder b;
    b.Header(3, 0, 1).Key("a", 9).Put<uint32_t>(10).Put<uint64_t>(1ull << 61);
    std::string s = StatusOf(b.bytes);
    EXPECT_EQ(s.find("needs 0 bytes"), std::string::npos) << s;
    EXPECT_NE(s.find("array of 2305843009213693952 uint64 at byte 49 needs 2305843009213693952 x 8 bytes, "
                     "which overflows 64 bits"),
              std::string::npos)
        << s;
  }
  {  // a count that does not wrap still says how many bytes it needs
    GgufBuilder b;
    b.Header(3, 0, 1).Key("a", 9).Put<uint32_t>(4).Put<uint64_t>(1000);
    std::string s = StatusOf(b.bytes);
    EXPECT_NE(s.find("needs 4000 bytes, 0 left"), std::string::npos) << s;
  }
  {  // offset 2^64 - 32 plus 128 bytes wraps to 96 ("bytes [18446744073709551584, 96)")
    std::string s = StatusOf(OneTensor({32}, 0, 0xFFFFFFFFFFFFFFE0ull, 128));
    EXPECT_EQ(s.find(", 96)"), std::string::npos) << s;
    EXPECT_NE(s.find("tensor 't' at offset 18446744073709551584 with 128 bytes: offset + size overflows 64 bits"),
              std::string::npos)
        << s;
  }
  {  // an in-range tensor past the end still gets the real range
    std::string s = StatusOf(OneTensor({32}, 0, 64, 128));
    EXPECT_NE(s.find("needs bytes [64, 192) of a data section of 128 bytes"), std::string::npos) << s;
  }
  {  // 2^62 F32 elements: 2^62 * 4 bytes overflows
    std::string s = StatusOf(OneTensor({1ull << 31, 1ull << 31}, 0, 0, 64));
    EXPECT_NE(s.find("tensor 't' of type F32 has 4611686018427387904 elements: 4611686018427387904 blocks x 4 "
                     "bytes overflows 64 bits"),
              std::string::npos)
        << s;
  }
  {  // the element count itself overflows int64
    std::string s = StatusOf(OneTensor({1ull << 40, 1ull << 40}, 0, 0, 64));
    EXPECT_NE(s.find("tensor 't' has dimensions [1099511627776, 1099511627776]: their product "
                     "overflows int64"),
              std::string::npos)
        << s;
  }
  {  // a dimension above int64
    std::string s = StatusOf(OneTensor({1ull << 63}, 0, 0, 64));
    EXPECT_NE(s.find("tensor 't' dimension 0 is 9223372036854775808, above the int64 maximum"), std::string::npos)
        << s;
  }
}

// The writer (synthetic models) checks its size arithmetic the same way: a
// wrapped size would have built an image with too little room for the data.
TEST(GgufWriterTest, OverflowingTensorSizeIsAnError) {
  GgufWriter w;
  auto fill = [](std::span<uint8_t>) {};
  EXPECT_TRUE(w.AddTensor("ok", {8, 2}, GgmlType::kF32, fill).ok());
  absl::Status s = w.AddTensor("huge", {1ll << 40, 1ll << 40}, GgmlType::kF32, fill);
  EXPECT_NE(s.message().find("tensor huge: 4398046511104 bytes x dimension 1 (1099511627776) overflows 64 bits"),
            std::string::npos)
      << s;
  s = w.AddTensor("neg", {8, -1}, GgmlType::kF32, fill);
  EXPECT_NE(s.message().find("tensor neg: dimension 1 is -1"), std::string::npos) << s;
}

TEST(GgufFileTest, OpenReportsMissingFile) {
  auto f = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace tessera

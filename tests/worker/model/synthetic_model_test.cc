#include "worker/model/synthetic_model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/gguf/gguf_file.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/model_bundle.h"

namespace tessera {
namespace {

TEST(SyntheticModelTest, EveryWeightTypeLoadsAndGivesFiniteLogits) {
  for (const char* type : {"f32", "f16", "bf16", "q4_0", "q4_1", "q8_0", "q4_k", "q6_k"}) {
    auto b = LoadSyntheticModelBundle("tiny", type, {.max_batch_tokens = 16, .max_logit_rows = 4});
    ASSERT_TRUE(b.ok()) << type << ": " << b.status();
    const LlamaConfig& c = (*b)->model->config();
    EXPECT_EQ(c.n_layers, 2);
    EXPECT_EQ(c.n_vocab, 1024);
    EXPECT_EQ(c.n_kv_heads, 2);
    auto cache = KvCache::Create(*(*b)->backend, c.n_layers, c.kv_dim(), KvCacheOptions{.num_blocks = 4});
    ASSERT_TRUE(cache.ok());
    std::vector<int32_t> table;
    ASSERT_TRUE((*cache)->Reserve(table, 8).ok());
    const std::vector<int32_t> tokens = {1, 300, 301, 302};
    const std::vector<int32_t> pos = {0, 1, 2, 3}, seq = {0, 0, 0, 0};
    const std::span<const int32_t> tables[1] = {table};
    const int32_t last = 3;
    std::vector<float> logits(c.n_vocab);
    ASSERT_TRUE((*b)->model->Forward(tokens, {pos, seq, tables}, **cache, std::span<const int32_t>(&last, 1),
                                     logits.data())
                    .ok());
    for (float l : logits) ASSERT_TRUE(std::isfinite(l)) << type;
  }
}

TEST(SyntheticModelTest, VocabularyFallsBackToBytes) {
  auto b = LoadSyntheticModelBundle("tiny", "q8_0");
  ASSERT_TRUE(b.ok()) << b.status();
  const Tokenizer& t = *(*b)->tokenizer;
  const std::vector<int32_t> ids = t.Encode("héllo, wörld", {});
  ASSERT_FALSE(ids.empty());
  std::string back;
  for (int32_t id : ids) back += t.TokenBytes(id);
  EXPECT_NE(back.find("h\xc3\xa9llo,"), std::string::npos) << back;  // byte tokens carry the UTF-8
  EXPECT_NE(back.find("w\xc3\xb6rld"), std::string::npos) << back;
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
}

TEST(SyntheticModelTest, ShapesOfTheNamedArchitectures) {
  auto image = BuildSyntheticModel("tiny", GgmlType::kQ4_K);
  ASSERT_TRUE(image.ok());
  auto f = GgufFile::FromBuffer(*image);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 3u + 2u * 9u);
  bool found = false;
  for (const auto& s : SyntheticSpecs()) {
    if (s.name != "llama3-8b") continue;
    found = true;
    EXPECT_EQ(s.n_embd, 4096);
    EXPECT_EQ(s.n_ff, 14336);
    EXPECT_EQ(s.n_kv_heads, 8);
    EXPECT_EQ(s.n_vocab, 128256);
  }
  EXPECT_TRUE(found);
}

TEST(SyntheticModelTest, UnknownNamesAndTypesAreErrors) {
  EXPECT_EQ(BuildSyntheticModel("gpt5", GgmlType::kF16).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWeightType("q3_k").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseWeightType("Q4_K"), GgmlType::kQ4_K);
  EXPECT_EQ(LoadSyntheticModelBundle("tiny", "int3").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera

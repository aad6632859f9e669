// Engine defaults that the worker's configuration reads from here: what an
// unset option means is what the engine does.
#include <gtest/gtest.h>

#include "worker/engine/engine.h"
#include "worker/kv/kv_cache.h"
#include "worker/model/model_bundle.h"

namespace tessera {
namespace {

TEST(EngineDefaultsTest, ZeroKvBudgetIsTheDefaultBudget) {
  auto bundle = LoadSyntheticModelBundle("tiny", "q8_0", {.max_batch_tokens = 64, .max_logit_rows = 32});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  const LlamaConfig& c = (*bundle)->model->config();
  auto blocks_with = [&](int64_t kv_cache_bytes) -> int64_t {
    EngineOptions o;
    o.scheduler.max_num_batched_tokens = 64;  // fixed: no step-cost measurement
    o.kv_cache_bytes = kv_cache_bytes;
    auto e = Engine::Create(**bundle, o);
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return -1;
    const int64_t total = (*e)->stats().kv_blocks_total;
    (*e)->Stop();
    return total;
  };
  const int64_t per_block = KvCache::BytesPerBlock(c.n_layers, c.kv_dim(), EngineOptions{}.block_size);
  EXPECT_EQ(blocks_with(0), kDefaultKvCacheBytes / per_block);
  EXPECT_EQ(blocks_with(0), blocks_with(kDefaultKvCacheBytes));
  // Whatever max_num_seqs and the model's context: the budget is fixed.
  EXPECT_EQ(kDefaultKvCacheBytes, int64_t{256} << 20);
  EXPECT_EQ(blocks_with(kDefaultKvCacheBytes / 2), kDefaultKvCacheBytes / 2 / per_block);
}

}  // namespace
}  // namespace tessera

#include "worker/kv/kv_cache.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend& backend, int n_layers, int kv_dim,
                                                         const KvCacheOptions& o) {
  Backend* const backends[] = {&backend};
  const int dims[] = {kv_dim};
  return CreateSharded(backends, n_layers, dims, o);
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::CreateSharded(std::span<Backend* const> backends, int n_layers,
                                                                std::span<const int> kv_dims,
                                                                const KvCacheOptions& o) {
  if (backends.empty() || backends.size() != kv_dims.size()) {
    return absl::InvalidArgumentError("KV cache: one backend and one KV width per rank");
  }
  if (o.block_size < 1 || o.block_size > 1024 || o.num_blocks < 1 || o.num_blocks > (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("bad KV cache geometry: ", o.num_blocks,
                                                   " blocks of ", o.block_size));
  }
  std::unique_ptr<KvCache> c(new KvCache());
  c->block_size_ = o.block_size;
  c->num_blocks_ = o.num_blocks;
  c->kv_dims_.assign(kv_dims.begin(), kv_dims.end());
  c->ranks_.resize(backends.size());
  for (size_t r = 0; r < backends.size(); ++r) {
    for (int l = 0; l < n_layers; ++l) {
      TESSERA_ASSIGN_OR_RETURN(KvLayer layer, backends[r]->AllocateKvLayer(o.num_blocks, o.block_size, kv_dims[r]));
      c->ranks_[r].push_back(layer);
    }
  }
  c->free_.reserve(o.num_blocks);
  for (int64_t b = o.num_blocks - 1; b >= 0; --b) c->free_.push_back(static_cast<int32_t>(b));
  return c;
}

absl::Status KvCache::Reserve(std::vector<int32_t>& table, int64_t positions) {
  const int64_t need = (positions + block_size_ - 1) / block_size_;
  const int64_t extra = need - static_cast<int64_t>(table.size());
  if (extra <= 0) return absl::OkStatus();
  if (extra > free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: need ", extra, " more blocks, ",
                                                     free_blocks(), " free of ", num_blocks_));
  }
  for (int64_t i = 0; i < extra; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

void KvCache::Release(std::vector<int32_t>& table) {
  for (int32_t b : table) free_.push_back(b);
  table.clear();
}

}  // namespace tessera

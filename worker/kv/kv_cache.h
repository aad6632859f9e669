// KvCache: paged key/value storage for every layer of one model, and the pool
// of free blocks.
//
// A sequence owns a block table (block ids in position order); position p
// lives in slot p % block_size of block table[p / block_size]. The attention
// kernels read that layout directly.
//
// Under tensor parallelism each rank stores its own KV heads in its own
// backend's memory, under the same block ids: the block tables and the free
// pool are shared, the storage is per rank.
//
// Thread-safety: not thread-safe; owned by the engine thread (ranks only read
// their layers during a step).
#ifndef TESSERA_WORKER_KV_KV_CACHE_H_
#define TESSERA_WORKER_KV_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace tessera {

struct KvCacheOptions {
  int block_size = 16;
  int64_t num_blocks = 0;
};

class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(Backend& backend, int n_layers, int kv_dim,
                                                         const KvCacheOptions& options);
  // Storage for every rank r on backends[r] with kv_dims[r] values per slot.
  // REQUIRES: backends.size() == kv_dims.size() >= 1.
  static absl::StatusOr<std::unique_ptr<KvCache>> CreateSharded(std::span<Backend* const> backends, int n_layers,
                                                                std::span<const int> kv_dims,
                                                                const KvCacheOptions& options);

  const KvLayer& layer(int i) const { return ranks_[0][i]; }
  const KvLayer& layer(int i, int rank) const { return ranks_[rank][i]; }
  int ranks() const { return static_cast<int>(ranks_.size()); }
  int kv_dim(int rank) const { return kv_dims_[rank]; }
  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  // Bytes one block takes across all layers (K and V).
  static int64_t BytesPerBlock(int n_layers, int kv_dim, int block_size) {
    return static_cast<int64_t>(n_layers) * kv_dim * block_size * 2 * 2;
  }

  // Grows `table` to cover `positions` positions. ResourceExhausted (and no
  // change) if not enough blocks are free.
  absl::Status Reserve(std::vector<int32_t>& table, int64_t positions);
  // Returns every block of `table` to the pool and clears it.
  void Release(std::vector<int32_t>& table);

 private:
  KvCache() = default;
  int block_size_ = 0;
  int64_t num_blocks_ = 0;
  std::vector<std::vector<KvLayer>> ranks_;  // [rank][layer]
  std::vector<int> kv_dims_;
  std::vector<int32_t> free_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_KV_KV_CACHE_H_

// BlockManager: who owns which KV block, and the prefix cache.
//
// Blocks are reference-counted. A full block whose tokens are known gets a
// hash chained over the tokens of every block before it (and a salt, e.g.
// the LoRA adapter, so that different adapters never share blocks); another
// sequence whose prompt starts with the same blocks reuses them instead of
// recomputing them. Blocks nobody references but whose contents are cached
// stay evictable, least recently used first, until their memory is needed.
//
// The scheduler sees only counts and block tables; the KV memory itself is
// the KvCache's.
//
// Thread-safety: not thread-safe; owned by the engine thread.
#ifndef TESSERA_WORKER_ENGINE_BLOCK_MANAGER_H_
#define TESSERA_WORKER_ENGINE_BLOCK_MANAGER_H_

#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace tessera {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int block_size, bool prefix_caching);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
  // Blocks that can be handed out now (free or evictable).
  int64_t available_blocks() const { return static_cast<int64_t>(free_.size() + lru_.size()); }
  int64_t used_blocks() const { return num_blocks() - available_blocks(); }
  static int64_t BlocksFor(int64_t tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

  // Appends to an empty `table` the cached blocks that hold a prefix of
  // `tokens` (whole blocks, never the last token: its logits are needed) and
  // returns how many tokens they cover. Counts a query and its hits.
  int64_t MatchPrefix(std::span<const int32_t> tokens, uint64_t salt, std::vector<int32_t>& table,
                      std::vector<uint64_t>& hashes);

  // Grows `table` to cover `positions` positions with fresh blocks.
  // ResourceExhausted (and no change) if not enough blocks are available.
  absl::Status Grow(std::vector<int32_t>& table, int64_t positions);

  // Registers the full blocks of `table` covering `tokens[0, computed)` whose
  // hash is not yet known, so later sequences can share them.
  void CommitFull(std::span<const int32_t> tokens, int64_t computed, uint64_t salt, std::span<const int32_t> table,
                  std::vector<uint64_t>& hashes);

  // Drops the sequence's references and clears the table.
  void Free(std::vector<int32_t>& table, std::vector<uint64_t>& hashes);

  uint64_t prefix_queries() const { return queries_; }
  uint64_t prefix_hit_tokens() const { return hit_tokens_; }
  uint64_t prefix_query_tokens() const { return query_tokens_; }

 private:
  uint64_t BlockHash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) const;
  int32_t TakeBlock();

  int block_size_;
  bool prefix_caching_;
  std::vector<int32_t> refs_;
  std::vector<uint64_t> block_hash_;  // 0: none
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // evictable cached blocks, least recently used first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
  absl::flat_hash_map<uint64_t, int32_t> cached_;  // hash -> block
  uint64_t queries_ = 0, hit_tokens_ = 0, query_tokens_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_BLOCK_MANAGER_H_

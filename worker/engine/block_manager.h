// BlockManager: who owns which KV block, and the prefix cache.
//
// Blocks are reference-counted. A full block whose tokens are known gets a
// hash chained over the tokens of every block before it (and a salt, e.g.
// the LoRA adapter, so that different adapters never share blocks); another
// sequence whose prompt starts with the same blocks reuses them instead of
// recomputing them. Blocks nobody references but whose contents are cached
// stay evictable, least recently used first, until their memory is needed.
//
// The hash only finds a candidate; it never decides a hit. Each cached block
// keeps its own tokens, its salt, and which cached block (and which
// incarnation of it: the generation, bumped whenever a block loses its
// cached identity) precedes it. A hit needs all of them to match, so a
// 64-bit hash collision, or a child whose parent was evicted and reused,
// is a miss rather than another prompt's KV state served as this one's.
//
// The scheduler sees only counts and block tables; the KV memory itself is
// the KvCache's.
//
// Thread-safety: not thread-safe; owned by the engine thread.
#ifndef TESSERA_WORKER_ENGINE_BLOCK_MANAGER_H_
#define TESSERA_WORKER_ENGINE_BLOCK_MANAGER_H_

#include <cstdint>
#include <functional>
#include <list>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace tessera {

class BlockManager {
 public:
  // The chain hash of a block: parent's hash, the block's tokens, the salt.
  // Injectable so tests can force collisions; the default is absl::HashOf.
  using HashFn = std::function<uint64_t(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt)>;

  // One full block of a sequence as the prefix cache knows it: its chain
  // hash and the cached block that holds exactly these contents (`block`,
  // -1 if none), which may be another sequence's block when this one was
  // computed as a duplicate.
  struct ChainLink {
    uint64_t hash = 0;
    int32_t block = -1;
    uint32_t generation = 0;
  };
  using Chain = std::vector<ChainLink>;

  BlockManager(int64_t num_blocks, int block_size, bool prefix_caching, HashFn hash = nullptr);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
  // Blocks that can be handed out now (free or evictable).
  int64_t available_blocks() const { return static_cast<int64_t>(free_.size() + lru_.size()); }
  int64_t used_blocks() const { return num_blocks() - available_blocks(); }
  static int64_t BlocksFor(int64_t tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

  // Appends to an empty `table` the cached blocks that hold a prefix of
  // `tokens` (whole blocks, never the last token: its logits are needed) and
  // returns how many tokens they cover. Counts a query and its hits.
  int64_t MatchPrefix(std::span<const int32_t> tokens, uint64_t salt, std::vector<int32_t>& table, Chain& chain);

  // Grows `table` to cover `positions` positions with fresh blocks.
  // ResourceExhausted (and no change) if not enough blocks are available.
  absl::Status Grow(std::vector<int32_t>& table, int64_t positions);

  // Registers the full blocks of `table` covering `tokens[0, computed)` not
  // yet in `chain`, so later sequences can share them.
  void CommitFull(std::span<const int32_t> tokens, int64_t computed, uint64_t salt, std::span<const int32_t> table,
                  Chain& chain);

  // Drops the sequence's references and clears the table and chain.
  void Free(std::vector<int32_t>& table, Chain& chain);

  uint64_t prefix_queries() const { return queries_; }
  uint64_t prefix_hit_tokens() const { return hit_tokens_; }
  uint64_t prefix_query_tokens() const { return query_tokens_; }
  // Candidates the hash found that verification refused (collisions, stale
  // children of evicted parents).
  uint64_t prefix_false_candidates() const { return false_candidates_; }

 private:
  uint64_t BlockHash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) const;
  // Whether cached block `block` holds `tokens` under `salt` after `parent`
  // (a ChainLink of the preceding block; block -1 for the first).
  bool Holds(int32_t block, std::span<const int32_t> tokens, uint64_t salt, const ChainLink& parent) const;
  void Register(int32_t block, uint64_t hash, std::span<const int32_t> tokens, uint64_t salt, const ChainLink& parent);
  // Forgets the cached identity of `block` (its children become stale).
  void Unregister(int32_t block);
  int32_t TakeBlock();

  int block_size_;
  bool prefix_caching_;
  HashFn hash_;
  std::vector<int32_t> refs_;
  // Cached identity, per block. block_hash_ 0: none.
  std::vector<uint64_t> block_hash_;
  std::vector<uint64_t> block_salt_;
  std::vector<int32_t> block_tokens_;  // block_size_ per block
  std::vector<int32_t> parent_block_;  // -1: first block of a prompt
  std::vector<uint32_t> parent_generation_;
  std::vector<uint32_t> generation_;
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // evictable cached blocks, least recently used first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
  absl::flat_hash_map<uint64_t, int32_t> cached_;  // hash -> block
  uint64_t queries_ = 0, hit_tokens_ = 0, query_tokens_ = 0, false_candidates_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_ENGINE_BLOCK_MANAGER_H_

#include "worker/engine/block_manager.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace tessera {

BlockManager::BlockManager(int64_t num_blocks, int block_size, bool prefix_caching, HashFn hash)
    : block_size_(block_size),
      prefix_caching_(prefix_caching),
      hash_(std::move(hash)),
      refs_(num_blocks, 0),
      block_hash_(num_blocks, 0),
      block_salt_(num_blocks, 0),
      block_tokens_(prefix_caching ? num_blocks * block_size : 0, 0),
      parent_block_(num_blocks, -1),
      parent_generation_(num_blocks, 0),
      generation_(num_blocks, 0),
      lru_pos_(num_blocks),
      in_lru_(num_blocks, false) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

uint64_t BlockManager::BlockHash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) const {
  const uint64_t h =
      hash_ ? hash_(parent, tokens, salt) : absl::HashOf(parent, salt, absl::MakeConstSpan(tokens.data(), tokens.size()));
  return h == 0 ? 1 : h;  // 0 means "no hash"
}

bool BlockManager::Holds(int32_t block, std::span<const int32_t> tokens, uint64_t salt, const ChainLink& parent) const {
  if (block_hash_[block] == 0 || block_salt_[block] != salt || parent_block_[block] != parent.block) return false;
  if (parent.block >= 0 && parent_generation_[block] != parent.generation) return false;
  return std::equal(tokens.begin(), tokens.end(), block_tokens_.begin() + int64_t{block} * block_size_);
}

void BlockManager::Register(int32_t block, uint64_t hash, std::span<const int32_t> tokens, uint64_t salt,
                            const ChainLink& parent) {
  block_hash_[block] = hash;
  block_salt_[block] = salt;
  std::copy(tokens.begin(), tokens.end(), block_tokens_.begin() + int64_t{block} * block_size_);
  parent_block_[block] = parent.block;
  parent_generation_[block] = parent.generation;
  cached_[hash] = block;
}

void BlockManager::Unregister(int32_t block) {
  auto it = cached_.find(block_hash_[block]);
  if (it != cached_.end() && it->second == block) cached_.erase(it);
  block_hash_[block] = 0;
  ++generation_[block];
  if (in_lru_[block]) {  // unreferenced and no longer cached: plain free
    lru_.erase(lru_pos_[block]);
    in_lru_[block] = false;
    free_.push_back(block);
  }
}

int64_t BlockManager::MatchPrefix(std::span<const int32_t> tokens, uint64_t salt, std::vector<int32_t>& table,
                                  Chain& chain) {
  ++queries_;
  query_tokens_ += tokens.size();
  if (!prefix_caching_ || tokens.empty()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  ChainLink parent;
  int64_t matched = 0;
  for (int64_t b = 0; b < max_blocks; ++b) {
    const auto block_tokens = tokens.subspan(b * block_size_, block_size_);
    const uint64_t h = BlockHash(parent.hash, block_tokens, salt);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const int32_t block = it->second;
    if (!Holds(block, block_tokens, salt, parent)) {
      ++false_candidates_;
      break;
    }
    if (refs_[block] == 0 && in_lru_[block]) {
      lru_.erase(lru_pos_[block]);
      in_lru_[block] = false;
    }
    ++refs_[block];
    table.push_back(block);
    parent = ChainLink{h, block, generation_[block]};
    chain.push_back(parent);
    ++matched;
  }
  hit_tokens_ += matched * block_size_;
  return matched * block_size_;
}

int32_t BlockManager::TakeBlock() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = lru_.front();  // evict the least recently used cached block
    lru_.pop_front();
    in_lru_[b] = false;
    Unregister(b);
  }
  refs_[b] = 1;
  return b;
}

absl::Status BlockManager::Grow(std::vector<int32_t>& table, int64_t positions) {
  const int64_t need = BlocksFor(positions, block_size_) - static_cast<int64_t>(table.size());
  if (need <= 0) return absl::OkStatus();
  if (need > available_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: need ", need, " blocks, ", available_blocks(), " available"));
  }
  for (int64_t i = 0; i < need; ++i) table.push_back(TakeBlock());
  return absl::OkStatus();
}

void BlockManager::CommitFull(std::span<const int32_t> tokens, int64_t computed, uint64_t salt,
                              std::span<const int32_t> table, Chain& chain) {
  if (!prefix_caching_) return;
  const int64_t full = std::min<int64_t>(computed / block_size_, static_cast<int64_t>(table.size()));
  for (int64_t b = static_cast<int64_t>(chain.size()); b < full; ++b) {
    const ChainLink parent = b == 0 ? ChainLink{} : chain[b - 1];
    const auto block_tokens = tokens.subspan(b * block_size_, block_size_);
    const uint64_t h = BlockHash(parent.hash, block_tokens, salt);
    const int32_t block = table[b];
    // A child can only be cached under a parent that still is what the
    // chain says it is; past a stale link the rest of the prompt stays
    // private to this sequence.
    if (parent.block < 0 && b > 0) {
      chain.push_back(ChainLink{h, -1, 0});
      continue;
    }
    if (parent.block >= 0 && generation_[parent.block] != parent.generation) {
      chain.push_back(ChainLink{h, -1, 0});
      continue;
    }
    auto it = cached_.find(h);
    if (it != cached_.end() && Holds(it->second, block_tokens, salt, parent)) {
      // Same contents already cached (computed concurrently): link to it.
      chain.push_back(ChainLink{h, it->second, generation_[it->second]});
      continue;
    }
    if (it != cached_.end()) {
      ++false_candidates_;
      Unregister(it->second);  // a collision or a stale child: the newer contents win
    }
    if (block_hash_[block] != 0) Unregister(block);
    Register(block, h, block_tokens, salt, parent);
    chain.push_back(ChainLink{h, block, generation_[block]});
  }
}

void BlockManager::Free(std::vector<int32_t>& table, Chain& chain) {
  // Later blocks first: they are the least likely to be shared again, so
  // they go to the front of the eviction order.
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    const int32_t b = *it;
    if (--refs_[b] > 0) continue;
    if (block_hash_[b] != 0) {
      lru_pos_[b] = lru_.insert(lru_.end(), b);
      in_lru_[b] = true;
    } else {
      free_.push_back(b);
    }
  }
  table.clear();
  chain.clear();
}

}  // namespace tessera

#include "worker/engine/block_manager.h"

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace tessera {

BlockManager::BlockManager(int64_t num_blocks, int block_size, bool prefix_caching)
    : block_size_(block_size),
      prefix_caching_(prefix_caching),
      refs_(num_blocks, 0),
      block_hash_(num_blocks, 0),
      lru_pos_(num_blocks),
      in_lru_(num_blocks, false) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

uint64_t BlockManager::BlockHash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) const {
  uint64_t h = absl::HashOf(parent, salt, absl::MakeConstSpan(tokens.data(), tokens.size()));
  return h == 0 ? 1 : h;  // 0 means "no hash"
}

int64_t BlockManager::MatchPrefix(std::span<const int32_t> tokens, uint64_t salt, std::vector<int32_t>& table,
                                  std::vector<uint64_t>& hashes) {
  ++queries_;
  query_tokens_ += tokens.size();
  if (!prefix_caching_ || tokens.empty()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  uint64_t parent = 0;
  int64_t matched = 0;
  for (int64_t b = 0; b < max_blocks; ++b) {
    const uint64_t h = BlockHash(parent, tokens.subspan(b * block_size_, block_size_), salt);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const int32_t block = it->second;
    if (refs_[block] == 0 && in_lru_[block]) {
      lru_.erase(lru_pos_[block]);
      in_lru_[block] = false;
    }
    ++refs_[block];
    table.push_back(block);
    hashes.push_back(h);
    parent = h;
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
    cached_.erase(block_hash_[b]);
    block_hash_[b] = 0;
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
                              std::span<const int32_t> table, std::vector<uint64_t>& hashes) {
  if (!prefix_caching_) return;
  const int64_t full = std::min<int64_t>(computed / block_size_, static_cast<int64_t>(table.size()));
  for (int64_t b = static_cast<int64_t>(hashes.size()); b < full; ++b) {
    const uint64_t parent = b == 0 ? 0 : hashes[b - 1];
    const uint64_t h = BlockHash(parent, tokens.subspan(b * block_size_, block_size_), salt);
    hashes.push_back(h);
    const int32_t block = table[b];
    if (block_hash_[block] == 0 && !cached_.contains(h)) {
      block_hash_[block] = h;
      cached_.emplace(h, block);
    }
  }
}

void BlockManager::Free(std::vector<int32_t>& table, std::vector<uint64_t>& hashes) {
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
  hashes.clear();
}

}  // namespace tessera

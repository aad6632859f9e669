#include "worker/structured/token_index.h"

#include <algorithm>
#include <numeric>

namespace tessera::structured {

TokenIndex::TokenIndex(std::vector<std::string> pieces, std::vector<int32_t> eos_ids)
    : pieces_(std::move(pieces)), eos_(std::move(eos_ids)) {
  // Sorted pieces give the pre-order directly: a node per distinct prefix,
  // opened when a piece first needs it.
  std::vector<int32_t> order;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    if (!pieces_[i].empty()) order.push_back(static_cast<int32_t>(i));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return pieces_[a] < pieces_[b] || (pieces_[a] == pieces_[b] && a < b);
  });
  nodes_.push_back(TrieNode{});
  std::vector<uint32_t> path = {0};  // open nodes, root first; path[d] is at depth d
  std::string_view prev;
  std::vector<std::vector<int32_t>> tokens_of(1);
  for (int32_t id : order) {
    const std::string_view p = pieces_[id];
    size_t common = 0;
    while (common < p.size() && common < prev.size() && p[common] == prev[common]) ++common;
    // Close nodes deeper than the shared prefix.
    while (path.size() > common + 1) {
      const uint32_t n = path.back();
      path.pop_back();
      nodes_[n].subtree = static_cast<uint32_t>(nodes_.size() - n);
    }
    for (size_t d = common; d < p.size(); ++d) {
      TrieNode node;
      node.byte = static_cast<uint8_t>(p[d]);
      path.push_back(static_cast<uint32_t>(nodes_.size()));
      nodes_.push_back(node);
      tokens_of.emplace_back();
    }
    tokens_of[path.back()].push_back(id);
    prev = p;
  }
  while (!path.empty()) {
    const uint32_t n = path.back();
    path.pop_back();
    nodes_[n].subtree = static_cast<uint32_t>(nodes_.size() - n);
  }
  for (size_t n = 0; n < nodes_.size(); ++n) {
    nodes_[n].tok_begin = static_cast<uint32_t>(node_tokens_.size());
    node_tokens_.insert(node_tokens_.end(), tokens_of[n].begin(), tokens_of[n].end());
    nodes_[n].tok_end = static_cast<uint32_t>(node_tokens_.size());
  }
}

bool TokenIndex::is_eos(int32_t id) const { return std::find(eos_.begin(), eos_.end(), id) != eos_.end(); }

void TokenIndex::Walk(const Dfa& dfa, uint32_t node, int32_t state, uint64_t* out) const {
  const uint32_t end = node + nodes_[node].subtree;
  for (uint32_t child = node + 1; child < end; child += nodes_[child].subtree) {
    const TrieNode& c = nodes_[child];
    const int32_t next = dfa.Next(state, c.byte);
    if (next == Dfa::kDead) continue;
    for (uint32_t t = c.tok_begin; t < c.tok_end; ++t) {
      const int32_t id = node_tokens_[t];
      out[id >> 6] |= uint64_t{1} << (id & 63);
    }
    if (c.subtree > 1) Walk(dfa, child, next, out);
  }
}

TokenBitset TokenIndex::AllowedTokens(const Dfa& dfa, int32_t state) const {
  TokenBitset bits((pieces_.size() + 63) / 64, 0);
  Walk(dfa, 0, state, bits.data());
  if (dfa.accepting(state)) {
    for (int32_t id : eos_) {
      if (id >= 0 && id < vocab_size()) bits[id >> 6] |= uint64_t{1} << (id & 63);
    }
  }
  return bits;
}

}  // namespace tessera::structured

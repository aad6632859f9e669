// TokenIndex: a model's vocabulary as a byte trie, for turning an automaton
// state into the set of tokens that can continue a valid output.
//
// The trie is stored flat in pre-order with subtree sizes (the layout of
// llguidance's token trie): a walk that meets a dead automaton state skips
// the whole subtree at once, so a state's mask costs the trie nodes that
// stay alive, not the vocabulary.
//
// Tokens with no bytes (control and unused tokens) are never allowed; the
// end-of-generation ids are allowed exactly where the output is complete.
//
// Thread-safety: immutable after construction; shared by every request of
// the model.
#ifndef TESSERA_WORKER_STRUCTURED_TOKEN_INDEX_H_
#define TESSERA_WORKER_STRUCTURED_TOKEN_INDEX_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "worker/structured/dfa.h"

namespace tessera::structured {

// One bit per token id (bit i of word i / 64).
using TokenBitset = std::vector<uint64_t>;

inline bool TestBit(const uint64_t* bits, int32_t id) { return (bits[id >> 6] >> (id & 63)) & 1; }

class TokenIndex {
 public:
  // pieces[id]: the bytes token id adds to the output (empty: never
  // allowed); eos_ids: the ids that end generation.
  TokenIndex(std::vector<std::string> pieces, std::vector<int32_t> eos_ids);

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  std::string_view piece(int32_t id) const { return pieces_[id]; }
  const std::vector<int32_t>& eos_ids() const { return eos_; }
  bool is_eos(int32_t id) const;

  // The tokens allowed in `state` of `dfa`: those whose bytes the DFA can
  // walk from `state` without dying, plus the eos ids if `state` accepts.
  TokenBitset AllowedTokens(const Dfa& dfa, int32_t state) const;

 private:
  struct TrieNode {
    uint32_t subtree = 1;  // nodes in this subtree, itself included
    uint32_t tok_begin = 0, tok_end = 0;  // into node_tokens_
    uint8_t byte = 0;
  };
  void Walk(const Dfa& dfa, uint32_t node, int32_t state, uint64_t* out) const;

  std::vector<std::string> pieces_;
  std::vector<int32_t> eos_;
  std::vector<TrieNode> nodes_;  // pre-order; nodes_[0] is the root (no byte)
  std::vector<int32_t> node_tokens_;
};

}  // namespace tessera::structured

#endif  // TESSERA_WORKER_STRUCTURED_TOKEN_INDEX_H_

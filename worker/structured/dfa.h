// Dfa: a deterministic automaton over bytes compiled from a regex tree
// (Thompson NFA, then subset construction), trimmed so that every state it
// keeps can still reach an accepting state. Walking it byte by byte is how
// constrained decoding checks output: a byte with no transition (kDead) can
// never be part of a valid output, and a live state can always be completed.
//
// Bytes are grouped into equivalence classes (bytes no edge tells apart), so
// the table holds states x classes entries.
//
// Thread-safety: immutable after Compile; any number of threads may read.
#ifndef TESSERA_WORKER_STRUCTURED_DFA_H_
#define TESSERA_WORKER_STRUCTURED_DFA_H_

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/structured/regex.h"

namespace tessera::structured {

struct DfaLimits {
  int max_nfa_states = 400'000;
  int max_dfa_states = 50'000;
  absl::Time deadline = absl::InfiniteFuture();  // compile time bound
};

class Dfa {
 public:
  static constexpr int32_t kDead = -1;

  // InvalidArgument when the language is empty; ResourceExhausted (with the
  // bound in the message) when a limit or the deadline is hit.
  static absl::StatusOr<Dfa> Compile(const NodeP& root, const DfaLimits& limits = {});

  int32_t start() const { return start_; }
  // REQUIRES: 0 <= s < num_states().
  int32_t Next(int32_t s, uint8_t b) const { return table_[static_cast<size_t>(s) * num_classes_ + class_of_[b]]; }
  bool accepting(int32_t s) const { return accepting_[s] != 0; }
  // Accepting with no way to go on: the output is complete.
  bool final(int32_t s) const { return final_[s] != 0; }
  int num_states() const { return static_cast<int>(accepting_.size()); }
  int num_classes() const { return num_classes_; }

  // Walks `bytes` from `s`; kDead if some byte has no transition.
  int32_t Walk(int32_t s, std::string_view bytes) const {
    for (unsigned char b : bytes) {
      if (s == kDead) return kDead;
      s = Next(s, b);
    }
    return s;
  }
  bool Matches(std::string_view text) const {
    const int32_t s = Walk(start_, text);
    return s != kDead && accepting(s);
  }

 private:
  Dfa() = default;
  int32_t start_ = 0;
  int num_classes_ = 0;
  std::array<uint8_t, 256> class_of_{};
  std::vector<int32_t> table_;
  std::vector<uint8_t> accepting_;
  std::vector<uint8_t> final_;
};

// The strings of `body` whose length is within [min_len, max_len] (max_len
// -1: no upper bound), as one automaton node. `body` is the inside of a
// JSON string as JSON writes it (ForJsonString's output: escapes and UTF-8),
// and length is counted as JSON Schema counts it, in characters (code
// points) of the decoded string: an escape (\n, \", \u00e9) is one
// character, and so is each UTF-8 sequence. Built as the product of body's
// DFA with a counter of characters. InvalidArgument when no string of body
// has such a length, or when the product would need more than `max_states`
// states (or the deadline passes).
absl::StatusOr<NodeP> WithLengthBound(const NodeP& body, int min_len, int max_len, int max_states,
                                      absl::Time deadline = absl::InfiniteFuture());

}  // namespace tessera::structured

#endif  // TESSERA_WORKER_STRUCTURED_DFA_H_

// Regular expressions for structured output: an expression tree over code
// points and bytes, and a parser for a documented regular subset.
//
// The subset (what guided_regex and JSON Schema "pattern" accept):
//   literals (UTF-8), escapes \n \r \t \f \v \0 \xHH \uHHHH \u{H..} and any
//   escaped punctuation; the classes \d \D \w \W \s \S (ASCII, as ECMA-262
//   without the u flag: a subset of what Python's Unicode classes accept);
//   [...] and [^...] with ranges and those escapes; . (any code point but
//   \n); alternation |; groups (...), (?:...), (?P<name>...), (?<name>...);
//   quantifiers ? * + {m} {m,} {m,n} (lazy and possessive forms mean the
//   same for a whole-string match); ^ at the very start and $ at the very
//   end only.
// Refused by name: backreferences (\1, \k<..>), lookahead and lookbehind,
// word boundaries (\b \B), inline flags ((?i) ...), \A \Z \z, and anchors
// anywhere else. Repeat counts are bounded (kMaxRepeat).
//
// A match is always a whole-string match (Python's re.fullmatch). Matching
// is over the UTF-8 bytes of the text; only valid UTF-8 (no surrogates) is
// ever accepted.
//
// Thread-safety: nodes are immutable once built and may be shared.
#ifndef TESSERA_WORKER_STRUCTURED_REGEX_H_
#define TESSERA_WORKER_STRUCTURED_REGEX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::structured {

inline constexpr int kMaxRepeat = 1000;  // the largest m or n of {m,n}

// A set of code points (or bytes) as sorted, disjoint, non-adjacent ranges.
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;
Ranges Normalize(Ranges r);
Ranges Complement(const Ranges& r, uint32_t max);  // within [0, max]
Ranges Subtract(const Ranges& a, const Ranges& b);

struct Node;
using NodeP = std::shared_ptr<const Node>;

// A byte automaton inside a tree (Node::Op::kAutomaton), for a language that
// is easier to build as a machine than to write as a regex: a pattern
// intersected with a length bound (WithLengthBound, dfa.h). Every state can
// reach an accepting one.
struct ByteAutomaton {
  struct Edge {
    uint8_t lo, hi;
    int32_t to;
  };
  int32_t start = 0;
  std::vector<std::vector<Edge>> edges;  // per state, disjoint byte ranges
  std::vector<uint8_t> accepting;        // per state
};

struct Node {
  enum class Op {
    kNever,    // matches nothing (an empty language)
    kEmpty,    // matches the empty string
    kChars,    // one code point from `ranges`, as its UTF-8 bytes
    kBytes,    // one byte from `ranges`
    kConcat,   // kids in order
    kAlt,      // any one kid
    kRepeat,   // kids[0] between min and max (-1: unbounded) times
    kSepList,  // kids[0] (kids[1] kids[0])*: a list with separators, one copy of the item
    kAutomaton,  // the output bytes `automaton` accepts
  };
  Op op = Op::kEmpty;
  Ranges ranges;
  std::vector<NodeP> kids;
  int min = 0, max = -1;
  std::shared_ptr<const ByteAutomaton> automaton = nullptr;
};

// Smart constructors: they fold kNever and kEmpty away, so that an empty
// language propagates (a concatenation with a kNever part is kNever).
NodeP Never();
NodeP Empty();
NodeP Chars(Ranges r);  // kNever when r is empty
NodeP Bytes(Ranges r);
NodeP Literal(std::string_view utf8);  // the bytes of `utf8`
NodeP Concat(std::vector<NodeP> kids);
NodeP Alt(std::vector<NodeP> kids);
NodeP Repeat(NodeP kid, int min, int max);
NodeP Optional(NodeP kid);
NodeP SepList(NodeP item, NodeP sep);  // one or more items
bool IsNever(const NodeP& n);
NodeP Automaton(std::shared_ptr<const ByteAutomaton> a);

struct ParsedRegex {
  NodeP root;
  bool anchored_start = false;  // the pattern began with ^
  bool anchored_end = false;    // the pattern ended with $
};

// Parses `pattern` (UTF-8). InvalidArgument naming the construct and its
// offset for anything outside the subset or malformed.
absl::StatusOr<ParsedRegex> ParseRegex(std::string_view pattern);

// The same tree for a JSON string's contents: each code point the pattern
// matches is written as JSON writes it inside quotes. '"' and '\' become
// \" and \\, and the control characters become their short escapes or
// \u00XX, so that the decoded string is what the pattern matched.
NodeP ForJsonString(const NodeP& n);

}  // namespace tessera::structured

#endif  // TESSERA_WORKER_STRUCTURED_REGEX_H_

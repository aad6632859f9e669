#include "worker/structured/dfa.h"

#include <algorithm>
#include <deque>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace tessera::structured {
namespace {

// Thompson NFA: each state has epsilon edges and byte-range edges.
struct NfaState {
  std::vector<int32_t> eps;
  struct Edge {
    uint8_t lo, hi;
    int32_t to;
  };
  std::vector<Edge> edges;
};

struct Frag {
  int32_t start, end;
};

// Code point ranges -> sequences of byte ranges, one per UTF-8 shape
// (the split of Russ Cox's RE2 and Rust's utf8-ranges).
using ByteSeq = std::vector<std::pair<uint8_t, uint8_t>>;

int Utf8Encode(uint32_t cp, uint8_t* out) {
  if (cp < 0x80) {
    out[0] = static_cast<uint8_t>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
    out[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
    out[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
  out[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
  out[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
  out[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
  return 4;
}

void SplitUtf8(uint32_t lo, uint32_t hi, std::vector<ByteSeq>& out) {
  if (lo > hi) return;
  // No surrogates: they are not valid UTF-8.
  if (lo <= 0xDFFF && hi >= 0xD800) {
    if (lo < 0xD800) SplitUtf8(lo, 0xD7FF, out);
    if (hi > 0xDFFF) SplitUtf8(0xE000, hi, out);
    return;
  }
  // One encoded length per range.
  static const uint32_t kMaxOfLen[] = {0x7F, 0x7FF, 0xFFFF};
  for (uint32_t m : kMaxOfLen) {
    if (lo <= m && hi > m) {
      SplitUtf8(lo, m, out);
      SplitUtf8(m + 1, hi, out);
      return;
    }
  }
  if (hi < 0x80) {
    out.push_back({{static_cast<uint8_t>(lo), static_cast<uint8_t>(hi)}});
    return;
  }
  // Ranges whose continuation bytes vary independently.
  for (int i = 1; i < 4; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        SplitUtf8(lo, lo | m, out);
        SplitUtf8((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        SplitUtf8(lo, (hi & ~m) - 1, out);
        SplitUtf8(hi & ~m, hi, out);
        return;
      }
    }
  }
  uint8_t a[4], b[4];
  const int n = Utf8Encode(lo, a);
  Utf8Encode(hi, b);
  ByteSeq seq;
  for (int i = 0; i < n; ++i) seq.emplace_back(a[i], b[i]);
  out.push_back(std::move(seq));
}

class NfaBuilder {
 public:
  explicit NfaBuilder(const DfaLimits& limits) : limits_(limits) {}

  absl::StatusOr<Frag> Build(const Node& n) {
    switch (n.op) {
      case Node::Op::kNever: {
        // No path from start to end.
        auto s = NewState(), e = NewState();
        if (!s.ok() || !e.ok()) return Exhausted();
        return Frag{*s, *e};
      }
      case Node::Op::kEmpty: {
        auto s = NewState();
        if (!s.ok()) return s.status();
        return Frag{*s, *s};
      }
      case Node::Op::kBytes: {
        auto s = NewState(), e = NewState();
        if (!s.ok() || !e.ok()) return Exhausted();
        for (const auto& [lo, hi] : n.ranges) {
          states_[*s].edges.push_back({static_cast<uint8_t>(lo), static_cast<uint8_t>(std::min<uint32_t>(hi, 255)), *e});
        }
        return Frag{*s, *e};
      }
      case Node::Op::kChars: {
        std::vector<ByteSeq> seqs;
        for (const auto& [lo, hi] : n.ranges) SplitUtf8(lo, std::min<uint32_t>(hi, 0x10FFFF), seqs);
        auto s = NewState(), e = NewState();
        if (!s.ok() || !e.ok()) return Exhausted();
        for (const ByteSeq& seq : seqs) {
          int32_t at = *s;
          for (size_t i = 0; i < seq.size(); ++i) {
            int32_t to = *e;
            if (i + 1 < seq.size()) {
              auto t = NewState();
              if (!t.ok()) return t.status();
              to = *t;
            }
            states_[at].edges.push_back({seq[i].first, seq[i].second, to});
            at = to;
          }
        }
        return Frag{*s, *e};
      }
      case Node::Op::kConcat: {
        Frag f{-1, -1};
        for (const NodeP& k : n.kids) {
          auto kf = Build(*k);
          if (!kf.ok()) return kf;
          if (f.start < 0) {
            f = *kf;
          } else {
            states_[f.end].eps.push_back(kf->start);
            f.end = kf->end;
          }
        }
        return f;
      }
      case Node::Op::kAlt: {
        auto s = NewState(), e = NewState();
        if (!s.ok() || !e.ok()) return Exhausted();
        for (const NodeP& k : n.kids) {
          auto kf = Build(*k);
          if (!kf.ok()) return kf;
          states_[*s].eps.push_back(kf->start);
          states_[kf->end].eps.push_back(*e);
        }
        return Frag{*s, *e};
      }
      case Node::Op::kRepeat: {
        auto s = NewState();
        if (!s.ok()) return s.status();
        Frag f{*s, *s};
        for (int i = 0; i < n.min; ++i) {
          auto kf = Build(*n.kids[0]);
          if (!kf.ok()) return kf;
          states_[f.end].eps.push_back(kf->start);
          f.end = kf->end;
        }
        if (n.max < 0) {
          // (kid)*: loop through one more copy.
          auto kf = Build(*n.kids[0]);
          if (!kf.ok()) return kf;
          auto e = NewState();
          if (!e.ok()) return e.status();
          states_[f.end].eps.push_back(kf->start);
          states_[f.end].eps.push_back(*e);
          states_[kf->end].eps.push_back(kf->start);
          states_[kf->end].eps.push_back(*e);
          f.end = *e;
        } else if (n.max > n.min) {
          auto e = NewState();
          if (!e.ok()) return e.status();
          for (int i = n.min; i < n.max; ++i) {
            auto kf = Build(*n.kids[0]);
            if (!kf.ok()) return kf;
            states_[f.end].eps.push_back(kf->start);
            states_[f.end].eps.push_back(*e);
            f.end = kf->end;
          }
          states_[f.end].eps.push_back(*e);
          f.end = *e;
        }
        return f;
      }
      case Node::Op::kAutomaton: {
        const ByteAutomaton& a = *n.automaton;
        const auto states = static_cast<int32_t>(a.edges.size());
        auto e = NewState();
        if (!e.ok()) return e.status();
        std::vector<int32_t> id(states);
        for (int32_t s = 0; s < states; ++s) {
          auto t = NewState();
          if (!t.ok()) return t.status();
          id[s] = *t;
        }
        for (int32_t s = 0; s < states; ++s) {
          for (const ByteAutomaton::Edge& edge : a.edges[s]) states_[id[s]].edges.push_back({edge.lo, edge.hi, id[edge.to]});
          if (a.accepting[s]) states_[id[s]].eps.push_back(*e);
        }
        return Frag{id[a.start], *e};
      }
      case Node::Op::kSepList: {
        auto item = Build(*n.kids[0]);
        if (!item.ok()) return item;
        auto sep = Build(*n.kids[1]);
        if (!sep.ok()) return sep;
        auto e = NewState();
        if (!e.ok()) return e.status();
        states_[item->end].eps.push_back(*e);
        states_[item->end].eps.push_back(sep->start);
        states_[sep->end].eps.push_back(item->start);
        return Frag{item->start, *e};
      }
    }
    return absl::InternalError("unknown regex node");
  }

  std::vector<NfaState>& states() { return states_; }

 private:
  absl::Status Exhausted() const {
    return absl::ResourceExhaustedError(
        absl::StrCat("the constraint is too large: its automaton needs more than ", limits_.max_nfa_states, " states"));
  }
  absl::StatusOr<int32_t> NewState() {
    if (static_cast<int>(states_.size()) >= limits_.max_nfa_states) return Exhausted();
    if ((states_.size() & 4095) == 0 && absl::Now() > limits_.deadline) {
      return absl::ResourceExhaustedError("the constraint took too long to compile");
    }
    states_.emplace_back();
    return static_cast<int32_t>(states_.size() - 1);
  }

  const DfaLimits& limits_;
  std::vector<NfaState> states_;
};

}  // namespace

absl::StatusOr<Dfa> Dfa::Compile(const NodeP& root, const DfaLimits& limits) {
  if (IsNever(root)) return absl::InvalidArgumentError("the constraint admits no output at all");
  NfaBuilder b(limits);
  auto frag = b.Build(*root);
  if (!frag.ok()) return frag.status();
  std::vector<NfaState>& nfa = b.states();
  const int32_t accept = frag->end;

  // Byte classes: bytes that no edge tells apart share a class.
  std::array<bool, 257> boundary{};
  boundary[0] = true;
  for (const NfaState& s : nfa) {
    for (const auto& e : s.edges) {
      boundary[e.lo] = true;
      boundary[e.hi + 1] = true;
    }
  }
  Dfa d;
  int cls = -1;
  for (int byte = 0; byte < 256; ++byte) {
    if (boundary[byte]) ++cls;
    d.class_of_[byte] = static_cast<uint8_t>(cls);
  }
  d.num_classes_ = cls + 1;

  // Subset construction over epsilon closures; a set keeps only the states
  // with byte edges and the accepting state.
  std::vector<uint32_t> stamp(nfa.size(), 0);
  uint32_t epoch = 0;
  std::vector<int32_t> stack;
  auto closure = [&](std::vector<int32_t>& set) {
    ++epoch;
    stack.assign(set.begin(), set.end());
    set.clear();
    for (int32_t s : stack) stamp[s] = epoch;
    std::vector<int32_t> all;
    while (!stack.empty()) {
      const int32_t s = stack.back();
      stack.pop_back();
      all.push_back(s);
      for (int32_t t : nfa[s].eps) {
        if (stamp[t] != epoch) {
          stamp[t] = epoch;
          stack.push_back(t);
        }
      }
    }
    for (int32_t s : all) {
      if (!nfa[s].edges.empty() || s == accept) set.push_back(s);
    }
    std::sort(set.begin(), set.end());
  };

  absl::flat_hash_map<std::vector<int32_t>, int32_t> ids;
  std::vector<std::vector<int32_t>> sets;
  std::vector<int32_t> table;
  std::vector<uint8_t> acc;
  auto intern = [&](std::vector<int32_t> set) -> absl::StatusOr<int32_t> {
    if (set.empty()) return kDead;
    auto it = ids.find(set);
    if (it != ids.end()) return it->second;
    if (static_cast<int>(sets.size()) >= limits.max_dfa_states) {
      return absl::ResourceExhaustedError(absl::StrCat("the constraint is too large: its automaton needs more than ",
                                                       limits.max_dfa_states, " states"));
    }
    const auto id = static_cast<int32_t>(sets.size());
    acc.push_back(std::binary_search(set.begin(), set.end(), accept) ? 1 : 0);
    ids.emplace(set, id);
    sets.push_back(std::move(set));
    return id;
  };
  std::vector<int32_t> first = {frag->start};
  closure(first);
  auto start = intern(std::move(first));
  if (!start.ok()) return start.status();
  std::vector<std::vector<int32_t>> buckets(d.num_classes_);
  for (size_t i = 0; i < sets.size(); ++i) {
    if ((i & 63) == 0 && absl::Now() > limits.deadline) {
      return absl::ResourceExhaustedError("the constraint took too long to compile");
    }
    for (auto& bk : buckets) bk.clear();
    for (int32_t s : sets[i]) {
      for (const auto& e : nfa[s].edges) {
        for (int c = d.class_of_[e.lo]; c <= d.class_of_[e.hi]; ++c) buckets[c].push_back(e.to);
      }
    }
    table.resize(table.size() + d.num_classes_, kDead);
    for (int c = 0; c < d.num_classes_; ++c) {
      if (buckets[c].empty()) continue;
      std::vector<int32_t> next = buckets[c];
      closure(next);
      auto id = intern(std::move(next));
      if (!id.ok()) return id.status();
      table[i * d.num_classes_ + c] = *id;
    }
  }

  // Trim: keep the states from which an accepting state is reachable.
  const size_t n = sets.size();
  std::vector<std::vector<int32_t>> rev(n);
  for (size_t s = 0; s < n; ++s) {
    for (int c = 0; c < d.num_classes_; ++c) {
      const int32_t t = table[s * d.num_classes_ + c];
      if (t != kDead) rev[t].push_back(static_cast<int32_t>(s));
    }
  }
  std::vector<uint8_t> live(n, 0);
  std::deque<int32_t> q;
  for (size_t s = 0; s < n; ++s) {
    if (acc[s]) {
      live[s] = 1;
      q.push_back(static_cast<int32_t>(s));
    }
  }
  while (!q.empty()) {
    const int32_t s = q.front();
    q.pop_front();
    for (int32_t p : rev[s]) {
      if (!live[p]) {
        live[p] = 1;
        q.push_back(p);
      }
    }
  }
  if (!live[*start]) return absl::InvalidArgumentError("the constraint admits no output at all");
  std::vector<int32_t> remap(n, kDead);
  int32_t next_id = 0;
  for (size_t s = 0; s < n; ++s) {
    if (live[s]) remap[s] = next_id++;
  }
  d.table_.assign(static_cast<size_t>(next_id) * d.num_classes_, kDead);
  d.accepting_.assign(next_id, 0);
  d.final_.assign(next_id, 0);
  for (size_t s = 0; s < n; ++s) {
    if (!live[s]) continue;
    const int32_t ns = remap[s];
    d.accepting_[ns] = acc[s];
    bool any = false;
    for (int c = 0; c < d.num_classes_; ++c) {
      const int32_t t = table[s * d.num_classes_ + c];
      const int32_t nt = t == kDead ? kDead : remap[t];
      d.table_[static_cast<size_t>(ns) * d.num_classes_ + c] = nt;
      any |= nt != kDead;
    }
    d.final_[ns] = acc[s] && !any;
  }
  d.start_ = remap[*start];
  return d;
}

absl::StatusOr<NodeP> WithLengthBound(const NodeP& body, int min_len, int max_len, int max_states,
                                      absl::Time deadline) {
  DfaLimits dl;
  dl.max_dfa_states = max_states;
  dl.deadline = deadline;
  auto d = Dfa::Compile(body, dl);
  if (!d.ok()) {
    if (d.status().code() == absl::StatusCode::kResourceExhausted) {
      return absl::InvalidArgumentError(d.status().message());
    }
    return d.status();
  }
  // Product states: (DFA state, escape position, characters so far). The
  // escape position: 0 outside an escape, 1 after '\', 2..5 before the
  // 1st..4th hex digit of \uXXXX. A character starts at a byte outside an
  // escape that is not a UTF-8 continuation byte (0x80-0xBF); the DFA only
  // admits well-formed escapes and UTF-8, so nothing else needs checking.
  // Without an upper bound, the count saturates at min_len.
  const int cap = max_len >= 0 ? max_len : min_len;
  struct Key {
    int32_t dfa;
    int esc, count;
  };
  auto pack = [](const Key& k) {
    return (static_cast<uint64_t>(k.dfa) << 32) | (static_cast<uint64_t>(k.esc) << 24) | static_cast<uint64_t>(k.count);
  };
  absl::flat_hash_map<uint64_t, int32_t> ids;
  std::vector<Key> keys;
  auto a = std::make_shared<ByteAutomaton>();
  const absl::Status too_large = absl::InvalidArgumentError(absl::StrCat(
      "the length bound makes the string's automaton larger than ", max_states, " states (", d->num_states(),
      " states times up to ", cap + 1, " lengths); lower maxLength/minLength or simplify the pattern"));
  auto intern = [&](const Key& k) -> absl::StatusOr<int32_t> {
    auto [it, inserted] = ids.try_emplace(pack(k), static_cast<int32_t>(keys.size()));
    if (inserted) {
      if (static_cast<int>(keys.size()) >= max_states) return too_large;
      keys.push_back(k);
      a->edges.emplace_back();
      a->accepting.push_back(d->accepting(k.dfa) && k.esc == 0 && k.count >= min_len);
    }
    return it->second;
  };
  auto start = intern({d->start(), 0, 0});
  if (!start.ok()) return start.status();
  for (size_t i = 0; i < keys.size(); ++i) {
    if ((i & 255) == 0 && absl::Now() > deadline) {
      return absl::InvalidArgumentError("the string's length bound took too long to compile");
    }
    const Key k = keys[i];
    int32_t run_to = Dfa::kDead;
    int run_lo = 0;
    for (int b = 0; b <= 256; ++b) {
      int32_t to = Dfa::kDead;
      if (b < 256) {
        const int32_t t = d->Next(k.dfa, static_cast<uint8_t>(b));
        if (t != Dfa::kDead) {
          Key n{t, 0, k.count};
          if (k.esc == 0) {
            if (b < 0x80 || b > 0xBF) ++n.count;
            n.esc = b == '\\' ? 1 : 0;
          } else if (k.esc == 1) {
            n.esc = b == 'u' ? 2 : 0;
          } else {
            n.esc = k.esc == 5 ? 0 : k.esc + 1;
          }
          if (max_len < 0) n.count = std::min(n.count, cap);
          if (n.count <= cap) {
            auto id = intern(n);
            if (!id.ok()) return id.status();
            to = *id;
          }
        }
      }
      if (to != run_to) {
        if (run_to != Dfa::kDead) {
          a->edges[i].push_back({static_cast<uint8_t>(run_lo), static_cast<uint8_t>(b - 1), run_to});
        }
        run_to = to;
        run_lo = b;
      }
    }
  }
  // Keep the states that can still reach an accepting one.
  const size_t n = keys.size();
  std::vector<std::vector<int32_t>> rev(n);
  for (size_t s = 0; s < n; ++s) {
    for (const auto& e : a->edges[s]) rev[e.to].push_back(static_cast<int32_t>(s));
  }
  std::vector<uint8_t> live(n, 0);
  std::vector<int32_t> stack;
  for (size_t s = 0; s < n; ++s) {
    if (a->accepting[s]) live[s] = 1, stack.push_back(static_cast<int32_t>(s));
  }
  while (!stack.empty()) {
    const int32_t s = stack.back();
    stack.pop_back();
    for (int32_t p : rev[s]) {
      if (!live[p]) live[p] = 1, stack.push_back(p);
    }
  }
  if (!live[*start]) {
    return absl::InvalidArgumentError(
        absl::StrCat("no string has both this form and a length in [", min_len, ", ",
                     max_len >= 0 ? absl::StrCat(max_len) : std::string("inf"), "]"));
  }
  std::vector<int32_t> remap(n, Dfa::kDead);
  auto out = std::make_shared<ByteAutomaton>();
  for (size_t s = 0; s < n; ++s) {
    if (live[s]) remap[s] = static_cast<int32_t>(out->accepting.size()), out->accepting.push_back(a->accepting[s]);
  }
  out->edges.resize(out->accepting.size());
  for (size_t s = 0; s < n; ++s) {
    if (!live[s]) continue;
    for (const auto& e : a->edges[s]) {
      if (live[e.to]) out->edges[remap[s]].push_back({e.lo, e.hi, remap[e.to]});
    }
  }
  out->start = remap[*start];
  return Automaton(std::move(out));
}

}  // namespace tessera::structured

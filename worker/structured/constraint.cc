#include "worker/structured/constraint.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/json/json_file.h"

namespace tessera::structured {

Constraint::Constraint(Dfa dfa, std::shared_ptr<const TokenIndex> index, std::shared_ptr<MaskCounters> counters)
    : dfa_(std::move(dfa)), index_(std::move(index)), counters_(std::move(counters)) {}

const uint64_t* Constraint::Mask(int32_t state) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = masks_.find(state);
    if (it != masks_.end()) return it->second->data();
  }
  // Computed outside the lock (two threads may both compute; one wins).
  const absl::Time start = absl::Now();
  TokenBitset allowed = index_->AllowedTokens(dfa_, state);
  bool any = false;
  for (uint64_t w : allowed) any |= w != 0;
  if (!any) {
    // No token of this vocabulary spells any continuation (a vocabulary
    // without single-byte tokens): allow the end rather than nothing.
    for (int32_t id : index_->eos_ids()) {
      if (id >= 0 && id < index_->vocab_size()) allowed[id >> 6] |= uint64_t{1} << (id & 63);
    }
  }
  auto bits = std::make_unique<const TokenBitset>(std::move(allowed));
  if (counters_ != nullptr) {
    counters_->computed.fetch_add(1, std::memory_order_relaxed);
    counters_->nanos.fetch_add(static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - start)),
                               std::memory_order_relaxed);
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = masks_.try_emplace(state, std::move(bits));
  return it->second->data();
}

int32_t Constraint::Advance(int32_t state, int32_t token) const {
  if (token < 0 || token >= index_->vocab_size()) return Dfa::kDead;
  if (index_->is_eos(token)) return dfa_.accepting(state) ? state : Dfa::kDead;
  const std::string_view piece = index_->piece(token);
  if (piece.empty()) return Dfa::kDead;
  return dfa_.Walk(state, piece);
}

int Constraint::cached_masks() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(masks_.size());
}

int Constraint::Precompute(int steps, absl::Time deadline) const {
  // Breadth first over tokens: the states a sequence can be in after 1, 2,
  // ... tokens. Each visited state's mask is computed (and kept), and its
  // allowed tokens lead to the next frontier.
  absl::flat_hash_set<int32_t> seen = {start()};
  std::vector<int32_t> frontier = {start()};
  int visited = 0;
  const int vocab = index_->vocab_size();
  for (int step = 0; step <= steps && !frontier.empty(); ++step) {
    std::vector<int32_t> next;
    for (int32_t s : frontier) {
      if (absl::Now() >= deadline) return visited;
      const uint64_t* m = Mask(s);
      ++visited;
      if (step == steps) continue;
      for (int32_t w = 0; w < (vocab + 63) / 64; ++w) {
        for (uint64_t bits = m[w]; bits != 0; bits &= bits - 1) {
          const int32_t id = w * 64 + __builtin_ctzll(bits);
          if (index_->is_eos(id)) continue;
          const int32_t t = Advance(s, id);
          if (t != Dfa::kDead && seen.insert(t).second) next.push_back(t);
        }
      }
    }
    frontier = std::move(next);
  }
  return visited;
}

absl::StatusOr<NodeP> SpecToRegex(const ConstraintSpec& spec, const ConstraintLimits& limits) {
  size_t bytes = spec.text.size();
  for (const std::string& c : spec.choices) bytes += c.size();
  if (bytes > limits.max_spec_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the constraint is ", bytes, " bytes; the limit is ",
                                                   limits.max_spec_bytes, " bytes"));
  }
  switch (spec.kind) {
    case ConstraintSpec::Kind::kJsonObject: return AnyJsonObject(limits.json_object_depth);
    case ConstraintSpec::Kind::kRegex: {
      auto r = ParseRegex(spec.text);
      if (!r.ok()) return r.status();
      return r->root;
    }
    case ConstraintSpec::Kind::kChoice: {
      if (spec.choices.empty()) return absl::InvalidArgumentError("the choice list is empty");
      if (static_cast<int>(spec.choices.size()) > limits.max_choices) {
        return absl::InvalidArgumentError(absl::StrCat("more than ", limits.max_choices, " choices"));
      }
      std::vector<NodeP> alts;
      for (const std::string& c : spec.choices) {
        if (c.empty()) return absl::InvalidArgumentError("a choice is the empty string");
        alts.push_back(Literal(c));
      }
      return Alt(std::move(alts));
    }
    case ConstraintSpec::Kind::kJsonSchema: {
      // Parsed here with a depth bound, so a hostile document never
      // recurses deeper than the limit in nlohmann either.
      const int max_json_depth = 2 * limits.schema.max_depth + 8;
      // Ordered: properties are produced in the order the schema declares
      // them. Linear time (nlohmann's ordered parse is quadratic in an
      // object's member count: 27 s for a 1 MB object).
      bool too_deep = false;
      nlohmann::ordered_json schema = ParseOrderedJsonLinear(spec.text, max_json_depth, &too_deep);
      if (too_deep) {
        return absl::InvalidArgumentError(absl::StrCat("the schema is nested deeper than ", max_json_depth,
                                                       " JSON levels"));
      }
      if (schema.is_discarded()) return absl::InvalidArgumentError("the schema is not valid JSON");
      return JsonSchemaToRegex(schema, limits.schema);
    }
  }
  return absl::InternalError("unknown constraint kind");
}

ConstraintCache::ConstraintCache(std::shared_ptr<const TokenIndex> index, ConstraintLimits limits)
    : index_(std::move(index)), limits_(std::move(limits)) {}

absl::StatusOr<std::shared_ptr<const Constraint>> ConstraintCache::Get(const ConstraintSpec& spec) {
  // The key is the spec itself (kind, lengths, bytes), so distinct specs
  // never collide.
  std::string key = absl::StrCat(static_cast<int>(spec.kind), ":", spec.text.size(), ":", spec.text);
  for (const std::string& c : spec.choices) absl::StrAppend(&key, "|", c.size(), ":", c);
  std::shared_ptr<InFlight> mine;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
      if (it->first == key) {
        lru_.splice(lru_.begin(), lru_, it);
        ++stats_.hits;
        return lru_.front().second;
      }
    }
    // A burst of requests with a new spec compiles it once: the others wait
    // for that compile (bounded by the compile deadline) and share it.
    if (auto it = inflight_.find(key); it != inflight_.end()) {
      const std::shared_ptr<InFlight> theirs = it->second;
      mu_.Await(absl::Condition(&theirs->done));
      ++stats_.hits;
      return theirs->result;
    }
    mine = std::make_shared<InFlight>();
    inflight_.emplace(key, mine);
  }
  const absl::Time start = absl::Now();
  auto c = Compile(spec, start);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  {
    absl::MutexLock lock(&mu_);
    mine->result = c;
    mine->done = true;
    inflight_.erase(key);
    if (c.ok()) {
      ++stats_.misses;
      stats_.compile_seconds += seconds;
      lru_.emplace_front(std::move(key), *c);
      while (lru_.size() > limits_.cache_entries) lru_.pop_back();
    } else {
      ++stats_.errors;
    }
  }
  if (observer_) observer_(seconds, c.ok());
  return c;
}

absl::StatusOr<std::shared_ptr<const Constraint>> ConstraintCache::Compile(const ConstraintSpec& spec,
                                                                          absl::Time start) const {
  ConstraintLimits limits = limits_;
  limits.schema.deadline = start + limits_.compile_timeout;
  auto regex = SpecToRegex(spec, limits);
  if (!regex.ok()) return regex.status();
  DfaLimits dl = limits_.dfa;
  dl.deadline = start + limits_.compile_timeout;
  auto dfa = Dfa::Compile(*regex, dl);
  if (!dfa.ok()) {
    // Too large or too slow is the request's fault: a 400 like any bad spec.
    if (dfa.status().code() == absl::StatusCode::kResourceExhausted) {
      return absl::InvalidArgumentError(absl::StrCat(dfa.status().message(), " (compile limit ",
                                                     absl::FormatDuration(limits_.compile_timeout), ")"));
    }
    return dfa.status();
  }
  auto c = std::make_shared<const Constraint>(std::move(*dfa), index_, counters_);
  // The start state's mask is needed by the first step, and the states of
  // the next few steps soon after: computed here, off the engine thread.
  c->Mask(c->start());
  if (limits_.precompute_steps > 0) c->Precompute(limits_.precompute_steps, absl::Now() + limits_.precompute_budget);
  return c;
}

ConstraintCache::Stats ConstraintCache::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s = stats_;
  s.masks_computed = counters_->computed.load(std::memory_order_relaxed);
  s.mask_seconds = static_cast<double>(counters_->nanos.load(std::memory_order_relaxed)) * 1e-9;
  return s;
}

}  // namespace tessera::structured

// Constraint: a compiled structured-output request (JSON Schema, any JSON
// object, a regex or a choice of strings) over one model's vocabulary, and
// the cache that compiles and shares them.
//
// A Constraint is immutable apart from its mask cache: the allowed-token
// bitset of a DFA state is computed the first time it is needed (a walk of
// the vocabulary trie) and kept for every later request with the same
// constraint. Per step, a constrained row then costs a lookup and the
// masking of its logits.
//
// Masks are computed off the engine thread where it matters: on a cache
// miss, ConstraintCache::Get computes the masks of every state a sequence
// can reach within the first `precompute_steps` tokens (breadth first, so
// the nearest states first), within `precompute_budget`. A state beyond
// that is walked on the engine thread at its first visit (measured: tens to
// hundreds of microseconds; tests/bench/bench_structured.py).
//
// Compilation (parse, automaton, bounds) happens in ConstraintCache::Get on
// the caller's thread (the worker's gRPC handler, before the request is
// queued), never on the engine thread. Bounds: spec text size, schema depth,
// automaton states and a compile deadline; each refusal is InvalidArgument
// naming the limit.
//
// Thread-safety: Constraint and ConstraintCache are thread-safe.
#ifndef TESSERA_WORKER_STRUCTURED_CONSTRAINT_H_
#define TESSERA_WORKER_STRUCTURED_CONSTRAINT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/structured/dfa.h"
#include "worker/structured/json_schema.h"
#include "worker/structured/token_index.h"

namespace tessera::structured {

struct ConstraintSpec {
  enum class Kind { kJsonSchema, kJsonObject, kRegex, kChoice };
  Kind kind = Kind::kJsonObject;
  std::string text;                  // kJsonSchema: the schema as JSON; kRegex: the pattern
  std::vector<std::string> choices;  // kChoice
};

struct ConstraintLimits {
  size_t max_spec_bytes = 1 << 20;  // schema text, pattern, or all choices together
  int max_choices = 1024;
  int json_object_depth = 4;        // nesting of kJsonObject values
  JsonSchemaOptions schema;
  DfaLimits dfa;                    // its deadline is replaced by now + compile_timeout
  absl::Duration compile_timeout = absl::Seconds(2);
  size_t cache_entries = 32;        // compiled constraints kept (LRU)
  // Masks computed at compile time (see above); 0 steps: the start state's
  // only. The budget bounds the added latency of a cache miss.
  int precompute_steps = 8;
  absl::Duration precompute_budget = absl::Milliseconds(100);
};

// Trie walks done so far by every Constraint of one cache (thread-safe).
struct MaskCounters {
  std::atomic<uint64_t> computed{0};
  std::atomic<uint64_t> nanos{0};
};

class Constraint {
 public:
  // `counters` (may be null) receives the cost of every mask computed.
  Constraint(Dfa dfa, std::shared_ptr<const TokenIndex> index, std::shared_ptr<MaskCounters> counters = nullptr);

  int32_t start() const { return dfa_.start(); }
  bool accepting(int32_t state) const { return dfa_.accepting(state); }
  const Dfa& dfa() const { return dfa_; }
  const TokenIndex& index() const { return *index_; }

  // The allowed tokens in `state` (vocab_size bits), computed on first use
  // and cached. The pointer stays valid as long as the Constraint.
  // REQUIRES: state is a live state of dfa().
  const uint64_t* Mask(int32_t state) const;
  // The state after `token`; an end-of-generation id leaves it unchanged;
  // Dfa::kDead for a token the mask did not allow.
  int32_t Advance(int32_t state, int32_t token) const;
  // States whose masks have been computed (for tests and metrics).
  int cached_masks() const;
  // Computes the masks of the states reachable within `steps` tokens of the
  // start, nearest first, until `deadline`; returns how many states it
  // visited. Masks stay exact: this only fills the cache earlier.
  int Precompute(int steps, absl::Time deadline) const;

 private:
  Dfa dfa_;
  std::shared_ptr<const TokenIndex> index_;
  std::shared_ptr<MaskCounters> counters_;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<int32_t, std::unique_ptr<const TokenBitset>> masks_ ABSL_GUARDED_BY(mu_);
};

// The regex tree a spec stands for (no vocabulary needed); errors as Get's.
absl::StatusOr<NodeP> SpecToRegex(const ConstraintSpec& spec, const ConstraintLimits& limits);

class ConstraintCache {
 public:
  ConstraintCache(std::shared_ptr<const TokenIndex> index, ConstraintLimits limits = {});

  // The compiled constraint for `spec`, from the cache or compiled now (a
  // spec already being compiled by another thread is waited for, not
  // compiled twice; a waiter counts as a hit).
  absl::StatusOr<std::shared_ptr<const Constraint>> Get(const ConstraintSpec& spec);

  struct Stats {
    uint64_t hits = 0, misses = 0;
    uint64_t errors = 0;         // specs refused (InvalidArgument)
    double compile_seconds = 0;  // total over misses, precomputed masks included
    uint64_t masks_computed = 0;  // trie walks, on any thread
    double mask_seconds = 0;      // their total time
  };
  Stats stats() const;
  // Called after every compile (miss or refusal) with its duration, outside
  // the cache's lock (for a histogram). Set before the cache is shared.
  void set_compile_observer(std::function<void(double seconds, bool ok)> f) { observer_ = std::move(f); }

 private:
  absl::StatusOr<std::shared_ptr<const Constraint>> Compile(const ConstraintSpec& spec, absl::Time start) const;

  std::shared_ptr<const TokenIndex> index_;
  ConstraintLimits limits_;
  std::shared_ptr<MaskCounters> counters_ = std::make_shared<MaskCounters>();
  std::function<void(double, bool)> observer_;
  mutable absl::Mutex mu_;
  struct InFlight {
    bool done = false;
    absl::StatusOr<std::shared_ptr<const Constraint>> result;
  };
  // Specs being compiled now, for the requests that wait on them.
  absl::flat_hash_map<std::string, std::shared_ptr<InFlight>> inflight_ ABSL_GUARDED_BY(mu_);
  // Most recently used first.
  std::list<std::pair<std::string, std::shared_ptr<const Constraint>>> lru_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera::structured

#endif  // TESSERA_WORKER_STRUCTURED_CONSTRAINT_H_

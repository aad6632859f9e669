// structured-cost: what structured output costs, per constraint, over the
// bundled model's vocabulary (for tests/bench/bench_structured.py).
//
// Reads JSON lines {"kind": "schema"|"regex", "spec": TEXT} and writes one
// JSON line each:
//   compile_ms      spec -> regex tree -> DFA (what the cache's miss costs
//                   before any mask), and with_start_mask_ms: that plus the
//                   start state's mask, as ConstraintCache::Get does it;
//   states          DFA states;
//   reach           states first reached at token steps 1..8 from the start
//                   (the first visits a fresh request meets, step by step);
//   mask_us         the trie walk of one state (p50, p99, max, mean) over
//                   all states (at most 4,000, the first by state id);
//   precompute_ms   masks for every state within 8 token steps (what
//                   ConstraintCache::Get precomputes), and how many;
// or {"error": MESSAGE}.
//
// With --apply it also times the sampler over 16 rows of random logits at
// temperature 1: unconstrained, and masked by a state that allows most of the
// vocabulary (inside a string, the costliest case for the candidate list)
// and by the start state of the first spec.
#include <algorithm>
#include <chrono>
#include <deque>
#include <iostream>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_bundle.h"
#include "worker/sampling/sampler.h"
#include "worker/structured/constraint.h"
#include "worker/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "GGUF model whose vocabulary to use (default: the bundled model)");
ABSL_FLAG(bool, apply, false, "also time mask application in the sampler (16 rows)");

namespace ts = tessera::structured;
using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100 * (v.size() - 1) + 0.5))];
}

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) path = tessera::DefaultModelPath();
  auto file = tessera::GgufFile::Open(path);
  if (!file.ok()) {
    std::cerr << file.status() << "\n";
    return 1;
  }
  auto tok = tessera::Tokenizer::FromGguf(**file);
  if (!tok.ok()) {
    std::cerr << tok.status() << "\n";
    return 1;
  }
  std::vector<std::string> pieces((*tok)->vocab_size());
  for (int32_t id = 0; id < (*tok)->vocab_size(); ++id) {
    if ((*tok)->token_type(id) != tessera::TokenType::kControl) pieces[id] = std::string((*tok)->TokenBytes(id));
  }
  const auto eog = (*tok)->end_of_generation_ids();
  auto index = std::make_shared<const ts::TokenIndex>(std::move(pieces), std::vector<int32_t>(eog.begin(), eog.end()));
  const int vocab = index->vocab_size();

  std::shared_ptr<const ts::Constraint> first;
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::json req = nlohmann::json::parse(line, nullptr, false), out;
    ts::ConstraintSpec spec;
    spec.kind = req.value("kind", "") == "regex" ? ts::ConstraintSpec::Kind::kRegex : ts::ConstraintSpec::Kind::kJsonSchema;
    spec.text = req.value("spec", "");
    const auto t0 = Clock::now();
    auto node = ts::SpecToRegex(spec, {});
    auto dfa = node.ok() ? ts::Dfa::Compile(*node) : absl::StatusOr<ts::Dfa>(node.status());
    const auto t1 = Clock::now();
    if (!dfa.ok()) {
      out["error"] = std::string(dfa.status().message());
      std::cout << out.dump() << "\n" << std::flush;
      continue;
    }
    out["compile_ms"] = Ms(t0, t1);
    out["states"] = dfa->num_states();
    {
      // As the cache compiles it (start mask and its precomputation), on a
      // cache of its own so that nothing is shared with the walks below.
      ts::ConstraintLimits no_precompute;
      no_precompute.precompute_steps = 0;
      ts::ConstraintCache plain(index, no_precompute);
      const auto a = Clock::now();
      auto c = plain.Get(spec);
      out["with_start_mask_ms"] = Ms(a, Clock::now());
      ts::ConstraintCache cache(index);
      const auto b = Clock::now();
      auto pc = cache.Get(spec);
      out["precompute_ms"] = Ms(b, Clock::now());
      if (pc.ok()) out["precomputed_masks"] = (*pc)->cached_masks();
    }
    auto c = std::make_shared<const ts::Constraint>(std::move(*dfa), index);
    if (!first) first = c;
    const ts::Dfa& d = c->dfa();
    // First visits by token step: breadth-first over allowed tokens.
    std::vector<int> depth(d.num_states(), -1);
    std::vector<int32_t> frontier = {d.start()};
    depth[d.start()] = 0;
    std::vector<int> reach;
    for (int step = 1; step <= 8 && !frontier.empty(); ++step) {
      std::vector<int32_t> next;
      for (int32_t s : frontier) {
        const uint64_t* m = c->Mask(s);
        for (int32_t id = 0; id < vocab; ++id) {
          if (!ts::TestBit(m, id) || index->is_eos(id)) continue;
          const int32_t t = c->Advance(s, id);
          if (t != ts::Dfa::kDead && depth[t] < 0) depth[t] = step, next.push_back(t);
        }
      }
      reach.push_back(static_cast<int>(next.size()));
      frontier = std::move(next);
    }
    out["reach"] = reach;
    // One trie walk per state, timed on a fresh Constraint's index.
    std::vector<double> us;
    const int n = std::min(d.num_states(), 4000);
    for (int32_t s = 0; s < n; ++s) {
      const auto a = Clock::now();
      ts::TokenBitset bits = index->AllowedTokens(d, s);
      const auto b = Clock::now();
      us.push_back(std::chrono::duration<double, std::micro>(b - a).count());
      if (bits.empty()) return 2;  // keeps the walk from being optimised away
    }
    double sum = 0;
    for (double u : us) sum += u;
    out["mask_us"] = {{"p50", Pct(us, 50)}, {"p99", Pct(us, 99)}, {"max", Pct(us, 100)}, {"mean", sum / us.size()},
                      {"states", n}};
    std::cout << out.dump() << "\n" << std::flush;
  }

  if (absl::GetFlag(FLAGS_apply) && first) {
    // 16 rows, as a decode step of 16 constrained rows samples them.
    constexpr int kRows = 16, kReps = 20;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 3.f);
    std::vector<float> base(static_cast<size_t>(kRows) * vocab);
    for (float& x : base) x = nd(rng);
    // A state that allows the most tokens among the first 4,000.
    const ts::Dfa& d = first->dfa();
    int32_t widest = d.start();
    int widest_n = -1;
    for (int32_t s = 0; s < std::min(d.num_states(), 4000); ++s) {
      const uint64_t* m = first->Mask(s);
      int k = 0;
      for (int w = 0; w < (vocab + 63) / 64; ++w) k += __builtin_popcountll(m[w]);
      if (k > widest_n) widest_n = k, widest = s;
    }
    auto time_rows = [&](const uint64_t* mask) {
      std::vector<double> ms;
      for (int rep = 0; rep < kReps; ++rep) {
        std::vector<float> logits = base;
        std::vector<std::unique_ptr<tessera::Sampler>> samplers;
        tessera::SamplingParams p;
        p.temperature = 1.f;
        p.seed = rep;
        for (int r = 0; r < kRows; ++r) samplers.push_back(std::make_unique<tessera::Sampler>(p, vocab, std::span<const int32_t>()));
        const auto a = Clock::now();
        for (int r = 0; r < kRows; ++r) samplers[r]->Sample(logits.data() + static_cast<size_t>(r) * vocab, mask);
        ms.push_back(Ms(a, Clock::now()));
      }
      return Pct(ms, 50);
    };
    nlohmann::json out;
    out["apply_rows"] = kRows;
    out["free_ms"] = time_rows(nullptr);
    out["widest_mask_ms"] = time_rows(first->Mask(widest));
    out["widest_mask_tokens"] = widest_n;
    out["start_mask_ms"] = time_rows(first->Mask(d.start()));
    std::cout << out.dump() << "\n" << std::flush;
  }
  return 0;
}

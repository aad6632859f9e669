#include "worker/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

absl::Status Bad(std::string_view field, std::string_view bound, double v) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), " must be ", std::string(bound), "; got ", v));
}

// log(sum(exp(x))) over the vocabulary, stable.
float LogSumExp(const float* x, int n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i] - mx));
  return mx + static_cast<float>(std::log(s));
}

}  // namespace

SampledToken ScoreToken(std::span<const float> logits, int32_t token, int top) {
  const int n = static_cast<int>(logits.size());
  const float lse = LogSumExp(logits.data(), n);
  SampledToken out;
  out.id = token;
  out.logprob = logits[token] - lse;
  top = std::clamp(top, 0, n);
  if (top == 0) return out;
  // A sorted window of the best `top` so far (k <= 20: insertion is cheap);
  // ids arrive in increasing order and only a strictly larger logit moves
  // ahead, so ties keep the lower id first, as in Sample.
  std::vector<std::pair<float, int32_t>> best;
  best.reserve(static_cast<size_t>(top) + 1);
  for (int i = 0; i < n; ++i) {
    const float x = logits[i];
    if (static_cast<int>(best.size()) == top && !(x > best.back().first)) continue;
    auto at = std::find_if(best.begin(), best.end(), [x](const auto& b) { return x > b.first; });
    best.insert(at, {x, i});
    if (static_cast<int>(best.size()) > top) best.pop_back();
  }
  for (const auto& [x, id] : best) out.top.emplace_back(id, x - lse);
  return out;
}

absl::Status SamplingParams::Validate(int vocab_size) const {
  if (!(temperature >= 0 && temperature <= 100)) return Bad("temperature", "in [0, 100]", temperature);
  if (top_k < 0) return Bad("top_k", ">= 0", top_k);
  if (!(top_p > 0 && top_p <= 1)) return Bad("top_p", "in (0, 1]", top_p);
  if (!(min_p >= 0 && min_p <= 1)) return Bad("min_p", "in [0, 1]", min_p);
  if (!(repetition_penalty > 0 && repetition_penalty <= 10)) {
    return Bad("repetition_penalty", "in (0, 10]", repetition_penalty);
  }
  if (!(presence_penalty >= -2 && presence_penalty <= 2)) return Bad("presence_penalty", "in [-2, 2]", presence_penalty);
  if (!(frequency_penalty >= -2 && frequency_penalty <= 2)) return Bad("frequency_penalty", "in [-2, 2]", frequency_penalty);
  if (top_logprobs < 0 || top_logprobs > 20) return Bad("top_logprobs", "in [0, 20]", top_logprobs);
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    if (!(bias >= -100 && bias <= 100)) return Bad("logit_bias value", "in [-100, 100]", bias);
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, int vocab_size, std::span<const int32_t> prompt)
    : p_(params), vocab_(vocab_size), rng_(params.seed ? *params.seed : std::random_device{}()) {
  if (p_.repetition_penalty != 1.f) {
    for (int32_t t : prompt) seen_[t] = true;
  }
}

void Sampler::Accept(int32_t id) {
  if (p_.presence_penalty != 0.f || p_.frequency_penalty != 0.f) ++output_counts_[id];
  if (p_.repetition_penalty != 1.f) seen_[id] = true;
}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

SampledToken Sampler::Sample(float* logits, const uint64_t* allowed) {
  SampledToken out;
  const bool want_logprobs = p_.logprobs || p_.top_logprobs > 0;
  float raw_lse = 0;
  if (want_logprobs) {
    raw_lse = LogSumExp(logits, vocab_);
    if (p_.top_logprobs > 0) {
      cand_.clear();
      cand_.reserve(vocab_);
      for (int i = 0; i < vocab_; ++i) cand_.emplace_back(logits[i], i);
      const int k = std::min(p_.top_logprobs, vocab_);
      std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(),
                        [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
      for (int i = 0; i < k; ++i) out.top.emplace_back(cand_[i].second, cand_[i].first - raw_lse);
    }
  }
  // Keep what the logprob report needs before the processors change logits.
  std::vector<float> raw_for_chosen;
  if (want_logprobs) raw_for_chosen.assign(logits, logits + vocab_);

  for (const auto& [id, bias] : p_.logit_bias) logits[id] += bias;
  if (p_.repetition_penalty != 1.f) {
    for (const auto& [id, _] : seen_) {
      logits[id] = logits[id] > 0 ? logits[id] / p_.repetition_penalty : logits[id] * p_.repetition_penalty;
    }
  }
  for (const auto& [id, count] : output_counts_) {
    logits[id] -= p_.presence_penalty + p_.frequency_penalty * count;
  }

  auto is_allowed = [allowed](int i) { return allowed == nullptr || ((allowed[i >> 6] >> (i & 63)) & 1) != 0; };
  int32_t chosen = 0;
  if (p_.temperature == 0.f) {
    if (allowed != nullptr) {
      chosen = -1;
      for (int i = 0; i < vocab_; ++i) {
        if (is_allowed(i) && (chosen < 0 || logits[i] > logits[chosen])) chosen = i;
      }
    } else {
      for (int i = 1; i < vocab_; ++i) {
        if (logits[i] > logits[chosen]) chosen = i;
      }
    }
  } else {
    cand_.clear();
    cand_.reserve(vocab_);
    // A constrained row's candidates are its allowed tokens only.
    for (int i = 0; i < vocab_; ++i) {
      if (is_allowed(i)) cand_.emplace_back(logits[i], i);
    }
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    size_t n = cand_.size();
    if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
      std::nth_element(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
      n = p_.top_k;
    }
    // Probabilities at this temperature over the kept candidates.
    float mx = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < n; ++i) mx = std::max(mx, cand_[i].first);
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      cand_[i].first = static_cast<float>(std::exp((cand_[i].first - mx) / p_.temperature));
      total += cand_[i].first;
    }
    for (size_t i = 0; i < n; ++i) cand_[i].first = static_cast<float>(cand_[i].first / total);
    if (p_.top_p < 1.f || p_.min_p > 0.f) {
      // Sort only as far as top-p needs: grow the sorted prefix until it
      // holds top_p of the mass.
      size_t sorted = std::min<size_t>(n, 64);
      while (true) {
        std::partial_sort(cand_.begin(), cand_.begin() + sorted, cand_.begin() + n, by_logit);
        double mass = 0;
        size_t keep = 0;
        for (; keep < sorted; ++keep) {
          mass += cand_[keep].first;
          if (mass >= p_.top_p) { ++keep; break; }
        }
        if (mass >= p_.top_p || sorted == n) {
          n = std::min(keep, n);
          break;
        }
        sorted = std::min(n, sorted * 4);
      }
      if (p_.min_p > 0.f) {
        const float threshold = cand_[0].first * p_.min_p;
        size_t keep = 1;
        while (keep < n && cand_[keep].first >= threshold) ++keep;
        n = keep;
      }
    }
    double mass = 0;
    for (size_t i = 0; i < n; ++i) mass += cand_[i].first;
    const double r = Uniform() * mass;
    double acc = 0;
    chosen = cand_[n - 1].second;
    for (size_t i = 0; i < n; ++i) {
      acc += cand_[i].first;
      if (r < acc) { chosen = cand_[i].second; break; }
    }
  }
  out.id = chosen;
  if (want_logprobs) out.logprob = raw_for_chosen[chosen] - raw_lse;
  return out;
}

}  // namespace tessera

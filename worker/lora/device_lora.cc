#include "worker/lora/device_lora.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera {

namespace {

struct Range {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// The input and output features of projection `t` that a rank with `shard`
// multiplies (tensor_parallel.h); everything with no shard.
std::pair<Range, Range> SliceOf(LoraTarget t, const LoraWeights& w, const RankShard* shard, int head_dim) {
  const Range all_in{0, w.in}, all_out{0, w.out};
  if (shard == nullptr) return {all_in, all_out};
  const Range q{int64_t{shard->q_head_begin} * head_dim, int64_t{shard->q_head_end} * head_dim};
  const Range kv{int64_t{shard->kv_head_begin} * head_dim, int64_t{shard->kv_head_end} * head_dim};
  const Range ff{shard->ff_begin, shard->ff_end};
  switch (t) {
    case LoraTarget::kQ: return {all_in, q};
    case LoraTarget::kK:
    case LoraTarget::kV: return {all_in, kv};
    case LoraTarget::kO: return {q, all_out};
    case LoraTarget::kGate:
    case LoraTarget::kUp: return {all_in, ff};
    case LoraTarget::kDown: return {ff, all_out};
  }
  return {all_in, all_out};
}

// A [rank][in] -> a_t [in'][rank] and B [out][rank] -> b_t [rank][out'],
// in the stored element type, for inputs `in` and outputs `out` only.
template <typename T>
void Transpose(const std::vector<T>& a, const std::vector<T>& b, int r, int64_t in_total, Range in, Range out, T* a_t,
               T* b_t) {
  for (int k = 0; k < r; ++k) {
    for (int64_t i = in.begin; i < in.end; ++i) a_t[(i - in.begin) * r + k] = a[k * in_total + i];
    for (int64_t o = out.begin; o < out.end; ++o) b_t[k * out.size() + (o - out.begin)] = b[o * r + k];
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceLora>> DeviceLora::Upload(const LoraAdapter& adapter, Backend& backend) {
  std::unique_ptr<DeviceLora> d(new DeviceLora());
  TESSERA_RETURN_IF_ERROR(d->AddRank(adapter, backend, nullptr, 0));
  return d;
}

absl::StatusOr<std::unique_ptr<DeviceLora>> DeviceLora::UploadFor(const LoraAdapter& adapter, const LlamaModel& model) {
  std::unique_ptr<DeviceLora> d(new DeviceLora());
  const bool split = model.tensor_parallel_size() > 1;
  for (int r = 0; r < model.tensor_parallel_size(); ++r) {
    TESSERA_RETURN_IF_ERROR(
        d->AddRank(adapter, model.rank_backend(r), split ? &model.shard(r) : nullptr, model.config().head_dim));
  }
  return d;
}

absl::Status DeviceLora::AddRank(const LoraAdapter& adapter, Backend& backend, const RankShard* shard, int head_dim) {
  Rank& rank = ranks_.emplace_back();
  rank.backend = &backend;
  const int layers = adapter.num_layers();
  rank.pairs.resize(layers);
  int64_t total = 0;
  for (int l = 0; l < layers; ++l) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const LoraWeights* w = adapter.weights(l, static_cast<LoraTarget>(t));
      if (w == nullptr) continue;
      if (!backend.SupportsLoraDtype(w->dtype)) {
        return absl::InvalidArgumentError(absl::StrCat("the ", std::string(backend.name()), " backend cannot apply ",
                                                       std::string(LoraDtypeName(w->dtype)), " LoRA weights"));
      }
      const auto [in, out] = SliceOf(static_cast<LoraTarget>(t), *w, shard, head_dim);
      total += w->rank * (in.size() + out.size()) * static_cast<int64_t>(LoraDtypeBytes(w->dtype));
    }
  }
  if (total == 0) return absl::OkStatus();  // adapts nothing: a valid, if useless, adapter
  TESSERA_ASSIGN_OR_RETURN(rank.buffer, backend.AllocateAdapterBuffer(total));
  bytes_ += total;
  // Transposed (and sliced) on the host, copied per projection.
  std::vector<uint8_t> staging;
  int64_t offset = 0;
  for (int l = 0; l < layers; ++l) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const LoraWeights* w = adapter.weights(l, static_cast<LoraTarget>(t));
      if (w == nullptr) continue;
      const auto [in, out] = SliceOf(static_cast<LoraTarget>(t), *w, shard, head_dim);
      const int r = w->rank;
      const size_t elem = LoraDtypeBytes(w->dtype);
      const int64_t a_bytes = static_cast<int64_t>(r) * in.size() * static_cast<int64_t>(elem);
      staging.resize(static_cast<size_t>(r) * (in.size() + out.size()) * elem);
      if (w->dtype == LoraDtype::kF32) {
        auto* f = reinterpret_cast<float*>(staging.data());
        Transpose(w->a, w->b, r, w->in, in, out, f, f + static_cast<int64_t>(r) * in.size());
      } else {
        auto* h = reinterpret_cast<uint16_t*>(staging.data());
        Transpose(w->a16, w->b16, r, w->in, in, out, h, h + static_cast<int64_t>(r) * in.size());
      }
      uint8_t* dst = static_cast<uint8_t*>(rank.buffer) + offset;
      backend.CopyToAdapterBuffer(staging.data(), static_cast<int64_t>(staging.size()), dst);
      rank.pairs[l][t] = LoraPair{dst, dst + a_bytes, r, w->scale, w->dtype};
      offset += static_cast<int64_t>(staging.size());
    }
  }
  return absl::OkStatus();
}

DeviceLora::~DeviceLora() {
  for (Rank& r : ranks_) {
    if (r.buffer != nullptr) r.backend->FreeAdapterBuffer(r.buffer);
  }
}

const LoraPair* DeviceLora::pair(int layer, int projection, int rank) const {
  if (rank < 0 || rank >= static_cast<int>(ranks_.size())) return nullptr;
  const auto& pairs = ranks_[rank].pairs;
  if (layer < 0 || layer >= static_cast<int>(pairs.size()) || projection < 0 || projection >= kLoraTargets) {
    return nullptr;
  }
  const LoraPair& p = pairs[layer][projection];
  return p.rank > 0 ? &p : nullptr;
}

}  // namespace tessera

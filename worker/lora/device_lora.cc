#include "worker/lora/device_lora.h"

#include "common/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<DeviceLora>> DeviceLora::Upload(const LoraAdapter& adapter, Backend& backend) {
  std::unique_ptr<DeviceLora> d(new DeviceLora(backend));
  const int layers = adapter.num_layers();
  d->pairs_.resize(layers);
  int64_t total = 0;
  for (int l = 0; l < layers; ++l) {
    for (int t = 0; t < kLoraTargets; ++t) {
      if (const LoraWeights* w = adapter.weights(l, static_cast<LoraTarget>(t))) total += w->rank * (w->in + w->out);
    }
  }
  if (total == 0) return d;  // adapts nothing: a valid, if useless, adapter
  TESSERA_ASSIGN_OR_RETURN(d->buffer_, backend.AllocateAdapterBuffer(total));
  d->floats_ = total;
  // Transposed on the host, copied per projection.
  std::vector<float> staging;
  int64_t offset = 0;
  for (int l = 0; l < layers; ++l) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const LoraWeights* w = adapter.weights(l, static_cast<LoraTarget>(t));
      if (w == nullptr) continue;
      const int r = w->rank;
      staging.resize(static_cast<size_t>(r) * (w->in + w->out));
      float* a_t = staging.data();
      float* b_t = staging.data() + static_cast<size_t>(r) * w->in;
      for (int k = 0; k < r; ++k) {
        for (int64_t i = 0; i < w->in; ++i) a_t[i * r + k] = w->a[k * w->in + i];
        for (int64_t o = 0; o < w->out; ++o) b_t[k * w->out + o] = w->b[o * r + k];
      }
      float* dst = d->buffer_ + offset;
      backend.CopyToAdapterBuffer(staging.data(), static_cast<int64_t>(staging.size()), dst);
      d->pairs_[l][t] = LoraPair{dst, dst + static_cast<int64_t>(r) * w->in, r, w->scale};
      offset += static_cast<int64_t>(staging.size());
    }
  }
  return d;
}

DeviceLora::~DeviceLora() {
  if (buffer_ != nullptr) backend_.FreeAdapterBuffer(buffer_);
}

const LoraPair* DeviceLora::pair(int layer, int projection) const {
  if (layer < 0 || layer >= static_cast<int>(pairs_.size()) || projection < 0 || projection >= kLoraTargets) {
    return nullptr;
  }
  const LoraPair& p = pairs_[layer][projection];
  return p.rank > 0 ? &p : nullptr;
}

}  // namespace tessera

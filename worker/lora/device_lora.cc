#include "worker/lora/device_lora.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tessera {

namespace {

// A [rank][in] -> a_t [in][rank] and B [out][rank] -> b_t [rank][out], in
// the stored element type.
template <typename T>
void Transpose(const std::vector<T>& a, const std::vector<T>& b, int r, int64_t in, int64_t out, T* a_t, T* b_t) {
  for (int k = 0; k < r; ++k) {
    for (int64_t i = 0; i < in; ++i) a_t[i * r + k] = a[k * in + i];
    for (int64_t o = 0; o < out; ++o) b_t[k * out + o] = b[o * r + k];
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceLora>> DeviceLora::Upload(const LoraAdapter& adapter, Backend& backend) {
  std::unique_ptr<DeviceLora> d(new DeviceLora(backend));
  const int layers = adapter.num_layers();
  d->pairs_.resize(layers);
  int64_t total = 0;
  for (int l = 0; l < layers; ++l) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const LoraWeights* w = adapter.weights(l, static_cast<LoraTarget>(t));
      if (w == nullptr) continue;
      if (!backend.SupportsLoraDtype(w->dtype)) {
        return absl::InvalidArgumentError(absl::StrCat("the ", std::string(backend.name()), " backend cannot apply ",
                                                       std::string(LoraDtypeName(w->dtype)), " LoRA weights"));
      }
      total += w->rank * (w->in + w->out) * static_cast<int64_t>(LoraDtypeBytes(w->dtype));
    }
  }
  if (total == 0) return d;  // adapts nothing: a valid, if useless, adapter
  TESSERA_ASSIGN_OR_RETURN(void* buffer, backend.AllocateAdapterBuffer(total));
  d->buffer_ = buffer;
  d->bytes_ = total;
  // Transposed on the host, copied per projection.
  std::vector<uint8_t> staging;
  int64_t offset = 0;
  for (int l = 0; l < layers; ++l) {
    for (int t = 0; t < kLoraTargets; ++t) {
      const LoraWeights* w = adapter.weights(l, static_cast<LoraTarget>(t));
      if (w == nullptr) continue;
      const int r = w->rank;
      const size_t elem = LoraDtypeBytes(w->dtype);
      const int64_t a_bytes = static_cast<int64_t>(r) * w->in * static_cast<int64_t>(elem);
      staging.resize(static_cast<size_t>(r) * (w->in + w->out) * elem);
      if (w->dtype == LoraDtype::kF32) {
        auto* f = reinterpret_cast<float*>(staging.data());
        Transpose(w->a, w->b, r, w->in, w->out, f, f + static_cast<int64_t>(r) * w->in);
      } else {
        auto* h = reinterpret_cast<uint16_t*>(staging.data());
        Transpose(w->a16, w->b16, r, w->in, w->out, h, h + static_cast<int64_t>(r) * w->in);
      }
      uint8_t* dst = static_cast<uint8_t*>(d->buffer_) + offset;
      backend.CopyToAdapterBuffer(staging.data(), static_cast<int64_t>(staging.size()), dst);
      d->pairs_[l][t] = LoraPair{dst, dst + a_bytes, r, w->scale, w->dtype};
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

// DeviceLora: a LoRA adapter in backend memory (device memory on an
// accelerator), laid out for Backend::LoraApply: one buffer per adapter and
// rank with every projection's A transposed [in][rank] and B transposed
// [rank][out], in the adapter's storage type (LoraWeights::dtype).
//
// Under tensor parallelism every rank holds its slice (the S-LoRA/Punica
// scheme, so adapters add no collective): for a projection split by output
// features (q, k, v, gate, up) B's rows of the rank's outputs and all of A;
// for one split by input features (o, down) A's columns of the rank's inputs
// and all of B, whose partial products the layer's all-reduce sums.
//
// Upload is the host -> device tier move; it runs on the adapter loader
// thread (the backend's adapter-buffer calls are thread-safe). The buffer is
// freed with the object.
//
// Thread-safety: immutable after Upload.
#ifndef TESSERA_WORKER_LORA_DEVICE_LORA_H_
#define TESSERA_WORKER_LORA_DEVICE_LORA_H_

#include <array>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/lora/lora_adapter.h"
#include "worker/model/llama_model.h"

namespace tessera {

class DeviceLora final : public LoraView {
 public:
  // The whole adapter on one backend.
  static absl::StatusOr<std::unique_ptr<DeviceLora>> Upload(const LoraAdapter& adapter, Backend& backend);
  // On every rank of `model`, each rank's slice on its backend (the whole
  // adapter on the one backend without tensor parallelism).
  static absl::StatusOr<std::unique_ptr<DeviceLora>> UploadFor(const LoraAdapter& adapter, const LlamaModel& model);
  ~DeviceLora() override;
  DeviceLora(const DeviceLora&) = delete;
  DeviceLora& operator=(const DeviceLora&) = delete;

  const LoraPair* pair(int layer, int projection, int rank) const override;
  int64_t bytes() const { return bytes_; }  // over all ranks

 private:
  struct Rank {
    Backend* backend = nullptr;
    void* buffer = nullptr;
    std::vector<std::array<LoraPair, kLoraTargets>> pairs;  // LoraPair::rank 0: not adapted
  };
  DeviceLora() = default;
  // Adds rank `shard`'s slice on `backend`; null `shard`: the whole adapter.
  absl::Status AddRank(const LoraAdapter& adapter, Backend& backend, const RankShard* shard, int head_dim);

  int64_t bytes_ = 0;
  std::vector<Rank> ranks_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_LORA_DEVICE_LORA_H_

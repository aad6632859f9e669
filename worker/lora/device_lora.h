// DeviceLora: a LoRA adapter in backend memory (device memory on an
// accelerator), laid out for Backend::LoraApply: one buffer per adapter with
// every projection's A transposed [in][rank] and B transposed [rank][out],
// in the adapter's storage type (LoraWeights::dtype).
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
  static absl::StatusOr<std::unique_ptr<DeviceLora>> Upload(const LoraAdapter& adapter, Backend& backend);
  ~DeviceLora() override;
  DeviceLora(const DeviceLora&) = delete;
  DeviceLora& operator=(const DeviceLora&) = delete;

  const LoraPair* pair(int layer, int projection) const override;
  int64_t bytes() const { return bytes_; }

 private:
  explicit DeviceLora(Backend& backend) : backend_(backend) {}
  Backend& backend_;
  void* buffer_ = nullptr;
  int64_t bytes_ = 0;
  std::vector<std::array<LoraPair, kLoraTargets>> pairs_;  // rank 0: not adapted
};

}  // namespace tessera

#endif  // TESSERA_WORKER_LORA_DEVICE_LORA_H_

// Builds without the CUDA toolkit: the backend reports that it is absent.
#include "kernels/cuda/cuda_backend.h"

namespace tessera {

bool CudaBackendBuilt() { return false; }
int CudaDeviceCount() { return 0; }
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions&) {
  return absl::FailedPreconditionError("this build has no CUDA backend (configure with the CUDA toolkit installed)");
}

}  // namespace tessera

// The CUDA implementation of the Backend op set (kernels/backend.h).
//
// Memory: activations, KV blocks and adapter buffers live in device memory;
// weights stay in their file encoding and are copied to the device once, on
// first use (keyed by their host address), then multiplied in place by fused
// dequantize-and-multiply kernels (GEMV for small batches) or dequantized to
// half precision and multiplied by cuBLAS (larger batches). Host spans
// (positions, block tables, adapter row groups) are staged to the device per
// call. All ops run in order on one stream; CopyToHost synchronizes.
//
// Availability: the backend is a module, libtessera_cuda.so, built with the
// CUDA toolkit and loaded on first use (cuda_loader.cc), so that binaries
// link no CUDA library. CudaBackendBuilt() says whether it could be loaded;
// CreateCudaBackend fails with a message without it, as it does on a
// machine without a device.
#ifndef TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_
#define TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/comm/communicator.h"

namespace tessera {

struct CudaBackendOptions {
  int device = 0;
};

bool CudaBackendBuilt();
// Devices visible to this process (0 without a driver or a device).
int CudaDeviceCount();
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options = {});

// A tensor-parallel group over `devices` (rank r on devices[r]) with NCCL,
// from the same module. FailedPrecondition without the module, without
// NCCL in it, or for a device that does not exist.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclGroup(std::span<const int> devices,
                                                                            const CommunicatorOptions& options);

}  // namespace tessera

#endif  // TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_

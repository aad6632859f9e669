// Loads the CUDA backend module (libtessera_cuda.so) on demand, so that
// binaries need no CUDA library unless a CUDA device is asked for: a CPU
// worker starts on a machine without CUDA, and pays no memory for cuBLAS.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"

namespace tessera {
namespace {

using CreateFn = Backend* (*)(int device, char* error, size_t error_size);
using CountFn = int (*)();
using NcclGroupFn = int (*)(int size, const int* devices, int timeout_ms, Communicator** out, char* error,
                            size_t error_size);

struct Module {
  void* handle = nullptr;
  CreateFn create = nullptr;
  CountFn count = nullptr;
  NcclGroupFn nccl_group = nullptr;  // absent when the module was built without NCCL
  std::string error;
};

// $TESSERA_CUDA_BACKEND, else next to the executable, else the loader's
// search path.
const Module& Load() {
  static Module m;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("TESSERA_CUDA_BACKEND")) candidates.push_back(env);
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libtessera_cuda.so").string());
    candidates.push_back("libtessera_cuda.so");
    for (const std::string& path : candidates) {
      void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) {
        if (m.error.empty()) m.error = dlerror();
        continue;
      }
      m.create = reinterpret_cast<CreateFn>(dlsym(h, "TesseraCreateCudaBackend"));
      m.count = reinterpret_cast<CountFn>(dlsym(h, "TesseraCudaDeviceCount"));
      if (m.create == nullptr || m.count == nullptr) {
        m.error = absl::StrCat(path, " is not a Tessera CUDA backend");
        dlclose(h);
        continue;
      }
      m.nccl_group = reinterpret_cast<NcclGroupFn>(dlsym(h, "TesseraCreateNcclGroup"));
      m.handle = h;
      return;
    }
  });
  return m;
}

}  // namespace

bool CudaBackendBuilt() { return Load().handle != nullptr; }

int CudaDeviceCount() {
  const Module& m = Load();
  return m.handle != nullptr ? m.count() : 0;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  const Module& m = Load();
  if (m.handle == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("the CUDA backend (libtessera_cuda.so) is not available: ", m.error,
                     " (it is built when the CUDA toolkit is present)"));
  }
  char error[512] = {};
  Backend* b = m.create(options.device, error, sizeof(error));
  if (b == nullptr) return absl::FailedPreconditionError(error);
  return std::unique_ptr<Backend>(b);
}

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclGroup(std::span<const int> devices,
                                                                            const CommunicatorOptions& options) {
  const Module& m = Load();
  if (m.handle == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("tensor parallelism over GPUs needs the CUDA backend: ", m.error));
  }
  if (m.nccl_group == nullptr) {
    return absl::FailedPreconditionError("the CUDA backend was built without NCCL: tensor parallelism over GPUs is unavailable");
  }
  if (devices.empty() || devices.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("tensor parallel size ", devices.size(), " not in [1, 64]"));
  }
  std::vector<Communicator*> raw(devices.size(), nullptr);
  char error[512] = {};
  const auto timeout_ms = static_cast<int>(std::min<int64_t>(options.timeout.count(), INT32_MAX));
  if (m.nccl_group(static_cast<int>(devices.size()), devices.data(), timeout_ms, raw.data(), error, sizeof(error)) != 0) {
    return absl::FailedPreconditionError(error);
  }
  std::vector<std::unique_ptr<Communicator>> group;
  for (Communicator* c : raw) group.emplace_back(c);
  return group;
}

}  // namespace tessera

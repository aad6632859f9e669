// NCCL behind the Communicator seam (kernels/comm/communicator.h): one
// communicator per GPU of the worker, all in this process
// (ncclCommInitAll), each rank driven by its own thread.
//
// Why one process: the worker's scheduler, sampler and gRPC service stay
// single (rank 0 drives, the other ranks follow the same step), so no
// step has to be shipped between processes; vLLM's and TGI's one process
// per GPU buys isolation a single-node worker does not need, since a rank
// that fails ends the worker anyway.
//
// Buffers are device memory of the rank's GPU, written before the call (the
// collective runs on the communicator's own stream and waits for it).
// Timeouts: NCCL collectives never time out by themselves; each call polls
// its stream and the communicator's async error, and on the deadline
// aborts the communicator (ncclCommAbort), so a dead or stuck rank becomes
// a DeadlineExceeded here instead of a hang.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>
#include <nccl.h>

#include "absl/strings/str_cat.h"
#include "kernels/comm/communicator.h"

namespace tessera {
namespace {

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, int rank, int size, std::chrono::milliseconds timeout,
                   cudaStream_t stream, float* scratch)
      : comm_(comm), device_(device), rank_(rank), size_(size), timeout_(timeout), stream_(stream),
        scratch_(scratch) {}
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (!comm_aborted_) ncclCommDestroy(comm_);  // Break aborted it otherwise
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string_view name() const override { return "nccl"; }

  absl::Status AllReduceSum(std::span<float> data) override {
    if (data.empty()) return absl::OkStatus();
    return Run("all-reduce", [&] {
      return ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, comm_, stream_);
    });
  }

  absl::Status AllGather(std::span<const float> in, std::span<float> out) override {
    if (out.size() != in.size() * static_cast<size_t>(size_)) {
      return absl::InvalidArgumentError(absl::StrCat("all-gather: output of ", out.size(), " floats for ", size_,
                                                     " ranks of ", in.size()));
    }
    return Run("all-gather",
               [&] { return ncclAllGather(in.data(), out.data(), in.size(), ncclFloat, comm_, stream_); });
  }

  absl::Status Broadcast(std::span<std::byte> data, int root) override {
    if (root < 0 || root >= size_) return absl::InvalidArgumentError(absl::StrCat("broadcast: no rank ", root));
    if (data.empty()) return absl::OkStatus();
    return Run("broadcast",
               [&] { return ncclBroadcast(data.data(), data.data(), data.size(), ncclUint8, root, comm_, stream_); });
  }

  absl::Status Barrier() override {
    return Run("barrier", [&] { return ncclAllReduce(scratch_, scratch_, 1, ncclFloat, ncclSum, comm_, stream_); });
  }

 private:
  template <typename F>
  absl::Status Run(std::string_view op, F&& issue) {
    if (!broken_.ok()) return broken_;
    cudaSetDevice(device_);
    if (ncclResult_t r = issue(); r != ncclSuccess) {
      return Break(absl::InternalError(absl::StrCat("tensor parallel ", std::string(op), " on cuda:", device_, ": ",
                                                    ncclGetErrorString(r))));
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (true) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        return Break(absl::InternalError(absl::StrCat("tensor parallel ", std::string(op), " on cuda:", device_, ": ",
                                                      cudaGetErrorString(q))));
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return Break(absl::UnavailableError(absl::StrCat("tensor parallel ", std::string(op), " on cuda:", device_,
                                                         ": ", ncclGetErrorString(async))));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Break(absl::DeadlineExceededError(absl::StrCat("tensor parallel ", std::string(op), " on cuda:",
                                                              device_, ": no answer from a rank within ",
                                                              timeout_.count(), " ms")));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  absl::Status Break(absl::Status s) {
    broken_ = s;
    ncclCommAbort(comm_);  // unblocks the stream; the communicator is dead from here
    comm_aborted_ = true;
    return s;
  }

  ncclComm_t comm_;
  const int device_, rank_, size_;
  const std::chrono::milliseconds timeout_;
  cudaStream_t stream_;
  float* scratch_;
  absl::Status broken_;
  bool comm_aborted_ = false;
};

}  // namespace
}  // namespace tessera

// Entry point looked up by kernels/cuda/cuda_loader.cc: `size` communicators
// over `devices`, into `out` (owned by the caller). Returns 0, or -1 with a
// message in `error`.
extern "C" __attribute__((visibility("default"))) int TesseraCreateNcclGroup(int size, const int* devices,
                                                                             int timeout_ms,
                                                                             tessera::Communicator** out,
                                                                             char* error, size_t error_size) {
  auto fail = [&](const std::string& m) {
    std::snprintf(error, error_size, "%s", m.c_str());
    return -1;
  };
  int visible = 0;
  if (cudaGetDeviceCount(&visible) != cudaSuccess) visible = 0;
  for (int r = 0; r < size; ++r) {
    if (devices[r] < 0 || devices[r] >= visible) {
      return fail(absl::StrCat("CUDA device ", devices[r], " does not exist (", visible, " visible)"));
    }
  }
  std::vector<ncclComm_t> comms(size);
  if (ncclResult_t r = ncclCommInitAll(comms.data(), size, devices); r != ncclSuccess) {
    return fail(absl::StrCat("NCCL could not connect ", size, " GPUs: ", ncclGetErrorString(r)));
  }
  for (int r = 0; r < size; ++r) {
    cudaSetDevice(devices[r]);
    cudaStream_t stream = nullptr;
    float* scratch = nullptr;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaMalloc(&scratch, sizeof(float)) != cudaSuccess) {
      for (int q = r; q < size; ++q) ncclCommDestroy(comms[q]);
      for (int q = 0; q < r; ++q) delete out[q];
      return fail(absl::StrCat("cuda:", devices[r], ": could not create a stream for NCCL"));
    }
    out[r] = new tessera::NcclCommunicator(comms[r], devices[r], r, size, std::chrono::milliseconds(timeout_ms),
                                           stream, scratch);
  }
  return 0;
}

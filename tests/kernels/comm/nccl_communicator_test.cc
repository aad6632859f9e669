// NCCL behind the Communicator seam, on the GPUs of this machine (label
// gpu): the collectives over every visible device, and a rank that never
// joins timing the others out. Skips, saying so, with fewer than 2 GPUs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <thread>

#include "kernels/cuda/cuda_backend.h"

namespace tessera {
namespace {

using namespace std::chrono_literals;

std::vector<int> AllDevices() {
  std::vector<int> d(static_cast<size_t>(CudaDeviceCount()));
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<int>(i);
  return d;
}

#define REQUIRE_TWO_GPUS()                                                                      \
  if (CudaDeviceCount() < 2) {                                                                  \
    GTEST_SKIP() << "needs at least 2 CUDA devices; this machine has " << CudaDeviceCount();    \
  }

TEST(NcclCommunicatorTest, AllReduceAllGatherAndBarrierOverEveryGpu) {
  REQUIRE_TWO_GPUS();
  const std::vector<int> devices = AllDevices();
  const int n = static_cast<int>(devices.size());
  auto group = CreateNcclGroup(devices, {.timeout = 30s});
  ASSERT_TRUE(group.ok()) << group.status();
  constexpr size_t kLen = 1 << 20;
  std::vector<absl::Status> status(n);
  std::vector<std::vector<float>> reduced(n, std::vector<float>(kLen)), gathered(n, std::vector<float>(2 * n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(devices[r]);
      std::vector<float> host(kLen);
      for (size_t i = 0; i < kLen; ++i) host[i] = static_cast<float>((r + 1) * static_cast<int>(i % 97));
      float *data = nullptr, *in = nullptr, *out = nullptr;
      cudaMalloc(&data, kLen * sizeof(float));
      cudaMalloc(&in, 2 * sizeof(float));
      cudaMalloc(&out, 2 * n * sizeof(float));
      cudaMemcpy(data, host.data(), kLen * sizeof(float), cudaMemcpyHostToDevice);
      const float mine[2] = {static_cast<float>(r), static_cast<float>(10 * r)};
      cudaMemcpy(in, mine, sizeof(mine), cudaMemcpyHostToDevice);
      Communicator& c = *(*group)[r];
      status[r] = c.AllReduceSum({data, kLen});
      if (status[r].ok()) status[r] = c.AllGather({in, 2}, {out, static_cast<size_t>(2 * n)});
      if (status[r].ok()) status[r] = c.Barrier();
      cudaMemcpy(reduced[r].data(), data, kLen * sizeof(float), cudaMemcpyDeviceToHost);
      cudaMemcpy(gathered[r].data(), out, 2 * n * sizeof(float), cudaMemcpyDeviceToHost);
      cudaFree(data);
      cudaFree(in);
      cudaFree(out);
    });
  }
  for (auto& t : threads) t.join();
  const float ranks_sum = n * (n + 1) / 2.f;
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(status[r].ok()) << r << ": " << status[r];
    for (size_t i = 0; i < kLen; i += 4099) ASSERT_EQ(reduced[r][i], ranks_sum * static_cast<float>(i % 97));
    for (int q = 0; q < n; ++q) {
      EXPECT_EQ(gathered[r][2 * q], q);
      EXPECT_EQ(gathered[r][2 * q + 1], 10 * q);
    }
  }
}

TEST(NcclCommunicatorTest, ARankThatNeverJoinsTimesTheOthersOut) {
  REQUIRE_TWO_GPUS();
  auto group = CreateNcclGroup(AllDevices(), {.timeout = 2s});
  ASSERT_TRUE(group.ok()) << group.status();
  cudaSetDevice(0);
  float* x = nullptr;
  cudaMalloc(&x, 64 * sizeof(float));
  const auto start = std::chrono::steady_clock::now();
  const absl::Status s = (*group)[0]->AllReduceSum({x, 64});  // rank 1.. never call
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  cudaFree(x);
}

TEST(NcclCommunicatorTest, UnknownDevicesAreRefused) {
  if (!CudaBackendBuilt()) GTEST_SKIP() << "the CUDA backend module is not built here";
  const int bad[] = {0, 4096};
  auto group = CreateNcclGroup(bad, {});
  ASSERT_FALSE(group.ok());
  // Device 4096 (or, on a machine without GPUs, device 0) does not exist.
  EXPECT_NE(group.status().message().find("does not exist"), std::string::npos) << group.status();
}

}  // namespace
}  // namespace tessera

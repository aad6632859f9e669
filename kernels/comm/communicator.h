// Communicator: the collectives tensor parallelism needs (issue 19), one
// object per rank. A worker split over N devices holds N of them (one per
// rank, all in the worker's process: rank 0 drives the step, the others
// follow it), and each rank's forward pass calls them at the same points
// with the same sizes.
//
// Contract: every rank calls the same collectives in the same order with
// equal sizes; a collective returns when this rank's part is done. None
// waits forever: each has the group's timeout, after which it returns
// DeadlineExceeded (a rank that died or fell behind), and a peer that went
// away is Unavailable. After any error the communicator is unusable (the
// worker ends with the message: a tensor-parallel group cannot recover one
// rank).
//
// Implementations: Gloo (CPU ranks: tests and CPU-only hosts) and NCCL
// (CUDA ranks, in the CUDA module).
#ifndef TESSERA_KERNELS_COMM_COMMUNICATOR_H_
#define TESSERA_KERNELS_COMM_COMMUNICATOR_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string_view name() const = 0;  // "gloo", "nccl"

  // In place: every rank's `data` becomes the element-wise sum over ranks.
  // The sum's order is the implementation's (a ring): results may differ
  // from a serial sum in the last bits, and are the same on every rank.
  virtual absl::Status AllReduceSum(std::span<float> data) = 0;
  // Each rank's `in`, concatenated in rank order: out.size() == size() * in.size().
  virtual absl::Status AllGather(std::span<const float> in, std::span<float> out) = 0;
  // `root`'s bytes into every rank's `data`.
  virtual absl::Status Broadcast(std::span<std::byte> data, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

struct CommunicatorOptions {
  // A collective that has not completed by then fails (no silent hang).
  std::chrono::milliseconds timeout{30000};
};

// A group of `size` CPU ranks in this process, connected over loopback with
// Gloo: element r is rank r. Connecting is concurrent (every rank must join
// for any to finish) and bounded by the timeout.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateLocalGlooGroup(int size,
                                                                                 const CommunicatorOptions& options);

}  // namespace tessera

#endif  // TESSERA_KERNELS_COMM_COMMUNICATOR_H_

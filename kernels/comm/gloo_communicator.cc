// Gloo (github.com/facebookincubator/gloo, Debian's libgloo-dev) behind the
// Communicator seam. Gloo reports failures by throwing; nothing escapes this
// file: every call is wrapped and its exception becomes a Status.
#include <csignal>
#include <future>
#include <thread>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/device.h>

#include "absl/strings/str_cat.h"
#include "kernels/comm/communicator.h"

namespace tessera {
namespace {

// What a Gloo exception means for the caller.
absl::Status FromGloo(std::string_view op, const std::exception& e, std::chrono::milliseconds timeout) {
  const std::string what = e.what();
  if (dynamic_cast<const gloo::IoException*>(&e) != nullptr) {
    if (what.find("Timed out") != std::string::npos || what.find("timed out") != std::string::npos) {
      return absl::DeadlineExceededError(absl::StrCat("tensor parallel ", std::string(op), ": no answer from a rank within ",
                                                      timeout.count(), " ms (", what, ")"));
    }
    return absl::UnavailableError(absl::StrCat("tensor parallel ", std::string(op), ": a rank went away (", what, ")"));
  }
  return absl::InternalError(absl::StrCat("tensor parallel ", std::string(op), ": ", what));
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::chrono::milliseconds timeout)
      : context_(std::move(context)), timeout_(timeout) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  std::string_view name() const override { return "gloo"; }

  absl::Status AllReduceSum(std::span<float> data) override {
    if (data.empty() || size() == 1) return absl::OkStatus();
    return Run("all-reduce", [&] {
      gloo::AllreduceOptions o(context_);
      o.setOutput(data.data(), data.size());
      o.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      o.setTag(NextTag());
      o.setTimeout(timeout_);
      gloo::allreduce(o);
    });
  }

  absl::Status AllGather(std::span<const float> in, std::span<float> out) override {
    if (out.size() != in.size() * static_cast<size_t>(size())) {
      return absl::InvalidArgumentError(absl::StrCat("all-gather: output of ", out.size(), " floats for ", size(),
                                                     " ranks of ", in.size()));
    }
    if (size() == 1) {
      std::copy(in.begin(), in.end(), out.begin());
      return absl::OkStatus();
    }
    return Run("all-gather", [&] {
      gloo::AllgatherOptions o(context_);
      o.setInput(const_cast<float*>(in.data()), in.size());
      o.setOutput(out.data(), out.size());
      o.setTag(NextTag());
      o.setTimeout(timeout_);
      gloo::allgather(o);
    });
  }

  absl::Status Broadcast(std::span<std::byte> data, int root) override {
    if (root < 0 || root >= size()) return absl::InvalidArgumentError(absl::StrCat("broadcast: no rank ", root));
    if (data.empty() || size() == 1) return absl::OkStatus();
    return Run("broadcast", [&] {
      gloo::BroadcastOptions o(context_);
      auto* bytes = reinterpret_cast<uint8_t*>(data.data());
      if (rank() == root) o.setInput(bytes, data.size());
      o.setOutput(bytes, data.size());
      o.setRoot(root);
      o.setTag(NextTag());
      o.setTimeout(timeout_);
      gloo::broadcast(o);
    });
  }

  absl::Status Barrier() override {
    if (size() == 1) return absl::OkStatus();
    return Run("barrier", [&] {
      gloo::BarrierOptions o(context_);
      o.setTag(NextTag());
      o.setTimeout(timeout_);
      gloo::barrier(o);
    });
  }

 private:
  template <typename F>
  absl::Status Run(std::string_view op, F&& f) {
    if (!broken_.ok()) return broken_;
    try {
      f();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      broken_ = FromGloo(op, e, timeout_);
      return broken_;
    }
  }
  // Every rank issues the same sequence of collectives, so a counter gives
  // matching tags without coordination.
  uint32_t NextTag() { return next_tag_++; }

  std::shared_ptr<gloo::Context> context_;
  std::chrono::milliseconds timeout_;
  uint32_t next_tag_ = 0;
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateLocalGlooGroup(int size,
                                                                                 const CommunicatorOptions& options) {
  if (size < 1 || size > 64) return absl::InvalidArgumentError(absl::StrCat("tensor parallel size ", size, " not in [1, 64]"));
  // Gloo writes to its sockets without MSG_NOSIGNAL: a write to a rank that
  // went away would raise SIGPIPE and kill the process before the collective
  // could report the peer gone (seen in communicator_test under load). The
  // write's EPIPE is what Gloo turns into an error, so SIGPIPE is ignored
  // process-wide, as gRPC servers commonly do.
  std::signal(SIGPIPE, SIG_IGN);
  std::shared_ptr<gloo::transport::Device> device;
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    return FromGloo("connect", e, options.timeout);
  }
  gloo::rendezvous::HashStore store;
  std::vector<std::shared_ptr<gloo::rendezvous::Context>> contexts(size);
  std::vector<std::future<absl::Status>> joined;
  for (int r = 0; r < size; ++r) {
    joined.push_back(std::async(std::launch::async, [&, r]() -> absl::Status {
      try {
        auto c = std::make_shared<gloo::rendezvous::Context>(r, size);
        c->setTimeout(options.timeout);
        c->connectFullMesh(store, device);
        contexts[r] = std::move(c);
        return absl::OkStatus();
      } catch (const std::exception& e) {
        return FromGloo("connect", e, options.timeout);
      }
    }));
  }
  absl::Status status;
  for (auto& j : joined) status.Update(j.get());
  if (!status.ok()) return status;
  std::vector<std::unique_ptr<Communicator>> group;
  for (int r = 0; r < size; ++r) group.push_back(std::make_unique<GlooCommunicator>(contexts[r], options.timeout));
  return group;
}

}  // namespace tessera

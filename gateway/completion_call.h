// CompletionCall: runs one OpenAI completion request on the workers — one
// Generate stream per choice (prompts x n) — and reports merged events to a
// sink. The front ends (HTTP/SSE and the public gRPC API) are sinks.
//
// Thread-safety: events come from gRPC threads; the call serializes them, so
// a sink sees one event at a time, in order per choice. Cancel() may be
// called from any thread, any number of times.
#ifndef TESSERA_GATEWAY_COMPLETION_CALL_H_
#define TESSERA_GATEWAY_COMPLETION_CALL_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gateway/openai/request.h"
#include "gateway/worker_pool.h"

namespace tessera::gateway {

struct TokenLogprobs {
  std::string token;  // bytes of the token (may be part of a character)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};

class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  // The first output of the call has arrived (send headers now).
  virtual void OnFirstOutput() = 0;
  virtual void OnDelta(int choice, const std::string& text, const std::vector<TokenLogprobs>& logprobs) = 0;
  virtual void OnChoiceFinished(int choice, const std::string& finish_reason) = 0;
  // Last event: OK when every choice finished, else the error. Usage totals
  // are final here.
  virtual void OnDone(const absl::Status& status, int prompt_tokens, int completion_tokens) = 0;
};

struct CompletionOptions {
  std::chrono::milliseconds timeout{600000};
};

class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  // Starts the call; events go to `sink`. Errors before any worker call
  // (no healthy worker, unknown model) arrive through OnDone as well.
  static std::shared_ptr<CompletionCall> Start(WorkerPool& pool, const CompletionRequest& request,
                                               std::shared_ptr<CompletionSink> sink,
                                               const CompletionOptions& options = {});
  void Cancel();

  // Used by the per-choice streams.
  void OnResponse(int choice, const tessera::worker::v1::GenerateResponse& r);
  void OnChoiceDone(int choice, const grpc::Status& status);

 private:
  CompletionCall() = default;
  void FinishLocked(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::shared_ptr<CompletionSink> sink_;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts_;
  Worker* worker_ = nullptr;
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_choices_ ABSL_GUARDED_BY(mu_) = 0;
  bool first_output_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  int n_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<int> prompt_tokens_per_prompt_ ABSL_GUARDED_BY(mu_);
  int completion_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

// gRPC status -> absl::Status (same code and message).
absl::Status FromGrpc(const grpc::Status& s);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_COMPLETION_CALL_H_

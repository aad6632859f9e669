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
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gateway/openai/request.h"
#include "gateway/call_router.h"
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
  // A text completion with echo: the choice's prompt as text and, with
  // logprobs, its tokens (else empty); once per choice, before its first
  // OnDelta or OnChoiceFinished. Entry 0 of `prompt_logprobs` has nothing
  // before it: its logprob and top are meaningless (OpenAI: null).
  virtual void OnEcho(int choice, const std::string& prompt_text,
                      const std::vector<TokenLogprobs>& prompt_logprobs) = 0;
  virtual void OnDelta(int choice, const std::string& text, const std::vector<TokenLogprobs>& logprobs) = 0;
  virtual void OnChoiceFinished(int choice, const std::string& finish_reason) = 0;
  // Last event: OK when every choice finished, else the error. Usage totals
  // are final here.
  virtual void OnDone(const absl::Status& status, int prompt_tokens, int completion_tokens) = 0;
  // The call is about to run again on another worker: forget every event
  // since the start. Returns false when output already reached the client
  // (a stream that has begun), which makes the failure final instead.
  virtual bool Restart() = 0;
};

struct CompletionOptions {
  std::chrono::milliseconds timeout{600000};
  // The client's own deadline, if it sent one (gRPC); the earlier of the two
  // applies, across all attempts.
  std::optional<std::chrono::system_clock::time_point> client_deadline;
  // A worker that has not accepted the request (sent its response headers)
  // by then is taken as hung: ejected, and the request retried elsewhere.
  std::chrono::milliseconds first_response_timeout{10000};
  int max_attempts = 3;  // 1 + retries, each on a different worker
};

// A request runs as one or more attempts, each on one worker. An attempt
// that fails before any output reached the client (a worker unreachable,
// shutting down, crashed, hung, or with a full queue) is retried on another
// worker, within max_attempts and the pool's retry budget; after output
// reached the client, the failure ends the call (an in-band error event).
class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  // Starts the call; events go to `sink`. Errors before any worker call
  // (no healthy worker, unknown model) arrive through OnDone as well.
  static std::shared_ptr<CompletionCall> Start(CallRouter& pool, const CompletionRequest& request,
                                               std::shared_ptr<CompletionSink> sink,
                                               const CompletionOptions& options = {});
  ~CompletionCall();
  void Cancel();
  // Ends the call now with `status` (the sink hears it: an in-band error for
  // a stream that has begun) and cancels its worker streams.
  void Abort(const absl::Status& status);

  // Used by the per-choice streams of attempt `attempt`.
  void OnAccepted(int attempt, int choice);
  void OnResponse(int attempt, int choice, const tessera::worker::v1::GenerateResponse& r);
  void OnChoiceDone(int attempt, int choice, const grpc::Status& status);

 private:
  struct Attempt;
  CompletionCall() = default;
  // Picks a worker and records the next attempt; its streams
  // start in Launch, outside the lock. Returns nullptr (having finished the
  // call with `last_error` or the routing error) when no worker is left.
  Attempt* NextAttemptLocked(const absl::Status& last_error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the call with a refusal that overload caused, counted as shed.
  void ShedLocked(const absl::Status& s, std::string_view reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Launch(Attempt* a);
  void OnAcceptTimeout(int attempt);
  // The current attempt failed with `status`: retry or finish.
  Attempt* FailAttemptLocked(Attempt& a, const grpc::Status& status, bool hung) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  CallRouter* pool_ = nullptr;
  CompletionRequest request_;
  CompletionOptions options_;
  std::chrono::system_clock::time_point deadline_;
  std::chrono::steady_clock::time_point start_;
  int choices_ = 0;

  absl::Mutex mu_;
  std::shared_ptr<CompletionSink> sink_;
  std::vector<std::unique_ptr<Attempt>> attempts_ ABSL_GUARDED_BY(mu_);
  std::vector<const Worker*> tried_ ABSL_GUARDED_BY(mu_);
  bool holds_retry_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  int finished_choices_ ABSL_GUARDED_BY(mu_) = 0;
  bool first_output_sent_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<std::chrono::steady_clock::time_point> first_output_at_ ABSL_GUARDED_BY(mu_);
  std::string served_model_ ABSL_GUARDED_BY(mu_) = "-";  // for metrics: a name a worker serves
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> prompt_tokens_per_prompt_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> choice_started_ ABSL_GUARDED_BY(mu_);  // a response of the choice has arrived
  int completion_tokens_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_COMPLETION_CALL_H_

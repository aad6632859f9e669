// CallRouter: what a CompletionCall needs from the gateway's view of its
// workers — a route per attempt, the outcome of each attempt fed back, the
// retry budget, and the registry of calls in flight (for the budget and the
// drain). WorkerPool is the production router; tests give CompletionCall a
// router of scripted workers (tests/gateway/completion_call_test.cc).
//
// Thread-safety: implementations are thread-safe.
#ifndef TESSERA_GATEWAY_CALL_ROUTER_H_
#define TESSERA_GATEWAY_CALL_ROUTER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::gateway {

struct Worker;
class CompletionCall;
class GatewayMetrics;

class CallRouter {
 public:
  // Where a request goes: a worker, and the LoRA adapter it runs with.
  struct Route {
    std::shared_ptr<Worker> worker;
    std::string adapter;  // empty: the base model
  };
  virtual ~CallRouter() = default;

  // `model` names a base model or an adapter; `adapter` (the X-Lora-Adapter
  // header, may be empty) names an adapter of the base model `model`.
  // Among routable workers that serve it and are not in `exclude` (workers
  // a retried request already failed on), one is chosen. NotFound (code
  // model_not_found) if routable workers exist but none serves it;
  // Unavailable if no worker is routable.
  virtual absl::StatusOr<Route> Pick(const std::string& model, const std::string& adapter,
                                     const std::vector<const Worker*>& exclude) = 0;
  // Whether Pick would find a worker, without Pick's effects.
  virtual absl::Status CanRoute(const std::string& model, const std::string& adapter,
                                const std::vector<const Worker*>& exclude) = 0;

  // Outcomes of attempts, for health and outlier detection.
  virtual void ReportSuccess(Worker& w) = 0;
  // `status` as the worker's stream ended (before its first response).
  virtual void ReportFailure(Worker& w, const grpc::Status& status) = 0;
  // The worker accepted no request within the first-response timeout.
  virtual void ReportHung(Worker& w, std::chrono::milliseconds waited) = 0;

  // A retry may start if the budget allows; pair with EndRetry.
  virtual bool TryStartRetry() = 0;
  virtual void EndRetry() = 0;

  // Calls in flight. A tracked call is untracked before it is destroyed.
  virtual void TrackCall(const std::shared_ptr<CompletionCall>& call) = 0;
  virtual void UntrackCall(const CompletionCall* call) = 0;
  // New calls are refused while draining.
  virtual bool Draining() const = 0;
  // Optional (null): where calls count themselves.
  virtual GatewayMetrics* metrics() const = 0;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_CALL_ROUTER_H_

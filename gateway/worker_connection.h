// WorkerConnection: the seam between a CompletionCall and a worker's
// Generate streams. The production implementation runs them over the
// worker's gRPC channel; tests give a CompletionCall scripted workers, so
// that failover (retry before output, hung workers, the retry budget) is
// unit-tested without processes.
//
// Contract of a stream: OnAccepted at most once (the worker sent its
// response headers), then any number of OnResponse, then OnDone exactly
// once, all on threads the connection owns and never two at a time for one
// stream. Cancel may be called at any time, from any thread, also after
// OnDone (then it does nothing).
#ifndef TESSERA_GATEWAY_WORKER_CONNECTION_H_
#define TESSERA_GATEWAY_WORKER_CONNECTION_H_

#include <chrono>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "tessera/worker/v1/worker.grpc.pb.h"

namespace tessera::gateway {

class GenerateObserver {
 public:
  virtual ~GenerateObserver() = default;
  virtual void OnAccepted() = 0;
  virtual void OnResponse(const tessera::worker::v1::GenerateResponse& response) = 0;
  virtual void OnDone(const grpc::Status& status) = 0;
};

class GenerateStream {
 public:
  virtual ~GenerateStream() = default;
  virtual void Cancel() = 0;
};

class WorkerConnection {
 public:
  virtual ~WorkerConnection() = default;
  // Starts a Generate stream; events go to `observer`, which the stream
  // keeps alive until after OnDone.
  virtual std::shared_ptr<GenerateStream> Generate(const tessera::worker::v1::GenerateRequest& request,
                                                   std::chrono::system_clock::time_point deadline,
                                                   std::shared_ptr<GenerateObserver> observer) = 0;
};

// Generate over a worker's gRPC channel (callback API).
std::unique_ptr<WorkerConnection> NewGrpcWorkerConnection(std::shared_ptr<tessera::worker::v1::Worker::Stub> stub);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_WORKER_CONNECTION_H_

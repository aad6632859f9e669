#include "gateway/worker_connection.h"

#include <utility>

namespace tessera::gateway {
namespace {

namespace wv1 = tessera::worker::v1;

// The context outlives the reactor: the handle that cancels it may be held
// after the stream is done, so both share it.
class GrpcStream final : public GenerateStream {
 public:
  explicit GrpcStream(std::chrono::system_clock::time_point deadline) { ctx_.set_deadline(deadline); }
  void Cancel() override { ctx_.TryCancel(); }
  grpc::ClientContext* context() { return &ctx_; }

 private:
  grpc::ClientContext ctx_;
};

// One Generate call. Deletes itself when gRPC is done with it.
class Reactor final : public grpc::ClientReadReactor<wv1::GenerateResponse> {
 public:
  Reactor(wv1::Worker::Stub& stub, std::shared_ptr<GrpcStream> stream, const wv1::GenerateRequest& request,
          std::shared_ptr<GenerateObserver> observer)
      : stream_(std::move(stream)), request_(request), observer_(std::move(observer)) {
    stub.async()->Generate(stream_->context(), &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) observer_->OnAccepted();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    observer_->OnResponse(response_);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& s) override {
    observer_->OnDone(s);
    delete this;
  }

 private:
  std::shared_ptr<GrpcStream> stream_;
  wv1::GenerateRequest request_;
  wv1::GenerateResponse response_;
  std::shared_ptr<GenerateObserver> observer_;
};

class GrpcWorkerConnection final : public WorkerConnection {
 public:
  explicit GrpcWorkerConnection(std::shared_ptr<wv1::Worker::Stub> stub) : stub_(std::move(stub)) {}

  std::shared_ptr<GenerateStream> Generate(const wv1::GenerateRequest& request,
                                           std::chrono::system_clock::time_point deadline,
                                           std::shared_ptr<GenerateObserver> observer) override {
    auto stream = std::make_shared<GrpcStream>(deadline);
    new Reactor(*stub_, stream, request, std::move(observer));
    return stream;
  }

 private:
  std::shared_ptr<wv1::Worker::Stub> stub_;
};

}  // namespace

std::unique_ptr<WorkerConnection> NewGrpcWorkerConnection(std::shared_ptr<wv1::Worker::Stub> stub) {
  return std::make_unique<GrpcWorkerConnection>(std::move(stub));
}

}  // namespace tessera::gateway

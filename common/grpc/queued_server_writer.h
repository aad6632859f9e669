// QueuedServerWriter: a gRPC server-streaming reactor that producers on any
// thread can write to without waiting for the client.
//
// gRPC allows one write in flight; this class queues the rest and starts each
// write and the final Finish outside its lock. It owns itself (through
// Create's shared_ptr) until gRPC's OnDone; producers holding a shared_ptr
// may outlive that safely (their writes are dropped).
//
// Thread-safety: Write and Finish are thread-safe.
#ifndef TESSERA_COMMON_GRPC_QUEUED_SERVER_WRITER_H_
#define TESSERA_COMMON_GRPC_QUEUED_SERVER_WRITER_H_

#include <deque>
#include <memory>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"

namespace tessera {

template <typename Response>
class QueuedServerWriter : public grpc::ServerWriteReactor<Response> {
 public:
  // Queues a message. Returns false once the client is gone or the stream
  // is finished (the producer should stop).
  bool Write(Response r) {
    {
      absl::MutexLock lock(&mu_);
      if (done_ || client_gone_ || finish_) return false;
      pending_.push_back(std::move(r));
    }
    Pump();
    return true;
  }

  // Sends the response headers now, before any message: tells the client
  // that the server accepted the call (a client can then tell a busy server
  // from a hung one). Serialized with writes; a no-op once a write started.
  void SendHeadersNow() {
    {
      absl::MutexLock lock(&mu_);
      if (headers_requested_ || started_writing_) return;
      headers_requested_ = true;
    }
    Pump();
  }

  void OnSendInitialMetadataDone(bool) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
    }
    Pump();
  }

  // Messages queued or being written (for producers that send only the
  // latest state and skip while a client lags).
  size_t backlog() const {
    absl::MutexLock lock(&mu_);
    return pending_.size() + (writing_ ? 1 : 0);
  }

  // Ends the stream after the queued messages. Later calls are ignored.
  void Finish(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (!finish_) finish_ = status;
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    bool gone = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok && !client_gone_) {
        client_gone_ = gone = true;
        pending_.clear();
        if (!finish_) finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading");
      }
    }
    if (gone) OnClientGone();
    Pump();
  }

  // A cancelled call ends here, whether or not its producer ever calls
  // Finish (a producer may only learn of it from a failed Write), so the
  // server never waits on it at shutdown.
  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      if (client_gone_) return;
      client_gone_ = true;
      pending_.clear();
      if (!finish_) finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
    OnClientGone();
    Pump();
  }

  void OnDone() override {
    std::shared_ptr<QueuedServerWriter> keep;  // released after the lock
    absl::MutexLock lock(&mu_);
    done_ = true;
    keep.swap(self_);
  }

 protected:
  QueuedServerWriter() = default;
  // Called once when the client cancels or stops reading.
  virtual void OnClientGone() {}

  // Makes the object own itself until OnDone. Call once, from the factory.
  void Adopt(std::shared_ptr<QueuedServerWriter> self) { self_ = std::move(self); }

 private:
  void Pump() {
    enum { kNothing, kHeaders, kWrite, kFinish } action = kNothing;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (done_ || writing_ || finish_called_) return;
      if (headers_requested_ && !started_writing_ && !client_gone_) {
        started_writing_ = true;  // headers go first, alone
        writing_ = true;
        action = kHeaders;
      } else if (!pending_.empty()) {
        started_writing_ = true;
        current_ = std::move(pending_.front());
        pending_.pop_front();
        writing_ = true;
        action = kWrite;
      } else if (finish_) {
        finish_called_ = true;
        status = *finish_;
        action = kFinish;
      }
    }
    if (action == kHeaders) this->StartSendInitialMetadata();
    if (action == kWrite) this->StartWrite(&current_);
    if (action == kFinish) grpc::ServerWriteReactor<Response>::Finish(status);
  }

  mutable absl::Mutex mu_;
  std::shared_ptr<QueuedServerWriter> self_;
  std::deque<Response> pending_ ABSL_GUARDED_BY(mu_);
  Response current_;  // the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // a write (or the headers) in flight
  bool headers_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool started_writing_ ABSL_GUARDED_BY(mu_) = false;
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera

#endif  // TESSERA_COMMON_GRPC_QUEUED_SERVER_WRITER_H_

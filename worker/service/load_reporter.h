// LoadReporter: serves WatchLoad streams from one snapshot function. A
// single thread polls the snapshot every `poll` and writes it to each
// subscriber whose last report differs or is older than the subscriber's
// maximum interval; a subscriber that has not taken its previous report is
// skipped (reports are state, so only the latest matters).
//
// Thread-safety: Watch is called from gRPC threads; the snapshot function
// is called on the reporter's thread and must be thread-safe.
#ifndef TESSERA_WORKER_SERVICE_LOAD_REPORTER_H_
#define TESSERA_WORKER_SERVICE_LOAD_REPORTER_H_

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tessera/worker/v1/worker.grpc.pb.h"

namespace tessera {

class LoadReporter {
 public:
  using Snapshot = std::function<tessera::worker::v1::LoadReport()>;
  explicit LoadReporter(Snapshot snapshot, absl::Duration poll = absl::Milliseconds(20));
  // Stop() then joins nothing more.
  ~LoadReporter();
  // Ends every stream with OK and refuses new ones (UNAVAILABLE), so that a
  // server shutdown need not wait for these endless streams. Idempotent.
  void Stop();

  grpc::ServerWriteReactor<tessera::worker::v1::LoadReport>* Watch(
      const tessera::worker::v1::WatchLoadRequest& request);

 private:
  class Stream;
  void Loop();

  Snapshot snapshot_;
  absl::Duration poll_;
  absl::Mutex mu_;
  std::vector<std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SERVICE_LOAD_REPORTER_H_

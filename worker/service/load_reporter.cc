#include "worker/service/load_reporter.h"

#include <algorithm>
#include <string>

#include "common/grpc/queued_server_writer.h"

namespace tessera {

namespace wv1 = tessera::worker::v1;

class LoadReporter::Stream final : public QueuedServerWriter<wv1::LoadReport> {
 public:
  static std::shared_ptr<Stream> Create(absl::Duration max_interval) {
    std::shared_ptr<Stream> s(new Stream(max_interval));
    s->Adopt(s);
    return s;
  }
  // Reporter thread only.
  absl::Duration max_interval;
  absl::Time last_sent = absl::InfinitePast();
  std::string last_payload;
  uint64_t sequence = 0;

 private:
  explicit Stream(absl::Duration m) : max_interval(m) {}
};

LoadReporter::LoadReporter(Snapshot snapshot, absl::Duration poll)
    : snapshot_(std::move(snapshot)), poll_(poll), thread_([this] { Loop(); }) {}

LoadReporter::~LoadReporter() { Stop(); }

void LoadReporter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  for (auto& s : streams_) s->Finish(grpc::Status::OK);
  streams_.clear();
}

grpc::ServerWriteReactor<wv1::LoadReport>* LoadReporter::Watch(const wv1::WatchLoadRequest& request) {
  const uint32_t ms = request.max_interval_ms() == 0 ? 200 : std::max<uint32_t>(request.max_interval_ms(), 20);
  std::shared_ptr<Stream> s = Stream::Create(absl::Milliseconds(ms));
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    s->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is shutting down"));
  } else {
    streams_.push_back(s);
  }
  return s.get();
}

void LoadReporter::Loop() {
  while (true) {
    std::vector<std::shared_ptr<Stream>> streams;
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), poll_)) return;
      streams = streams_;
    }
    if (streams.empty()) continue;
    wv1::LoadReport report = snapshot_();
    const std::string payload = report.SerializeAsString();
    const absl::Time now = absl::Now();
    std::vector<Stream*> gone;
    for (const auto& s : streams) {
      if (s->backlog() > 0) continue;
      if (payload == s->last_payload && now - s->last_sent < s->max_interval) continue;
      report.set_sequence(++s->sequence);
      if (!s->Write(report)) {
        gone.push_back(s.get());
        continue;
      }
      s->last_payload = payload;
      s->last_sent = now;
    }
    if (!gone.empty()) {
      absl::MutexLock lock(&mu_);
      streams_.erase(std::remove_if(streams_.begin(), streams_.end(),
                                    [&](const std::shared_ptr<Stream>& s) {
                                      return std::find(gone.begin(), gone.end(), s.get()) != gone.end();
                                    }),
                     streams_.end());
    }
  }
}

}  // namespace tessera

// MetricsServer: serves a Prometheus registry at /metrics on an address of
// its own (--metrics-listen), apart from the API ports, so that scraping
// never competes with or is exposed like the API.
//
// `before_scrape` runs at the start of every scrape, before the registry is
// serialized: components set their snapshot gauges there (queue lengths,
// residency) instead of polling on a timer.
//
// Thread-safety: the callback runs on the server's threads; the registry's
// metrics are thread-safe.
#ifndef TESSERA_COMMON_METRICS_METRICS_SERVER_H_
#define TESSERA_COMMON_METRICS_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}

namespace tessera {

class MetricsServer {
 public:
  // `listen` is HOST:PORT with a fixed port (the embedded civetweb server
  // cannot pick one). InvalidArgument or Unavailable when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::shared_ptr<prometheus::Registry> registry,
                                                              std::function<void()> before_scrape = {});
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  class Hook;
  std::shared_ptr<Hook> hook_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

// Buckets for latencies from 1 ms to ~10 min (seconds).
const std::vector<double>& LatencyBuckets();
// Buckets for per-token times from 1 ms to 2.5 s (seconds).
const std::vector<double>& TokenTimeBuckets();

}  // namespace tessera

#endif  // TESSERA_COMMON_METRICS_METRICS_SERVER_H_

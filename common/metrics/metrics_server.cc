#include "common/metrics/metrics_server.h"

#include <exception>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera {

// Registered before the registry, so the exposer calls it first on each
// scrape; it contributes no metrics of its own.
class MetricsServer::Hook : public prometheus::Collectable {
 public:
  explicit Hook(std::function<void()> f) : f_(std::move(f)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    if (f_) f_();
    return {};
  }

 private:
  std::function<void()> f_;
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                     std::shared_ptr<prometheus::Registry> registry,
                                                                     std::function<void()> before_scrape) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", listen, "' is not HOST:PORT with a port in [1, 65535]"));
  }
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::move(registry);
  s->hook_ = std::make_shared<Hook>(std::move(before_scrape));
  // civetweb reports a port it cannot bind by throwing from the constructor;
  // the exception stops here.
  try {
    s->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  s->exposer_->RegisterCollectable(s->hook_);
  s->exposer_->RegisterCollectable(s->registry_);
  const std::vector<int> ports = s->exposer_->GetListeningPorts();
  s->port_ = ports.empty() ? 0 : ports.front();
  return s;
}

MetricsServer::~MetricsServer() = default;

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                        5,     10,    20,   30,    60,   120, 300,  600};
  return b;
}

const std::vector<double>& TokenTimeBuckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
                                        0.05,  0.075,  0.1,   0.15,   0.2,  0.3,   0.5,  1,    2.5};
  return b;
}

}  // namespace tessera

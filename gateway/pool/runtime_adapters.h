// RuntimeAdapters: the adapters loaded at run time through this gateway (its
// admin routes), so that a worker serving without one of them (restarted,
// or newly discovered) gets it loaded again. Gateways are stateless, so each
// replica restores what it loaded itself.
//
// Pure bookkeeping: which adapters a worker's catalog lacks, and, per
// worker, a throttle so that one adapter is tried at most once per
// retry_interval (one try at a time, and no loop on a worker that refuses).
//
// Thread-safety: RuntimeAdapters is thread-safe; a RestoreThrottle is
// guarded by its owner (the worker's lock).
#ifndef TESSERA_GATEWAY_POOL_RUNTIME_ADAPTERS_H_
#define TESSERA_GATEWAY_POOL_RUNTIME_ADAPTERS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tessera::gateway {

class RuntimeAdapters {
 public:
  void Remember(const std::string& name, const std::string& path);
  void Forget(const std::string& name);
  // (name, path) of every remembered adapter not in `catalog`, sorted by name.
  std::vector<std::pair<std::string, std::string>> MissingFrom(const absl::flat_hash_set<std::string>& catalog) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> adapters_ ABSL_GUARDED_BY(mu_);  // name -> path
};

class RestoreThrottle {
 public:
  explicit RestoreThrottle(absl::Duration retry_interval = absl::Seconds(30)) : retry_interval_(retry_interval) {}
  // Whether restoring `name` may be tried now; a true answer starts a try.
  bool TryBegin(const std::string& name, absl::Time now);

 private:
  absl::Duration retry_interval_;
  absl::flat_hash_map<std::string, absl::Time> last_try_;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_POOL_RUNTIME_ADAPTERS_H_

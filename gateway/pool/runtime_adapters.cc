#include "gateway/pool/runtime_adapters.h"

#include <algorithm>

namespace tessera::gateway {

void RuntimeAdapters::Remember(const std::string& name, const std::string& path) {
  absl::MutexLock lock(&mu_);
  adapters_[name] = path;
}

void RuntimeAdapters::Forget(const std::string& name) {
  absl::MutexLock lock(&mu_);
  adapters_.erase(name);
}

std::vector<std::pair<std::string, std::string>> RuntimeAdapters::MissingFrom(
    const absl::flat_hash_set<std::string>& catalog) const {
  std::vector<std::pair<std::string, std::string>> missing;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, path] : adapters_) {
      if (!catalog.contains(name)) missing.emplace_back(name, path);
    }
  }
  std::sort(missing.begin(), missing.end());
  return missing;
}

bool RestoreThrottle::TryBegin(const std::string& name, absl::Time now) {
  auto [it, inserted] = last_try_.try_emplace(name, now);
  if (inserted) return true;
  if (now - it->second < retry_interval_) return false;
  it->second = now;
  return true;
}

}  // namespace tessera::gateway

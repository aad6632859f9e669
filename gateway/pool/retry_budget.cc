#include "gateway/pool/retry_budget.h"

#include <algorithm>

namespace tessera::gateway {

int RetryBudget::Limit(int requests_in_flight) const {
  return std::max(min_concurrency_, static_cast<int>(ratio_ * requests_in_flight));
}

bool RetryBudget::TryStart(int requests_in_flight) {
  // Taking the slot first and giving it back on refusal keeps two racing
  // retries from both passing a check that only one of them fits.
  if (in_progress_.fetch_add(1) >= Limit(requests_in_flight)) {
    in_progress_.fetch_sub(1);
    return false;
  }
  return true;
}

}  // namespace tessera::gateway

#include "gateway/pool/membership.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tessera::gateway {

MembershipChange DiffMembership(const std::vector<Member>& members, const absl::flat_hash_set<std::string>& found) {
  MembershipChange change;
  absl::flat_hash_set<std::string> have;
  for (const Member& m : members) {
    if (m.from_dns && !found.contains(m.address)) {
      change.removed.push_back(m.address);
    } else {
      have.insert(m.address);
    }
  }
  for (const std::string& a : found) {
    if (!have.contains(a)) change.added.push_back(a);
  }
  std::sort(change.added.begin(), change.added.end());
  return change;
}

absl::StatusOr<std::vector<std::string>> StaticMembers(const std::vector<std::string>& addresses) {
  std::vector<std::string> out;
  for (const std::string& a : addresses) {
    if (a.empty() || a.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("worker address '", a, "' is not HOST:PORT"));
    }
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  return out;
}

}  // namespace tessera::gateway

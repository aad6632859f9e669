// Membership: which workers the gateway knows, from static addresses and
// DNS answers. Pure: given the current members and a complete DNS answer,
// says who joins and who leaves; static workers never leave, and duplicate
// addresses are one worker.
#ifndef TESSERA_GATEWAY_POOL_MEMBERSHIP_H_
#define TESSERA_GATEWAY_POOL_MEMBERSHIP_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace tessera::gateway {

struct Member {
  std::string address;
  bool from_dns = false;
};

struct MembershipChange {
  std::vector<std::string> added;    // new DNS workers, in sorted order
  std::vector<std::string> removed;  // DNS workers no longer in the answer, in member order
};

// `found`: every address the DNS names resolve to now (a failed lookup is
// not an empty answer: the caller keeps the members then).
MembershipChange DiffMembership(const std::vector<Member>& members, const absl::flat_hash_set<std::string>& found);

// The static workers of the configuration: HOST:PORT each, duplicates
// dropped (first kept). InvalidArgument names a malformed address.
absl::StatusOr<std::vector<std::string>> StaticMembers(const std::vector<std::string>& addresses);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_POOL_MEMBERSHIP_H_

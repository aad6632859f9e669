#include "gateway/pool/membership.h"

#include <gtest/gtest.h>

namespace tessera::gateway {
namespace {

using Addresses = std::vector<std::string>;

TEST(MembershipTest, DnsAnswersAddAndRemoveOnlyDnsWorkers) {
  const std::vector<Member> members = {{"static:1", false}, {"10.0.0.1:50051", true}, {"10.0.0.2:50051", true}};
  struct Case {
    absl::flat_hash_set<std::string> found;
    Addresses added, removed;
  };
  const std::vector<Case> cases = {
      {{"10.0.0.1:50051", "10.0.0.2:50051"}, {}, {}},
      {{"10.0.0.2:50051", "10.0.0.3:50051"}, {"10.0.0.3:50051"}, {"10.0.0.1:50051"}},
      // An empty answer removes every DNS worker, never a static one.
      {{}, {}, {"10.0.0.1:50051", "10.0.0.2:50051"}},
      // A static worker that DNS also names stays one worker.
      {{"static:1", "10.0.0.1:50051", "10.0.0.2:50051"}, {}, {}},
      {{"10.0.0.9:1", "10.0.0.1:50051", "10.0.0.4:1", "10.0.0.2:50051"}, {"10.0.0.4:1", "10.0.0.9:1"}, {}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const MembershipChange c = DiffMembership(members, cases[i].found);
    EXPECT_EQ(c.added, cases[i].added) << i;
    EXPECT_EQ(c.removed, cases[i].removed) << i;
  }
}

TEST(MembershipTest, StaticAddressesAreCheckedAndDeduplicated) {
  auto ok = StaticMembers({"a:1", "b:2", "a:1"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, (Addresses{"a:1", "b:2"}));
  for (const std::string bad : {"", "nohost"}) {
    auto r = StaticMembers({"a:1", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("'" + bad + "' is not HOST:PORT"), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace tessera::gateway

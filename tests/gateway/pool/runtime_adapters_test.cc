#include "gateway/pool/runtime_adapters.h"

#include <gtest/gtest.h>

namespace tessera::gateway {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

TEST(RuntimeAdaptersTest, WhatACatalogLacks) {
  RuntimeAdapters r;
  EXPECT_EQ(r.MissingFrom({}), Pairs{});
  r.Remember("sql", "/a/sql");
  r.Remember("chat", "/a/chat");
  r.Remember("sql", "/b/sql");  // loaded again from elsewhere: the latest path
  EXPECT_EQ(r.MissingFrom({}), (Pairs{{"chat", "/a/chat"}, {"sql", "/b/sql"}}));
  EXPECT_EQ(r.MissingFrom({"chat", "other"}), (Pairs{{"sql", "/b/sql"}}));
  r.Forget("sql");
  r.Forget("never-loaded");
  EXPECT_EQ(r.MissingFrom({"chat"}), Pairs{});
}

TEST(RuntimeAdaptersTest, OneTryPerIntervalPerAdapter) {
  RestoreThrottle t(absl::Seconds(30));
  const absl::Time t0 = absl::FromUnixSeconds(100);
  EXPECT_TRUE(t.TryBegin("sql", t0));
  EXPECT_FALSE(t.TryBegin("sql", t0 + absl::Seconds(29)));
  EXPECT_TRUE(t.TryBegin("chat", t0 + absl::Seconds(1)));  // per adapter
  EXPECT_TRUE(t.TryBegin("sql", t0 + absl::Seconds(30)));
  EXPECT_FALSE(t.TryBegin("sql", t0 + absl::Seconds(31)));
}

}  // namespace
}  // namespace tessera::gateway

// The configuration table: every value type through YAML, flags and the
// printed form; unknown keys, checks, precedence, aliases, secrets, and the
// Abseil flags a table registers.
#include "common/config/config_table.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"

namespace tessera::config {
namespace {

struct Limits {
  std::chrono::seconds timeout{0};
};

struct Demo {
  bool on = false;
  int count = 0;
  int64_t big = 0;
  uint64_t bytes = 0;
  double ratio = 0;
  std::string name;
  std::vector<std::string> hosts;
  std::vector<std::string> tokens;
  Limits limits;
};

using K = Key<Demo>;
using Strings = std::vector<std::string>;

absl::Status CheckCountBelowBytes(const Demo& d) {
  if (static_cast<uint64_t>(d.count) <= d.bytes) return absl::OkStatus();
  return absl::InvalidArgumentError("count must be <= bytes");
}

// A new key of any type is one line here.
std::vector<K> DemoKeys() {
  return {
      K::Of("on", &Demo::on, true, "a switch"),
      K::Of("count", &Demo::count, 4, "a count", InRange(1, 64)),
      K::Of("big", &Demo::big, int64_t{1} << 40, "a large number"),
      K::Of("bytes", &Demo::bytes, uint64_t{4096}, "a size", AtLeast(uint64_t{1024})),
      K::Of("ratio", &Demo::ratio, 0.25, "a ratio", InRange(0.0, 1.0)),
      K::Of("name", &Demo::name, std::string("demo"), "a name", OneOf({"demo", "other"})),
      K::Of("hosts", &Demo::hosts, Strings{"a:1"}, "hosts").Flag("host"),
      K::Of("tokens", &Demo::tokens, Strings(), "secret tokens").Flag("token").Secret(),
      K::Computed<int64_t>(
          "timeout_s", [](const Demo& d) -> int64_t { return d.limits.timeout.count(); },
          [](Demo& d, int64_t v) { d.limits.timeout = std::chrono::seconds(v); }, 30, "a timeout in seconds"),
      K::Alias<std::string>(
          "label", "name",
          [](Demo& d, std::string v) -> absl::Status {
            if (v != "old") return absl::InvalidArgumentError("label must be 'old'; got '" + v + "'");
            d.name = "demo";
            return absl::OkStatus();
          },
          "old is now demo"),
  };
}

ConfigTable<Demo> MakeTable(std::vector<std::string>* warnings) {
  ConfigTable<Demo> t("tessera-demo", "tests/common/config/config_table_test.cc", DemoKeys(), {CheckCountBelowBytes});
  t.SetWarningSink([warnings](const std::string& m) { warnings->push_back(m); });
  return t;
}

TEST(ConfigTableTest, DefaultsComeFromTheTable) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  const Demo d = t.Defaults();
  EXPECT_TRUE(d.on);
  EXPECT_EQ(d.count, 4);
  EXPECT_EQ(d.big, int64_t{1} << 40);
  EXPECT_EQ(d.bytes, 4096u);
  EXPECT_EQ(d.ratio, 0.25);
  EXPECT_EQ(d.name, "demo");
  EXPECT_EQ(d.hosts, Strings{"a:1"});
  EXPECT_TRUE(d.tokens.empty());
  EXPECT_EQ(d.limits.timeout, std::chrono::seconds(30));
  EXPECT_TRUE(t.Validate(d).ok());
}

TEST(ConfigTableTest, YamlSetsEveryValueType) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  Demo d = t.Defaults();
  ASSERT_TRUE(t.MergeYaml("on: false\ncount: 7\nbig: 1099511627777\nbytes: 8192\nratio: 0.5\nname: other\n"
                          "hosts: [b:2, c:3]\ntokens: [t1]\ntimeout_s: 90\n",
                          "demo.yaml", d)
                  .ok());
  EXPECT_FALSE(d.on);
  EXPECT_EQ(d.count, 7);
  EXPECT_EQ(d.big, 1099511627777);
  EXPECT_EQ(d.bytes, 8192u);
  EXPECT_EQ(d.ratio, 0.5);
  EXPECT_EQ(d.name, "other");
  EXPECT_EQ(d.hosts, (Strings{"b:2", "c:3"}));
  EXPECT_EQ(d.tokens, Strings{"t1"});
  EXPECT_EQ(d.limits.timeout, std::chrono::seconds(90));
  EXPECT_TRUE(warnings.empty());
}

TEST(ConfigTableTest, AFileIsReadAndErrorsNameIt) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  const std::string path = testing::TempDir() + "/config_table_test.yaml";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("count: 9\nnope: 1\n", f);
    std::fclose(f);
  }
  Demo d = t.Defaults();
  const absl::Status s = t.MergeYamlFile(path, d);
  EXPECT_EQ(s.message(), path + ": unknown key 'nope'");
  EXPECT_EQ(d.count, 9);  // keys before the unknown one were read
  EXPECT_FALSE(t.MergeYamlFile(path + ".missing", d).ok());
}

TEST(ConfigTableTest, UnknownKeysAndBadValuesAreRefusedByName) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  Demo d = t.Defaults();
  EXPECT_EQ(t.MergeYaml("count: 2\ncolour: red\n", "x.yaml", d).message(), "x.yaml: unknown key 'colour'");
  // A value of the wrong type names the key and where it is.
  absl::Status s = t.MergeYaml("count: many\n", "x.yaml", d);
  EXPECT_TRUE(absl::StartsWith(s.message(), "x.yaml: count: ")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "bad conversion")) << s;
  s = t.MergeYaml("hosts: a:1\n", "x.yaml", d);
  EXPECT_TRUE(absl::StartsWith(s.message(), "x.yaml: hosts: ")) << s;
  EXPECT_EQ(t.MergeYaml("- count\n", "x.yaml", d).message(), "x.yaml: the top level must be a mapping");
  EXPECT_TRUE(t.MergeYaml("", "empty.yaml", d).ok());
}

TEST(ConfigTableTest, ChecksGiveTheValidationMessage) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  auto validate = [&](const std::string& yaml) {
    Demo d = t.Defaults();
    EXPECT_TRUE(t.MergeYaml(yaml, "x.yaml", d).ok()) << yaml;
    return std::string(t.Validate(d).message());
  };
  EXPECT_EQ(validate("count: 0"), "count must be in [1, 64]; got 0");
  EXPECT_EQ(validate("bytes: 10"), "bytes must be >= 1024; got 10");
  EXPECT_EQ(validate("ratio: 1.5"), "ratio must be in [0, 1]; got 1.5");
  EXPECT_EQ(validate("ratio: .nan"), "ratio must be in [0, 1]; got nan");
  EXPECT_EQ(validate("name: third"), "name must be one of demo, other; got 'third'");
  EXPECT_EQ(validate("count: 60\nbytes: 1024"), "");
  EXPECT_EQ(validate("count: 60\nbytes: 1024\nname: x"), "name must be one of demo, other; got 'x'");
}

TEST(ConfigTableTest, CrossKeyChecksRunAfterEveryKey) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  Demo d = t.Defaults();
  d.count = 64;
  d.bytes = 1024;
  EXPECT_TRUE(t.Validate(d).ok());
  d.bytes = 10;  // both the key's own check and the cross-key one fail: the key's answers
  EXPECT_EQ(t.Validate(d).message(), "bytes must be >= 1024; got 10");
  ConfigTable<Demo> strict("tessera-demo", "f.cc", DemoKeys(),
                           {[](const Demo& d) { return d.on ? absl::OkStatus() : absl::InvalidArgumentError("off"); }});
  Demo off = strict.Defaults();
  off.on = false;
  EXPECT_EQ(strict.Validate(off).message(), "off");
}

TEST(ConfigTableTest, FlagsGivenWinOverYaml) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  absl::StatusOr<Demo> d = t.Load("", {{"count", "8"}, {"on", "false"}, {"ratio", "0.75"}, {"timeout_s", "5"}});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 8);
  EXPECT_FALSE(d->on);
  EXPECT_EQ(d->ratio, 0.75);
  EXPECT_EQ(d->limits.timeout, std::chrono::seconds(5));

  Demo y = t.Defaults();
  ASSERT_TRUE(t.MergeYaml("count: 7\nname: other\nhosts: [y:1]\n", "x.yaml", y).ok());
  ASSERT_TRUE(t.ApplyFlags({{"count", "3"}, {"host", "f:1"}}, y).ok());
  EXPECT_EQ(y.count, 3);            // given: the flag
  EXPECT_EQ(y.name, "other");       // not given: the file
  EXPECT_EQ(y.hosts, Strings{"f:1"});  // a list flag replaces the file's list
  // The last of a repeated scalar flag wins; a list flag accumulates.
  ASSERT_TRUE(t.ApplyFlags({{"count", "5"}, {"count", "6"}, {"host", "g:1,h:2"}, {"host", "i:3"}}, y).ok());
  EXPECT_EQ(y.count, 6);
  EXPECT_EQ(y.hosts, (Strings{"g:1", "h:2", "i:3"}));
  // Flags use the flag's spelling, not the YAML key's.
  EXPECT_EQ(t.ApplyFlags({{"hosts", "z:1"}}, y).message(), "unknown flag --hosts");
  const absl::Status bad = t.ApplyFlags({{"count", "x"}}, y);
  EXPECT_TRUE(absl::StartsWith(bad.message(), "--count: ")) << bad;
  // A flag's value is checked like the file's.
  EXPECT_EQ(t.Load("", {{"count", "99"}}).status().message(), "count must be in [1, 64]; got 99");
}

TEST(ConfigTableTest, ThePrintedConfigurationReadsBack) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  Demo d = t.Defaults();
  ASSERT_TRUE(t.MergeYaml("on: false\ncount: 7\nratio: 0.2\nname: other\nhosts: [b:2, 'c d']\ntimeout_s: 90\n",
                          "x.yaml", d)
                  .ok());
  const std::string printed = t.ToYaml(d);
  EXPECT_EQ(printed,
            "on: false\ncount: 7\nbig: 1099511627776\nbytes: 4096\nratio: 0.20000000000000001\nname: other\n"
            "hosts: [b:2, c d]\ntokens: 0 configured\ntimeout_s: 90");
  EXPECT_FALSE(absl::StrContains(printed, "label")) << "aliases are not printed";
  // Everything but the secret reads back to the same configuration.
  ConfigTable<Demo> no_secret("tessera-demo", "f.cc", DemoKeys());
  Demo back = no_secret.Defaults();
  const std::string without_tokens = absl::StrReplaceAll(printed, {{"tokens: 0 configured\n", ""}});
  ASSERT_TRUE(no_secret.MergeYaml(without_tokens, "printed", back).ok()) << without_tokens;
  EXPECT_EQ(no_secret.ToYaml(back), printed);
  EXPECT_EQ(back.ratio, d.ratio);
  EXPECT_EQ(back.hosts, d.hosts);
}

TEST(ConfigTableTest, SecretsArePrintedAsACount) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  Demo d = t.Defaults();
  d.tokens = {"sk-one", "sk-two"};
  const std::string printed = t.ToYaml(d);
  EXPECT_TRUE(absl::StrContains(printed, "tokens: 2 configured")) << printed;
  EXPECT_FALSE(absl::StrContains(printed, "sk-")) << printed;
}

TEST(ConfigTableTest, ADeprecatedAliasSetsItsTargetAndWarnsOnce) {
  std::vector<std::string> warnings;
  const ConfigTable<Demo> t = MakeTable(&warnings);
  Demo d = t.Defaults();
  d.name = "other";
  ASSERT_TRUE(t.MergeYaml("label: old\n", "x.yaml", d).ok());
  EXPECT_EQ(d.name, "demo");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "x.yaml: 'label' is deprecated; use 'name' (old is now demo)");
  d.name = "other";
  ASSERT_TRUE(t.ApplyFlags({{"label", "old"}}, d).ok());
  EXPECT_EQ(d.name, "demo");
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[1], "--label is deprecated; use --name (old is now demo)");
  // The alias checks its own values.
  EXPECT_EQ(t.MergeYaml("label: new\n", "x.yaml", d).message(), "x.yaml: label must be 'old'; got 'new'");
  EXPECT_EQ(t.ApplyFlags({{"label", "new"}}, d).message(), "label must be 'old'; got 'new'");
}

// The process's table: registered once, parsed by Abseil like any flag.
ConfigTable<Demo>& RegisteredTable() {
  static auto* warnings = new std::vector<std::string>();
  static ConfigTable<Demo>* t = [] {
    auto* table = new ConfigTable<Demo>("tessera-demo", "tests/common/config/config_table_test.cc", DemoKeys());
    table->SetWarningSink([](const std::string& m) { warnings->push_back(m); });
    table->RegisterFlags();
    return table;
  }();
  return *t;
}

TEST(ConfigTableTest, RegisteredFlagsAreParsedByAbseil) {
  ConfigTable<Demo>& t = RegisteredTable();
  const absl::CommandLineFlag* count = absl::FindCommandLineFlag("count");
  ASSERT_NE(count, nullptr);
  EXPECT_EQ(count->DefaultValue(), "4");
  EXPECT_EQ(count->Help(), "a count");
  EXPECT_EQ(count->Filename(), "tests/common/config/config_table_test.cc");
  ASSERT_NE(absl::FindCommandLineFlag("host"), nullptr);
  EXPECT_EQ(absl::FindCommandLineFlag("hosts"), nullptr);
  EXPECT_EQ(absl::FindCommandLineFlag("host")->DefaultValue(), "a:1");

  std::vector<std::string> args = {"demo",       "--count=9",  "--noon",    "--host", "x:1", "--host=y:2,z:3",
                                   "--token=s1", "--ratio",    "0.5",       "--name=other", "positional"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  const std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(argv.size()), argv.data());
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_STREQ(rest[1], "positional");

  EXPECT_EQ(count->CurrentValue(), "9");
  EXPECT_EQ(count->TryGet<int>(), 9);
  EXPECT_EQ(absl::FindCommandLineFlag("on")->TryGet<bool>(), false);
  EXPECT_EQ(absl::FindCommandLineFlag("host")->TryGet<Strings>(), (Strings{"x:1", "y:2", "z:3"}));
  EXPECT_EQ(absl::FindCommandLineFlag("token")->CurrentValue(), "1 given");
  EXPECT_EQ(absl::FindCommandLineFlag("big")->TryGet<int64_t>(), int64_t{1} << 40);  // not given: the default

  // The file says otherwise; the command line wins where it spoke.
  Demo d = t.Defaults();
  ASSERT_TRUE(t.MergeYaml("count: 2\non: true\nbig: 5\nhosts: [f:1]\nratio: 0.1\n", "x.yaml", d).ok());
  ASSERT_TRUE(t.ApplyFlags(t.GivenFlags(), d).ok());
  EXPECT_EQ(d.count, 9);
  EXPECT_FALSE(d.on);
  EXPECT_EQ(d.big, 5);
  EXPECT_EQ(d.hosts, (Strings{"x:1", "y:2", "z:3"}));
  EXPECT_EQ(d.tokens, Strings{"s1"});
  EXPECT_EQ(d.ratio, 0.5);
  EXPECT_EQ(d.name, "other");
  EXPECT_TRUE(t.Validate(d).ok());
}

TEST(ConfigTableTest, FlagSpellingUsesDashes) {
  EXPECT_EQ(FlagSpelling("max_num_seqs"), "--max-num-seqs");
}

}  // namespace
}  // namespace tessera::config

#include "common/command_line.h"

#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace tessera {
namespace {

// --help lists the flags defined outside Abseil: the binary's own.
bool OwnFlags(absl::string_view file) { return !absl::StartsWith(file, "absl/") && !absl::StrContains(file, "/absl/"); }

}  // namespace

CommandLine ParseCommandLine(int argc, char** argv, std::string_view usage) {
  absl::SetProgramUsageMessage(absl::string_view(usage.data(), usage.size()));
  absl::FlagsUsageConfig config;
  config.contains_help_flags = OwnFlags;
  config.contains_helpshort_flags = OwnFlags;
  absl::SetFlagsUsageConfig(config);
  CommandLine out;
  out.args = NormalizeFlagNames(argc, argv);
  // Abseil's own --help handling exits 1; usage is printed here instead.
  out.positional = absl::flags_internal::ParseCommandLineImpl(
      argc, out.args.argv.data(), absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage, absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  const int code = absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage());
  if (code != -1) {
    std::cout.flush();
    std::exit(code == 1 ? 0 : code);
  }
  return out;
}

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "--helpfull" || a == "-help") return true;
  }
  return false;
}

}  // namespace tessera

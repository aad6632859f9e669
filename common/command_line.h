// Command lines of every Tessera binary: flags spelled with dashes or
// underscores, a usage line, and a --help that prints that line and the
// binary's own flags with their defaults and exits 0 (--helpfull: every
// flag, Abseil's included).
#ifndef TESSERA_COMMON_COMMAND_LINE_H_
#define TESSERA_COMMON_COMMAND_LINE_H_

#include <string_view>
#include <vector>

#include "common/flag_names.h"

namespace tessera {

struct CommandLine {
  NormalizedArgs args;             // owns the strings `positional` points into
  std::vector<char*> positional;   // argv[0] then the non-flag arguments
};

// Parses argv into the Abseil flags. Unknown flags end the program with
// Abseil's message; --help / --helpfull print and exit 0.
CommandLine ParseCommandLine(int argc, char** argv, std::string_view usage);

// Whether argv asks for help (for binaries without flags of their own).
bool WantsHelp(int argc, char** argv);

}  // namespace tessera

#endif  // TESSERA_COMMON_COMMAND_LINE_H_

// Lets command lines spell flags with dashes (--max-tokens) as the docs do,
// while Abseil Flags defines them with underscores (max_tokens).
#ifndef TESSERA_COMMON_FLAG_NAMES_H_
#define TESSERA_COMMON_FLAG_NAMES_H_

#include <string>
#include <vector>

namespace tessera {

// Returns argv with '-' turned into '_' in the name part of every "--flag"
// or "--flag=value" argument (values untouched; "--" ends flag processing).
// The returned strings own the storage the char* vector points into.
struct NormalizedArgs {
  std::vector<std::string> storage;
  std::vector<char*> argv;
};
NormalizedArgs NormalizeFlagNames(int argc, char** argv);

}  // namespace tessera

#endif  // TESSERA_COMMON_FLAG_NAMES_H_

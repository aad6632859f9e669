#include "common/flag_names.h"

namespace tessera {

NormalizedArgs NormalizeFlagNames(int argc, char** argv) {
  NormalizedArgs out;
  out.storage.reserve(argc);
  bool flags_done = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (!flags_done && a == "--") {
      flags_done = true;
    } else if (!flags_done && i > 0 && a.size() > 2 && a[0] == '-' && a[1] == '-') {
      const size_t end = a.find('=');
      for (size_t k = 2; k < (end == std::string::npos ? a.size() : end); ++k) {
        if (a[k] == '-') a[k] = '_';
      }
    }
    out.storage.push_back(std::move(a));
  }
  for (auto& s : out.storage) out.argv.push_back(s.data());
  out.argv.push_back(nullptr);
  return out;
}

}  // namespace tessera

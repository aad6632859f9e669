#include "worker/sampling/stop_matcher.h"

#include <algorithm>

#include "worker/tokenizer/unicode.h"

namespace tessera {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

StopMatcher::Result StopMatcher::Push(std::string_view text) {
  held_.append(text);
  Result r;
  // Earliest complete stop wins.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    r.emit = held_.substr(0, first);
    r.stopped = true;
    held_.clear();
    return r;
  }
  // Hold back the longest suffix that is a proper prefix of some stop.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    const size_t max = std::min(s.size() - 1, held_.size());
    for (size_t len = max; len > hold; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  // Never split a UTF-8 character when emitting.
  size_t cut = held_.size() - hold;
  cut = unicode::CompletePrefixLength(std::string_view(held_).substr(0, cut));
  r.emit = held_.substr(0, cut);
  held_.erase(0, cut);
  return r;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace tessera

// StopMatcher: finds stop strings in streamed text without ever emitting
// text that a stop string could still swallow.
//
// Text that could be the start of a stop string is held back until it is
// either completed into a stop (generation ends; the stop string and what
// follows are dropped, as OpenAI does) or ruled out.
#ifndef TESSERA_WORKER_SAMPLING_STOP_MATCHER_H_
#define TESSERA_WORKER_SAMPLING_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace tessera {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  struct Result {
    std::string emit;     // text safe to send now
    bool stopped = false; // a stop string was found
  };
  // Adds newly decoded text. REQUIRES: not stopped yet.
  Result Push(std::string_view text);
  // End of generation: releases the held-back text.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SAMPLING_STOP_MATCHER_H_

// Calibration samples for awq and gptq: a plain-text corpus tokenized once
// (no BOS/EOS, special-token text left as text) and cut into `samples`
// windows of `seq_len` tokens.
//
// The windows start at evenly spaced offsets, start_i = floor(i * (T - L) /
// (N - 1)) for a text of T tokens (N samples of L tokens; one sample starts at
// 0), so they cover the whole corpus, do not depend on a random seed, and
// overlap only when the text holds fewer than N * L tokens.
#ifndef TESSERA_TOOLS_QUANTIZE_CALIBRATION_DATA_H_
#define TESSERA_TOOLS_QUANTIZE_CALIBRATION_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace tessera::quantize {

struct CalibrationSamples {
  std::vector<int32_t> tokens;  // samples * seq_len, sample-major
  int samples = 0;
  int seq_len = 0;
  int64_t text_tokens = 0;      // the whole corpus
  bool overlapping = false;     // the text is shorter than samples * seq_len
};

// The windows of `ids`; InvalidArgument if the text is shorter than one
// sample (naming both lengths).
absl::StatusOr<CalibrationSamples> CutCalibrationSamples(const std::vector<int32_t>& ids, int samples, int seq_len);

// Reads `path` (ReadTextCorpus: a regular, non-empty UTF-8 text file),
// tokenizes it and cuts it.
absl::StatusOr<CalibrationSamples> LoadCalibrationSamples(const std::string& path, const Tokenizer& tokenizer,
                                                          int samples, int seq_len);

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_CALIBRATION_DATA_H_

#include "tools/quantize/calibration_data.h"

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"
#include "tools/quantize/text_corpus.h"

namespace tessera::quantize {

absl::StatusOr<CalibrationSamples> CutCalibrationSamples(const std::vector<int32_t>& ids, int samples, int seq_len) {
  if (samples < 1 || seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--calibration-samples and --seq-len must be positive; got ", samples,
                                                   " and ", seq_len));
  }
  const int64_t t = static_cast<int64_t>(ids.size());
  if (t < seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("the text is only ", t, " tokens; one sample needs ",
                                                   seq_len, " (--seq-len): give more text or a smaller --seq-len"));
  }
  CalibrationSamples out;
  out.samples = samples;
  out.seq_len = seq_len;
  out.text_tokens = t;
  out.overlapping = t < static_cast<int64_t>(samples) * seq_len;
  out.tokens.reserve(static_cast<size_t>(samples) * seq_len);
  for (int i = 0; i < samples; ++i) {
    const int64_t start = samples == 1 ? 0 : static_cast<int64_t>(i) * (t - seq_len) / (samples - 1);
    out.tokens.insert(out.tokens.end(), ids.begin() + start, ids.begin() + start + seq_len);
  }
  return out;
}

absl::StatusOr<CalibrationSamples> LoadCalibrationSamples(const std::string& path, const Tokenizer& tokenizer,
                                                          int samples, int seq_len) {
  TESSERA_ASSIGN_OR_RETURN(std::string text, ReadTextCorpus(path, "--calibration"));
  const std::vector<int32_t> ids = tokenizer.Encode(text, EncodeOptions{});
  absl::StatusOr<CalibrationSamples> s = CutCalibrationSamples(ids, samples, seq_len);
  if (!s.ok()) {
    return absl::Status(s.status().code(),
                        absl::StrCat("--calibration ", EscapeForMessage(path, 256), ": ", s.status().message()));
  }
  return s;
}

}  // namespace tessera::quantize

// What tessera-quantize was asked to do, and the progress/cancellation
// channel every output format reports through.
//
// Contract for an output format (gguf_quantize.h, group_quantize.h): it reads
// the input checkpoint, writes only under the staging path it is given (the
// CLI renames it into place once the format returns OK, and deletes it on any
// error or interrupt), calls Progress::Advance as it finishes each unit of
// work, and returns absl::CancelledError soon after Progress::cancelled()
// turns true.
#ifndef TESSERA_TOOLS_QUANTIZE_QUANTIZE_OPTIONS_H_
#define TESSERA_TOOLS_QUANTIZE_QUANTIZE_OPTIONS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace tessera::quantize {

struct QuantizeOptions {
  std::string input;   // an HF directory (F32/F16/BF16) or a GGUF in F32/F16/BF16
  std::string output;  // final path (the format writes to a staging path instead)
  // "gguf:TYPE" (TYPE without the prefix in gguf_type), "awq", "gptq", "rtn" or "exl2".
  std::string format;
  std::string gguf_type;  // "Q4_K_M", "Q8_0"... when format starts with gguf:

  // Group formats (awq, gptq, rtn).
  int bits = 4;
  // exl2: the target average bits per weight of the decoder linears, in [2.5, 8].
  double exl2_bits = 4.0;
  // exl2: a measurement (JSON) to read instead of measuring, and where to
  // write this run's (exllamav2's measurement.json, reused across targets).
  std::string exl2_measurement;
  std::string exl2_measurement_out;
  // exl2: bits of the output head (exllamav2's head_bits: 2, 3, 4, 5, 6 or
  // 8 at its fixed mix for that width; 16 keeps the input's dense head).
  int exl2_head_bits = 6;
  int group_size = 128;
  bool desc_act = false;     // gptq: quantize columns in order of decreasing Hessian diagonal
  bool sym = true;           // gptq/rtn: symmetric (zero fixed at the midpoint)
  bool zero_point = true;    // awq: asymmetric groups (AutoAWQ's default)
  bool clip = true;          // awq: search a clipping ratio per group after the scales
  // gptq: dampening, as a fraction of the mean Hessian diagonal. 0.1, not
  // AutoGPTQ's 0.01: with the few thousand calibration tokens a CPU run
  // affords, a 1536-input down_proj solved at 0.01 fits the calibration text
  // (its error on held-out text ends above RTN's); 0.1 is the value GPTQ
  // model publishers commonly use, GPTQModel's own default is 0.05.
  double damp = 0.1;
  // gptq: > 0 searches each group's range (GPTQ's Quantizer(mse=True), norm
  // 2.4 as the GPTQ authors' code uses) for the least sum |error|^mse; 0: the
  // plain min/max range. On by default: with the min/max range, symmetric
  // groups waste a code (-8 is below -absmax) and clip +absmax to 14/15 of
  // itself, and GPTQ sym g128 lost to RTN on held-out text (issue 15).
  double mse = 2.4;
  // rtn writes this layout: "gptq" or "awq" (AWQ is 4-bit with zero points only).
  std::string rtn_layout = "gptq";

  // Calibration (awq, gptq): plain UTF-8 text, cut into samples of seq_len tokens.
  std::string calibration;
  int calibration_samples = 128;
  int seq_len = 512;

  int threads = 0;  // 0: all hardware threads
};

// A progress bar on a terminal (layer i/N, what, elapsed, ETA), plain log
// lines otherwise; also where an interrupt is observed.
class Progress {
 public:
  // `stream` is usually stderr; `interactive` draws a bar in place.
  Progress(std::FILE* stream, bool interactive, const std::atomic<bool>* cancel_flag);

  // Starts a phase of `total` units (layers, tensors); resets the ETA.
  void Begin(std::string_view phase, int64_t total);
  // One more unit of the current phase is done; `what` names it
  // ("layer 3/30 blk.3.attn_q.weight").
  void Advance(std::string_view what, int64_t units = 1);
  // A line of its own, above the bar.
  void Log(std::string_view line);
  // Ends the bar (a newline on a terminal).
  void End();

  bool cancelled() const { return cancel_ != nullptr && cancel_->load(std::memory_order_relaxed); }

 private:
  void Draw(std::string_view what);

  std::FILE* stream_;
  bool interactive_;
  const std::atomic<bool>* cancel_;
  std::string phase_;
  int64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_, phase_start_, last_line_;
  bool bar_open_ = false;
};

}  // namespace tessera::quantize

#endif  // TESSERA_TOOLS_QUANTIZE_QUANTIZE_OPTIONS_H_

#include <algorithm>
#include <string>

#include "absl/strings/str_format.h"
#include "tools/quantize/quantize_options.h"

namespace tessera::quantize {
namespace {

std::string Clock(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

Progress::Progress(std::FILE* stream, bool interactive, const std::atomic<bool>* cancel_flag)
    : stream_(stream), interactive_(interactive), cancel_(cancel_flag),
      start_(std::chrono::steady_clock::now()), phase_start_(start_), last_line_(start_) {}

void Progress::Begin(std::string_view phase, int64_t total) {
  End();
  phase_ = std::string(phase);
  total_ = std::max<int64_t>(total, 0);
  done_ = 0;
  phase_start_ = std::chrono::steady_clock::now();
  if (!interactive_) absl::FPrintF(stream_, "[quantize] %s: %d units\n", phase_, total_);
}

void Progress::Advance(std::string_view what, int64_t units) {
  done_ = std::min(total_, done_ + units);
  Draw(what);
}

void Progress::Log(std::string_view line) {
  if (bar_open_) absl::FPrintF(stream_, "\r\033[K");
  absl::FPrintF(stream_, "[quantize] %s\n", line);
  bar_open_ = false;
}

void Progress::End() {
  if (bar_open_) absl::FPrintF(stream_, "\n");
  bar_open_ = false;
}

void Progress::Draw(std::string_view what) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double phase_elapsed = std::chrono::duration<double>(now - phase_start_).count();
  const double eta = done_ > 0 ? phase_elapsed / done_ * (total_ - done_) : 0;
  if (interactive_) {
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done_ / total_) : 0;
    absl::FPrintF(stream_, "\r\033[K%s [%s%s] %d/%d %s  %s elapsed, ETA %s", phase_, std::string(filled, '#'),
                  std::string(kWidth - filled, '.'), done_, total_, what, Clock(elapsed), Clock(eta));
    std::fflush(stream_);
    bar_open_ = true;
    return;
  }
  // Logs get a line per unit, but at most one a second unless the phase ends.
  if (done_ < total_ && std::chrono::duration<double>(now - last_line_).count() < 1.0) return;
  last_line_ = now;
  absl::FPrintF(stream_, "[quantize] %s %d/%d %s (%s elapsed, ETA %s)\n", phase_, done_, total_, what,
                Clock(elapsed), Clock(eta));
}

}  // namespace tessera::quantize

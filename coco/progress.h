// Progress output for long commands (coco prepare, coco train; the training API formats its status lines with
// these helpers): on a terminal one live line redrawn in place (with a bar), otherwise plain lines (one per call of
// line(), so logs stay readable and diffable).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace coco {

class ProgressLine {
 public:
  // `live`: redraw in place; by default when `stream` is a terminal.
  explicit ProgressLine(std::FILE* stream = stdout);
  ProgressLine(std::FILE* stream, bool live);
  ~ProgressLine();

  bool live() const { return live_; }
  // Live mode: redraws the status line (at most every 100 ms unless `force`). Plain mode: nothing.
  void status(const std::string& text, bool force = false);
  // A permanent line: printed above the status line (live) or as is (plain).
  void line(const std::string& text);
  // Clears the status line (live mode).
  void finish();

 private:
  std::FILE* stream_;
  bool live_;
  bool status_shown_ = false;
  std::string last_status_;
  std::chrono::steady_clock::time_point last_draw_{};
};

// "[########..........]" of `width` cells for done/total.
std::string progress_bar(double done, double total, int width = 20);
// "1h02m", "3m07s", "12s"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);
// printf-style std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace coco

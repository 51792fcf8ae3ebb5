#include "coco/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <vector>

namespace coco {

ProgressLine::ProgressLine(std::FILE* stream) : ProgressLine(stream, ::isatty(::fileno(stream)) == 1) {}

ProgressLine::ProgressLine(std::FILE* stream, bool live) : stream_(stream), live_(live) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::status(const std::string& text, bool force) {
  if (!live_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && status_shown_ && now - last_draw_ < std::chrono::milliseconds(100)) {
    last_status_ = text;
    return;
  }
  last_draw_ = now;
  last_status_ = text;
  std::fprintf(stream_, "\r\033[K%s", text.c_str());
  std::fflush(stream_);
  status_shown_ = true;
}

void ProgressLine::line(const std::string& text) {
  if (live_ && status_shown_) std::fputs("\r\033[K", stream_);
  std::fprintf(stream_, "%s\n", text.c_str());
  if (live_ && status_shown_) std::fputs(last_status_.c_str(), stream_);
  std::fflush(stream_);
}

void ProgressLine::finish() {
  if (live_ && status_shown_) {
    std::fputs("\r\033[K", stream_);
    std::fflush(stream_);
  }
  status_shown_ = false;
}

std::string progress_bar(double done, double total, int width) {
  const double fraction = total > 0 ? std::clamp(done / total, 0.0, 1.0) : 0.0;
  const size_t filled = static_cast<size_t>(std::floor(fraction * width));
  std::string bar;
  bar.reserve(static_cast<size_t>(width) + 2);
  bar.push_back('[');
  bar.append(filled, '#');
  bar.append(static_cast<size_t>(width) - filled, '.');
  bar.push_back(']');
  return bar;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = static_cast<long long>(std::llround(seconds));
  if (s >= 3600) return format("%lldh%02lldm", s / 3600, (s / 60) % 60);
  if (s >= 60) return format("%lldm%02llds", s / 60, s % 60);
  return format("%llds", s);
}

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::vector<char> buffer(static_cast<size_t>(n > 0 ? n : 0) + 1);
  std::vsnprintf(buffer.data(), buffer.size(), fmt, args);
  va_end(args);
  return std::string(buffer.data(), static_cast<size_t>(n > 0 ? n : 0));
}

}  // namespace coco

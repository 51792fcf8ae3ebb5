#include "coco/utf8.h"

#include <cstdio>
#include <cstring>

namespace coco::text {

Utf8Error::Utf8Error(std::string source, uint64_t offset, const std::string& reason)
    : std::runtime_error(source + ": invalid UTF-8 at byte offset " + std::to_string(offset) + " (" + reason +
                         "); expected UTF-8 text"),
      source_(std::move(source)),
      offset_(offset),
      reason_(reason) {}

namespace {

std::string describe_invalid(std::string_view bytes, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const unsigned char b0 = s[pos];
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", b0);
  if (b0 >= 0x80 && b0 <= 0xBF) return std::string("unexpected continuation byte ") + hex;
  if (b0 == 0xC0 || b0 == 0xC1 || b0 >= 0xF5) return std::string("byte ") + hex + " never appears in UTF-8";
  const size_t length = b0 <= 0xDF ? 2 : b0 <= 0xEF ? 3 : 4;
  for (size_t k = 1; k < length; ++k) {
    if (pos + k >= bytes.size())
      return std::string("sequence starting with ") + hex + " is truncated by the end of input";
    if ((s[pos + k] & 0xC0) != 0x80) return std::string("sequence starting with ") + hex + " lacks a continuation byte";
  }
  return std::string("sequence starting with ") + hex + " is overlong, a surrogate or above U+10FFFF";
}

}  // namespace

size_t find_invalid_utf8(std::string_view bytes, std::string* reason) {
  size_t pos = 0;
  const size_t n = bytes.size();
  while (pos < n) {
    // ASCII fast path: 8 bytes at a time while no high bit is set.
    while (pos + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, bytes.data() + pos, 8);
      if (word & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= n) break;
    char32_t cp;
    if (!decode_utf8(bytes, pos, cp)) {
      if (reason) *reason = describe_invalid(bytes, pos);
      return pos;
    }
  }
  return kUtf8Valid;
}

void validate_utf8(std::string_view bytes, std::string_view source, uint64_t base_offset) {
  std::string reason;
  const size_t bad = find_invalid_utf8(bytes, &reason);
  if (bad != kUtf8Valid) throw Utf8Error(std::string(source), base_offset + bad, reason);
}

size_t count_code_points(std::string_view valid_utf8) {
  size_t count = 0;
  for (char c : valid_utf8) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return count;
}

}  // namespace coco::text

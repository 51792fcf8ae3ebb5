// UTF-8 validation and decoding for the text pipeline. Invalid input is an error naming the source and the
// byte offset of the first bad byte, never something silently replaced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace coco::text {

class Utf8Error : public std::runtime_error {
 public:
  Utf8Error(std::string source, uint64_t offset, const std::string& reason);
  const std::string& source() const { return source_; }
  uint64_t offset() const { return offset_; }  // byte offset of the first invalid byte in the source
  const std::string& reason() const { return reason_; }

 private:
  std::string source_;
  uint64_t offset_;
  std::string reason_;
};

inline constexpr size_t kUtf8Valid = static_cast<size_t>(-1);

// Offset of the first byte that starts an invalid sequence (bad lead byte, missing or unexpected
// continuation, overlong form, surrogate, > U+10FFFF, truncated at the end), or kUtf8Valid. When `reason`
// is given it receives a short description of the problem.
size_t find_invalid_utf8(std::string_view bytes, std::string* reason = nullptr);

// Throws Utf8Error(source, base_offset + offset, reason) when `bytes` is not valid UTF-8.
void validate_utf8(std::string_view bytes, std::string_view source, uint64_t base_offset = 0);

// Decodes the code point at `pos` and advances `pos` past it. Returns false (leaving `pos`) on an invalid
// or truncated sequence, with the same rules as find_invalid_utf8.
inline bool decode_utf8(std::string_view bytes, size_t& pos, char32_t& cp) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  const unsigned char b0 = s[pos];
  if (b0 < 0x80) {
    cp = b0;
    ++pos;
    return true;
  }
  size_t length;
  char32_t value;
  char32_t min_value;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2, value = b0 & 0x1F, min_value = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3, value = b0 & 0x0F, min_value = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4, value = b0 & 0x07, min_value = 0x10000;
  } else {
    return false;
  }
  if (n - pos < length) return false;
  for (size_t k = 1; k < length; ++k) {
    const unsigned char b = s[pos + k];
    if ((b & 0xC0) != 0x80) return false;
    value = (value << 6) | (b & 0x3F);
  }
  if (value < min_value || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return false;
  cp = value;
  pos += length;
  return true;
}

// Writes the UTF-8 encoding of a valid code point (not a surrogate, <= U+10FFFF) to out[0..4); returns its length.
inline size_t encode_utf8(char32_t cp, char* out) {
  if (cp < 0x80) {
    out[0] = static_cast<char>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<char>(0xC0 | (cp >> 6));
    out[1] = static_cast<char>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<char>(0xE0 | (cp >> 12));
    out[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out[2] = static_cast<char>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<char>(0xF0 | (cp >> 18));
  out[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
  out[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  out[3] = static_cast<char>(0x80 | (cp & 0x3F));
  return 4;
}

inline void append_utf8(std::string& out, char32_t cp) {
  char encoded[4];
  out.append(encoded, encode_utf8(cp, encoded));
}

// Number of code points of valid UTF-8 (counts bytes that are not continuation bytes).
size_t count_code_points(std::string_view valid_utf8);

}  // namespace coco::text

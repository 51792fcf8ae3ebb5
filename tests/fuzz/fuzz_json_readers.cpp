// libFuzzer target over the readers of untrusted JSON and safetensors bytes (issue #11): the checked JSON
// parser (engine/io/checked_read.h) and safetensors::Reader::from_bytes. Every input must either parse or
// be refused with the engine's own exception types; a crash, a hang, a sanitizer report or any other
// exception is a finding. Not part of the CMake build (it needs clang's -fsanitize=fuzzer); build and run:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_json_readers.cpp \
//       engine/io/checked_read.cpp engine/io/safetensors.cpp engine/config.cpp engine/runtime/dtype.cpp \
//       -o /tmp/fuzz_json_readers
//   /tmp/fuzz_json_readers -max_total_time=120 -max_len=4096
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "engine/io/checked_read.h"
#include "engine/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const nlohmann::json value = coco::io::parse_json_checked(text, "fuzz.json");
    (void)value.dump();  // recursive: safe only because nesting is bounded
    nlohmann::json copy = value;
    (void)(copy == value);
  } catch (const coco::ConfigError&) {
  }
  try {
    coco::safetensors::Reader::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
  } catch (const coco::safetensors::FormatError&) {
  }
  return 0;
}

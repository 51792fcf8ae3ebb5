// Reading files the user (or a damaged disk) hands the engine, without crashing or hanging on them.
//
// Every JSON file the engine reads (configs, checkpoint config.json / trainer_state.json / manifest.json,
// meta.json, tokenizer files, safetensors headers) goes through parse_json_checked: nesting deeper than
// kMaxJsonDepth, a duplicate key at any depth and a number that overflows a double are refused with a
// ConfigError (exit 2) naming the file and, where there is one, the key. nlohmann's own parse keeps the last
// of duplicate keys silently, and the recursive algorithms of its values (copy, dump, comparison) overflow
// the stack on input nested 10^5 deep.
//
// open_regular_file / read_regular_file refuse anything but a regular file (a FIFO would block open()
// forever, a directory reads as an error deep inside a parser, /dev/zero never ends) and open with
// O_NONBLOCK, so a FIFO swapped in after the check still cannot block.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace coco::io {

// Deep enough for any configuration or header the engine writes (they nest 4 levels), far below the depth
// at which recursion over a value exhausts the stack.
constexpr int kMaxJsonDepth = 64;

// Parses `text`; errors are ConfigError "<source>: <what>" (or "<what>" when `source` is empty).
nlohmann::json parse_json_checked(std::string_view text, const std::string& source);

// Reads a regular file (at most `max_bytes`) and parses it; errors name the path.
nlohmann::json read_json_checked(const std::filesystem::path& path, uint64_t max_bytes = uint64_t{1} << 30);

// A file descriptor of the regular file `path`, opened read-only, O_NONBLOCK and O_CLOEXEC; throws
// ConfigError naming the path and what it is instead ("is a FIFO", "is a directory") or why it cannot open.
// `what` describes the file in messages ("the shard", "the configuration").
int open_regular_file(const std::filesystem::path& path, const std::string& what = "the file");

// The whole contents of the regular file `path` (at most `max_bytes`, else ConfigError).
std::string read_regular_file(const std::filesystem::path& path, uint64_t max_bytes = uint64_t{1} << 30,
                              const std::string& what = "the file");

}  // namespace coco::io

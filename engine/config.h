// Strict JSON config reading. Every section is read through a ConfigObject that records which keys
// were consumed; finish() rejects any key left over, and every type or range error is a ConfigError
// naming the file, the dotted key and what was expected:
//   configs/demo.json: key 'model.discriminator.heads': expected a positive integer, got "four"
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace coco {

class ConfigError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class ConfigObject {
 public:
  // `source` names the file (or "--set") for messages; `path` is the dotted prefix of this object.
  ConfigObject(const nlohmann::json& json, std::string source, std::string path);

  bool has(const std::string& key) const;
  // Typed getters with a default (used when the key is absent). Present keys must have the type.
  bool get_bool(const std::string& key, bool fallback);
  int64_t get_int(const std::string& key, int64_t fallback, int64_t min = INT64_MIN, int64_t max = INT64_MAX);
  double get_double(const std::string& key, double fallback, double min = -1e300, double max = 1e300);
  std::string get_string(const std::string& key, const std::string& fallback);
  // One of `choices`; the message lists them.
  std::string get_choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& choices);
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback);
  // A nested object (an empty one when absent); it must itself be finish()ed.
  ConfigObject get_object(const std::string& key);
  std::optional<ConfigObject> get_optional_object(const std::string& key);

  // Throws on keys that no getter consumed.
  void finish() const;

  [[noreturn]] void fail(const std::string& key, const std::string& expected) const;
  std::string key_path(const std::string& key) const;
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json* find(const std::string& key);
  const nlohmann::json& json_;
  std::string source_, path_;
  std::set<std::string> consumed_;
};

// Reads and parses a JSON file; parse errors name the file, line and column.
nlohmann::json load_json_file(const std::string& path);

// Applies a `--set key.path=value` override: the value is parsed as JSON when it parses (numbers,
// true/false, lists, quoted strings) and taken as a plain string otherwise. Intermediate objects are
// created as needed; the strict readers later reject keys that do not exist.
void apply_override(nlohmann::json& root, const std::string& assignment);

}  // namespace coco

#include "engine/config.h"

#include "engine/io/checked_read.h"

#include <cmath>
#include <fstream>
#include <sstream>

namespace coco {

namespace {
std::string show(const nlohmann::json& value) {
  std::string s = value.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}
}  // namespace

ConfigObject::ConfigObject(const nlohmann::json& json, std::string source, std::string path)
    : json_(json), source_(std::move(source)), path_(std::move(path)) {
  if (!json_.is_object()) {
    throw ConfigError(source_ + ": " + (path_.empty() ? std::string("the top level") : "key '" + path_ + "'") +
                      ": expected a JSON object, got " + show(json_));
  }
}

std::string ConfigObject::key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

void ConfigObject::fail(const std::string& key, const std::string& expected) const {
  std::string got;
  if (json_.contains(key)) got = ", got " + show(json_.at(key));
  throw ConfigError(source_ + ": key '" + key_path(key) + "': expected " + expected + got);
}

bool ConfigObject::has(const std::string& key) const { return json_.contains(key); }

const nlohmann::json* ConfigObject::find(const std::string& key) {
  consumed_.insert(key);
  auto it = json_.find(key);
  return it == json_.end() ? nullptr : &*it;
}

bool ConfigObject::get_bool(const std::string& key, bool fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(key, "true or false");
  return v->get<bool>();
}

int64_t ConfigObject::get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const auto* v = find(key);
  if (!v) return fallback;
  int64_t value = 0;
  if (v->is_number_integer())
    value = v->get<int64_t>();
  else if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
           std::fabs(v->get<double>()) < 9e15)
    value = static_cast<int64_t>(v->get<double>());
  else
    fail(key, "an integer");
  if (value < min || value > max) {
    std::string range = min == INT64_MIN   ? "<= " + std::to_string(max)
                        : max == INT64_MAX ? ">= " + std::to_string(min)
                                           : "in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    fail(key, "an integer " + range);
  }
  return value;
}

double ConfigObject::get_double(const std::string& key, double fallback, double min, double max) {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_number()) fail(key, "a number");
  const double value = v->get<double>();
  if (!std::isfinite(value) || value < min || value > max) {
    std::ostringstream range;
    range << "a number in [" << min << ", " << max << "]";
    fail(key, range.str());
  }
  return value;
}

std::string ConfigObject::get_string(const std::string& key, const std::string& fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_string()) fail(key, "a string");
  return v->get<std::string>();
}

std::string ConfigObject::get_choice(const std::string& key, const std::string& fallback,
                                     const std::vector<std::string>& choices) {
  const std::string value = get_string(key, fallback);
  for (const auto& c : choices)
    if (c == value) return value;
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + ("\"" + c + "\"");
  fail(key, "one of " + list);
}

std::vector<int64_t> ConfigObject::get_int_list(const std::string& key, const std::vector<int64_t>& fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_array()) fail(key, "a list of integers");
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!e.is_number_integer()) fail(key, "a list of integers");
    out.push_back(e.get<int64_t>());
  }
  return out;
}

ConfigObject ConfigObject::get_object(const std::string& key) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  const auto* v = find(key);
  if (!v) return ConfigObject(kEmpty, source_, key_path(key));
  if (!v->is_object()) fail(key, "an object");
  return ConfigObject(*v, source_, key_path(key));
}

std::optional<ConfigObject> ConfigObject::get_optional_object(const std::string& key) {
  const auto* v = find(key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_object()) fail(key, "an object or null");
  return ConfigObject(*v, source_, key_path(key));
}

void ConfigObject::finish() const {
  for (auto it = json_.begin(); it != json_.end(); ++it) {
    if (!consumed_.count(it.key())) throw ConfigError(source_ + ": unknown key '" + key_path(it.key()) + "'");
  }
}

nlohmann::json load_json_file(const std::string& path) { return io::read_json_checked(path); }

void apply_override(nlohmann::json& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError("--set '" + assignment + "': expected key.path=value");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  nlohmann::json value;
  try {
    value = io::parse_json_checked(text, "");
  } catch (const ConfigError& e) {
    // Text that is not JSON is a plain string; JSON the engine refuses (1e400, deep nesting) is an error.
    if (std::string(e.what()).rfind("invalid JSON", 0) != 0)
      throw ConfigError("--set '" + assignment + "': key '" + key + "': " + e.what());
    value = text;
  }
  nlohmann::json* node = &root;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw ConfigError("--set '" + assignment + "': empty component in key '" + key + "'");
    if (!node->is_object())
      throw ConfigError("--set '" + assignment + "': '" + key.substr(0, start - 1) + "' is not an object");
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    node = &(*node)[part];
    if (node->is_null()) *node = nlohmann::json::object();
    start = dot + 1;
  }
}

}  // namespace coco

#include "tools/lib/args.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace coco::tools {

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {
  flag("--help", "show this help and exit");
}

void ArgParser::flag(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = Spec{"", help, "", false, false, false};
}

void ArgParser::option(const std::string& name, const std::string& metavar, const std::string& help, bool required,
                       bool repeatable, const std::string& fallback) {
  order_.push_back(name);
  specs_[name] = Spec{metavar, help, fallback, true, required, repeatable};
}

void ArgParser::positionals(const std::string& metavar, const std::string& help, size_t min_count) {
  accepts_positionals_ = true;
  positional_metavar_ = metavar;
  positional_help_ = help;
  positional_min_ = min_count;
}

std::string ArgParser::help() const {
  std::string usage = "usage: " + command_;
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    if (name == "--help") continue;
    std::string item = name + (s.takes_value ? " " + s.metavar : "");
    if (s.repeatable) item += " ...";
    usage += s.required ? " " + item : " [" + item + "]";
  }
  if (accepts_positionals_) usage += " " + positional_metavar_ + "...";
  std::string text = usage + "\n\n" + summary_ + "\n\noptions:\n";
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    std::string left = "  " + name + (s.takes_value ? " " + s.metavar : "");
    if (left.size() < 28)
      left.resize(28, ' ');
    else
      left += "\n" + std::string(28, ' ');
    text += left + s.help;
    if (!s.fallback.empty()) text += " (default: " + s.fallback + ")";
    if (s.required) text += " (required)";
    text += "\n";
  }
  if (accepts_positionals_) {
    std::string left = "  " + positional_metavar_;
    if (left.size() < 28) left.resize(28, ' ');
    text += left + positional_help_ + "\n";
  }
  return text;
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::string inline_value;
    bool has_inline = false;
    if (arg.rfind("--", 0) == 0) {
      const size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline = true;
      }
      auto it = specs_.find(arg);
      if (it == specs_.end())
        throw UsageError(command_ + ": unknown option '" + arg + "' (see " + command_ + " --help)");
      if (arg == "--help") {
        std::fputs(help().c_str(), stdout);
        return false;
      }
      const Spec& spec = it->second;
      if (!spec.takes_value) {
        if (has_inline) throw UsageError(command_ + ": option " + arg + " takes no value");
        values_[arg].push_back("true");
        continue;
      }
      std::string value;
      if (has_inline)
        value = inline_value;
      else if (i + 1 < args.size())
        value = args[++i];
      else
        throw UsageError(command_ + ": option " + arg + " needs a value (" + spec.metavar + ")");
      if (!spec.repeatable && values_.count(arg)) throw UsageError(command_ + ": option " + arg + " given twice");
      values_[arg].push_back(value);
    } else {
      if (!accepts_positionals_) throw UsageError(command_ + ": unexpected argument '" + arg + "'");
      positional_values_.push_back(arg);
    }
  }
  for (const auto& [name, spec] : specs_)
    if (spec.required && !values_.count(name))
      throw UsageError(command_ + ": missing required option " + name + " " + spec.metavar);
  if (positional_values_.size() < positional_min_)
    throw UsageError(command_ + ": expected at least " + std::to_string(positional_min_) + " " + positional_metavar_ +
                     " argument(s)");
  return true;
}

bool ArgParser::has(const std::string& name) const { return values_.count(name) > 0; }

std::string ArgParser::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second.back();
  auto spec = specs_.find(name);
  return spec == specs_.end() ? std::string() : spec->second.fallback;
}

const std::vector<std::string>& ArgParser::all(const std::string& name) const {
  static const std::vector<std::string> kNone;
  auto it = values_.find(name);
  return it == values_.end() ? kNone : it->second;
}

int64_t ArgParser::get_int(const std::string& name, int64_t min, int64_t max) const {
  const std::string text = get(name);
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end || errno || value < min || value > max)
    throw UsageError(command_ + ": option " + name + " expects an integer in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "], got '" + text + "'");
  return value;
}

double ArgParser::get_double(const std::string& name, double min, double max) const {
  const std::string text = get(name);
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end || errno || !std::isfinite(value) || value < min || value > max)
    throw UsageError(command_ + ": option " + name + " expects a number in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "], got '" + text + "'");
  return value;
}

}  // namespace coco::tools

// Command-line parsing for the `coco` tool: declared options generate the --help text, and every
// usage error (unknown option, missing value, bad number) is a UsageError that the tool reports
// with exit code 2.
#pragma once
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace coco::tools {

class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  // A flag without a value (--resume).
  void flag(const std::string& name, const std::string& help);
  // An option with a value (--out DIR). `repeatable` collects every occurrence (--set k=v ...).
  void option(const std::string& name, const std::string& metavar, const std::string& help, bool required = false,
              bool repeatable = false, const std::string& fallback = "");
  // Positional arguments (INPUT...): at least `min_count`.
  void positionals(const std::string& metavar, const std::string& help, size_t min_count);

  // Returns false when --help was given (the help text was printed to stdout).
  bool parse(const std::vector<std::string>& args);
  std::string help() const;

  bool has(const std::string& name) const;
  std::string get(const std::string& name) const;  // the value, or the fallback
  const std::vector<std::string>& all(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t min, int64_t max) const;
  double get_double(const std::string& name, double min, double max) const;
  const std::vector<std::string>& positional() const { return positional_values_; }

 private:
  struct Spec {
    std::string metavar, help, fallback;
    bool takes_value = false, required = false, repeatable = false;
  };
  std::string command_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
  std::string positional_metavar_, positional_help_;
  size_t positional_min_ = 0;
  bool accepts_positionals_ = false;
  std::vector<std::string> positional_values_;
};

}  // namespace coco::tools

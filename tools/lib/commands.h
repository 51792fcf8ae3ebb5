// The `coco` subcommands behind tools/coco.cpp. Each takes the arguments after the subcommand name and
// returns the exit code; errors are exceptions that run_cli maps to exit codes (coco/exit_code.h).
#pragma once
#include <exception>
#include <string>
#include <vector>

namespace coco::tools {

int command_prepare(const std::vector<std::string>& args);
int command_train(const std::vector<std::string>& args);
int command_eval(const std::vector<std::string>& args);
int command_plot(const std::vector<std::string>& args);
int command_export(const std::vector<std::string>& args);  // tools/lib/hf_commands.cpp
int command_import(const std::vector<std::string>& args);  // tools/lib/hf_commands.cpp
int command_encode(const std::vector<std::string>& args);  // tools/lib/encode_command.cpp

// The whole CLI: `coco <command> ...`, `coco --help`. Prints errors to stderr and returns the exit code:
// 0 success, 2 bad usage / configuration / data (the message names the file, key and expected value),
// 1 runtime failure.
int run_cli(const std::vector<std::string>& args);

}  // namespace coco::tools
